"""Datasets over manifest samples: decoded, sampled and transformed clips with their text and label.

Items are dicts with exactly the keys ``pixels`` (C, T, H, W) float (T = 1 for images), ``text`` (str),
``label`` (int id, -1 if none), ``index`` (int), ``valid`` (bool) and ``bad`` (list of unreadable paths),
and ``answer`` (str) for question answering (:class:`QADataset`, whose ``text`` is the question);
:mod:`videovl.data.collate` documents the batch these make.

Labels become text through prompts ("a video of a person {label}.", "a photo of a {label}.") so labelled
data joins the same contrastive loss as captions (OmniVL's unified contrastive learning), and each item
keeps its label id so same-label pairs can count as positives.

An unreadable file never stops a run: in training it is logged once per process and replaced by another
sample chosen deterministically, in evaluation it yields zero pixels with ``valid=False``; either way its
path travels in ``bad`` so the loop can count it (counters in worker processes would be lost).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from videovl.data.answers import normalize_answer
from videovl.data.media.sampling import SAMPLINGS
from videovl.data.media.video_io import BACKENDS, VideoReadError, load_clip
from videovl.data.sources import QASample, Sample, labels

__all__ = [
    "DEFAULT_PROMPTS",
    "TEXT_MODES",
    "build_label_map",
    "Draw",
    "ClipDataset",
    "DrawConcat",
    "MultiViewDataset",
    "QADataset",
]

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = {"video": "a video of a person {label}.", "image": "a photo of a {label}."}
TEXT_MODES = ("caption", "label", "none")


class Draw(NamedTuple):
    """One training draw of a dataset row: the row, the sampler step that drew it and its position in that
    step's global (all-process) batch. The draw, not the row, seeds the item's random view (caption, frame
    offsets, crop), so every draw of a row is a fresh view and a batch is still a pure function of its step
    (exact resume, any number of loader workers)."""

    row: int
    step: int
    slot: int


def build_label_map(*sample_sets: Iterable[Sample]) -> dict[str, int]:
    """Label name -> id over one or more sets of samples, ids in sorted name order (stable whatever the
    sample order)."""
    names = set().union(*(set(labels(samples)) for samples in sample_sets)) - {None}
    return {name: i for i, name in enumerate(sorted(names))}


class ClipDataset(Dataset):
    """Clips, text and labels from manifest samples; see the module docstring for items and robustness.

    ``transform`` is called as ``transform(frames, rng=rng, crop=crop)`` on uint8 (T, H, W, 3) frames
    (a :class:`~videovl.data.media.transforms.ClipTransform`); it needs a ``size`` attribute for evaluation's
    placeholder pixels. ``num_threads`` is the decoder's (default: 1 in workers, auto elsewhere).
    Indexed by a :class:`Draw` (training samplers hand those out), an item's randomness (frame offsets,
    crop, caption choice) is seeded by ``(seed, step, slot, row)``: a fresh view each draw, the same in any
    worker. Indexed by a plain row number it is seeded by ``(seed, row)`` (one fixed view: evaluation, and
    looking at a sample). ``samples`` may be empty for a dataset that only decodes samples handed to
    :meth:`decode` (shard members).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        num_frames: int,
        transform: Callable[..., torch.Tensor],
        train: bool,
        backend: str = "auto",
        text: str = "caption",
        prompt: str | None = None,
        label_to_id: dict[str, int] | None = None,
        index_offset: int = 0,
        seed: int = 0,
        max_retries: int = 10,
        sampling: str = "segment",
        stride: int = 4,
        num_threads: int | None = None,
    ):
        if text not in TEXT_MODES:
            raise ValueError(f"text={text!r} is not one of {TEXT_MODES}")
        if prompt is not None and "{label}" not in prompt:
            raise ValueError(
                f"prompt {prompt!r} has no '{{label}}' placeholder, e.g. 'a video of {{label}}.'"
            )
        sample_labels = labels(samples) if text == "label" or label_to_id is not None else None
        if text == "label":
            unlabelled = np.flatnonzero(sample_labels == None)  # noqa: E711 (element-wise)
            if unlabelled.size:
                raise ValueError(
                    f"text='label' but {unlabelled.size} samples have no label "
                    f"(first: {samples[int(unlabelled[0])].path})"
                )
        if label_to_id is not None:  # a mapping that names its labels, or one that knows any (HashedLabels)
            unknown = sorted({lab for lab in set(sample_labels) - {None} if lab not in label_to_id})
            if unknown:
                raise ValueError(
                    f"{len(unknown)} labels are not in label_to_id (first: {unknown[:3]}); "
                    "build the map from all splits with build_label_map"
                )
        if backend not in BACKENDS or sampling not in SAMPLINGS:
            raise ValueError(
                f"backend={backend!r}, sampling={sampling!r}: expected one of {BACKENDS}, {SAMPLINGS}"
            )
        self.samples, self.num_frames, self.transform, self.train = samples, num_frames, transform, train
        self.backend, self.text, self.prompt, self.label_to_id = backend, text, prompt, label_to_id
        self.index_offset, self.seed, self.max_retries = index_offset, seed, max_retries
        self.sampling, self.stride, self.num_threads = sampling, stride, num_threads
        self._known_bad: set[str] = set()  # per process, so each bad file is logged once

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, key: tuple[int, ...], purpose: int, *more: int) -> np.random.Generator:
        """The generator of one random choice (``purpose``: 0 caption, 1 frames, 2 crop, 3 replacement) of
        the view ``key``: ``(step, slot, row)`` for a draw, ``(row,)`` for a plain index."""
        return np.random.default_rng([self.seed, *key, purpose, *more])

    def _text(self, sample: Sample, rng: np.random.Generator) -> str:
        if self.text == "label":
            return (self.prompt or DEFAULT_PROMPTS[sample.modality]).format(label=sample.label)
        if self.text == "none" or not sample.captions:
            return ""
        return sample.captions[int(rng.integers(len(sample.captions)))] if self.train else sample.captions[0]

    def texts(self) -> set[str]:
        """Every text a draw of this dataset can carry: each caption of each row, or each label's prompt."""
        if self.text == "label":
            return {self._text(s, None) for s in self.samples}  # type: ignore[arg-type]
        if self.text == "none":
            return {""}
        out: set[str] = set()
        for sample in self.samples:
            out.update(sample.captions or [""])
        return out

    def _frames(self, i: int, view: int, key: tuple[int, ...]) -> np.ndarray:
        """Decoded uint8 frames of sample ``i`` for the view ``key``; ``view`` is a test view for
        MultiViewDataset."""
        return self._load(self.samples[i], key)

    def _load(self, sample: Sample, key: tuple[int, ...]) -> np.ndarray:
        return load_clip(
            sample.media,
            modality=sample.modality,
            name=sample.path,
            num_frames=self.num_frames,
            train=self.train,
            rng=self._rng(key, 1),
            start=sample.start,
            end=sample.end,
            backend=self.backend,
            sampling=self.sampling,
            stride=self.stride,
            num_threads=self.num_threads,
        )

    def _item(self, i: int, key: tuple[int, ...], view: int = 0, crop: int | None = None) -> dict[str, Any]:
        return self._make(self.samples[i], self._frames(i, view, key), key, i + self.index_offset, crop)

    def _make(
        self, sample: Sample, frames: np.ndarray, key: tuple[int, ...], index: int, crop: int | None = None
    ) -> dict[str, Any]:
        rng = self._rng(key, 2)
        pixels = (
            self.transform(frames, rng=rng) if crop is None else self.transform(frames, rng=rng, crop=crop)
        )
        return {
            "pixels": pixels,
            "text": self._text(sample, self._rng(key, 0)),
            "label": self._label(sample),
            "index": index,
            "valid": True,
        }

    def decode(self, sample: Sample, key: tuple[int, ...], index: int) -> dict[str, Any]:
        """The item of a sample that is not in ``samples`` (a shard member), its randomness seeded by
        ``(seed, *key)`` (the stream passes its draw's step, slot and sample index); raises VideoReadError if
        it cannot be read (the caller replaces it)."""
        return self._make(sample, self._load(sample, key), key, index)

    def _label(self, sample: Sample) -> int:
        return (
            self.label_to_id[sample.label]
            if self.label_to_id is not None and sample.label is not None
            else -1
        )

    def _get(self, i: int, key: tuple[int, ...], view: int = 0, crop: int | None = None) -> dict[str, Any]:
        bad: list[str] = []
        j = i
        for attempt in range(self.max_retries + 1):
            path = self.samples[j].path
            if path not in self._known_bad:  # a file that failed once is not decoded again
                try:
                    return self._item(j, key, view, crop) | {"bad": bad}
                except VideoReadError as e:
                    self._known_bad.add(path)
                    log.warning("unreadable sample (%s): %s", "replaced" if self.train else "reported", e)
            bad.append(path)
            if not self.train:
                return self._placeholder(i) | {"bad": bad}
            j = int(self._rng(key, 3, attempt).integers(len(self.samples)))  # deterministic replacement
        raise RuntimeError(
            f"sample {i} and {self.max_retries} replacements were unreadable ({bad[:5]}); "
            "check the manifest with tools/scan_videos.py"
        )

    def _placeholder(self, i: int) -> dict[str, Any]:
        size = getattr(self.transform, "size", None)
        if size is None:
            raise RuntimeError("evaluation needs a transform with a 'size' to build placeholder pixels")
        sample = self.samples[i]
        return {
            "pixels": torch.zeros(3, self.num_frames if sample.is_video else 1, size, size),
            "text": self._text(sample, self._rng((i,), 0)),
            "label": self._label(sample),
            "index": i + self.index_offset,
            "valid": False,
        }

    def __getitem__(self, key: int | Draw) -> dict[str, Any]:
        i = int(key.row if isinstance(key, Draw) else key)
        if not 0 <= i < len(self.samples):
            raise IndexError(f"index {i} out of range for a dataset of {len(self.samples)} samples")
        return self._get(i, (key.step, key.slot, i) if isinstance(key, Draw) else (i,))


class MultiViewDataset(ClipDataset):
    """Test-time views: each sample becomes ``temporal_views x spatial_views`` consecutive items.

    Item ``k`` is view ``k % V`` of sample ``k // V`` (V = temporal x spatial; spatial crops vary
    fastest), with the sample's ``index``, so scores average per video by grouping on ``index``. Spatial
    views use the transform's three crops (``spatial_views`` must be 1 or 3). Frames of the last temporal
    view are kept, so the crops of one clip decode it once when they reach the same worker.
    """

    def __init__(self, samples: list[Sample], *, temporal_views: int = 4, spatial_views: int = 3, **kwargs):
        if spatial_views not in (1, 3):
            raise ValueError(f"spatial_views must be 1 (centre crop) or 3 (three-crop), got {spatial_views}")
        if temporal_views < 1:
            raise ValueError(f"temporal_views must be >= 1, got {temporal_views}")
        super().__init__(samples, train=False, **kwargs)
        self.temporal_views, self.spatial_views = temporal_views, spatial_views
        self._cache: tuple[tuple[int, int], np.ndarray] | None = None

    @property
    def views(self) -> int:
        return self.temporal_views * self.spatial_views

    def __len__(self) -> int:
        return len(self.samples) * self.views

    def _frames(self, i: int, view: int, key: tuple[int, ...]) -> np.ndarray:
        cached = (i, view)  # test views are not random: ``key`` plays no part
        if self._cache is None or self._cache[0] != cached:
            sample = self.samples[i]
            frames = load_clip(
                sample.media,
                modality=sample.modality,
                name=sample.path,
                num_frames=self.num_frames,
                start=sample.start,
                end=sample.end,
                backend=self.backend,
                sampling=self.sampling,
                stride=self.stride,
                num_threads=self.num_threads,
                num_views=self.temporal_views,
                view=view,
            )
            self._cache = (cached, frames)
        return self._cache[1]

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not 0 <= k < len(self):
            raise IndexError(f"index {k} out of range for {len(self.samples)} samples x {self.views} views")
        i, v = divmod(int(k), self.views)
        crop = None if self.spatial_views == 1 else v % 3
        return self._get(i, (i,), view=v // self.spatial_views, crop=crop)


class QADataset(ClipDataset):
    """One item per question: its video's clip, the question as ``text`` and, beside the usual keys,
    ``answer`` (the annotated answer, normalised: what training targets and scoring compares). Indexing
    and robustness are :class:`ClipDataset`'s (a training draw whose video is unreadable takes another
    question, answer and all). Evaluation reads each distinct clip once through a plain
    :class:`ClipDataset` instead (:meth:`videovl.eval.runner.Evaluator.qa`)."""

    def __init__(self, questions: Sequence[QASample], **kwargs: Any):
        samples = [Sample(q.video, "video", [q.question], id=q.question_id) for q in questions]
        super().__init__(samples, text="caption", **kwargs)
        self.answers = [normalize_answer(q.answer) for q in questions]

    def _item(self, i: int, key: tuple[int, ...], view: int = 0, crop: int | None = None) -> dict[str, Any]:
        return super()._item(i, key, view, crop) | {"answer": self.answers[i]}

    def _placeholder(self, i: int) -> dict[str, Any]:
        return super()._placeholder(i) | {"answer": self.answers[i]}


class DrawConcat(Dataset):
    """Several datasets as one, rows numbered in order (as ``ConcatDataset``), indexed by a :class:`Draw`
    of a global row or by a plain row number; ``datasets`` keeps the parts."""

    def __init__(self, datasets: Sequence[ClipDataset]):
        if not datasets:
            raise ValueError("DrawConcat needs at least one dataset")
        self.datasets = list(datasets)
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in self.datasets])]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key: int | Draw) -> dict[str, Any]:
        row = int(key.row if isinstance(key, Draw) else key)
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} samples")
        part = bisect_right(self.offsets, row) - 1
        local = row - self.offsets[part]
        return self.datasets[part][key._replace(row=local) if isinstance(key, Draw) else local]
