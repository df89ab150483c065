"""CLIP checkpoints in (a transformers folder, an open_clip / OpenAI state dict) and out, against the
libraries' own models on tiny random configs."""

import pytest
import torch
from tiny_checkpoints import clip_tokenizer, perturb, write_tiny_clip

import videovl
from videovl.config import ConfigError


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def reference(clip_dir):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(clip_dir).eval()


@pytest.fixture(scope="module")
def batch(clip_dir):
    torch.manual_seed(0)
    tokens = clip_tokenizer()(
        ["a cat sat on the mat", "two dogs", "the digit 3 moves left"],
        padding="max_length",
        max_length=16,
        truncation=True,
        return_tensors="pt",
    )
    return torch.randn(3, 3, 32, 32), tokens["input_ids"], tokens["attention_mask"]


def _clip(clip_dir, **vision):
    return videovl.create_model({"name": "clip", "pretrained": str(clip_dir), "vision": vision}).eval()


@torch.no_grad()
def test_clip_folder_equals_transformers_clip(clip_dir, reference, batch):
    images, ids, mask = batch
    model = _clip(clip_dir)
    assert model.cfg.vision.act == "quick_gelu" and model.cfg.text.pool == "eot"
    assert model.cfg.text.max_length == 16 and model.cfg.text.tokenizer == str(clip_dir)
    image = model.encode_video(images, normalize=False).clip
    text = model.encode_text(ids, mask, normalize=False).sentence
    torch.testing.assert_close(
        image, reference.get_image_features(pixel_values=images).pooler_output, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        text, reference.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, rtol=0, atol=1e-5
    )
    out = model(images, ids, mask)
    logits = out.logit_scale * out.video_features.clip @ out.text_features.sentence.T
    expected = reference(pixel_values=images, input_ids=ids, attention_mask=mask).logits_per_image
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # every parameter except the temporal branch came from the checkpoint
    names = {n for n, _ in model.named_parameters()}
    assert names - model.pretrained_params == {
        f"visual.{n}" for n, _ in model.visual.named_temporal_parameters()
    }


@pytest.mark.parametrize("inflation", ["centre", "mean"])
@pytest.mark.parametrize("tubelet", [1, 2])
@torch.no_grad()
def test_a_clip_of_one_repeated_image_scores_as_the_image(clip_dir, batch, inflation, tubelet):
    # Divided attention only: in joint attention the class token's one key competes with T copies of each
    # patch key, so a repeated image attends differently (by design, not a loading error).
    images, ids, mask = batch
    model = _clip(clip_dir, inflation=inflation, tubelet_size=tubelet, num_frames=4)
    text = model.encode_text(ids, mask)
    image = model.encode_video(images).clip
    clip = model.encode_video(images.unsqueeze(2).expand(-1, -1, 4, -1, -1)).clip
    torch.testing.assert_close(clip @ text.sentence.T, image @ text.sentence.T, rtol=0, atol=1e-6)


def _open_clip(model_cfg: dict, path, config_path=None, seed: int = 0):
    """An open_clip CLIP built from ``model_cfg`` (open_clip's model config json layout), perturbed, saved
    to ``path`` with the config beside it as a hub folder keeps it (or at ``config_path``)."""
    import json

    import open_clip

    torch.manual_seed(seed)
    kwargs = {k: v for k, v in model_cfg.items() if k != "quick_gelu"}
    reference = open_clip.CLIP(**kwargs, quick_gelu=model_cfg.get("quick_gelu", False)).eval()
    perturb(reference, seed)
    torch.save(reference.state_dict(), path)
    where = config_path or path.parent / "open_clip_config.json"
    where.write_text(json.dumps({"model_cfg": model_cfg} if config_path is None else model_cfg))
    return reference


def _open_clip_batch(context: int, vocab: int):
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(1, vocab - 2, (2, context))
    ids[0, 5:], ids[1, 9:] = 0, 0  # open_clip pads with 0 after the end-of-text token (the highest id)
    ids[0, 4], ids[1, 8] = vocab - 1, vocab - 1
    return images, ids, (ids != 0).long()


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@torch.no_grad()
def test_open_clip_state_dict_equals_open_clip(tmp_path, act):
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"width": 64, "layers": 2, "patch_size": 8, "image_size": 32},
        "text_cfg": {"width": 64, "layers": 2, "heads": 1, "context_length": 12, "vocab_size": 100},
        "quick_gelu": act == "quick_gelu",
    }
    path = tmp_path / "open_clip.pt"
    reference = _open_clip(model_cfg, path)
    # the open_clip_config.json beside the file gives the head counts and the activation
    model = videovl.create_model({"name": "clip", "pretrained": str(path)}).eval()
    assert model.cfg.vision.act == act
    images, ids, mask = _open_clip_batch(12, 100)
    image = model.encode_video(images, normalize=False).clip
    text = model.encode_text(ids, mask, normalize=False).sentence
    torch.testing.assert_close(image, reference.encode_image(images), rtol=0, atol=1e-5)
    torch.testing.assert_close(text, reference.encode_text(ids), rtol=0, atol=1e-5)
    _, _, scale = reference(images, ids)
    torch.testing.assert_close(model.scale(), scale)


@torch.no_grad()
def test_open_clip_heads_wider_than_64_come_from_its_model_config(tmp_path):
    # ViT-H/14's visual tower: width 1280 in 16 heads of 80 (one layer, 32 px in 2x2 patches of 16)
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"width": 1280, "head_width": 80, "layers": 1, "patch_size": 16, "image_size": 32},
        "text_cfg": {"width": 64, "layers": 1, "heads": 2, "context_length": 12, "vocab_size": 100},
    }
    path, config_path = tmp_path / "vit_h.pt", tmp_path / "ViT-H-14.json"
    reference = _open_clip(model_cfg, path, config_path)
    spec = {"name": "clip", "pretrained": str(path)}
    with pytest.raises(ConfigError, match="vit_h.pt.*attention heads.*model.pretrained_config"):
        videovl.create_model({**spec, "pretrained_act": "gelu"})
    model = videovl.create_model({**spec, "pretrained_config": str(config_path)}).eval()
    assert (model.cfg.vision.heads, model.cfg.vision.act) == (16, "gelu")
    images, ids, mask = _open_clip_batch(12, 100)
    image = model.encode_video(images, normalize=False).clip
    text = model.encode_text(ids, mask, normalize=False).sentence
    torch.testing.assert_close(image, reference.encode_image(images), rtol=0, atol=1e-5)
    torch.testing.assert_close(text, reference.encode_text(ids), rtol=0, atol=1e-5)
    # width // 64 = 20 heads fits every shape and computes other features: the bug the config prevents
    wrong = dict(model_cfg, vision_cfg={**model_cfg["vision_cfg"], "head_width": 64})
    config_path.write_text(__import__("json").dumps(wrong))
    guessed = videovl.create_model({**spec, "pretrained_config": str(config_path)}).eval()
    assert guessed.cfg.vision.heads == 20
    assert (guessed.encode_video(images, normalize=False).clip - image).abs().max() > 1e-3
    # a config of another model is an error naming both widths
    other = dict(model_cfg, vision_cfg={**model_cfg["vision_cfg"], "width": 1024})
    config_path.write_text(__import__("json").dumps(other))
    with pytest.raises(ConfigError, match="vision_cfg.width is 1024, the weights' is 1280"):
        videovl.create_model({**spec, "pretrained_config": str(config_path)})


def test_open_clip_without_an_activation_is_an_error(tmp_path, clip_dir):
    import open_clip

    reference = open_clip.CLIP(
        embed_dim=8,
        vision_cfg={"width": 64, "layers": 1, "patch_size": 8, "image_size": 16},
        text_cfg={"width": 64, "layers": 1, "heads": 1, "context_length": 8, "vocab_size": 20},
    )
    path = tmp_path / "oc.pt"
    torch.save(reference.state_dict(), path)
    with pytest.raises(ConfigError, match="pretrained_act"):
        videovl.create_model({"name": "clip", "pretrained": str(path)})
    # OpenAI's files say who they are: QuickGELU
    torch.save(
        {
            **reference.state_dict(),
            "input_resolution": torch.tensor(16),
            "context_length": torch.tensor(8),
            "vocab_size": torch.tensor(20),
        },
        path,
    )
    assert videovl.create_model({"name": "clip", "pretrained": str(path)}).cfg.vision.act == "quick_gelu"


def test_bad_clip_inputs_are_errors_naming_the_file(tmp_path, clip_dir):
    with pytest.raises(ConfigError, match="'clip' but model.pretrained is not set"):
        videovl.create_model("clip")
    with pytest.raises(ConfigError, match="openai/clip-vit-base-patch16.*local folder"):
        videovl.create_model({"name": "clip", "pretrained": "openai/clip-vit-base-patch16"})
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ConfigError, match="bert.*model_type 'bert'; expected 'clip'"):
        videovl.create_model({"name": "clip", "pretrained": str(tmp_path / "bert")})
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="other.pt is not an open_clip.*conv.weight"):
        videovl.create_model(
            {"name": "clip", "pretrained": str(tmp_path / "other.pt"), "pretrained_act": "gelu"}
        )


def test_weights_that_do_not_fit_are_errors_naming_file_keys_and_shapes(tmp_path, clip_dir):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(clip_dir, bad)
    state = load_file(bad / "model.safetensors")
    state["visual_projection.weight"] = torch.zeros(8, 32)
    del state["text_projection.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConfigError) as err:
        videovl.create_model({"name": "clip", "pretrained": str(bad)})
    message = str(err.value)
    for part in (
        "bad/model.safetensors",
        "missing keys (text_projection.weight)",
        "extra.weight",
        "visual_projection.weight: (8, 32) in the file, (16, 32) in config.json",
    ):
        assert part in message, message
    # an open_clip file without a key of the layout
    import open_clip

    reference = open_clip.CLIP(
        embed_dim=8,
        vision_cfg={"width": 64, "layers": 1, "patch_size": 8, "image_size": 16},
        text_cfg={"width": 64, "layers": 1, "heads": 1, "context_length": 8, "vocab_size": 20},
    )
    (tmp_path / "open_clip_config.json").write_text(
        '{"vision_cfg": {"width": 64}, "text_cfg": {"width": 64, "heads": 1}}'
    )
    state = reference.state_dict()
    del state["ln_final.weight"]
    torch.save(state, tmp_path / "oc.pt")
    with pytest.raises(ConfigError, match="oc.pt lacks 'ln_final.weight'"):
        videovl.create_model(
            {"name": "clip", "pretrained": str(tmp_path / "oc.pt"), "pretrained_act": "gelu"}
        )
    # a file of the right layout with a wrong shape: named in videovl's terms, both shapes
    state = reference.state_dict()
    state["visual.positional_embedding"] = torch.zeros(6, 64)
    torch.save(state, tmp_path / "oc.pt")
    with pytest.raises(ConfigError, match=r"oc.pt does not fit.*visual.pos_embed is \(1, 6, 64\)"):
        videovl.create_model(
            {"name": "clip", "pretrained": str(tmp_path / "oc.pt"), "pretrained_act": "gelu"}
        )
