"""Evaluating a model on an :class:`~videovl.eval.benchmarks.EvalSet`: retrieval, action recognition,
captioning. ``tools/evaluate.py`` is the command line over this module.

Videos are embedded once (:func:`~videovl.eval.embed.map_videos`), sharded over processes when there
are several (``torch.distributed`` initialised, e.g. under ``accelerate launch``) and gathered back in
dataset order; every process then holds the same embeddings and computes the same metrics. Text is small
and embedded whole on each process. Training validation, fine-tuning evaluation and ``tools/evaluate.py``
all score through this class, so a validation figure in a training log is what ``tools/evaluate.py``
prints for that checkpoint (in the same precision).

Unreadable videos never stop a run: the dataset yields a placeholder flagged invalid, and the video (with
its captions) is left out of the metrics and counted under ``data/unreadable``.

Retrieval reports each scoring apart, under its own prefix, so inference tricks never hide in the plain
numbers: ``t2v/...`` the dual encoder's global similarity (always), ``frame/...`` sentence-to-frame
matching (clips of more than one temporal position), ``dsl/...`` dual softmax (it looks at the whole
query set), ``rerank/...`` the alignment decoder re-ranking each query's top-``k`` global candidates.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from videovl.data.answers import normalize_answer
from videovl.data.collate import Collator
from videovl.data.datasets import DEFAULT_PROMPTS, ClipDataset, MultiViewDataset
from videovl.data.sources import Sample
from videovl.data.tokenizer import decode
from videovl.distributed import get_rank, get_world_size
from videovl.eval.answering import questions_by_clip, rank_answers
from videovl.eval.benchmarks import EvalSet, QASet
from videovl.eval.captioning import score_captions
from videovl.eval.classification import average_views, classification_metrics, order_pair_accuracy
from videovl.eval.embed import BatchFn, embed_texts, embed_videos, map_videos, tokenized_batches
from videovl.eval.qa import QA_PROTOCOLS, qa_accuracy
from videovl.eval.retrieval import (
    RankedQueries,
    rank_metrics,
    rerank_topk,
    retrieval_metrics,
    retrieval_ranks,
    top_hits,
)
from videovl.losses.caption import caption_loss
from videovl.models.action import class_embeddings_from_prompts, zero_shot_logits
from videovl.models.matching import frame_similarity
from videovl.models.model import VideoEmbedding

__all__ = ["Evaluator", "ACTION_MODES", "format_metrics"]

log = logging.getLogger(__name__)

ACTION_MODES = ("zero-shot", "head")
_RETRIEVAL = {
    "": "dual encoder, global",
    "frame/": "dual encoder, frame-level",
    "dsl/": "dual softmax (uses all queries)",
    "rerank/": "alignment re-rank of top-k",
}
_RANK_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def _write_predictions(path: str | Path, samples: list, probs: Tensor, classes: Sequence[str]) -> None:
    top = probs.topk(min(5, len(classes)), dim=1)
    rows = [
        {
            "id": sample.id,
            "label": sample.label,
            "prediction": classes[int(ids[0])],
            "top5": [[classes[int(i)], round(float(p), 6)] for p, i in zip(values, ids, strict=True)],
        }
        for sample, values, ids in zip(samples, top.values, top.indices, strict=True)
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


@dataclass
class Evaluator:
    """A model with what it needs to read an evaluation set: tokenizer, test transform, device, and the
    clip and batching settings (``text_length``: tokens per caption; ``chunk_size``: text queries per
    similarity block). ``dtype``: autocast to it (None: float32, as ``tools/evaluate.py`` runs).
    ``rank`` / ``world_size``: this process's place in the process group that shares the videos (None:
    the live ``torch.distributed`` group, or one process without one)."""

    model: Any  # a VideoLanguageModel in eval mode, on ``device``
    tokenizer: Any
    transform: Callable
    device: torch.device
    num_frames: int = 8
    batch_size: int = 32
    num_workers: int = 0
    backend: str = "auto"
    text_length: int = 32
    chunk_size: int = 4096
    dtype: torch.dtype | None = None
    rank: int | None = None
    world_size: int | None = None
    show_progress: bool = True  # off inside training, whose own bar is on screen

    def __post_init__(self) -> None:
        self.rank = get_rank() if self.rank is None else self.rank
        self.world_size = get_world_size() if self.world_size is None else self.world_size

    # ------------------------------------------------------------------------------------------ plumbing

    def _clips(self, samples: list, text: str = "none") -> ClipDataset:
        return ClipDataset(samples, train=False, **(self._clip_args() | {"text": text}))

    def _clip_args(self) -> dict[str, Any]:
        return {
            "num_frames": self.num_frames,
            "transform": self.transform,
            "backend": self.backend,
            "text": "none",
        }

    def _map_args(self, desc: str) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "device": self.device,
            "dtype": self.dtype,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "desc": desc if self.show_progress else None,
        }

    def _map_videos(self, dataset: Dataset, fn: BatchFn, desc: str, **kwargs: Any) -> dict[str, Tensor]:
        return map_videos(dataset, fn, **self._map_args(desc), **kwargs)

    @torch.no_grad()
    def _encode_texts(self, texts: Sequence[str], keep_hidden: bool = False):
        """``(sentence (N, D) on the device, hidden, mask)``; with ``keep_hidden`` the text encoder's states
        (N, text_length, W) and mask come along on the CPU, padded to the length the alignment decoder was
        trained with; otherwise they are None."""
        if not keep_hidden:
            batches = tokenized_batches(self.tokenizer, texts, self.batch_size, self.text_length)
            return embed_texts(self.model, batches, self.device, self.dtype), None, None
        sentences, hidden, mask = [], [], []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding="max_length",
                truncation=True,
                max_length=self.text_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                out = self.model.encode_text(tokens["input_ids"], tokens["attention_mask"])
            sentences.append(out.sentence.float())
            hidden.append(out.hidden.float().cpu())
            mask.append(out.mask.cpu())
        return torch.cat(sentences), torch.cat(hidden), torch.cat(mask)

    def _counts(self, data: EvalSet, valid: Tensor) -> dict[str, float]:
        bad = [data.samples[i].path for i in (~valid).nonzero().squeeze(1).tolist()]
        if bad and self.rank == 0:
            log.warning("%d unreadable videos left out of the metrics, e.g. %s", len(bad), bad[:5])
        return {"data/missing": float(len(data.missing)), "data/unreadable": float(len(bad))}

    # ----------------------------------------------------------------------------------------- retrieval

    def retrieval(
        self, data: EvalSet, *, dual_softmax: bool = False, rerank_k: int = 0, rerank_dual_weight: float = 0.0
    ) -> dict[str, float]:
        """Every caption is a query against every readable video (see the module doc for the keys).

        Re-ranking scores a candidate by the alignment decoder's match log-odds plus ``rerank_dual_weight``
        times the dual encoder's logit (``logit_scale * cosine``): 0 ranks by the decoder alone.

        Re-ranking keeps every video's visual tokens on the CPU: about 5 GB for 1000 ViT-B/16 clips of
        8 frames (tokens x width x 4 bytes each)."""
        return self._retrieval(data, 0, dual_softmax, rerank_k, rerank_dual_weight)[0]

    def retrieval_report(
        self,
        data: EvalSet,
        *,
        top_k: int = 5,
        dual_softmax: bool = False,
        rerank_k: int = 0,
        rerank_dual_weight: float = 0.0,
    ) -> tuple[dict[str, float], RankedQueries]:
        """:meth:`retrieval`'s metrics, and every query's ``top_k`` videos by the plain dual encoder with
        its own video's rank and score (video numbers index ``data.samples``), to show on a page."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        metrics, ranked = self._retrieval(data, top_k, dual_softmax, rerank_k, rerank_dual_weight)
        assert ranked is not None
        return metrics, ranked

    @torch.no_grad()
    def _retrieval(
        self, data: EvalSet, top_k: int, dual_softmax: bool, rerank_k: int, rerank_dual_weight: float
    ) -> tuple[dict[str, float], RankedQueries | None]:
        model = self.model
        if rerank_k > 0 and model.alignment is None:
            raise ValueError(f"rerank_k={rerank_k} needs an alignment decoder, and this model has none")

        dataset = self._clips(data.samples)
        videos = embed_videos(model, dataset, tokens=rerank_k > 0, **self._map_args("retrieval: videos"))
        kept = videos["valid"].nonzero().squeeze(1).tolist()
        captions = [(j, c) for j, i in enumerate(kept) for c in data.samples[i].captions]
        if not captions:
            raise ValueError(f"{data.name}: no readable video has a caption, so there is no query to rank")
        text_to_video = torch.tensor([j for j, _ in captions], device=self.device)
        text, hidden, mask = self._encode_texts([c for _, c in captions], keep_hidden=rerank_k > 0)
        clip, frames = videos["clip"][kept].to(self.device), videos["frames"][kept].to(self.device)
        chunk = self.chunk_size
        t2v, v2t = retrieval_ranks(text, clip, text_to_video, chunk_size=chunk)
        metrics = rank_metrics(t2v, "t2v") | rank_metrics(v2t, "v2t")
        ranked = None
        if top_k > 0:
            sample_of = torch.tensor(kept)  # row of clip -> index into data.samples
            hit_scores, hit_rows = top_hits(text, clip, top_k, chunk_size=chunk)
            own = (text * clip[text_to_video]).sum(-1).float().cpu()
            own_video = sample_of[text_to_video.cpu()]
            texts = [c for _, c in captions]
            ranked = RankedQueries(texts, own_video, t2v, own, sample_of[hit_rows], hit_scores)
        if frames.shape[1] > 1:
            agg, temp = model.cfg.frame_agg, model.cfg.frame_agg_temperature
            # a block is (queries, videos, time): fewer queries per block keep it the size of a global one
            frame_scores = lambda a, b: frame_similarity(text[a:b], frames, agg, temp)
            step = max(1, chunk // frames.shape[1])
            metrics |= _prefixed(
                "frame/", retrieval_metrics(text, None, text_to_video, scores=frame_scores, chunk_size=step)
            )
        if dual_softmax:
            metrics |= _prefixed(
                "dsl/", retrieval_metrics(text, clip, text_to_video, chunk_size=chunk, dual_softmax=True)
            )
        if rerank_k:
            tokens, dev = videos["tokens"][kept], self.device

            scale = float(model.scale())

            def pair_scores(t: Tensor, v: Tensor) -> Tensor:  # stored rows go to the device a slice at a time
                slices = zip(t.split(256), v.split(256), strict=True)
                scores = [
                    model.match_score(hidden[a].to(dev), mask[a].to(dev), tokens[b].to(dev)).float()
                    + rerank_dual_weight * scale * (text[a.to(dev)] * clip[b.to(dev)]).sum(-1).float()
                    for a, b in slices
                ]
                return torch.cat(scores).cpu()

            reranked = rerank_topk(text, clip, text_to_video, pair_scores, k=rerank_k, chunk_size=chunk)
            metrics |= _prefixed("rerank/", reranked) | {"rerank/k": float(rerank_k)}
            metrics["rerank/dual_weight"] = float(rerank_dual_weight)
        counts = {"data/videos": float(len(kept)), "data/queries": float(len(captions))}
        return metrics | counts | self._counts(data, videos["valid"]), ranked

    # ------------------------------------------------------------------------------------------- action

    @torch.no_grad()
    def class_embeddings(self, classes: Sequence[str], prompts: Sequence[str]) -> Tensor:
        """(K, D) zero-shot class embeddings: every prompt filled with each class name, ensembled."""
        for p in prompts:
            if "{label}" not in p:
                raise ValueError(
                    f"prompt {p!r} has no '{{label}}' placeholder, e.g. {DEFAULT_PROMPTS['video']!r}"
                )
        texts = [p.format(label=c) for c in classes for p in prompts]
        emb = self._encode_texts(texts)[0]  # (K * P, D), prompts of one class consecutive
        return class_embeddings_from_prompts(emb.unflatten(0, (len(classes), len(prompts))))

    @torch.no_grad()
    def action(
        self,
        data: EvalSet,
        classes: Sequence[str],
        *,
        mode: str = "zero-shot",
        prompts: Sequence[str] = (DEFAULT_PROMPTS["video"],),
        views: tuple[int, int] = (1, 1),
        predictions_out: str | Path | None = None,
    ) -> dict[str, float]:
        """Top-1, top-5 and mean class accuracy (and, where class names differ only by word order, the
        accuracy on those pairs: ``order_pair_accuracy``) over ``views`` = (temporal clips, spatial crops)
        per video, averaged after softmax. ``mode``: ``zero-shot`` (class-name prompts through the text
        tower) or ``head`` (the fine-tuned ``model.action_head``, whose outputs are ``classes`` in order).
        ``predictions_out``: also write, per readable video, its id, label, predicted class and top-5
        (class, probability) pairs as JSON, for error analysis (confusions between given classes)."""
        model = self.model
        unlabelled = [s.path for s in data.samples if s.label is None]
        if unlabelled:
            raise ValueError(f"{data.name}: {len(unlabelled)} samples have no label (e.g. {unlabelled[0]})")
        if mode == "head":
            if model.action_head is None:
                raise ValueError(
                    "mode 'head' needs a checkpoint fine-tuned for actions (model.num_classes > 0) "
                    "and this one has no action head: use mode 'zero-shot'"
                )
            if model.action_head.fc.out_features != len(classes):
                raise ValueError(
                    f"the action head has {model.action_head.fc.out_features} outputs but the class list has "
                    f"{len(classes)} names; pass the fine-tuning class list (one name a line, head order)"
                )
            score = model.action_head
        elif mode == "zero-shot":
            class_emb, scale = self.class_embeddings(classes, prompts), model.scale()
            score = lambda clip: zero_shot_logits(clip, class_emb, scale)
        else:
            raise ValueError(f"action mode '{mode}' is not one of {ACTION_MODES}")
        temporal, spatial = views
        label_to_id = {c: i for i, c in enumerate(classes)}
        dataset = MultiViewDataset(
            data.samples,
            temporal_views=temporal,
            spatial_views=spatial,
            label_to_id=label_to_id,
            **self._clip_args(),
        )
        out = self._map_videos(
            dataset,
            lambda batch: {"logits": score(model.encode_video(batch["pixels"]).clip)},
            f"action: {temporal}x{spatial} views",
        )
        video = torch.arange(len(data.samples)).repeat_interleave(dataset.views)  # item -> its video
        valid = out["valid"]
        if not valid.any():
            raise ValueError(f"{data.name}: no video could be read; see the warnings above")
        probs = average_views(out["logits"][valid], video_ids=video[valid])  # rows: ascending readable videos
        kept = video[valid].unique()  # the video of each row of probs
        labels = torch.tensor([label_to_id[s.label] for s in data.samples])[kept]
        read = torch.zeros(len(data.samples), dtype=torch.bool).index_fill_(0, kept, True)
        if predictions_out is not None and self.rank == 0:
            _write_predictions(predictions_out, [data.samples[i] for i in kept.tolist()], probs, classes)
        counts = {
            "data/videos": float(len(labels)),
            "data/views": float(dataset.views),
            "data/classes": float(len(classes)),
        }
        metrics = classification_metrics(probs, labels) | order_pair_accuracy(probs, labels, classes)
        return metrics | counts | self._counts(data, read)

    # ------------------------------------------------------------------------------------------ caption

    @torch.no_grad()
    def caption(
        self, data: EvalSet, out_file: str | Path, *, num_beams: int = 1, max_length: int | None = None
    ) -> dict[str, float]:
        """Generate one caption per readable video, write them (with their references) to ``out_file``
        as JSON, then score those with references through pycocoevalcap (``caption/...`` keys)."""
        decoder = self.model.caption
        if decoder is None:
            raise ValueError("this checkpoint has no caption decoder (model.caption.enabled is false)")
        length = max_length or decoder.cfg.max_length

        def generate(batch: dict[str, Any]) -> dict[str, Tensor]:
            tokens = self.model.encode_video(batch["pixels"]).tokens
            ids = decoder.generate(tokens, length, num_beams=num_beams)
            pad = length - ids.shape[1]  # every batch to one width, so that processes can gather them
            return {"ids": F.pad(ids, (0, pad), value=decoder.pad_id)}

        out = self._map_videos(self._clips(data.samples), generate, "caption: generating")
        kept = out["valid"].nonzero().squeeze(1).tolist()
        ids = [s.id for s in data.samples]
        keys = ids if len(set(ids)) == len(ids) else [str(i) for i in range(len(ids))]
        texts = decode(self.tokenizer, out["ids"][kept])
        rows = [
            {
                "id": keys[i],
                "video": data.samples[i].path,
                "caption": t,
                "references": data.samples[i].captions,
            }
            for i, t in zip(kept, texts, strict=True)
        ]
        if self.rank == 0:
            Path(out_file).parent.mkdir(parents=True, exist_ok=True)
            Path(out_file).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        scored = [r for r in rows if r["references"]]
        counts = {"data/videos": float(len(rows)), "data/scored": float(len(scored))}
        counts |= self._counts(data, out["valid"])
        if not scored:
            raise ValueError(f"{data.name}: no readable video has a reference caption to score against")
        try:
            scores = score_captions(
                {r["id"]: r["caption"] for r in scored}, {r["id"]: r["references"] for r in scored}
            )
        except (ImportError, RuntimeError) as err:
            raise type(err)(f"{err}\n(the generated captions were written to {out_file})") from err
        return scores | counts

    @torch.no_grad()
    def caption_loss(self, data: EvalSet) -> dict[str, float]:
        """Teacher-forced ``caption_loss`` (per target token, over each readable clip's first caption) and
        its perplexity ``caption_ppl``."""
        model = self.model
        if model.caption is None:
            raise ValueError("this checkpoint has no caption decoder (model.caption.enabled is false)")

        decoder = model.caption

        def token_losses(batch: dict[str, Any]) -> dict[str, Tensor]:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            vocab = decoder.vocabulary()  # a decoder that speaks part of the vocabulary is scored on it
            logits = decoder(ids, mask, model.encode_video(batch["pixels"]).tokens, vocabulary=vocab)
            scored = mask
            if vocab is not None:  # a target it cannot speak is counted, not scored
                scored = mask * decoder.vocab_mask[ids]
            tokens, outside = scored[:, 1:].sum(1), (mask - scored)[:, 1:].sum(1)
            # summed per clip, so that the rows of unreadable clips can be left out after the gather
            mean = [
                caption_loss(logits[i : i + 1], ids[i : i + 1], scored[i : i + 1], vocabulary=vocab)
                for i in range(len(ids))
            ]
            loss = torch.stack([m["caption_loss"] for m in mean]) * tokens
            return {"loss": loss, "tokens": tokens, "outside": outside}

        out = self._map_videos(
            self._clips(data.samples, text="caption"),
            token_losses,
            "caption loss",
            collate_fn=Collator(self.tokenizer, self.text_length),
        )
        valid = out["valid"]
        loss = float(out["loss"][valid].sum() / out["tokens"][valid].sum().clamp_min(1))
        counts = {"data/videos": float(valid.sum())} | self._counts(data, valid)
        if decoder.vocabulary() is not None:  # tokens outside the vocabulary it was trained to speak
            counts["caption_unscored_tokens"] = float(out["outside"][valid].sum())
        return {"caption_loss": loss, "caption_ppl": math.exp(min(loss, 50.0))} | counts

    # ------------------------------------------------------------------------------- question answering

    @torch.no_grad()
    def qa(
        self,
        data: QASet,
        answers: Sequence[str],
        *,
        protocols: Sequence[str] = ("rank",),
        classifier_answers: Sequence[str] | None = None,
        k: int = 128,
        num_beams: int = 1,
        blank_video: bool = False,
        predictions_out: str | Path | None = None,
    ) -> dict[str, float]:
        """Accuracy overall and per question type for each of ``protocols`` (``qa/{protocol}/...``, see
        :mod:`videovl.eval.qa`): ``rank`` the closed list ``answers`` (first-token shortlist of ``k``, then
        full likelihood), ``generate`` (greedy, or beam search of ``num_beams``; exact match after
        normalisation), ``classify`` (the classifier head, whose outputs are ``classifier_answers`` in
        order). Each distinct video is read and encoded once, and its questions answered ``batch_size`` at
        a time from that embedding; only a batch's embeddings are held. Questions whose video is
        unreadable are left out and counted, as absent ones are.
        ``blank_video``: every clip replaced by zeros (the question-only baseline). ``predictions_out``:
        each question's answers as JSON."""
        model = self.model
        unknown = [p for p in protocols if p not in QA_PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(f"QA protocols {list(protocols)}: expected some of {QA_PROTOCOLS}")
        if model.qa is None:
            raise ValueError("this checkpoint has no question-answering head: fine-tune with --task qa")
        if "classify" in protocols:
            classifier = model.qa.classifier
            if classifier is None or classifier_answers is None:
                raise ValueError(
                    "protocol 'classify' needs a checkpoint fine-tuned with the answer classifier"
                )
            if len(classifier_answers) != classifier[-1].out_features:
                raise ValueError(
                    f"the classifier has {classifier[-1].out_features} outputs but its answer list "
                    f"{len(classifier_answers)}; pass the list saved with the checkpoint (answers.json)"
                )
        answers = [normalize_answer(a) for a in answers]
        if "rank" in protocols and not answers:
            raise ValueError("protocol 'rank' needs a closed answer list, and it is empty")
        length = model.caption.cfg.max_length
        if answers:
            tokens = self.tokenizer(answers, padding=True, truncation=True, max_length=length,
                                    return_tensors="pt").to(self.device)  # fmt: skip
        questions = data.questions

        def respond(video: VideoEmbedding, question_ids: Tensor, question_mask: Tensor) -> dict[str, Tensor]:
            """Each question's answers (Q rows) from its clip's embedding (Q rows) and its tokens."""
            question = model.encode_text(question_ids, question_mask)
            fused = model.fuse_question(question.hidden, question.mask, video.tokens)
            memory, memory_mask = model.answer_memory(fused, question.mask, video)
            rows = {}
            if "rank" in protocols:
                ids, mask = tokens["input_ids"], tokens["attention_mask"]
                rows["rank"] = rank_answers(model, memory, memory_mask, ids, mask, k)
            if "generate" in protocols:
                ids = model.caption.generate_from_memory(memory, memory_mask, length, num_beams)
                rows["generate"] = F.pad(ids, (0, length - ids.shape[1]), value=model.caption.pad_id)
            if "classify" in protocols:
                rows["classify"] = model.classify_answer(fused, video).argmax(-1)
            return rows

        # One item per distinct clip: it is decoded and encoded once, then its questions are answered
        # batch_size at a time from its embedding; a batch's clip embeddings are dropped after its questions.
        clips, asked = questions_by_clip(questions)
        most = max((len(a) for a in asked), default=0)  # a clip's rows hold this many answers, padded

        def answer(batch: dict[str, Any]) -> dict[str, Tensor]:
            pixels = torch.zeros_like(batch["pixels"]) if blank_video else batch["pixels"]
            video = model.encode_video(pixels)  # one row per clip
            # (row of the clip in the batch, place among its questions, question) of every question asked
            owner = [(b, j, i) for b, c in enumerate(batch["index"].tolist()) for j, i in enumerate(asked[c])]
            texts = [questions[i].question for _, _, i in owner]
            size, dev = self.batch_size, pixels.device
            rows: dict[str, Tensor] = {}
            batches = tokenized_batches(self.tokenizer, texts, size, self.text_length)
            for start, text in zip(range(0, len(owner), size), batches, strict=True):
                clip_rows = torch.tensor([b for b, _, _ in owner[start : start + size]], device=dev)
                places = torch.tensor([j for _, j, _ in owner[start : start + size]], device=dev)
                video_rows = VideoEmbedding(*(x[clip_rows] for x in video))
                got = respond(video_rows, text["input_ids"].to(dev), text["attention_mask"].to(dev))
                for key, value in got.items():
                    if key not in rows:  # padding where a clip has fewer questions than ``most``
                        fill = model.caption.pad_id if key == "generate" else -1
                        rows[key] = value.new_full((len(pixels), most, *value.shape[1:]), fill)
                    rows[key][clip_rows, places] = value
            return rows

        predictions: dict[str, dict[str, str]] = {p: {} for p in protocols}
        read = torch.zeros(0, dtype=torch.bool)
        if questions:
            dataset = self._clips([Sample(path, "video", id=path) for path in clips])
            out = self._map_videos(dataset, answer, "qa: answering")
            clip_of = torch.empty(len(questions), dtype=torch.long)  # each question's clip and place
            place = torch.empty(len(questions), dtype=torch.long)
            for c, indices in enumerate(asked):
                clip_of[indices], place[indices] = c, torch.arange(len(indices))
            read = out["valid"][clip_of]
            kept = read.nonzero().squeeze(1)
            for p in protocols:
                got = out[p][clip_of[kept], place[kept]]
                if p == "generate":
                    texts = decode(self.tokenizer, got)
                else:
                    names = answers if p == "rank" else classifier_answers
                    texts = [names[int(i)] for i in got]
                ids = [questions[i].question_id for i in kept.tolist()]
                predictions[p] = dict(zip(ids, texts, strict=True))
        scored = [q for q, ok in zip(questions, read.tolist(), strict=True) if ok]
        metrics: dict[str, float] = {}
        for p in protocols:
            metrics |= qa_accuracy(predictions[p], scored, p)
        unreadable = sorted({q.video for q, ok in zip(questions, read.tolist(), strict=True) if not ok})
        if unreadable and self.rank == 0:
            log.warning(
                "%d unreadable videos left out of the metrics, e.g. %s", len(unreadable), unreadable[:5]
            )
        if predictions_out is not None and self.rank == 0:
            rows = [
                {"question_id": q.question_id, "video": q.video, "question": q.question, "answer": q.answer,
                 "type": q.qtype, **{p: predictions[p].get(q.question_id) for p in protocols}}
                for q in scored
            ]  # fmt: skip
            Path(predictions_out).parent.mkdir(parents=True, exist_ok=True)
            Path(predictions_out).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
        counts = _qa_counts(data, scored, answers) | {"data/unreadable": float(len(unreadable))}
        return metrics | counts | ({"data/blank_video": 1.0} if blank_video else {})


def _qa_counts(data: QASet, questions: list, answers: Sequence[str]) -> dict[str, float]:
    listed = set(answers)
    return {
        "data/questions": float(len(questions)),
        "data/videos": float(len({q.video for q in questions})),
        "data/missing": float(len(data.missing)),
        "data/questions_without_video": float(data.questions_without_video),
        "data/answer_list": float(len(answers)),
        # always wrong under ranking: their answer is not among the candidates
        "data/answers_outside_list": float(sum(normalize_answer(q.answer) not in listed for q in questions)),
    }


def format_metrics(metrics: dict[str, float]) -> str:
    """A readable table: one row per retrieval scoring and direction, then every other key."""
    lines, done = [], set()
    for prefix, label in _RETRIEVAL.items():
        for direction in ("t2v", "v2t"):
            keys = [f"{prefix}{direction}/{c}" for c in _RANK_COLUMNS]
            if not all(k in metrics for k in keys):
                continue
            if not lines:
                lines.append(f"{'retrieval':<44}" + "".join(f"{c:>8}" for c in _RANK_COLUMNS))
            if prefix == "rerank/" and "rerank/k" in metrics:
                fused = " + dual" if metrics.get("rerank/dual_weight", 0) else ""
                label = f"alignment{fused} re-rank of top-{int(metrics['rerank/k'])}"
            lines.append(f"{direction + ' ' + label:<44}" + "".join(f"{metrics[k]:8.2f}" for k in keys))
            done |= set(keys)
    rest = sorted(k for k in metrics if k not in done)
    width = max((len(k) for k in rest), default=0)
    for k in rest:  # counts print as whole numbers
        count = k.startswith(("data/", "rerank/k")) or "/data/" in k  # the latter: training's prefixed ones
        value = f"{int(metrics[k]):8d}" if count else f"{metrics[k]:8.2f}"
        lines.append(f"{k:<{width}}  {value}")
    return "\n".join(lines)
