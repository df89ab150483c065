import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videovl.data.sources import write_manifest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "scan_videos.py"


@pytest.fixture(scope="module")
def scan():
    spec = importlib.util.spec_from_file_location("scan_videos", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scan_videos"] = module  # so worker processes can unpickle its functions
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def manifest(tmp_path, test_video):
    shutil.copy(test_video, tmp_path / "good.mp4")
    (tmp_path / "cut.mp4").write_bytes(test_video.read_bytes()[:3000])
    (tmp_path / "empty.mp4").write_bytes(b"")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nonsense")
    rows = [{"video": "good.mp4"}, {"video": "cut.mp4"}, {"video": "empty.mp4"}, {"video": "gone.mp4"}]
    rows += [{"image": "ok.png"}, {"image": "broken.png"}]
    write_manifest(tmp_path / "train.jsonl", rows)
    return tmp_path / "train.jsonl"


@pytest.mark.parametrize("workers", [0, 2])
def test_scan_lists_unreadable_files(scan, manifest, workers, capsys):
    counts = scan([str(manifest), "--quiet", "--workers", str(workers)])
    assert counts == {"total": 6, "readable": 2, "unreadable": 4}
    listed = (manifest.parent / "train.unreadable.txt").read_text().splitlines()
    assert sorted(Path(line.split("\t")[0]).name for line in listed) == [
        "broken.png",
        "cut.mp4",
        "empty.mp4",
        "gone.mp4",
    ]
    assert all(line.split("\t")[1] for line in listed)  # every file comes with its error
    assert "4 of 6 files unreadable" in capsys.readouterr().out


def test_scan_backend_and_output_flags(scan, manifest, tmp_path):
    out = tmp_path / "lists" / "bad.txt"
    assert scan([str(manifest), "--quiet", "--backend", "av", "--output", str(out)])["unreadable"] == 4
    assert len(out.read_text().splitlines()) == 4
    with pytest.raises(SystemExit):
        scan([str(manifest), "--backend", "opencv"])
