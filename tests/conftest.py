from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def one_thread():
    """Tiny models: on a busy shared CPU a second thread makes each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (real clips and benchmark annotations); tests skip without it."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED}/data is absent: real clips and annotation files are not available here")
    return SHARED / "data"


def write_test_video(path: Path, num_frames: int = 40, size: tuple[int, int] = (48, 64), fps: int = 25,
                     options: dict[str, str] | None = None) -> Path:  # fmt: skip
    """An h264 mp4 written with PyAV whose frames all differ (brightness ramp and a moving bar)."""
    import av
    import numpy as np

    h, w = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": "10", "bf": "2", **(options or {})}
        for k in range(num_frames):
            img = np.full((h, w, 3), (k * 5) % 200 + 20, np.uint8)
            img[:, (k * 3) % w, :] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def test_video(tmp_path_factory) -> Path:
    """A 40-frame 64x48 25 fps h264 mp4 with B-frames and a keyframe every 10 frames."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip.mp4")


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small moving-digits corpus (64 train clips and images, 16 val/test clips), generated once."""
    from videovl.data.corpora.demo import generate_demo

    root = tmp_path_factory.mktemp("demo") / "moving_digits"
    generate_demo(root, seed=0, train_videos=64, eval_videos=16, train_images=64)
    return root


def tiny_pretrain_args(demo_root: Path, out: Path, *extra: str, stages: int = 4) -> list[str]:
    """Overrides for a seconds-long run of the demo config (``stages``: how many stages the config has):
    test-size model, 2 steps a stage, no workers."""
    return [
        "model.name=test",
        "data.image_size=32",  # the test size's 4x4 grid of 8 px patches
        "data.demo=false",  # read the tiny corpus as it is: true would regenerate it at full size in place
        f"data.demo_root={demo_root}",
        f"train.output_dir={out}",
        "data.num_workers=0",
        "data.batch_size=8",
        "train.tracker=null",
        "train.mixed_precision=no",
        "eval.batch_size=16",
        *(f"stages.{i}.steps=2" for i in range(stages)),
        *(f"stages.{i}.warmup_steps=1" for i in range(stages)),
        *extra,
    ]


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A random test-size pretraining checkpoint reading 4-frame clips (both decoders, no QA head)."""
    import videovl
    from videovl.config import Config
    from videovl.data.tokenizer import fill_token_ids, load_tokenizer
    from videovl.models.factory import model_config

    torch.manual_seed(0)
    cfg = Config(model=model_config("test"))
    cfg.data.num_frames = 4
    tokenizer = load_tokenizer(cfg.model.text)
    fill_token_ids(cfg.model.text, tokenizer)
    model = videovl.create_model(cfg.model)
    path = tmp_path_factory.mktemp("pretrained") / "model"
    return videovl.save_checkpoint(model, cfg, path, extra_files=tokenizer.save_pretrained)
