"""Starting from other libraries' checkpoints: read local files, resolve the config, fit the weights.

``resolve_pretrained`` turns ``model.pretrained`` (a CLIP) and ``model.vision.pretrained`` (a TimeSformer,
VideoMAE, V-JEPA 2 or VideoPrism folder) into config fields, reading only the checkpoints' configs;
``load_pretrained`` then fills a model built from that config, through the pure converters of
``videovl.models.convert``, and checks every key and shape: a mismatch is a ConfigError naming the file,
never a partial load. Nothing is downloaded: a name that is not a local path is an error that says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from videovl.config import (
    ConfigError,
    ModelConfig,
    VisionConfig,
    deep_merge,
    from_dict,
    not_loaded_error,
    resolve_path,
    to_dict,
)
from videovl.models.convert import clip as clip_convert
from videovl.models.convert import pe, siglip, timesformer, videomae, videoprism, vjepa2

__all__ = [
    "foreign_model_config",
    "foreign_normalisation",
    "resolve_pretrained",
    "load_pretrained",
    "read_state_file",
    "local_path",
    "fit_state",
]

# Heads a checkpoint of another library never has: they keep their fresh initialisation (for the ordered
# clip pool's maps, zero, and the text adapter, the identity: both embeddings start as the checkpoint's own).
NEW_HEADS = ("alignment.", "caption.", "action_head.", "ordered_proj", "text_adapter.")


def local_path(spec: str, field: str) -> Path:
    path = Path(resolve_path(spec)).expanduser()
    if not path.exists():
        raise not_loaded_error(field, spec)
    return path


def read_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only``: no pickled code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ConfigError(
            f"{path} cannot be read as a state dict ({type(e).__name__}: {str(e)[:200]}). A TorchScript "
            "archive (OpenAI's original .pt files) must be saved as a plain state dict first: "
            "torch.save(torch.jit.load(path, map_location='cpu').state_dict(), 'clip_state.pt')"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not a state dict")
    # open_clip's training checkpoints keep the DistributedDataParallel prefix
    return {k.removeprefix("module."): v for k, v in state.items()}


# --------------------------------------------------------------------------------------------- CLIP


def _folder_config(path: Path, kinds: tuple[str, ...], field: str) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{field}: {path} is not a transformers checkpoint folder: config.json is missing")
    kind = json.loads(config_file.read_text()).get("model_type")
    if kind not in kinds:
        raise ConfigError(
            f"{field}: {config_file} has model_type '{kind}'; expected {' or '.join(repr(k) for k in kinds)}"
        )
    return kind


def _openclip_model_config(path: Path, spec: str | None) -> tuple[dict[str, Any], Path] | None:
    """open_clip's model config for the state dict at ``path``: ``model.pretrained_config``, else the
    ``open_clip_config.json`` a hub folder keeps beside its weights, else None."""
    if spec is not None:
        where = local_path(spec, "model.pretrained_config")
    else:
        where = path.parent / "open_clip_config.json"
        if not where.is_file():
            return None
    try:
        config = json.loads(where.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.pretrained_config: {where} is not a readable json file ({e})") from e
    if not isinstance(config, dict):
        raise ConfigError(f"model.pretrained_config: {where} holds a {type(config).__name__}, not a mapping")
    return config.get("model_cfg", config), where


def _openclip_act(state: dict[str, Tensor], act: str | None, model_cfg: dict | None, path: Path) -> str:
    if act is not None:
        return act
    if model_cfg is not None:  # open_clip builds QuickGELU only where its config says so
        return "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    if all(k in state for k in clip_convert.OPENAI_MARKERS):
        return "quick_gelu"  # OpenAI trained every CLIP with QuickGELU
    raise ConfigError(
        f"{path} is an open_clip state dict, which does not record its activation: set "
        "model.pretrained_act to 'quick_gelu' (OpenAI's weights and open_clip's *-quickgelu models) or "
        "'gelu' (other open_clip models), or model.pretrained_config to its open_clip model config json"
    )


def _openclip_heads(
    state: dict[str, Tensor], found: tuple[dict[str, Any], Path] | None, path: Path
) -> tuple[int, int]:
    """(vision head width, text heads): from open_clip's model config, or OpenAI's 64-wide heads when the
    file is one of OpenAI's; never guessed, since wrong counts load silently and compute other features."""
    if found is None:
        if all(k in state for k in clip_convert.OPENAI_MARKERS):
            return 64, state["token_embedding.weight"].shape[1] // 64  # OpenAI: 64-wide heads in both towers
        raise ConfigError(
            f"{path} is an open_clip state dict, which does not record its attention heads (ViT-B and L have "
            "64-wide heads, ViT-H/14 80, g/14 88, bigG/14 104): set model.pretrained_config to its open_clip "
            "model config json (open_clip's model_configs/<name>.json, or the hub folder's "
            "open_clip_config.json, which is read by itself when it sits beside the weights)"
        )
    model_cfg, where = found
    widths = {
        "vision_cfg": state["visual.conv1.weight"].shape[0],
        "text_cfg": state["token_embedding.weight"].shape[1],
    }
    for section, width in widths.items():
        part = model_cfg.get(section)
        said = part.get("width") if isinstance(part, dict) else None
        if said is not None and said != width:
            raise ConfigError(
                f"model.pretrained_config: {where} describes another model than {path}: its {section}.width "
                f"is {said}, the weights' is {width}"
            )
    return clip_convert.openclip_heads(model_cfg, str(where))


def _timm_tower(name: str, embed_dim: int, where: Path) -> nn.Module:
    """timm's ``name`` as open_clip's TimmModel builds it (its head as the projection, MAP pooling), on the
    meta device: its structure only, no weights and no download."""
    import timm

    try:
        return timm.create_model(
            name, pretrained=False, num_classes=embed_dim, global_pool="map", device="meta"
        )
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: timm cannot build vision_cfg.timm_model_name '{name}' ({e})") from e


def _read_pe(state: dict[str, Tensor], path: Path, cfg: ModelConfig) -> dict[str, Any]:
    """The config of an open_clip PE-Core state dict: the visual fields of the timm tower its model config
    names, and its text tower's CLIPTextConfig."""
    found = _openclip_model_config(path, cfg.pretrained_config)
    if found is None:
        raise ConfigError(
            f"{path} is an open_clip state dict with a timm visual tower (PE-Core's), whose architecture is "
            "its model config's: set model.pretrained_config to open_clip's model_configs/PE-Core-*.json "
            "(or put the hub folder's open_clip_config.json beside the weights)"
        )
    model_cfg, where = found
    vision = model_cfg.get("vision_cfg")
    name = vision.get("timm_model_name") if isinstance(vision, dict) else None
    if not name:
        raise ConfigError(f"model.pretrained_config: {where} names no vision_cfg.timm_model_name for {path}")
    if vision.get("timm_proj") or vision.get("timm_pool", "avg") != "map":
        raise ConfigError(
            f"{where}: vision_cfg timm_pool '{vision.get('timm_pool', 'avg')}' and timm_proj "
            f"'{vision.get('timm_proj', 'linear')}'; videovl reads PE-Core's map pooling with the timm head "
            "as the projection (timm_pool: map, timm_proj: null)"
        )
    trunk = _timm_tower(name, model_cfg["embed_dim"], where)
    fields = pe.pe_vision_fields(trunk, f"{where} ({name})")
    heads = pe.pe_text_checks(model_cfg, str(where))
    act = _openclip_act(state, cfg.pretrained_act, model_cfg, path)
    text: dict[str, Tensor] = {}
    clip_convert.openclip_text_to_clip(
        {k: v for k, v in state.items() if k.startswith("text.")}, text, "text."
    )
    return {
        **fields,
        "model_type": "pe_core",
        "text_config": clip_convert.openclip_text_config(text, heads, act),
    }


def _read_openclip(path: Path, cfg: ModelConfig) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An open_clip state-dict file: (a plain ViT CLIP in transformers' CLIPModel layout and its CLIPConfig
    with model_type 'clip') or (open_clip's PE-Core state dict as it is and its config, 'pe_core')."""
    state = read_state_file(path)
    try:
        if pe.PE_MARKER in state:
            return state, _read_pe(state, path, cfg)
    except KeyError as e:
        raise ConfigError(
            f"model.pretrained: {path} lacks {e} of open_clip's PE-Core layout (its first keys: "
            f"{sorted(state)[:5]})"
        ) from e
    if "visual.conv1.weight" not in state or "token_embedding.weight" not in state:
        raise ConfigError(
            f"model.pretrained: {path} is not an open_clip / OpenAI ViT CLIP state dict (no "
            f"'visual.conv1.weight' or 'token_embedding.weight'; its first keys are {sorted(state)[:5]})"
        )
    found = _openclip_model_config(path, cfg.pretrained_config)
    act = _openclip_act(state, cfg.pretrained_act, found and found[0], path)
    heads = _openclip_heads(state, found, path)
    try:
        state, config = clip_convert.openclip_to_clip(state, act, *heads)
    except KeyError as e:
        raise ConfigError(
            f"model.pretrained: {path} lacks {e} of the open_clip ViT CLIP layout (its first keys: "
            f"{sorted(state)[:5]})"
        ) from e
    return state, {**config, "model_type": "clip"}


# model.pretrained folders: model_type -> (the transformers model class, the ModelConfig fields its config
# fixes, its state dict -> videovl's). SigLIP 2's fixed-resolution checkpoints are "siglip" folders too;
# MetaCLIP 2 has CLIP's layout and converter, with its own text model (clip_model_fields names it).
JOINT_FAMILIES = {
    **{
        kind: (model_class, clip_convert.clip_model_fields, clip_convert.clip_to_videovl)
        for kind, (model_class, _) in clip_convert.CLIP_LAYOUT_FAMILIES.items()
    },
    "siglip": ("SiglipModel", siglip.siglip_model_fields, siglip.siglip_to_videovl),
    # VideoPrism's video-text model (the LVT checkpoints); as model.vision.pretrained, its backbone alone
    "videoprism": (
        "VideoPrismClipModel",
        videoprism.videoprism_model_fields,
        videoprism.videoprism_clip_to_videovl,
    ),
}

# model.pretrained families of video models: their checkpoints hold the temporal weights, which count as
# loaded (an image model's temporal branch is built from its image weights: new)
VIDEO_JOINT_FAMILIES = ("videoprism",)


# model.pretrained files outside CLIP's layout: model_type -> (its fields, its state dict -> videovl's)
FILE_FAMILIES = {"pe_core": (pe.pe_model_fields, pe.pe_to_videovl)}


def _converters(kind: str) -> tuple[Any, Any]:
    return FILE_FAMILIES[kind] if kind in FILE_FAMILIES else JOINT_FAMILIES[kind][1:]


def _joint_kind(path: Path) -> str:
    kind = json.loads((path / "config.json").read_text()).get("model_type") if path.is_dir() else None
    if kind == "siglip2":
        raise ConfigError(
            f"model.pretrained: {path} is a Siglip2Model (SigLIP 2 NaFlex: a patch grid of each image's own "
            "shape), which a fixed-grid ViT cannot hold; use SigLIP 2's fixed-resolution checkpoints (e.g. "
            "google/siglip2-base-patch16-224, model_type 'siglip')"
        )
    return _folder_config(path, tuple(JOINT_FAMILIES), "model.pretrained")


def read_clip_config(cfg: ModelConfig) -> tuple[dict[str, Any], Path]:
    """The ``CLIPConfig``, ``MetaClip2Config``, ``SiglipConfig`` or ``VideoPrismConfig`` (as a dict,
    ``model_type`` included) of ``cfg.pretrained``."""
    path = local_path(cfg.pretrained, "model.pretrained")
    if path.is_dir():
        from transformers import AutoConfig

        _joint_kind(path)
        return AutoConfig.from_pretrained(path, local_files_only=True).to_dict(), path
    return _read_openclip(path, cfg)[1], path


def read_clip(cfg: ModelConfig) -> tuple[dict[str, Tensor], Path, str]:
    """The state dict of ``cfg.pretrained`` in transformers' layout (``CLIPModel``, ``MetaClip2Model``,
    ``SiglipModel`` or ``VideoPrismClipModel``), the file it came from and the family (``model_type``)."""
    path = local_path(cfg.pretrained, "model.pretrained")
    if not path.is_dir():
        state, config = _read_openclip(path, cfg)
        return state, path, config["model_type"]
    import transformers

    kind = _joint_kind(path)
    model = _from_pretrained(getattr(transformers, JOINT_FAMILIES[kind][0]), path, "model.pretrained")
    return model.state_dict(), path, kind


# ----------------------------------------------------------------------------------- video encoders

# model_type -> (the vision fields its config fixes, its state dict and the resolved VisionConfig -> the
# visual encoder's)
VIDEO_FAMILIES = {
    "timesformer": (timesformer.timesformer_vision_fields, timesformer.timesformer_to_videovl),
    "videomae": (videomae.videomae_vision_fields, videomae.videomae_to_videovl),
    "vjepa2": (vjepa2.vjepa2_vision_fields, vjepa2.vjepa2_to_videovl),
    # VideoPrism's video backbone: alone, under its video model or classifier, or inside a VideoPrismClipModel
    "videoprism_vision_model": (videoprism.videoprism_vision_fields, videoprism.videoprism_to_videovl),
    "videoprism": (videoprism.videoprism_vision_fields, videoprism.videoprism_to_videovl),
}

# model_type -> the transformers class of its backbone folder
VIDEO_MODEL_CLASSES = {
    "timesformer": "TimesformerModel",
    "videomae": "VideoMAEModel",
    "vjepa2": "VJEPA2Model",
    "videoprism_vision_model": "VideoPrismVisionModel",
    "videoprism": "VideoPrismClipModel",
}


def _video_config(spec: str) -> tuple[str, dict[str, Any], Path]:
    from transformers import AutoConfig

    path = local_path(spec, "model.vision.pretrained")
    if not path.is_dir():
        raise ConfigError(
            f"model.vision.pretrained: {path} is a file; give a transformers "
            f"{' or '.join(VIDEO_MODEL_CLASSES.values())} folder (config.json and weights)"
        )
    kind = _folder_config(path, tuple(VIDEO_FAMILIES), "model.vision.pretrained")
    return kind, AutoConfig.from_pretrained(path, local_files_only=True).to_dict(), path


def auto_name(kind: str) -> str:
    return VIDEO_MODEL_CLASSES[kind]


def read_video_encoder(spec: str, vision: VisionConfig) -> tuple[dict[str, Tensor], Path]:
    """The VisualEncoder state dict of a TimeSformer, VideoMAE, V-JEPA 2 or VideoPrism folder (its
    backbone, and VideoMAE's norm after pooling when the folder holds a classifier; a VideoPrismClipModel's
    video backbone), and the folder."""
    import transformers

    kind, config, path = _video_config(spec)
    classifier = any(a.endswith("ForVideoClassification") for a in config.get("architectures") or ())
    auto = transformers.AutoModelForVideoClassification if classifier else transformers.AutoModel
    heads_ok = not classifier and config.get("architectures") not in (None, [auto_name(kind)])
    model = _from_pretrained(auto, path, "model.vision.pretrained", heads_ok)
    backbone = model.base_model
    if kind == "videoprism":  # a VideoPrismClipModel: the video backbone alone (the text tower is left out)
        backbone = model.video_model.vision_model
    state = dict(backbone.state_dict())
    if getattr(model, "fc_norm", None) is not None:
        state |= {f"fc_norm.{k}": v for k, v in model.fc_norm.state_dict().items()}
    out = VIDEO_FAMILIES[kind][1](state, vision)
    if state:
        raise ConfigError(
            f"model.vision.pretrained: {path} has weights videovl has no place for: {sorted(state)[:5]} "
            f"({len(state)} in all)"
        )
    return out, path


def _from_pretrained(cls: Any, path: Path, field: str, heads_ok: bool = False) -> nn.Module:
    """``cls.from_pretrained(path)`` (local files only), refusing any key its weights lack, have in
    excess or hold in another shape than config.json says: a ConfigError naming the file, the first
    keys and both shapes. ``heads_ok``: the folder holds a model with another head (VideoMAE's
    pretraining decoder), whose head weights are not the backbone's and are left out."""
    try:
        model, info = cls.from_pretrained(
            path, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    except (OSError, RuntimeError, ValueError) as e:
        raise ConfigError(f"{field}: {path} does not load as a {cls.__name__}: {e}") from e
    files = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    where = f"{path}/{files[0]}" if len(files) == 1 else f"the weights in {path}"
    problems = []
    for kind in ("missing_keys", "unexpected_keys"):
        keys = sorted(info.get(kind) or [])
        if kind == "unexpected_keys" and heads_ok:
            prefix = f"{model.base_model_prefix}."
            keys = [k for k in keys if k.startswith(prefix)]  # a backbone weight left unused is an error
        if keys:
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} ({', '.join(keys[:5])})")
    for m in list(info.get("mismatched_keys") or [])[:5]:
        if isinstance(m, (tuple, list)) and len(m) == 3:
            problems.append(f"{m[0]}: {tuple(m[1])} in the file, {tuple(m[2])} in config.json")
        else:
            problems.append(f"shape mismatch: {m}")
    if problems:
        raise ConfigError(f"{field}: {where} does not fit its config.json: {'; '.join(problems)}")
    return model


# -------------------------------------------------------------------------------------------- resolve


def foreign_model_config(path: str | Path) -> dict[str, Any] | None:
    """The model section that starts from checkpoint ``path`` when it is a CLIP (a transformers folder or
    an open_clip state-dict file), a MetaCLIP 2, a SigLIP or a VideoPrism video-text model (both towers),
    or a TimeSformer, a VideoMAE, a V-JEPA 2 or a VideoPrism video folder; None when it is none."""
    path = Path(path)
    if path.is_file() and path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        return {"name": "clip", "pretrained": str(path)}
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    kind = json.loads(config_file.read_text()).get("model_type")
    if kind in JOINT_FAMILIES or kind == "siglip2":  # siglip2 (NaFlex): the loader says why it cannot
        return {"name": "clip", "pretrained": str(path)}
    if kind in VIDEO_FAMILIES:  # a video encoder alone: the demo's text tower and heads beside it
        return {"name": "demo", "vision": {"pretrained": str(path)}}
    return None


def foreign_normalisation(path: str | Path) -> tuple[list[float], list[float]] | None:
    """The pixel mean and std of a transformers folder's ``preprocessor_config.json`` (VideoMAE and
    TimeSformer were trained on ImageNet's, not CLIP's), or of the ``preprocess_cfg`` in the
    ``open_clip_config.json`` beside an open_clip state-dict file (PE-Core's are 0.5); None when there is
    none."""
    path = Path(path)
    file = path.parent / "open_clip_config.json" if path.is_file() else path / "preprocessor_config.json"
    if not file.is_file():
        return None
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{file} is not valid JSON ({e})") from e
    if path.is_file():
        raw = raw.get("preprocess_cfg") or {}
        raw = {"image_mean": raw.get("mean"), "image_std": raw.get("std")}
    mean, std = raw.get("image_mean"), raw.get("image_std")
    if mean is None and std is None:
        return None
    if not all(isinstance(v, list) and len(v) == 3 for v in (mean, std)):
        raise ConfigError(
            f"{file}: image_mean and image_std must be three numbers each, got {mean} and {std}"
        )
    return [float(x) for x in mean], [float(x) for x in std]


def resolve_pretrained(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the fields its checkpoints fix filled in (idempotent; no weights are read for
    transformers folders). The space-time fields (frames, tubelet, attention, inflation, pool) stay as
    configured for a CLIP, whose image model has none."""
    if cfg.name == "clip" and not cfg.pretrained:
        raise ConfigError(
            "model.name is 'clip' but model.pretrained is not set: name a local CLIP (a transformers "
            "CLIPModel folder or an open_clip / OpenAI state-dict file), a MetaClip2Model, a SiglipModel "
            "or a VideoPrismClipModel folder"
        )
    if (cfg.pretrained or cfg.vision.pretrained) and (cfg.vision.timm_model or cfg.vision.timm_checkpoint):
        raise ConfigError(
            "model.vision.timm_model / timm_checkpoint and a pretrained checkpoint (model.pretrained or "
            "model.vision.pretrained) both set the visual tower; keep one"
        )
    if cfg.pretrained and cfg.vision.pretrained:
        raise ConfigError(
            "model.pretrained (a CLIP) and model.vision.pretrained (a video encoder) both set the visual "
            "tower; keep one"
        )
    if cfg.pretrained:
        config, path = read_clip_config(cfg)
        fields = _converters(config["model_type"])[0](config, str(path))
        # the folder's tokenizer; for a state-dict file (open_clip), one saved beside it
        folder = path if path.is_dir() else path.parent
        if any((folder / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
            fields["text"]["tokenizer"] = str(folder)
    elif cfg.vision.pretrained:
        kind, config, path = _video_config(cfg.vision.pretrained)
        fields = {"vision": VIDEO_FAMILIES[kind][0](config, str(path / "config.json"))}
    else:
        return cfg
    return from_dict(ModelConfig, deep_merge(to_dict(cfg), fields), "model")


# ----------------------------------------------------------------------------------------------- load


def text_prefix(model: nn.Module) -> str:
    """Where the text tower's CLIP text model keeps its weights: transformers 5's CLIPTextModel holds
    them at its top level, transformers 4's under ``text_model.``."""
    nested = any(n.startswith("text.model.text_model.") for n, _ in model.named_parameters())
    return "text.model.text_model." if nested else "text.model."


def state_mismatch(
    expected: dict[str, Tensor], state: dict[str, Tensor], skip: tuple[str, ...] = (), stored: set[str] = ()
) -> list[str]:
    """What keeps ``state`` from loading into a model whose state dict is ``expected``: missing keys (but
    those starting with ``skip``, and ``stored`` ones, e.g. tied tensors kept under another name),
    unexpected keys, and shapes that differ, each with the first few names; empty when it fits."""
    missing = sorted(k for k in expected if k not in state and k not in stored and not k.startswith(skip))
    unexpected = sorted(k for k in state if k not in expected)
    shapes = [
        f"{k} is {tuple(v.shape)} in the file but {tuple(expected[k].shape)} in the model"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = [f"{len(missing)} missing ({', '.join(missing[:5])})"] if missing else []
    problems += [f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])})"] if unexpected else []
    return problems + shapes[:5]


def fit_state(model: nn.Module, state: dict[str, Tensor], file: Path, new: tuple[str, ...] = ()) -> set[str]:
    """Load ``state`` into ``model`` after checking it: every key must exist with the same shape, and
    every parameter the state lacks must start with one of ``new``. Returns the names loaded."""
    problems = state_mismatch(model.state_dict(), state, skip=new)
    if problems:
        raise ConfigError(f"{file} does not fit the model its config builds: {'; '.join(problems)}")
    model.load_state_dict(state, strict=False)  # strictness checked above; ``new`` heads keep their init
    return set(state)


def load_pretrained(model: nn.Module) -> frozenset[str]:
    """Fill ``model`` (a VideoLanguageModel built from a resolved config) from its checkpoints; returns
    the names of the parameters that came from them (the temporal branch and heads count as new)."""
    cfg: ModelConfig = model.cfg
    params = {n for n, _ in model.named_parameters()}
    # A text tower built from a transformers checkpoint (the demo's MiniLM, bert-base-uncased) is loaded
    # weights too, though no converter read them: its own from_pretrained did.
    text = {n for n in params if n.startswith("text.")} if getattr(model.text, "pretrained", False) else set()
    if cfg.pretrained:
        their_state, path, kind = read_clip(cfg)
        try:
            state = _converters(kind)[1](their_state, model.visual.cfg, text_prefix(model))
        except KeyError as e:
            raise ConfigError(f"model.pretrained: {path} lacks {e} of its family's layout ({kind})") from e
        loaded = fit_state(model, state, path, NEW_HEADS)
        # an image model's temporal branch is built from the image weights, not loaded: it counts as new
        temporal = {f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()}
        if kind in VIDEO_JOINT_FAMILIES:
            temporal = set()
        return frozenset(n for n in loaded - temporal if n in params) | text
    if cfg.vision.pretrained:
        state, path = read_video_encoder(cfg.vision.pretrained, cfg.vision)
        # a backbone without a classifier has no norm after pooling: that norm is new
        new = ("norm.",) if cfg.vision.final_norm == "pooled" else ()
        loaded = fit_state(model.visual, state, path, new)
        return frozenset(f"visual.{n}" for n in loaded if f"visual.{n}" in params) | text
    return frozenset(text)
