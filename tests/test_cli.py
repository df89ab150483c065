"""User errors at the tools' boundary: one message on stderr and exit status 2; bugs keep their traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from videovl.cli import run_tool
from videovl.config import ConfigError
from videovl.data.sources import ManifestError, read_manifest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted((ROOT / "tools").glob("[!_]*.py"))


def _raise(err):
    def main(argv):
        raise err

    return main


@pytest.mark.parametrize(
    "err, expected",
    [
        (ConfigError("stages.0.stepz: unknown key"), "stages.0.stepz: unknown key"),
        (ManifestError("a.jsonl:3: not valid JSON"), "a.jsonl:3: not valid JSON"),
        (FileNotFoundError(2, "No such file or directory", "runs/x/model"), "no such file or folder: runs/x"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(err, expected, capsys, monkeypatch):
    monkeypatch.delenv("VIDEOVL_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_tool(_raise(err), [])
    assert exit_.value.code == 2
    err_text = capsys.readouterr().err
    assert expected in err_text and "error:" in err_text
    assert len(err_text.strip().splitlines()) == 1 and "Traceback" not in err_text


def test_bugs_keep_their_traceback_and_user_errors_can_show_theirs(monkeypatch):
    with pytest.raises(KeyError):
        run_tool(_raise(KeyError("a bug")), [])
    monkeypatch.setenv("VIDEOVL_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        run_tool(_raise(ConfigError("shown with its traceback")), [])


def test_success_returns_normally():
    seen = []
    run_tool(seen.append, ["--x"])
    assert seen == [["--x"]]


def test_every_tool_ends_in_run_tool():
    assert TOOLS, "no tools found"
    for path in TOOLS:
        assert 'if __name__ == "__main__":\n    run_tool(main)\n' in path.read_text(), path.name


def test_bad_manifest_line_is_a_manifest_error_naming_file_and_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"video": "a.mp4"}\n{"video": \n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2"):
        read_manifest(manifest)


@pytest.mark.slow
def test_a_real_tool_on_bad_yaml_and_bad_checkpoint(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: demo\n bad: [1\n")
    runs = {
        "bad YAML": ([str(ROOT / "tools/pretrain.py"), "--config", str(bad)], "not valid YAML at line 3"),
        "not a checkpoint": (
            [str(ROOT / "tools/evaluate.py"), "--checkpoint", str(tmp_path), "--task", "retrieval"]
            + ["--manifest", str(tmp_path / "m.jsonl")],
            "is not a videovl checkpoint",
        ),
    }
    for name, (argv, expected) in runs.items():
        done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (name, done.stderr)
        assert expected in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
