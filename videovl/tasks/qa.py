"""Question-answering task: model + losses -> ``{"loss", "qa_loss", "qa_classify_loss", ...}`` for one batch.

The question is encoded by the text tower and fused with the clip by the alignment decoder; the caption
decoder, reading the clip and the fused question (:meth:`VideoLanguageModel.answer_memory`), is trained to
write the answer (``qa_loss``, teacher forcing, as the caption loss). With a classifier head
(``model.qa.num_answers`` > 0) the fused first-token state is also classified over the answer vocabulary
(``qa_classify_loss``); a question whose answer is outside the vocabulary adds nothing to that loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videovl.config import ConfigError, LossWeights
from videovl.data.answers import AnswerVocab
from videovl.losses.caption import caption_loss
from videovl.models.caption import target_positions
from videovl.models.model import VideoLanguageModel

__all__ = ["QATask", "answer_labels", "check_qa_losses"]

# Losses of the other tasks: a QA stage that weights one of them would silently not train it.
_OTHER_LOSSES = ("contrastive", "frame", "itm", "caption")


def check_qa_losses(weights: LossWeights, where: str = "losses") -> None:
    """A QA stage trains ``qa`` and/or ``qa_classify``, and nothing else."""
    others = [k for k in _OTHER_LOSSES if getattr(weights, k) > 0]
    if others or (weights.qa <= 0 and weights.qa_classify <= 0):
        raise ConfigError(
            f"{where}: question answering trains losses.qa (the answer decoder) and losses.qa_classify "
            f"(the answer classifier); got {others or 'neither'} weighted. Set the other weights to 0 "
            f"(e.g. {{contrastive: 0.0, qa: 1.0}})"
        )


def answer_labels(answers: list[str], vocab: AnswerVocab, device: torch.device | str = "cpu") -> Tensor:
    """(B,) index of each answer in ``vocab``, -1 for one outside it."""
    ids = [vocab.index(a) for a in answers]
    return torch.tensor([-1 if i is None else i for i in ids], dtype=torch.long, device=device)


class QATask(nn.Module):
    """``vocab``: the answer vocabulary the classifier's outputs index (needed when it has one)."""

    def __init__(
        self, model: VideoLanguageModel, rank: int = 0, world_size: int = 1, vocab: AnswerVocab | None = None
    ):
        super().__init__()
        if model.qa is None:
            raise ConfigError(
                "QATask needs a question-answering head, and model.qa.enabled is false: load the checkpoint "
                "with qa={'enabled': True} (tools/finetune.py --task qa does)"
            )
        classifier = model.qa.classifier
        if classifier is not None and (vocab is None or len(vocab) != classifier[-1].out_features):
            raise ValueError(
                f"the answer classifier has {classifier[-1].out_features} outputs but the vocabulary has "
                f"{None if vocab is None else len(vocab)} answers; pass the vocabulary it was built for"
            )
        self.model, self.vocab = model, vocab
        self.rank, self.world_size = rank, world_size  # the loop's task interface; nothing is gathered

    def forward(
        self, batch: dict, weights: LossWeights | None = None, masking: dict | None = None
    ) -> dict[str, Tensor]:
        weights = weights if weights is not None else LossWeights(contrastive=0.0, qa=1.0)
        if "answer_ids" not in batch:
            raise ValueError(
                "a question-answering batch needs answer_ids: train on sources of kind 'video-qa'"
            )
        model = self.model
        video = model.encode_video(batch["pixels"], **(masking or {}))
        question = model.encode_text(batch["input_ids"], batch["attention_mask"])
        fused = model.fuse_question(question.hidden, question.mask, video.tokens)
        out: dict[str, Tensor] = {}
        loss = video.clip.new_zeros(())
        if weights.qa > 0:
            memory, memory_mask = model.answer_memory(fused, question.mask, video)
            length = model.cfg.caption.max_length
            ids, mask = batch["answer_ids"][:, :length], batch["answer_mask"][:, :length]
            logits = model.answer_logits(ids, mask, memory, memory_mask, positions=target_positions(mask))
            out["qa_loss"] = caption_loss(logits, ids, mask)["caption_loss"]
            loss = loss + weights.qa * out["qa_loss"]
        if weights.qa_classify > 0:
            if model.qa.classifier is None:
                raise ConfigError(
                    "losses.qa_classify > 0 needs the answer classifier (model.qa.num_answers > 0)"
                )
            labels = answer_labels(batch["answer"], self.vocab, fused.device)
            logits = model.classify_answer(fused, video).float()
            known = labels >= 0
            # outside the vocabulary: no target (a batch of only such answers adds 0, not NaN)
            total = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
            out["qa_classify_loss"] = total / known.sum().clamp_min(1)
            correct = (logits.argmax(-1) == labels) & known
            out["qa_classify_acc"] = (correct.sum() / known.sum().clamp_min(1)).detach()
            loss = loss + weights.qa_classify * out["qa_classify_loss"]
        out["loss"] = loss
        return out
