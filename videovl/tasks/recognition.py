"""Action-recognition task: model + cross-entropy -> ``{"loss", "action_loss", "action_acc"}`` for one batch.

The head scores the *normalised* clip embedding, exactly as evaluation does (``model.action_head(
model.encode_video(pixels).clip)``), so a linear probe trained here is the classifier that is tested.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from videovl.config import ConfigError, LossWeights
from videovl.models.model import VideoLanguageModel

__all__ = ["RecognitionTask"]


class RecognitionTask(nn.Module):
    """Label-smoothed cross-entropy of the action head.

    ``rank`` and ``world_size`` complete the loop's task interface; nothing here is gathered, since each
    clip's loss needs only its own label (DDP averages the gradients).
    """

    def __init__(
        self, model: VideoLanguageModel, rank: int = 0, world_size: int = 1, label_smoothing: float = 0.1
    ):
        super().__init__()
        if model.action_head is None:
            raise ConfigError(
                "RecognitionTask needs an action head, and model.num_classes is 0: load the checkpoint "
                "with num_classes=K (load_checkpoint(path, num_classes=K))"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.model = model
        self.rank, self.world_size = rank, world_size
        self.label_smoothing = label_smoothing

    def forward(
        self, batch: dict, weights: LossWeights | None = None, masking: dict | None = None
    ) -> dict[str, Tensor]:
        # ``weights`` is the stage's LossWeights, taken for the loop's interface: there is one loss here.
        labels = batch["labels"]
        num_classes = self.model.action_head.fc.out_features
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise ValueError(
                f"action labels must lie in [0, {num_classes}) (the head's classes), got "
                f"[{int(labels.min())}, {int(labels.max())}]; -1 means a sample without a label: an "
                "action stage takes only sources of kind video-label or image-label"
            )
        video = self.model.encode_video(batch["pixels"], **(masking or {}))  # token dropping, if any
        logits = self.model.action_head(video.clip)  # (B, K)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(-1) == labels).float().mean()
        return {"loss": loss, "action_loss": loss.detach(), "action_acc": acc.detach()}
