"""Tiny randomly initialised checkpoints of other libraries, written to a folder like the real ones."""

from __future__ import annotations

import string
from pathlib import Path

import torch


def clip_tokenizer():
    """CLIP's BPE tokenizer on a vocabulary of printable ASCII (no merges): a word is its characters."""
    from transformers import CLIPTokenizer

    chars = [c for c in string.printable if c.strip()]
    vocab = {tok: i for i, tok in enumerate([*chars, *(c + "</w>" for c in chars)])}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its initial value (norms away from 1 and 0), so that a weight landing in
    the wrong place changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def clip_config(act: str = "quick_gelu", vocab_size: int = 200, eos: int = 199, width: int = 32):
    from transformers import CLIPConfig

    size = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "hidden_act": act,
    }
    text = {
        **size,
        "vocab_size": vocab_size,
        "max_position_embeddings": 16,
        "bos_token_id": eos - 1,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    vision = {**size, "image_size": 32, "patch_size": 8}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def write_tiny_clip(path: Path, act: str = "quick_gelu", seed: int = 0) -> Path:
    """A transformers CLIPModel folder (config.json, model.safetensors) with its tokenizer."""
    from transformers import CLIPModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model = CLIPModel(clip_config(act, len(tokenizer), eos)).eval()
    perturb(model, seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def write_tiny_siglip(path: Path, seed: int = 0, logit_scale: float = 4.8, logit_bias: float = -12.0) -> Path:
    """A transformers SiglipModel folder with CLIP's tiny tokenizer (SigLIP's own is a SentencePiece model,
    which cannot be made offline; the text tower sees ids either way). The scale and bias are set as a
    trained SigLIP's are (exp(4.8) ~ 121: above CLIP's clamp of 100)."""
    from transformers import SiglipConfig, SiglipModel

    tokenizer = clip_tokenizer()
    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = {"bos_token_id": eos - 1, "eos_token_id": eos, "pad_token_id": eos}
    text = {**size, **ids, "vocab_size": len(tokenizer), "max_position_embeddings": 16}
    vision = {**size, "image_size": 32, "patch_size": 8}
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).eval()
    perturb(model, seed)
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        model.logit_bias.fill_(logit_bias)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


# XLM-R's special ids, which MetaCLIP 2's multilingual tokenizer uses: end-of-text is 2, not the highest id
METACLIP2_IDS = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}


def write_tiny_metaclip2(path: Path, seed: int = 0, vocab_size: int = 50) -> Path:
    """A transformers MetaClip2Model folder without a tokenizer (MetaCLIP 2's is XLM-R's SentencePiece
    model, which cannot be made offline; the text tower sees ids either way)."""
    from transformers import MetaClip2Config, MetaClip2Model

    size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    text = {**size, **METACLIP2_IDS, "vocab_size": vocab_size, "max_position_embeddings": 16}
    vision = {**size, "image_size": 32, "patch_size": 8, "hidden_act": "gelu"}
    torch.manual_seed(seed)
    model = MetaClip2Model(MetaClip2Config(text_config=text, vision_config=vision, projection_dim=16)).eval()
    perturb(model, seed)
    model.save_pretrained(path)
    return Path(path)


VIDEO_SIZE = {
    "image_size": 16,
    "patch_size": 8,
    "num_frames": 4,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def write_tiny_video_model(path: Path, kind: str, classifier: bool = False, seed: int = 0, **config):
    """A transformers TimeSformer or VideoMAE folder (the backbone, or a video classifier)."""
    import transformers

    names = {"timesformer": "Timesformer", "videomae": "VideoMAE"}
    cfg = getattr(transformers, f"{names[kind]}Config")(**{**VIDEO_SIZE, **config})
    cls = f"{names[kind]}ForVideoClassification" if classifier else f"{names[kind]}Model"
    torch.manual_seed(seed)
    model = getattr(transformers, cls)(cfg).eval()
    perturb(model, seed)
    model.save_pretrained(path)
    return Path(path)


def write_tiny_vjepa2(path: Path, seed: int = 0, classifier: bool = False, **config):
    """A transformers VJEPA2Model folder (encoder and predictor), or a VJEPA2ForVideoClassification one."""
    from transformers import VJEPA2Config, VJEPA2ForVideoClassification, VJEPA2Model

    size = {"crop_size": 16, "patch_size": 8, "frames_per_clip": 4, "tubelet_size": 2, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2.0, "pred_hidden_size": 16,
            "pred_num_hidden_layers": 1, "pred_num_attention_heads": 2, "pred_num_mask_tokens": 2,
            "num_pooler_layers": 1}  # fmt: skip
    torch.manual_seed(seed)
    cls = VJEPA2ForVideoClassification if classifier else VJEPA2Model
    model = cls(VJEPA2Config(**{**size, **config})).eval()
    perturb(model, seed)
    model.save_pretrained(path)
    return Path(path)


VIDEOPRISM_VISION = {"image_size": 16, "num_frames": 4, "tubelet_size": [1, 8, 8], "hidden_size": 32,
                     "num_attention_heads": 2, "intermediate_size": 64, "num_spatial_layers": 2,
                     "num_temporal_layers": 2, "num_auxiliary_layers": 1}  # fmt: skip


def videoprism_tokenizer():
    """VideoPrism's own tokenizer class (T5's SentencePiece unigram, no begin token, pad 0) on a vocabulary
    of lower-case letters and digits, each alone or starting a word."""
    from transformers import VideoPrismTokenizer

    chars = string.ascii_lowercase + string.digits
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    return VideoPrismTokenizer(vocab=pieces, extra_ids=0)


def write_tiny_videoprism(path: Path, kind: str = "vision", seed: int = 0, **vision):
    """A transformers VideoPrism folder: ``kind`` vision (VideoPrismVisionModel), video
    (VideoPrismVideoModel), classifier (VideoPrismForVideoClassification) or clip (VideoPrismClipModel, with
    a tiny text tower and VideoPrism's tokenizer class)."""
    import transformers
    from transformers import VideoPrismConfig, VideoPrismVisionConfig

    vision = {**VIDEOPRISM_VISION, **vision}
    torch.manual_seed(seed)
    if kind == "clip":
        tokenizer = videoprism_tokenizer()
        text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 16}  # fmt: skip
        model = transformers.VideoPrismClipModel(VideoPrismConfig(text_config=text, vision_config=vision))
        tokenizer.save_pretrained(path)
    else:
        names = {"vision": "VideoPrismVisionModel", "video": "VideoPrismVideoModel"}
        name = names.get(kind, "VideoPrismForVideoClassification")
        model = getattr(transformers, name)(VideoPrismVisionConfig(**vision))
    model.eval()
    perturb(model, seed)
    model.save_pretrained(path)
    return Path(path)
