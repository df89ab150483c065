"""Every ```python block of README.md runs as written, so the README cannot drift from the code."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, one_thread):
    import videovl

    block = BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    if "runs/demo/model" in block:  # a checkpoint where the README's pretraining run leaves one
        cfg = videovl.load_config(overrides=["model.name=test"])
        videovl.save_checkpoint(videovl.create_model(cfg.model), cfg, tmp_path / "runs/demo/model")
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "readme"})
