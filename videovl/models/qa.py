"""Question-answering head: what joins the alignment decoder to the caption decoder (OmniVL / BLIP style).

The question's token states, fused with the clip by the alignment decoder (each question token has
attended to the visual tokens), become extra memory for the caption decoder, which then writes the
answer as it writes a caption. The decoder's memory is both sequences, the visual tokens through the
decoder's own ``visual_proj`` and the fused question through ``question_proj`` here, with a mask that
keeps the question's padding out: the pretrained decoder keeps the view of the clip it learnt from
captions (on the demo it names digits and directions), and the fused question tells it which of those
facts is asked. Conditioning on the question states alone (BLIP's VQA) would throw that view away and make
a new projection learn the whole memory from the answers.

Two more memory tokens carry the clip's embedding in the joint space: itself (through ``clip_proj``) and
times the fused question's first state (``joint_q`` and ``joint_v``: low-rank bilinear pooling, as in VQA
models, so that "which way first?" and "which way second?" read other directions of the same
embedding). With the ordered pool that embedding holds the order of the clip's frames (which direction
came first), which the visual tokens do not carry in a form the decoders read (every temporal position
attends alike), so the answers can use what retrieval learnt.

``classifier`` (optional) scores the top-N training answers from the fused first-token state (ClipBERT /
ALPRO's head, as the alignment decoder's match head reads the same state) times the clip embedding, each
through its own map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from videovl.models.layers.decoder import init_weights

__all__ = ["QAHead"]


class QAHead(nn.Module):
    def __init__(self, fused_width: int, decoder_width: int, embed_dim: int, num_answers: int = 0) -> None:
        super().__init__()
        if num_answers < 0:
            raise ValueError(f"num_answers={num_answers} must be >= 0 (0: no classifier)")
        self.question_proj = nn.Linear(fused_width, decoder_width)
        # The clip embedding is unit-norm (about 1/sqrt(D) a channel): normalised to the scale of the other
        # inputs, or the projections learn to read it far more slowly than the question's states.
        self.clip_norm = nn.LayerNorm(embed_dim)
        self.clip_proj = nn.Linear(embed_dim, decoder_width)
        # and one token of the question times the clip, for the answer decoder (as the classifier below)
        self.joint_q = nn.Linear(fused_width, decoder_width)
        self.joint_v = nn.Linear(embed_dim, decoder_width)
        self.classifier = self.classifier_q = self.classifier_v = None
        if num_answers:
            # The question and the clip meet in a product (low-rank bilinear pooling, as in VQA models):
            # "which way first?" must read another direction of the clip embedding than "which way
            # second?", which a sum of the two would learn only slowly.
            self.classifier_q = nn.Linear(fused_width, 2 * fused_width)
            self.classifier_v = nn.Linear(embed_dim, 2 * fused_width)
            self.classifier = nn.Sequential(
                nn.LayerNorm(2 * fused_width),
                nn.GELU(),
                nn.LayerNorm(2 * fused_width),
                nn.Linear(2 * fused_width, num_answers),
            )
        self.apply(init_weights)

    def classify(self, fused: Tensor, clip: Tensor) -> Tensor:
        """Fused question states (B, L, W) and clip embeddings (B, D) -> answer logits (B, num_answers),
        from the first token and the clip."""
        if self.classifier is None:
            raise ValueError("this QA head has no classifier (model.qa.num_answers is 0)")
        question = self.classifier_q(fused[:, 0])
        return self.classifier(question * self.classifier_v(self.clip_norm(clip)).to(question.dtype))

    def clip_memory(self, fused: Tensor, clip: Tensor) -> Tensor:
        """Fused question states (B, L, W) and clip embeddings (B, D) -> two memory tokens each for the
        answer decoder, (B, 2, Wc): the clip, and the question's first state times the clip."""
        clip = self.clip_norm(clip)
        joint = self.joint_q(fused[:, 0]) * self.joint_v(clip).to(fused.dtype)
        return torch.stack([self.clip_proj(clip).to(joint.dtype), joint], 1)
