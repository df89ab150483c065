"""The video-language model: one visual encoder for images and videos, a text encoder, a joint space.

Heads (alignment decoder, caption decoder, action head) hang off the towers and are optional.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videovl.config import AGGREGATIONS, CLIP_POOLS, CONTRASTIVE_KINDS, ConfigError, ModelConfig, not_one_of
from videovl.models.action import ActionHead
from videovl.models.alignment import AlignmentDecoder
from videovl.models.caption import CaptionDecoder
from videovl.models.inflate import from_timm
from videovl.models.layers import resample_temporal
from videovl.models.matching import frame_similarity, global_similarity, word_frame_similarity
from videovl.models.qa import QAHead
from videovl.models.text import TextAdapter, TextEncoder, TextOutput
from videovl.models.visual import VisualEncoder

__all__ = ["VideoLanguageModel", "VideoEmbedding", "TextEmbedding", "VideoTextOutput"]


class VideoEmbedding(NamedTuple):
    clip: Tensor  # (B, D) pooled clip (or image) embedding in the joint space
    frames: Tensor  # (B, T', D) one embedding per temporal position (T' = 1 for images)
    tokens: Tensor  # (B, N, Wv) the visual encoder's full token sequence, for cross-attention heads


class TextEmbedding(NamedTuple):
    sentence: Tensor  # (B, D) in the joint space
    words: Tensor  # (B, L, D) token embeddings in the joint space, for word-to-frame matching
    hidden: Tensor  # (B, L, Wt) the text encoder's hidden states, for the alignment decoder
    mask: Tensor  # (B, L)


@dataclass
class VideoTextOutput:
    """What ``VideoLanguageModel.forward`` returns: both towers' embeddings, normalised, the temperature
    and bias. ``logit_scale * text_features.sentence @ video_features.clip.T + logit_bias`` are CLIP's
    (bias 0) or SigLIP's logits (texts, videos); ``model.similarity(out.text_features,
    out.video_features, mode)`` scores by frames or words too."""

    video_features: VideoEmbedding
    text_features: TextEmbedding
    logit_scale: Tensor  # () exp(logit_scale), clamped at model.max_logit_scale: ``VideoLanguageModel.scale``
    logit_bias: Tensor | float = 0.0  # () the sigmoid objective's learnt bias; 0.0 for softmax models


class VideoLanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.frame_agg not in AGGREGATIONS:
            raise not_one_of("model.frame_agg", cfg.frame_agg, AGGREGATIONS)
        self.cfg = cfg
        uses_timm = cfg.vision.timm_model or cfg.vision.timm_checkpoint
        self.visual = from_timm(cfg.vision) if uses_timm else VisualEncoder(cfg.vision)
        self.text = TextEncoder(cfg.text)
        self.visual_proj = nn.Linear(self.visual.width, cfg.embed_dim, bias=cfg.visual_proj_bias)
        if cfg.clip_pool not in CLIP_POOLS:
            raise not_one_of("model.clip_pool", cfg.clip_pool, CLIP_POOLS)
        self.ordered_proj = None  # (T', Wv, D): one map per temporal position, summed over time
        if cfg.clip_pool == "ordered":
            positions = cfg.vision.num_frames // cfg.vision.tubelet_size
            self.ordered_proj = nn.Parameter(torch.zeros(positions, self.visual.width, cfg.embed_dim))
        if cfg.text_adapter_layers < 0:
            raise ConfigError(f"model.text_adapter_layers is {cfg.text_adapter_layers}; expected 0 or more")
        self.text_adapter = (
            TextAdapter(self.text.width, cfg.text_adapter_layers) if cfg.text_adapter_layers else None
        )
        self.text_proj = nn.Linear(self.text.width, cfg.embed_dim, bias=False)
        if cfg.contrastive_loss not in CONTRASTIVE_KINDS:
            raise not_one_of("model.contrastive_loss", cfg.contrastive_loss, CONTRASTIVE_KINDS)
        sigmoid = cfg.contrastive_loss == "sigmoid"
        temperature = cfg.init_temperature
        if temperature is None:
            temperature = 0.1 if sigmoid else 0.07  # SigLIP starts at scale 10, CLIP at 1 / 0.07
        scale = torch.tensor(math.log(1.0 / temperature))
        if cfg.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:  # a fixed scale: a buffer, which checkpoints keep and no optimizer or stage can train
            self.register_buffer("logit_scale", scale)
        # SigLIP's learnt bias (-10 at the start: most pairs of a batch are negatives)
        self.logit_bias = nn.Parameter(torch.tensor(cfg.init_logit_bias)) if sigmoid else None
        # The decoder fuses the two token sequences in the joint space: see ``match_logits``.
        self.alignment = (
            AlignmentDecoder(cfg.alignment, cfg.embed_dim, cfg.embed_dim) if cfg.alignment.enabled else None
        )
        self.caption = None
        if cfg.caption.enabled:
            t = cfg.text
            ids = {"vocab_size": t.vocab_size, "bos_id": t.bos_token_id, "eos_id": t.eos_token_id}
            missing = [k for k, v in ids.items() if v is None]
            if missing:
                raise ConfigError(
                    f"model.caption is enabled but model.text lacks {missing}: call "
                    "videovl.data.tokenizer.fill_token_ids(cfg.text, tokenizer) first, or set them in config "
                    "(a tokenizer without begin or end tokens, such as VideoPrism's, has none to give: "
                    "set model.caption.enabled: false)"
                )
            pad = t.pad_token_id if t.pad_token_id is not None else 0
            self.caption = CaptionDecoder(
                cfg.caption, t.vocab_size, self.visual.width, t.bos_token_id, t.eos_token_id, pad
            )
        self.qa = None
        if cfg.qa.enabled:
            lacking = [h for h in ("alignment", "caption") if getattr(self, h) is None]
            if lacking:
                raise ConfigError(
                    f"model.qa is enabled but the model has no {' or '.join(lacking)} decoder: question "
                    f"answering fuses the question with the clip in the alignment decoder and writes the "
                    f"answer with the caption decoder; set model.{lacking[0]}.enabled true"
                )
            self.qa = QAHead(cfg.alignment.width, cfg.caption.width, cfg.embed_dim, cfg.qa.num_answers)
        self.action_head = ActionHead(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else None
        # Names of the parameters loaded from a checkpoint (set by whoever loads one): the optimizer gives
        # them ``train.pretrained_lr_scale``; the rest are new.
        self.pretrained_params: frozenset[str] = frozenset()

    # ---------------------------------------------------------------------------------- encoders

    def encode_video(
        self,
        x: Tensor,
        normalize: bool = True,
        *,
        mask_ratio: float = 0.0,
        generator: torch.Generator | None = None,
        mask_tube: bool | None = None,
    ) -> VideoEmbedding:
        """``x``: videos (B, C, T, H, W) or images (B, C, H, W); a one-frame clip (B, C, 1, H, W), as the
        data layer delivers images, is an image.

        ``mask_ratio`` > 0 drops that share of each frame's patch tokens (FLIP), at positions drawn from
        ``generator``; ``frames`` and ``tokens`` then come from the kept tokens. Only a model in training
        mode drops tokens: evaluation and inference always see every token.
        """
        if x.ndim == 5 and x.shape[2] == 1:
            x = x[:, :, 0]
        ratio = mask_ratio if self.training else 0.0
        kept = self.visual.draw_kept(x, ratio, generator, mask_tube) if ratio > 0 else None
        out = self.visual(x, kept=kept)
        clip, frames = self.visual_proj(out.pooled), self.visual_proj(out.frames)
        if self.ordered_proj is not None:
            clip = clip + self._ordered(out.frames)
        if normalize:
            clip, frames = F.normalize(clip, dim=-1), F.normalize(frames, dim=-1)
        return VideoEmbedding(clip, frames, out.tokens)

    def _ordered(self, frames: Tensor) -> Tensor:
        """(B, T', Wv) -> (B, D): each temporal position's features through its own map, summed, so the
        clip embedding tells "left, then up" from "up, then left" where a mean over frames cannot. An image
        (T' = 1) is a still clip: its one frame at every position. Clips of another length than the model
        was built for get the maps interpolated over time (as the temporal embedding is), scaled so that
        the sum keeps its size."""
        maps = self.ordered_proj  # (T, Wv, D)
        if frames.shape[1] == 1:
            return frames[:, 0] @ maps.sum(0).to(frames.dtype)
        length = frames.shape[1]
        if length != maps.shape[0]:
            flat = resample_temporal(maps.flatten(1).unsqueeze(0), length)[0]  # (T', Wv * D)
            maps = flat.view(length, *maps.shape[1:]) * (maps.shape[0] / length)
        return torch.einsum("btw,twd->bd", frames, maps.to(frames.dtype))

    def text_states(self, input_ids: Tensor, attention_mask: Tensor) -> TextOutput:
        """The text side before the joint space: the tower's states, through the adapter if there is one."""
        out = self.text(input_ids, attention_mask)
        return out if self.text_adapter is None else self.text_adapter(out)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, normalize: bool = True) -> TextEmbedding:
        out = self.text_states(input_ids, attention_mask)
        sentence, words = self.text_proj(out.pooled), self.text_proj(out.hidden)
        if normalize:
            sentence, words = F.normalize(sentence, dim=-1), F.normalize(words, dim=-1)
        return TextEmbedding(sentence, words, out.hidden, out.mask)

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> VideoTextOutput:
        """``pixels`` as :meth:`encode_video` takes them, token tensors as :meth:`encode_text` does."""
        video, text = self.encode_video(pixels), self.encode_text(input_ids, attention_mask)
        return VideoTextOutput(video, text, self.scale(), self.bias())

    # ---------------------------------------------------------------------------------- matching

    def scale(self) -> Tensor:
        """exp(logit_scale), clamped as in CLIP so the temperature cannot collapse."""
        return self.logit_scale.exp().clamp(max=self.cfg.max_logit_scale)

    def bias(self) -> Tensor | float:
        """The sigmoid objective's learnt logit bias; 0 without one (softmax: a shift changes nothing)."""
        return self.logit_bias if self.logit_bias is not None else 0.0

    def similarity(self, text: TextEmbedding, video: VideoEmbedding, mode: str = "global") -> Tensor:
        """(Nt, Nv) scores without temperature: ``global``, ``frame`` (sentence vs each frame) or
        ``word`` (each word vs each frame)."""
        if mode == "global":
            return global_similarity(text.sentence, video.clip)
        if mode == "frame":
            return frame_similarity(
                text.sentence, video.frames, self.cfg.frame_agg, self.cfg.frame_agg_temperature
            )
        if mode == "word":
            return word_frame_similarity(
                text.words, text.mask, video.frames, self.cfg.frame_agg, self.cfg.frame_agg_temperature
            )
        raise ValueError(f"similarity mode '{mode}' is not one of 'global', 'frame', 'word'")

    def match_logits(self, text_hidden: Tensor, text_mask: Tensor | None, visual_tokens: Tensor) -> Tensor:
        """[no-match, match] logits (B, 2) of (text, clip) pairs from the alignment decoder.

        ``text_hidden`` (B, L, Wt) and ``visual_tokens`` (B, N, Wv) are the towers' token states
        (``TextEmbedding.hidden``, ``VideoEmbedding.tokens``). Both pass through the joint-space
        projections first, so the decoder fuses features that the contrastive losses have already aligned
        (ALBEF's "align before fuse"). On the raw states a decoder trained from scratch has to learn both
        mappings again from a binary label: on the demo corpus, over frozen towers and with mostly uniform
        negatives, it stayed at the class prior for 600 steps on the raw states and left it within 100 on
        the projected ones.
        """
        if self.alignment is None:
            raise ConfigError("this model has no alignment decoder (model.alignment.enabled is false)")
        return self.alignment(*self._joint(text_hidden, visual_tokens, text_mask))

    def match_score(self, text_hidden: Tensor, text_mask: Tensor | None, visual_tokens: Tensor) -> Tensor:
        """Match log-odds ``log p(match) - log p(no-match)``, (B,): monotone in p(match), so it ranks."""
        logits = self.match_logits(text_hidden, text_mask, visual_tokens)
        return logits[:, 1] - logits[:, 0]

    def _joint(self, text_hidden: Tensor, visual_tokens: Tensor, text_mask: Tensor | None):
        """The alignment decoder's inputs: both token sequences in the joint space, unit norm."""
        words = F.normalize(self.text_proj(text_hidden), dim=-1)  # (B, L, D); padding rows stay 0
        tokens = F.normalize(self.visual_proj(visual_tokens), dim=-1)  # (B, N, D)
        return words, text_mask, tokens

    # ------------------------------------------------------------------------- question answering

    def fuse_question(self, question_hidden: Tensor, question_mask: Tensor, visual_tokens: Tensor) -> Tensor:
        """The question's token states fused with the clip, (B, L, Wa): the alignment decoder run on the
        question (``TextEmbedding.hidden``) against the clip's ``VideoEmbedding.tokens``, as in
        ``match_logits``."""
        self._require_qa()
        return self.alignment.fuse(*self._joint(question_hidden, visual_tokens, question_mask))

    def answer_memory(
        self, fused: Tensor, question_mask: Tensor, video: VideoEmbedding
    ) -> tuple[Tensor, Tensor]:
        """What the caption decoder reads to answer, ``(memory (B, N + 2 + L, Wc), mask (B, N + 2 + L))``:
        the clip's tokens, its embedding alone and times the question, and the fused question (see
        :mod:`videovl.models.qa` for why)."""
        qa, decoder = self._require_qa(), self.caption
        tokens = decoder.visual_proj(video.tokens)
        clip = qa.clip_memory(fused, video.clip)
        memory = torch.cat([tokens, clip.to(tokens.dtype), qa.question_proj(fused).to(tokens.dtype)], 1)
        visual_mask = question_mask.new_ones(video.tokens.shape[0], video.tokens.shape[1] + clip.shape[1])
        return memory, torch.cat([visual_mask, question_mask], 1)

    def classify_answer(self, fused: Tensor, video: VideoEmbedding) -> Tensor:
        """Answer logits (B, num_answers) of the classifier, from the fused question and the clip."""
        return self._require_qa().classify(fused, video.clip)

    def answer_logits(
        self,
        answer_ids: Tensor,
        answer_mask: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced answer logits (B, La, V) (packed (R, V) with ``positions``, as the caption decoder
        gives them) from :meth:`answer_memory`'s memory."""
        self._require_qa()
        return self.caption.decode(answer_ids, answer_mask, memory, memory_mask, positions)

    def _require_qa(self) -> QAHead:
        if self.qa is None:
            raise ConfigError(
                "this model has no question-answering head (model.qa.enabled is false): fine-tune one with "
                "tools/finetune.py --task qa"
            )
        return self.qa

    # ---------------------------------------------------------------------------- uniform interface

    def train(self, mode: bool = True) -> VideoLanguageModel:
        """As ``nn.Module.train``, except that a tower with no trainable parameter stays in eval mode: a
        locked pretrained tower (as in LiT, or a linear probe's frozen encoder) gives the same features
        every step instead of dropout noise."""
        super().train(mode)
        if mode:
            for tower in (self.visual, self.text):
                if not any(p.requires_grad for p in tower.parameters()):
                    tower.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        names = {f"visual.{n}" for n in self.visual.no_weight_decay()}
        names |= {f"text.{n}" for n in self.text.no_weight_decay()}
        for head_name in ("alignment", "caption", "qa", "action_head"):
            head = getattr(self, head_name)
            if hasattr(head, "no_weight_decay"):  # heads may declare their own (the caption positions)
                names |= {f"{head_name}.{n}" for n in head.no_weight_decay()}
        names.add("logit_scale")
        if self.logit_bias is not None:
            names.add("logit_bias")
        return names
