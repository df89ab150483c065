"""Batching dataset items; the batch schema is documented here and only here.

A batch from :class:`Collator` (B items of a :class:`~videovl.data.datasets.ClipDataset`)::

    pixels          float (B, C, T, H, W)   normalised clips; T = 1 for images (lift to (B, C, H, W) once)
    input_ids       long  (B, L)            tokenized "text", padded to the longest (absent if tokenizer=None)
    attention_mask  long  (B, L)            1 for real tokens (absent if tokenizer=None)
    labels          long  (B,)              label id, -1 when the sample has no label
    index           long  (B,)              dataset row (+ index_offset) of each item, for gathering
    valid           bool  (B,)              False for evaluation placeholders of unreadable files
    text_hash       long  (B,)              crc32 of the lower-cased stripped text: equal captions (or
                                            prompts of the same label) share a hash and can be positives
    text            list[str] (B)           the raw text
    bad             list[str]               every unreadable path met while building the batch (flat)
    stream          dict                    only from shard streams: {"lane", "positions": {part: n}},
                                            where the lane's streams stand after this batch

Question-answering items (:class:`~videovl.data.datasets.QADataset`, whose ``text`` is the question) add::

    answer          list[str] (B)           the normalised answers
    answer_ids      long  (B, La)           tokenized answers, [CLS] answer [SEP] (absent if tokenizer=None)
    answer_mask     long  (B, La)           1 for real tokens (absent if tokenizer=None)
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Collator", "text_hash"]


def text_hash(text: str) -> int:
    """Stable across processes and runs (unlike ``hash``)."""
    return zlib.crc32(text.strip().lower().encode("utf-8"))


class Collator:
    """Stack items and tokenize their text; ``tokenizer=None`` skips tokenization (video-only eval)."""

    def __init__(self, tokenizer: Any = None, max_length: int = 32):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        shapes = {tuple(x["pixels"].shape) for x in items}
        if len(shapes) > 1:
            raise ValueError(
                f"items of one batch must share a pixel shape (C, T, H, W), got {sorted(shapes)}"
            )
        texts = [x["text"] for x in items]
        batch = {
            "pixels": torch.stack([x["pixels"] for x in items]),  # (B, C, T, H, W)
            "labels": torch.tensor([x["label"] for x in items], dtype=torch.long),
            "index": torch.tensor([x["index"] for x in items], dtype=torch.long),
            "valid": torch.tensor([x["valid"] for x in items], dtype=torch.bool),
            "text_hash": torch.tensor([text_hash(t) for t in texts], dtype=torch.long),
            "text": texts,
            "bad": [path for x in items for path in x["bad"]],
        }
        streams = [x["stream"] for x in items if "stream" in x]
        if streams:
            batch["stream"] = streams[0]
        answered = ["answer" in x for x in items]
        if any(answered) and not all(answered):
            raise ValueError("a batch mixes question-answering items with others; keep them in apart sources")
        if all(answered):
            batch["answer"] = [x["answer"] for x in items]
        if self.tokenizer is not None:
            tokens = self.tokenize(texts)
            batch["input_ids"], batch["attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
            if "answer" in batch:
                tokens = self.tokenize(batch["answer"])
                batch["answer_ids"], batch["answer_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return batch

    def tokenize(self, texts: list[str]):
        """``texts`` as the batches carry them: padded to the longest, truncated at ``max_length``."""
        return self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
