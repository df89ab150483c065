"""Pretraining task: model + losses -> ``{"loss", "*_loss", ...}`` for one batch.

The task is an ``nn.Module`` holding the model, so that Accelerate wraps it once and every head runs
inside the wrapped forward (DDP syncs gradients of what runs in ``forward``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videovl.config import ConfigError, LossWeights, StageConfig
from videovl.distributed import gather_no_grad, gather_with_grad
from videovl.losses.caption import caption_loss
from videovl.losses.contrastive import ContrastiveLoss, FrameContrastiveLoss, positive_mask
from videovl.losses.itm import itm_loss, sample_hard_negatives
from videovl.losses.sigmoid import SigmoidContrastiveLoss
from videovl.models.caption import target_positions
from videovl.models.model import VideoLanguageModel

__all__ = ["PretrainTask", "check_loss_heads", "check_no_questions"]

_QA_FIX = "question answering is trained by tools/finetune.py --task qa, not by pretraining"


def check_loss_heads(model: VideoLanguageModel, weights: LossWeights, where: str = "losses") -> None:
    """Raise a ConfigError naming the key under ``where`` (``stages.2.losses``) when a loss is weighted
    but ``model`` lacks the head it needs."""
    for loss, head in (("itm", "alignment"), ("caption", "caption"), ("qa", "qa"), ("qa_classify", "qa")):
        if getattr(weights, loss) > 0 and getattr(model, head) is None:  # losses of optional heads
            raise ConfigError(
                f"{where}.{loss}={getattr(weights, loss)} needs the {head} head, but model.{head}.enabled "
                f"is false: enable it or set {where}.{loss} to 0"
            )
    if weights.qa_classify > 0 and model.qa is not None and model.qa.classifier is None:
        raise ConfigError(
            f"{where}.qa_classify={weights.qa_classify} needs the answer classifier, but "
            f"model.qa.num_answers is 0: set it (tools/finetune.py --task qa does) or set "
            f"{where}.qa_classify to 0"
        )


def check_no_questions(stage: StageConfig, where: str = "stages[]") -> None:
    """Raise a ConfigError naming the key under ``where`` (``stages.1.sources.0.kind``,
    ``stages.1.losses.qa``) when a stage of this task reads question files or weights a QA loss: the
    pretraining task would only refuse its first batch, after the earlier stages had trained."""
    for j, source in enumerate(stage.sources):
        if source.kind == "video-qa":
            raise ConfigError(
                f"{where}.sources.{j}.kind is 'video-qa': {_QA_FIX}; pretrain on video-text, video-label, "
                "image-text or image-label sources"
            )
    for loss in ("qa", "qa_classify"):
        weight = getattr(stage.losses, loss)
        if weight > 0:
            raise ConfigError(f"{where}.losses.{loss}={weight}: {_QA_FIX}; set {where}.losses.{loss} to 0")


class PretrainTask(nn.Module):
    def __init__(self, model: VideoLanguageModel, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.model = model
        self.rank, self.world_size = rank, world_size
        self.sigmoid = model.cfg.contrastive_loss == "sigmoid"
        self.contrastive = SigmoidContrastiveLoss() if self.sigmoid else ContrastiveLoss()
        self.frame = FrameContrastiveLoss(model.cfg.frame_agg, model.cfg.frame_agg_temperature)

    def forward(self, batch: dict, weights: LossWeights, masking: dict | None = None) -> dict[str, Tensor]:
        """``masking``: token-dropping arguments of ``encode_video`` (ratio, generator, tube), or None."""
        model = self.model
        check_loss_heads(model, weights)  # the loop checked every stage already; a direct caller has not
        if weights.qa > 0 or weights.qa_classify > 0 or "answer" in batch:
            raise ConfigError(f"losses.qa, losses.qa_classify and video-qa sources: {_QA_FIX}")
        video = model.encode_video(batch["pixels"], **(masking or {}))
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        scale = model.scale()
        ids = {"label_ids": batch["labels"], "text_hash": batch["text_hash"], "video_ids": batch["index"]}
        dist = {"rank": self.rank, "world_size": self.world_size}
        if self.sigmoid:  # SigLIP: a block of the global pairs at a time; no (N, N) matrix to hand on
            out = dict(self.contrastive(video.clip, text.sentence, scale, model.bias(), **ids, **dist))
        else:
            out = dict(self.contrastive(video.clip, text.sentence, scale, **ids, **dist))
            logits_t2v = out.pop("logits_t2v")  # (N, N) of the global batch, detached
            positives = out.pop("positives")  # same label, caption or video: never a negative
        loss = weights.contrastive * out["contrastive_loss"]
        if weights.frame > 0 and video.frames.shape[1] > 1:  # an image's one frame is its clip: skip
            out.update(self.frame(video.frames, text.sentence, scale, **ids, **dist))
            loss = loss + weights.frame * out["frame_loss"]
        if weights.itm > 0:
            if self.sigmoid:
                logits_t2v, positives = self._global_logits(video.clip, text.sentence, scale, ids)
            out.update(self._itm(video, text, logits_t2v, positives, weights.itm_uniform_negatives))
            loss = loss + weights.itm * out["itm_loss"]
        if weights.caption > 0:
            # The data layer truncates text to text.max_length, which may exceed the decoder's positions:
            # longer captions are learnt up to caption.max_length tokens rather than failing the step.
            length = model.cfg.caption.max_length
            ids, mask = batch["input_ids"][:, :length], batch["attention_mask"][:, :length]
            vocab = model.caption.vocabulary()  # train.caption_vocab: corpus -> the stage's tokens alone
            positions = target_positions(mask)
            logits = model.caption(ids, mask, video.tokens, positions=positions, vocabulary=vocab)  # (R, V|K)
            out.update(caption_loss(logits, ids, mask, vocabulary=vocab))
            loss = loss + weights.caption * out["caption_loss"]
        out["loss"] = loss
        out["logit_scale"] = scale.detach()
        if self.sigmoid:
            out["logit_bias"] = model.logit_bias.detach()
        return out

    @torch.no_grad()
    def _global_logits(self, video: Tensor, text: Tensor, scale: Tensor, ids: dict) -> tuple[Tensor, Tensor]:
        """(N, N) detached text-to-video logits of the global batch and its positive mask, for the hard
        negatives of the ITM loss (the softmax loss hands them on; the sigmoid loss never builds them)."""
        video, text = gather_no_grad(video), gather_no_grad(text)
        got = {k: gather_no_grad(v) for k, v in ids.items()}
        positives = positive_mask(got["label_ids"], got["text_hash"], video_ids=got["video_ids"])
        return scale * text @ video.t(), positives

    def _itm(self, video, text, logits_t2v: Tensor, positives: Tensor, uniform: float) -> dict[str, Tensor]:
        """ALBEF/BLIP alignment loss: each local pair, plus a hard negative video for each local text and
        a hard negative text for each local video, drawn from the similarities of the global batch and
        never among the contrastive loss's ``positives``."""
        n_local = video.clip.shape[0]
        offset = 0
        if self.world_size > 1:  # a rank's slice of the gathered batch; local sizes may differ
            sizes = gather_no_grad(torch.tensor([n_local], device=video.clip.device))
            offset = int(sizes[: self.rank].sum())
        # Text lengths differ between processes (each pads to its own longest): pad to the longest of any
        # process so the token sequences can be gathered. One process pads nothing: every pair runs the
        # decoder over its batch's longest caption, not over text.max_length.
        length = text.hidden.shape[1]
        if self.world_size > 1:
            length = int(gather_no_grad(torch.tensor([length], device=text.hidden.device)).max())
        hidden = F.pad(text.hidden, (0, 0, 0, length - text.hidden.shape[1]))
        mask = F.pad(text.mask, (0, length - text.mask.shape[1]))
        with torch.no_grad():
            neg_video, neg_text = sample_hard_negatives(logits_t2v, positives, uniform=uniform)
        tokens_all, hidden_all = gather_with_grad(video.tokens), gather_with_grad(hidden)
        mask_all = gather_no_grad(mask)
        local = slice(offset, offset + n_local)
        nv, nt = neg_video[local], neg_text[local]
        kv, kt = nv >= 0, nt >= 0  # -1: the whole global batch is positive for this row
        pair_hidden = torch.cat([hidden, hidden[kv], hidden_all[nt[kt]]])
        pair_mask = torch.cat([mask, mask[kv], mask_all[nt[kt]]])
        pair_tokens = torch.cat([video.tokens, tokens_all[nv[kv]], video.tokens[kt]])
        logits = self.model.match_logits(pair_hidden, pair_mask, pair_tokens)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:n_local] = 1
        out = dict(itm_loss(logits, labels))
        out["itm_acc"] = (logits.argmax(-1) == labels).float().mean().detach()
        return out
