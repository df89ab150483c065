"""The allowed values of the config's fields that take one of a few words.

Each is a ``Literal`` type that the schema's field is annotated with, so loading a config checks the value
(with a did-you-mean), and a tuple of the same words that the consuming modules import, so the words are
written here and nowhere else.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "AttentionMode",
    "ATTENTION_MODES",
    "VisionPool",
    "VISION_POOLS",
    "PosEmbed",
    "POS_EMBEDS",
    "Rope",
    "ROPES",
    "RopeAxes",
    "ROPE_AXES",
    "FinalNorm",
    "FINAL_NORMS",
    "Activation",
    "ACTIVATIONS",
    "Inflation",
    "INFLATIONS",
    "ResidualFrames",
    "RESIDUAL_FRAMES",
    "VisionInit",
    "VISION_INITS",
    "TextPool",
    "TEXT_POOLS",
    "Aggregation",
    "AGGREGATIONS",
    "ClipPool",
    "CLIP_POOLS",
    "ContrastiveKind",
    "CONTRASTIVE_KINDS",
    "SourceKind",
    "KINDS",
    "Backend",
    "BACKENDS",
    "Freezable",
    "FREEZABLE",
    "Precision",
    "PRECISIONS",
    "CaptionVocab",
    "CAPTION_VOCABS",
]

# model.vision.attention: "divided" (time then space in every block, TimeSformer), "joint" (space-time),
# or "factorised" (depth blocks over space within each frame, then temporal_depth blocks over time at each
# spatial position: VideoPrism's factorised encoder)
AttentionMode = Literal["divided", "joint", "factorised"]
# model.vision.pool: the class token, the mean of the patch tokens, or attention pooling (MAP, SigLIP)
VisionPool = Literal["cls", "mean", "map"]
# model.vision.pos_embed: learned, a fixed sinusoidal space-time table (VideoMAE), or none (positions from
# rotary embeddings alone: V-JEPA 2)
PosEmbed = Literal["learned", "sinusoidal", "none"]
# model.vision.rope: no rotary positions, 2D ones over each frame's patch grid (Perception Encoder), or 3D
# ones over the clip's (time, row, column) grid (V-JEPA 2)
Rope = Literal["none", "2d", "3d"]
# model.vision.rope_axes: which coordinate takes the first half of a head's frequencies (x: the column)
RopeAxes = Literal["xy", "yx"]
# model.vision.final_norm: on every token (ViT) or on the pooled mean (VideoMAE)
FinalNorm = Literal["tokens", "pooled"]
# model.vision.act, model.pretrained_act: the MLP activation (quick_gelu: OpenAI's CLIP)
Activation = Literal["gelu", "gelu_tanh", "quick_gelu"]
# model.vision.residual_frames: what the patch embedding sees beside each frame: nothing, the frame minus the
# clip's mean frame, or the frame minus the frame before it (zero for the first)
ResidualFrames = Literal["none", "mean", "previous"]
# model.vision.init: a fresh tower's linear weights: timm's ViT init (truncated normal, std 0.02, zero
# biases) or PyTorch's default for a linear layer (uniform, variance 1 / (3 * fan_in)), which keeps a narrow
# tower's residual branches from starting near zero
VisionInit = Literal["vit", "fan_in"]
# model.vision.inflation: how a 2D patch kernel becomes a 3D one
Inflation = Literal["centre", "mean"]
# model.text.pool: mean over tokens (sentence-transformers), the first token, or the model's own (CLIP)
TextPool = Literal["mean", "cls", "eot"]
# model.frame_agg: how frame scores become one clip score
Aggregation = Literal["softmax", "mean", "max"]
# model.clip_pool: the encoder's pooled output, or that plus a learned map per temporal position
ClipPool = Literal["encoder", "ordered"]
# model.contrastive_loss: CLIP's softmax InfoNCE, or SigLIP's pairwise sigmoid (with a learnt logit bias)
ContrastiveKind = Literal["softmax", "sigmoid"]
# stages[].sources[].kind: the modality and what its samples carry (video-qa: a question file in the
# MSRVTT-QA layout, one question about a video a row, for question-answering fine-tuning)
SourceKind = Literal["video-text", "video-label", "image-text", "image-label", "video-qa"]
# data.backend: the video decoder (auto: decord, PyAV where decord fails)
Backend = Literal["auto", "decord", "av"]
# stages[].freeze: the parts of the model a stage leaves untrained ("projections" includes the text adapter,
# which "text_adapter" freezes alone)
Freezable = Literal["visual", "text", "temporal", "projections", "text_adapter"]
# train.mixed_precision: Accelerate's names, or auto (bf16 where the device computes in it natively)
Precision = Literal["auto", "no", "bf16", "fp16"]
# train.caption_vocab: the caption loss's softmax over the tokenizer's whole vocabulary, or over the tokens
# of the stage's own texts (the decoder then also generates from those alone)
CaptionVocab = Literal["full", "corpus"]

ATTENTION_MODES: tuple[str, ...] = get_args(AttentionMode)
VISION_POOLS: tuple[str, ...] = get_args(VisionPool)
POS_EMBEDS: tuple[str, ...] = get_args(PosEmbed)
ROPES: tuple[str, ...] = get_args(Rope)
ROPE_AXES: tuple[str, ...] = get_args(RopeAxes)
FINAL_NORMS: tuple[str, ...] = get_args(FinalNorm)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INFLATIONS: tuple[str, ...] = get_args(Inflation)
RESIDUAL_FRAMES: tuple[str, ...] = get_args(ResidualFrames)
VISION_INITS: tuple[str, ...] = get_args(VisionInit)
TEXT_POOLS: tuple[str, ...] = get_args(TextPool)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
CLIP_POOLS: tuple[str, ...] = get_args(ClipPool)
CONTRASTIVE_KINDS: tuple[str, ...] = get_args(ContrastiveKind)
KINDS: tuple[str, ...] = get_args(SourceKind)
BACKENDS: tuple[str, ...] = get_args(Backend)
FREEZABLE: tuple[str, ...] = get_args(Freezable)
PRECISIONS: tuple[str, ...] = get_args(Precision)
CAPTION_VOCABS: tuple[str, ...] = get_args(CaptionVocab)
