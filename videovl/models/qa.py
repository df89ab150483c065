"""Question-answering head: what joins the alignment decoder to the caption decoder (OmniVL / BLIP style).

The question's token states, fused with the clip by the alignment decoder (each question token has
attended to the visual tokens), become extra memory for the caption decoder, which then writes the
answer as it writes a caption. The decoder's memory is both sequences, the visual tokens through the
decoder's own ``visual_proj`` and the fused question through ``question_proj`` here, with a mask that
keeps the question's padding out: the pretrained decoder keeps the view of the clip it learnt from
captions (on the demo it names digits and directions), and the fused question tells it which of those
facts is asked. Conditioning on the question states alone (BLIP's VQA) would throw that view away and make
a new projection learn the whole memory from the answers.

``classifier`` (optional) scores the top-N training answers from the fused first-token state (ClipBERT /
ALPRO's head, as the alignment decoder's match head reads the same state).
"""

from __future__ import annotations

from torch import Tensor, nn

from videovl.models.layers.decoder import init_weights

__all__ = ["QAHead"]


class QAHead(nn.Module):
    def __init__(self, fused_width: int, decoder_width: int, num_answers: int = 0) -> None:
        super().__init__()
        if num_answers < 0:
            raise ValueError(f"num_answers={num_answers} must be >= 0 (0: no classifier)")
        self.question_proj = nn.Linear(fused_width, decoder_width)
        self.classifier = None
        if num_answers:
            self.classifier = nn.Sequential(
                nn.Linear(fused_width, 2 * fused_width),
                nn.GELU(),
                nn.LayerNorm(2 * fused_width),
                nn.Linear(2 * fused_width, num_answers),
            )
        self.apply(init_weights)

    def classify(self, fused: Tensor) -> Tensor:
        """Fused question states (B, L, W) -> answer logits (B, num_answers), from the first token."""
        if self.classifier is None:
            raise ValueError("this QA head has no classifier (model.qa.num_answers is 0)")
        return self.classifier(fused[:, 0])
