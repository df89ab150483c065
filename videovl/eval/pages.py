"""Pages a person looks at: search hits, retrieval evaluation, QA answers, each one self-contained HTML file.

Everything a page shows is inside it: the frames of each video as a strip of small JPEG frames in a
``data:`` URI, no stylesheet, font or script from elsewhere, so the file can be mailed or opened offline.
The page builders are pure functions from records (:class:`Query`, :class:`Hit`, :class:`Answer`) to an
HTML string, every text escaped; :class:`FrameStrips` decodes the strips (with the project's own video
decoding) and turns a video that cannot be read into ``None``, which a page shows as "unreadable".

A short inline script marks each image as shown or not once the page has loaded (``data-shown`` on the
``<img>``, and a count at the foot of the page), which a headless browser's DOM dump can be checked for.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from videovl.data.media.video_io import Media, VideoReadError, load_clip
from videovl.data.sources import Sample
from videovl.eval.retrieval import RankedQueries

__all__ = [
    "Answer",
    "FrameStrips",
    "Hit",
    "Query",
    "evaluation_queries",
    "frame_strip",
    "qa_page",
    "retrieval_page",
]

STRIP_FRAMES = 4
STRIP_HEIGHT = 72  # pixels; frames keep their aspect ratio
STRIP_GAP = 2


def frame_strip(
    media: Media,
    *,
    num_frames: int = STRIP_FRAMES,
    height: int = STRIP_HEIGHT,
    start: float | None = None,
    end: float | None = None,
    modality: str | None = None,
    backend: str = "auto",
    name: str | None = None,
) -> str:
    """``num_frames`` frames spread over the clip (an image: itself), side by side at ``height`` pixels,
    as a JPEG ``data:`` URI. Raises :class:`~videovl.data.media.video_io.VideoReadError` when the media
    cannot be decoded."""
    from PIL import Image

    frames = load_clip(
        media, num_frames=num_frames, start=start, end=end, modality=modality, backend=backend, name=name
    )
    tiles = []
    for frame in frames:  # (H, W, 3) uint8 each
        h, w = frame.shape[:2]
        tiles.append(Image.fromarray(frame).resize((max(1, round(w * height / h)), height), Image.BILINEAR))
    strip = Image.new("RGB", (sum(t.width for t in tiles) + STRIP_GAP * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + STRIP_GAP
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class FrameStrips:
    """Frame strips by key (a path or id), each decoded once however many times a page shows it. A
    video that cannot be read gives ``None`` (shown as "unreadable"); :attr:`unreadable` lists them."""

    def __init__(self, *, num_frames: int = STRIP_FRAMES, height: int = STRIP_HEIGHT, backend: str = "auto"):
        self.num_frames, self.height, self.backend = num_frames, height, backend
        self.strips: dict[str, str | None] = {}
        self.errors: dict[str, str] = {}

    @property
    def unreadable(self) -> list[str]:
        return list(self.errors)

    def __call__(
        self,
        key: str,
        media: Media | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        modality: str | None = None,
    ) -> str | None:
        """The strip of ``media`` (default: ``key`` as a path), or None when it cannot be decoded."""
        if key not in self.strips:
            try:
                self.strips[key] = frame_strip(
                    key if media is None else media,
                    num_frames=self.num_frames,
                    height=self.height,
                    start=start,
                    end=end,
                    modality=modality,
                    backend=self.backend,
                    name=key,
                )
            except VideoReadError as err:
                self.strips[key], self.errors[key] = None, str(err)
        return self.strips[key]

    def sample(self, sample: Sample) -> str | None:
        """The strip of a manifest sample: its window, its modality, its bytes when it came from a shard."""
        key = (
            sample.path
            if sample.start is None and sample.end is None
            else f"{sample.path}#{sample.start},{sample.end}"
        )
        return self(key, sample.media, start=sample.start, end=sample.end, modality=sample.modality)


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Hit:
    """One video in a query's result list. ``strip``: a frame strip ``data:`` URI, None: unreadable."""

    rank: int
    score: float
    name: str  # the video's id
    path: str
    caption: str | None = None
    strip: str | None = None
    true: bool = False  # the query's own video (evaluation)


@dataclass(frozen=True)
class Query:
    """A text query and its hits, best first. In an evaluation, ``true_rank`` is where the query's own
    video ranked and ``true_hit`` is that video when it is not among ``hits``."""

    text: str
    hits: list[Hit]
    true_rank: int | None = None
    true_hit: Hit | None = None


@dataclass(frozen=True)
class Answer:
    """A video question: the answer the model gave, the one expected, and whether they match (after
    the protocol's normalisation, decided by the caller)."""

    question: str
    given: str
    expected: str
    correct: bool
    name: str = ""  # the video's id
    strip: str | None = None
    kind: str | None = None  # the question type (motion, yes_no, ...)


def evaluation_queries(
    ranked: RankedQueries, samples: Sequence[Sample], limit: int, strips: FrameStrips
) -> list[Query]:
    """The ``limit`` queries whose own video ranked lowest, worst first, as page records."""

    def hit(video: int, rank: int, score: float, true: bool) -> Hit:
        s = samples[video]
        caption = s.captions[0] if s.captions else None
        return Hit(rank, score, s.id or s.path, s.path, caption, strips.sample(s), true)

    queries = []
    for i in ranked.worst(limit):
        own, rank = int(ranked.videos[i]), int(ranked.ranks[i])
        hits = [
            hit(int(v), r + 1, float(score), int(v) == own)
            for r, (v, score) in enumerate(zip(ranked.hit_videos[i], ranked.hit_scores[i], strict=True))
        ]
        below = None if any(h.true for h in hits) else hit(own, rank, float(ranked.scores[i]), True)
        queries.append(Query(ranked.texts[i], hits, rank, below))
    return queries


# ------------------------------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; font-size: 0.9em; }
dl.summary dt { color: #666; }
dl.summary dd { margin: 0; }
section.item { margin: 1.2em 0; padding-top: 0.6em; border-top: 1px solid #ccc; }
h2 { font-size: 1.1em; margin: 0 0 0.3em 0; }
.note { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; }
td { padding: 3px 8px; vertical-align: middle; border-bottom: 1px solid #eee; }
td.rank, td.score { text-align: right; font-variant-numeric: tabular-nums; }
tr.true { background: #dff5dd; }
tr.true-below td { border-top: 2px dashed #9c9; }
.badge { font-size: 0.8em; padding: 1px 6px; border-radius: 8px; background: #2a7a2a; color: white; }
.badge.bad { background: #a33; }
section.correct { border-left: 4px solid #2a7a2a; padding-left: 0.6em; }
section.incorrect { border-left: 4px solid #a33; padding-left: 0.6em; }
.unreadable { display: inline-block; padding: 0.8em 1em; background: #f3e1e1; color: #a33; }
.caption { color: #555; font-size: 0.9em; }
.path { color: #888; font-size: 0.8em; }
footer { margin-top: 2em; color: #888; font-size: 0.8em; }
"""

# Marks every image shown or not once all have loaded: what a headless browser's DOM dump is checked for.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images), shown = 0;
  images.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute("data-shown", ok ? "yes" : "no");
    if (ok) { shown += 1; }
  });
  document.getElementById("image-check").textContent = shown + " of " + images.length + " images shown";
});
"""


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _document(title: str, summary: dict[str, object], body: Iterable[str]) -> str:
    rows = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in summary.items())
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{_text(title)}</h1>\n<dl class='summary'>{rows}</dl>\n"
        + "\n".join(body)
        + "\n<footer><span id='image-check'>images not checked (scripts off)</span></footer>\n"
        f"<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def _strip(strip: str | None, name: str) -> str:
    if strip is None:
        return f"<span class='unreadable' title='{_text(name)}'>unreadable</span>"
    return f"<img class='strip' src='{_text(strip)}' alt='frames of {_text(name)}'>"


def _hit_row(hit: Hit, css: str) -> str:
    css += " true" if hit.true else ""
    badge = " <span class='badge'>true clip</span>" if hit.true else ""
    caption = f"<div class='caption'>{_text(hit.caption)}</div>" if hit.caption is not None else ""
    return (
        f"<tr class='{css}'><td class='rank'>{hit.rank}</td><td>{_strip(hit.strip, hit.name)}</td>"
        f"<td class='score'>{hit.score:.4f}</td>"
        f"<td><div>{_text(hit.name)}{badge}</div>{caption}<div class='path'>{_text(hit.path)}</div></td></tr>"
    )


def _query_section(query: Query) -> str:
    rows = [_hit_row(h, "hit") for h in query.hits]
    if query.true_hit is not None:
        rows.append(_hit_row(query.true_hit, "true-below"))
    note = ""
    if query.true_rank is not None:
        note = f"<div class='note'>true clip at rank {query.true_rank}</div>"
    return (
        f"<section class='item query'><h2>{_text(query.text)}</h2>{note}"
        "<table><tr><th>rank</th><th>frames</th><th>score</th><th>video</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


def retrieval_page(title: str, queries: Sequence[Query], summary: dict[str, object] | None = None) -> str:
    """A page of text queries, each with its hits in rank order (rank, frame strip, score, id, caption,
    path), the query's own video marked where known, below the list when it ranked lower."""
    return _document(title, dict(summary or {}), [_query_section(q) for q in queries])


def _answer_section(answer: Answer) -> str:
    if answer.correct:
        css, verdict = "correct", "<span class='badge'>correct</span>"
    else:
        css, verdict = "incorrect", "<span class='badge bad'>wrong</span>"
    kind = f" <span class='note'>({_text(answer.kind)})</span>" if answer.kind else ""
    return (
        f"<section class='item answer {css}'><h2>{_text(answer.question)}{kind}</h2>"
        f"<table><tr><td>{_strip(answer.strip, answer.name)}</td><td>"
        f"<div>answer given: <b class='given'>{_text(answer.given)}</b> {verdict}</div>"
        f"<div>answer expected: <b class='expected'>{_text(answer.expected)}</b></div>"
        f"<div class='path'>{_text(answer.name)}</div></td></tr></table></section>"
    )


def qa_page(title: str, answers: Sequence[Answer], summary: dict[str, object] | None = None) -> str:
    """A page of video questions, each with the video's frames, the answer given and the one expected."""
    return _document(title, dict(summary or {}), [_answer_section(a) for a in answers])
