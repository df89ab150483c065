"""The timm / open_clip style entry points: list_models, create_model_and_transforms, get_tokenizer, and the
typed output of the model's forward, for sizes, videovl checkpoints and other libraries' checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_checkpoints import write_tiny_clip, write_tiny_video_model

import videovl
from videovl.config import MODEL_SIZES, Config, ConfigError, DataConfig
from videovl.data.collate import Collator
from videovl.data.media.video_io import probe, read_frames
from videovl.data.tokenizer import fill_token_ids, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    """The test size: model, preprocess_train, preprocess_eval."""
    return videovl.create_model_and_transforms("test")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved test-size checkpoint trained (so to speak) at 4 frames of 32 px with its own normalisation."""
    torch.manual_seed(0)
    cfg = Config(model=videovl.model_config("test", vision={"depth": 1}))
    fill_token_ids(cfg.model.text, load_tokenizer(cfg.model.text))
    cfg.data.image_size, cfg.data.num_frames, cfg.data.mean, cfg.data.std = 32, 4, (0.5,) * 3, (0.25,) * 3
    model = videovl.create_model(cfg.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, videovl.save_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "model")


def test_list_models_names_the_sizes_and_filters_them():
    assert videovl.list_models() == sorted(MODEL_SIZES)
    assert videovl.list_models("vit*") == ["vit-b16"]
    assert videovl.list_models("nothing*") == []
    for name in ("list_models", "create_model_and_transforms", "get_tokenizer", "VideoTextOutput"):
        assert name in videovl.__all__ and getattr(videovl, name) is not None


def test_a_size_gives_a_model_in_eval_mode_and_transforms_at_its_size(tiny, test_video):
    model, train, evaluate = tiny
    assert isinstance(model, videovl.VideoLanguageModel) and not model.training
    vision = model.cfg.vision
    clip = evaluate(test_video)
    assert (
        clip.shape == (3, vision.num_frames, vision.image_size, vision.image_size)
        and clip.dtype == torch.float32
    )
    assert torch.equal(clip, evaluate(test_video))  # centre frames, centre crop
    a, b = (train(test_video, np.random.default_rng(s)) for s in (0, 1))
    assert a.shape == clip.shape and not torch.equal(a, b)
    assert torch.equal(a, train(test_video, np.random.default_rng(0)))  # a seeded view repeats


def test_preprocess_eval_gives_one_clip_for_a_path_its_bytes_and_its_frames(tiny, test_video):
    _, _, evaluate = tiny
    frames = read_frames(test_video, range(probe(test_video).num_frames))  # every frame, (T, H, W, 3)
    want = evaluate(test_video)
    for media in (str(test_video), test_video.read_bytes(), frames, torch.from_numpy(frames)):
        torch.testing.assert_close(evaluate(media), want, rtol=0, atol=0)


def test_preprocess_eval_on_a_real_clip(tiny, shared_dir):
    _, _, evaluate = tiny
    path = shared_dir / "videos" / "carphone_pristine.mp4"
    frames = read_frames(path, range(probe(path).num_frames))
    want = evaluate(path)
    assert want.shape == (3, 4, 32, 32)
    torch.testing.assert_close(evaluate(path.read_bytes()), want, rtol=0, atol=0)
    torch.testing.assert_close(evaluate(frames), want, rtol=0, atol=0)


def test_an_image_is_a_one_frame_clip_from_a_path_a_pil_image_or_an_array(tiny, tmp_path):
    _, _, evaluate = tiny
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    want = evaluate(tmp_path / "x.png")
    assert want.shape == (3, 1, 32, 32)
    for media in (Image.fromarray(pixels), pixels, pixels[None], (tmp_path / "x.png").read_bytes()):
        modality = "image" if isinstance(media, bytes) else None
        torch.testing.assert_close(evaluate(media, modality=modality), want, rtol=0, atol=0)


def test_preprocess_refuses_what_is_not_media(tiny, tmp_path):
    _, _, evaluate = tiny
    with pytest.raises(ValueError, match=r"uint8 RGB \(T, H, W, 3\)"):
        evaluate(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="media is a int; expected a video or image path"):
        evaluate(3)
    with pytest.raises(videovl.data.media.video_io.VideoReadError, match="missing.mp4.*does not exist"):
        evaluate(tmp_path / "missing.mp4")


def test_get_tokenizer_gives_the_tensors_the_text_encoder_takes(tiny):
    model, _, _ = tiny
    tokenizer = videovl.get_tokenizer("test")
    texts = ["a dog runs", "the digit 3 moves left, then up"]
    tokens = tokenizer(texts)
    assert set(tokens) == {"input_ids", "attention_mask"} and tokens["input_ids"].shape[0] == 2
    batch = Collator(load_tokenizer(model.cfg.text), model.cfg.text.max_length)(
        [
            {"pixels": torch.zeros(1), "text": t, "label": -1, "index": 0, "valid": True, "bad": []}
            for t in texts
        ]
    )
    for key in tokens:  # what training and evaluation tokenize
        assert torch.equal(tokens[key], batch[key])
    one = tokenizer("a dog runs")
    assert one["input_ids"].shape[0] == 1
    assert tokenizer(["word " * 100])["input_ids"].shape[1] == model.cfg.text.max_length
    with torch.no_grad():
        model.encode_text(**tokens)
    with pytest.raises(TypeError, match="string or a non-empty list of strings"):
        tokenizer([])


@torch.no_grad()
def test_forward_returns_a_typed_output(tiny, test_video):
    model, _, evaluate = tiny
    tokens = videovl.get_tokenizer("test")(["a dog runs", "a cat sleeps"])
    pixels = torch.stack([evaluate(test_video), evaluate(test_video)])
    out = model(pixels, **tokens)
    assert isinstance(out, videovl.VideoTextOutput)
    video, text = model.encode_video(pixels), model.encode_text(**tokens)
    for a, b in ((out.video_features, video), (out.text_features, text)):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y)
    torch.testing.assert_close(out.logit_scale, model.scale())
    assert model.similarity(out.text_features, out.video_features).shape == (2, 2)


@torch.no_grad()
def test_a_saved_checkpoint_gives_its_model_its_transforms_and_its_tokenizer(saved, test_video):
    original, path = saved
    model, train, evaluate = videovl.create_model_and_transforms(path)
    assert not model.training and (evaluate.num_frames, evaluate.transform.size) == (4, 32)
    assert evaluate.transform.mean == [0.5] * 3 and train.transform.std == [0.25] * 3 and train.train
    pixels = evaluate(test_video)[None]
    tokens = videovl.get_tokenizer(path)("a dog runs")
    got, want = model(pixels, **tokens), original(pixels, **tokens)
    torch.testing.assert_close(got.video_features.clip, want.video_features.clip, rtol=0, atol=0)
    torch.testing.assert_close(got.text_features.sentence, want.text_features.sentence, rtol=0, atol=0)
    # the same when the folder is given as a string, and with overrides of the heads
    assert videovl.create_model_and_transforms(str(path), num_classes=3)[0].action_head is not None


@torch.no_grad()
def test_a_clip_folder_gives_clip_with_its_own_tokenizer(tmp_path):
    from transformers import CLIPModel

    folder = write_tiny_clip(tmp_path / "clip")
    model, _, evaluate = videovl.create_model_and_transforms(folder)
    assert model.cfg.name == "clip" and model.cfg.text.pool == "eot"
    tokenizer = videovl.get_tokenizer(folder)
    assert type(tokenizer.tokenizer).__name__.startswith("CLIPTokenizer") and tokenizer.max_length == 16
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    pixels = evaluate(image)  # (3, 1, 32, 32): CLIP's own image size
    assert pixels.shape == (3, 1, 32, 32)
    tokens = tokenizer(["a cat", "two dogs on a mat"])
    out = model(pixels[None], **tokens)
    reference = CLIPModel.from_pretrained(folder).eval()
    want = reference(pixel_values=pixels[:, 0][None], **tokens).logits_per_text
    got = out.logit_scale * out.text_features.sentence @ out.video_features.clip.T
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["timesformer", "videomae"])
def test_a_video_encoder_folder_gives_its_frames_and_size(tmp_path, kind, test_video):
    folder = write_tiny_video_model(tmp_path / kind, kind)
    model, _, evaluate = videovl.create_model_and_transforms(folder)
    assert model.cfg.vision.pretrained == str(folder)
    assert evaluate(test_video).shape == (3, 4, 16, 16)
    assert videovl.get_tokenizer(folder)("a dog")["input_ids"].shape[0] == 1  # the demo's text tower


def test_a_video_encoder_folder_normalises_pixels_as_its_preprocessor_config_says(tmp_path, test_video):
    from transformers import VideoMAEImageProcessor

    folder = write_tiny_video_model(tmp_path / "mae", "videomae")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, as VideoMAE's real folders say
    VideoMAEImageProcessor(image_mean=mean, image_std=std).save_pretrained(folder)
    _, train, evaluate = videovl.create_model_and_transforms(folder)
    assert evaluate.transform.mean == mean and train.transform.std == std
    # the same pixels in [0, 1] as a folder without the file gets, which keeps CLIP's normalisation
    plain = videovl.create_model_and_transforms(write_tiny_video_model(tmp_path / "plain", "videomae"))[2]
    assert plain.transform.mean == list(DataConfig.mean)
    torch.testing.assert_close(
        unnormalise(evaluate(test_video), mean, std),
        unnormalise(plain(test_video), DataConfig.mean, DataConfig.std),
        rtol=0,
        atol=1e-5,
    )


def unnormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(C, T, H, W) normalised -> pixels in [0, 1]."""
    return x * torch.tensor(std)[:, None, None, None] + torch.tensor(mean)[:, None, None, None]


def test_a_name_that_is_neither_a_size_nor_a_path_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"name_or_checkpoint is 'dmeo'.*'demo', 'small', 'test'.*Did you mean the size 'demo'",
    ):
        videovl.create_model_and_transforms("dmeo")
    with pytest.raises(ConfigError, match=r"'/no/such/model'.*nearest folder that exists is /"):
        videovl.get_tokenizer("/no/such/model")
    with pytest.raises(ConfigError, match=r"'openai/clip-vit-base-patch16'.*never downloads"):
        videovl.get_tokenizer("openai/clip-vit-base-patch16")
    with pytest.raises(TypeError, match="name_or_checkpoint is a int"):
        videovl.get_tokenizer(3)


def test_a_path_that_is_not_a_model_names_it_and_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty is not a videovl checkpoint: config.yaml is missing"):
        videovl.create_model_and_transforms(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"notes.txt is a file, not a checkpoint: expected a videovl"):
        videovl.get_tokenizer(tmp_path / "notes.txt")
    (tmp_path / "junk.pt").write_bytes(b"not a state dict")
    with pytest.raises(ConfigError, match=r"junk.pt cannot be read as a state dict"):
        videovl.create_model_and_transforms(tmp_path / "junk.pt")
