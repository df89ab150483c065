"""HTML pages of search hits, retrieval evaluation and QA answers: the records and the HTML they give, the
tools' --html flags end to end, and what a real headless browser (Chromium) shows of each page."""

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

import videovl
from tests.test_evaluate import _embed_all, _readable, ckpt, manifest  # noqa: F401  (fixtures)
from tests.test_extract import extract, tiny_checkpoint  # noqa: F401  (a fixture)
from tools import evaluate as evaluate_tool
from tools import search as search_tool
from videovl.data.media import video_io
from videovl.data.media.transforms import build_transform
from videovl.data.sources import Sample
from videovl.data.tokenizer import load_tokenizer
from videovl.eval import pages
from videovl.eval.benchmarks import load_manifest
from videovl.eval.extract import read_lines
from videovl.eval.pages import Answer, FrameStrips, Hit, Query, evaluation_queries, frame_strip, qa_page
from videovl.eval.retrieval import RankedQueries
from videovl.eval.runner import Evaluator


class Elements(HTMLParser):
    """Every start tag of a page, as [tag, attributes, its text up to the next tag]."""

    def __init__(self, text: str):
        super().__init__()
        self.items: list[list] = []
        self.open = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.items.append([tag, dict(attrs), ""])
        self.open = True

    def handle_endtag(self, tag):
        self.open = False

    def handle_data(self, data):
        if self.open:
            self.items[-1][2] += data

    def by_id(self, name: str) -> list:
        return next(e for e in self.items if e[1].get("id") == name)

    def find(self, tag: str, css: str | None = None) -> list[list]:
        return [
            e for e in self.items if e[0] == tag and (css is None or css in e[1].get("class", "").split())
        ]


def decoded(uri: str) -> Image.Image:
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


# --------------------------------------------------------------------------------------- records, HTML


def test_frame_strip_puts_frames_side_by_side(test_video):
    image = decoded(frame_strip(test_video, num_frames=3, height=24))
    # 64x48 frames scaled to height 24 are 32 wide; three of them and two gaps
    assert image.size == (3 * 32 + 2 * pages.STRIP_GAP, 24)
    one = decoded(frame_strip(test_video.read_bytes(), num_frames=1, height=48))  # bytes, as from a shard
    assert one.size == (64, 48)


def test_unreadable_videos_are_none_counted_and_decoded_once(test_video, tmp_path, monkeypatch):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"no video here" * 20)
    calls = []
    real = pages.load_clip
    monkeypatch.setattr(pages, "load_clip", lambda *a, **k: calls.append(a) or real(*a, **k))
    strips = FrameStrips(num_frames=2)
    assert strips(str(bad)) is None and strips(str(tmp_path / "absent.mp4")) is None
    assert strips(str(test_video)).startswith("data:image/jpeg")
    assert strips(str(bad)) is None and strips(str(test_video)) is not None
    assert strips.unreadable == [str(bad), str(tmp_path / "absent.mp4")]
    assert "cannot read" in strips.errors[str(bad)]
    assert len(calls) == 3
    windowed = Sample(str(test_video), "video", start=0.0, end=0.5)
    assert strips.sample(windowed) is not None and len(calls) == 4  # a window is another strip


def test_retrieval_page_rows_marks_and_escaping():
    hits = [
        Hit(1, 0.91, "a<1>", "/v/a.mp4", "the digit <b>3</b> & co", "data:image/jpeg;base64,AAAA"),
        Hit(2, 0.52, "b", "/v/b.mp4", None, None, true=True),
    ]
    below = Hit(9, 0.11, "c", "/v/c.mp4", "its own", None, true=True)
    text = pages.retrieval_page(
        "t<itle>",
        [Query("<script>alert(1)</script>", hits, 2), Query("q2", hits[:1], 9, below)],
        {"k": "<v>"},
    )
    page = Elements(text)
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>3</b>" not in text and "the digit &lt;b&gt;3&lt;/b&gt; &amp; co" in text
    assert "&lt;v&gt;" in text and "a&lt;1&gt;" in text
    sections = page.find("section", "query")
    assert [s[2] for s in page.find("h2")] == ["<script>alert(1)</script>", "q2"]
    assert len(page.find("tr", "hit")) == 3 and len(page.find("tr", "true-below")) == 1
    assert len(page.find("tr", "true")) == 2  # the second hit of the first query, the one below the second
    assert len(page.find("span", "unreadable")) == 2 and len(page.find("img")) == 2
    assert len(sections) == 2 and "true clip at rank 9" in text
    assert len(page.find("script")) == 1 and "src" not in page.find("script")[0][1]


def test_evaluation_queries_worst_first_with_the_true_clip(test_video):
    samples = [Sample(str(test_video), "video", [f"caption {i}"], id=f"v{i}") for i in range(4)]
    ranked = RankedQueries(
        texts=["q0", "q1", "q2", "q3"],
        videos=torch.tensor([0, 1, 2, 3]),
        ranks=torch.tensor([1, 4, 2, 2]),
        scores=torch.tensor([0.9, 0.1, 0.5, 0.2]),
        hit_videos=torch.tensor([[0, 1], [0, 2], [1, 2], [0, 3]]),
        hit_scores=torch.tensor([[0.9, 0.3], [0.8, 0.7], [0.6, 0.5], [0.3, 0.2]]),
    )
    queries = evaluation_queries(ranked, samples, 3, FrameStrips(num_frames=1))
    assert [q.text for q in queries] == ["q1", "q2", "q3"]  # ranks 4, 2, 2: ties in query order
    assert [q.true_rank for q in queries] == [4, 2, 2]
    q1, q2, q3 = queries
    assert [h.name for h in q1.hits] == ["v0", "v2"] and not any(h.true for h in q1.hits)
    assert [h.rank for h in q1.hits] == [1, 2]
    assert q1.true_hit == Hit(
        4, pytest.approx(0.1), "v1", str(test_video), "caption 1", q1.hits[0].strip, True
    )
    assert [h.true for h in q2.hits] == [False, True] and q2.true_hit is None
    assert q2.hits[1].caption == "caption 2" and q2.hits[1].score == pytest.approx(0.5)
    assert [h.true for h in q3.hits] == [False, True] and q3.true_hit is None


def test_qa_page():
    answers = [
        Answer("which digit?", "3", "3", True, "v0", None, "digit"),
        Answer("does it move <left>?", "yes", "no", False, "v1", "data:image/jpeg;base64,AAAA"),
    ]
    page = Elements(qa_page("qa", answers, {"qa/generate/acc": "50.00"}))
    assert len(page.find("section", "answer")) == 2
    assert [s[2] for s in page.find("b", "given")] == ["3", "yes"]
    assert [s[2] for s in page.find("b", "expected")] == ["3", "no"]
    assert len(page.find("section", "correct")) == 1 and len(page.find("section", "incorrect")) == 1
    assert page.find("h2")[1][2] == "does it move <left>?"


def test_retrieval_report_against_a_full_matrix(ckpt, manifest):  # noqa: F811
    model, cfg = videovl.load_checkpoint(ckpt)
    model.eval()
    transform = build_transform(cfg.data, train=False)
    evaluator = Evaluator(model, load_tokenizer(cfg.model.text), transform, torch.device("cpu"), num_frames=4,
                          batch_size=6, chunk_size=5, show_progress=False)  # fmt: skip
    data = load_manifest(manifest)  # 16 readable clips first, then a corrupt file
    metrics, ranked = evaluator.retrieval_report(data, top_k=3)
    assert metrics == evaluator.retrieval(data)

    samples = _readable(manifest)
    _, tokenizer, videos = _embed_all(ckpt, samples)
    texts = [c for s in samples for c in s.captions]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        sim = model.encode_text(tokens["input_ids"], tokens["attention_mask"]).sentence @ videos.clip.t()
    gt = torch.tensor([i for i, s in enumerate(samples) for _ in s.captions])
    own = sim[torch.arange(len(gt)), gt]
    assert ranked.texts == texts and ranked.videos.tolist() == gt.tolist()
    assert ranked.ranks.tolist() == (1 + (sim > own[:, None]).sum(1)).tolist()
    torch.testing.assert_close(ranked.scores, own, atol=1e-5, rtol=0)
    top = sim.topk(3, 1)
    assert ranked.hit_videos.tolist() == top.indices.tolist()
    torch.testing.assert_close(ranked.hit_scores, top.values, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        evaluator.retrieval_report(data, top_k=0)


# ----------------------------------------------------------------------------------------------- tools


@pytest.fixture(scope="module")
def search_page(tiny_checkpoint, tiny_demo, tmp_path_factory) -> tuple[Path, dict]:  # noqa: F811
    """A search page over the demo test clips, the best hit's file made unreadable after extraction."""
    root = tmp_path_factory.mktemp("pages")
    emb = root / "emb"
    args = ["--manifest", str(tiny_demo / "video_test.jsonl"), "--workers", "0", "--num-frames", "4"]
    extract(tiny_checkpoint, emb, *args)
    query = ["--index", str(emb), "--text", "the digit <3> moves left, then up", "--top-k", "5"]
    best = search_tool.main(query)["results"][0]
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00" * 512)
    paths = read_lines(emb / "paths.txt")
    paths[read_lines(emb / "ids.txt").index(best["id"])] = str(broken)
    (emb / "paths.txt").write_text("".join(p + "\n" for p in paths))
    page = root / "search.html"
    return page, search_tool.main([*query, "--html", str(page)])


def test_search_html(search_page):
    page, result = search_page
    text = page.read_text()
    dom = Elements(text)
    assert result["html_unreadable"] == 1
    assert [e[2] for e in dom.find("h2")] == ["the digit <3> moves left, then up"]
    rows = dom.find("tr", "hit")
    assert len(rows) == 5 and not dom.find("tr", "true")
    assert len(dom.find("span", "unreadable")) == 1 and len(dom.find("img")) == 4
    assert "broken.mp4" in text and all(r["id"] in text for r in result["results"])
    captions = [e[2] for e in dom.find("div", "caption")]
    assert len(captions) == 5 and all("digit" in c for c in captions)  # every demo clip has one
    assert f"{result['results'][1]['score']:.4f}" in text
    assert "http" not in text and "src='data:image/jpeg;base64," in text  # nothing from elsewhere


@pytest.fixture(scope="module")
def evaluation_page(ckpt, manifest, tmp_path_factory):  # noqa: F811
    """An evaluation page of the 3 worst queries, one hit's video unreadable when the page is made."""
    page = tmp_path_factory.mktemp("pages") / "sub" / "retrieval.html"
    args = [
        "--checkpoint",
        str(ckpt),
        "--num-workers",
        "0",
        "--task",
        "retrieval",
        "--manifest",
        str(manifest),
    ]
    args += ["--rerank-k", "0", "--html", str(page), "--html-queries", "3", "--html-hits", "4"]
    victim = []

    def load_clip(media, **kwargs):  # the first video the page decodes cannot be read
        if not victim:
            victim.append(kwargs["name"])
        if kwargs["name"] == victim[0]:
            raise video_io.VideoReadError(kwargs["name"], {"file": "gone since the evaluation"})
        return video_io.load_clip(media, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(pages, "load_clip", load_clip)
        metrics = evaluate_tool.main(args)
    return page, metrics


def test_evaluation_html(evaluation_page):
    page, metrics = evaluation_page
    dom = Elements(page.read_text())
    sections = dom.find("section", "query")
    assert len(sections) == 3
    ranks = [int(e[2].split()[-1]) for e in dom.find("div", "note")]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > 1  # worst first
    assert len(dom.find("tr", "hit")) == 3 * 4
    # every query's own clip is marked: among its hits, or on a row of its own below them
    assert len(dom.find("tr", "true")) == 3
    assert len(dom.find("tr", "true-below")) == sum(r > 4 for r in ranks)
    assert len(dom.find("span", "unreadable")) >= 1
    assert metrics["data/queries"] > 3 and "t2v/R@1" in metrics


def test_html_flags_are_checked():
    base = ["--checkpoint", "x", "--manifest", "m", "--html", "p.html"]
    with pytest.raises(SystemExit):
        evaluate_tool.parse_args([*base, "--task", "action"])
    for flag in ("--html-queries", "--html-hits"):
        with pytest.raises(SystemExit):
            evaluate_tool.parse_args([*base, "--task", "retrieval", flag, "0"])


# --------------------------------------------------------------------------------------------- browser


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return found


def browser_dom(page: Path, profile: Path) -> Elements:
    """The page's DOM after Chromium loaded it and its script ran."""
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    args += ["--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=True)
    return Elements(done.stdout)


def all_images_shown(dom: Elements) -> int:
    images = dom.find("img")
    assert images and all(e[1].get("data-shown") == "yes" for e in images)
    assert dom.by_id("image-check")[2] == f"{len(images)} of {len(images)} images shown"
    return len(images)


def test_a_browser_shows_the_search_page(search_page, tmp_path):
    dom = browser_dom(search_page[0], tmp_path / "profile")
    assert all_images_shown(dom) == 4
    assert len(dom.find("tr", "hit")) == 5
    assert [e[2] for e in dom.find("span", "unreadable")] == ["unreadable"]


def test_a_browser_shows_the_evaluation_page(evaluation_page, tmp_path):
    dom = browser_dom(evaluation_page[0], tmp_path / "profile")
    unreadable = len(dom.find("span", "unreadable"))
    assert all_images_shown(dom) == len(dom.find("tr")) - 3 - unreadable  # 3 header rows
    assert len(dom.find("tr", "hit")) == 12 and len(dom.find("tr", "true")) == 3
    assert unreadable >= 1


def test_a_browser_shows_a_qa_page(test_video, tmp_path):
    strip = frame_strip(test_video)
    answers = [
        Answer("which digit?", "3", "3", True, "v0", strip),
        Answer("up first?", "yes", "no", False, "v1"),
    ]
    page = tmp_path / "qa.html"
    page.write_text(qa_page("qa", answers))
    dom = browser_dom(page, tmp_path / "profile")
    assert all_images_shown(dom) == 1
    assert len(dom.find("section", "answer")) == 2 and len(dom.find("span", "unreadable")) == 1
