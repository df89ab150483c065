"""tools/search.py over an extraction folder: rankings against a brute-force numpy search."""

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.test_extract import extract, tiny_checkpoint  # noqa: F401  (a fixture)
from tools import search as tool
from videovl.eval.extract import exact_index, load_embeddings, load_index, read_lines, search


@pytest.fixture(scope="module")
def extracted(tiny_checkpoint, tiny_demo, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("search") / "emb"
    args = ["--manifest", str(tiny_demo / "video_test.jsonl"), "--workers", "0", "--num-frames", "4"]
    extract(tiny_checkpoint, out, *args, "--index")
    return out


def brute_force(folder: Path, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    clip = load_embeddings(folder)["clip"]
    scores = clip @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [read_lines(folder / "ids.txt")[i] for i in order], scores[order]


def same(got: list[dict], expected: list[dict]) -> None:
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=1e-5)


def test_search_ranks_like_brute_force(extracted, capsys):
    emb, captions = load_embeddings(extracted), read_lines(extracted / "captions.txt")
    j = 5
    result = tool.main(["--index", str(extracted), "--text", captions[j], "--top-k", "4"])
    # The query is embedded exactly as the extraction embedded this caption.
    ids, scores = brute_force(extracted, emb["text"][j], 4)
    assert [r["id"] for r in result["results"]] == ids
    np.testing.assert_allclose([r["score"] for r in result["results"]], scores, rtol=1e-4, atol=1e-5)
    assert [r["rank"] for r in result["results"]] == [1, 2, 3, 4]
    paths = read_lines(extracted / "paths.txt")
    assert result["results"][0]["path"] == paths[read_lines(extracted / "ids.txt").index(ids[0])]
    printed = capsys.readouterr().out
    assert captions[j] in printed and ids[0] in printed


def test_without_index_file_and_with_inverted_lists(extracted, tiny_checkpoint, tmp_path):  # noqa: F811
    query = ["--text", "the digit 3 moves left, then up", "--top-k", "16"]
    expected = tool.main(["--index", str(extracted), *query])["results"]

    plain = tmp_path / "plain"
    shutil.copytree(extracted, plain)
    (plain / "index.faiss").unlink()
    same(tool.main(["--index", str(plain), *query])["results"], expected)

    # The shards are reused: only the merge and the (inverted-file) index run again.
    ivf = tmp_path / "ivf"
    shutil.copytree(extracted, ivf)
    info = json.loads((extracted / "extract.json").read_text())["args"]
    result = extract(tiny_checkpoint, ivf, "--manifest", info["manifest"], "--workers", "0",
                     "--num-frames", "4", "--index", "--ivf-threshold", "1")  # fmt: skip
    assert result["computed_shards"] == 0 and result["skipped_shards"] == 1
    # build_index picks IVF, or exact search where IVF would have to probe most of its lists.
    assert faiss.read_index(str(ivf / "index.faiss")).ntotal == len(load_embeddings(ivf)["clip"])
    got = tool.main(["--index", str(ivf), *query, "--checkpoint", str(tiny_checkpoint)])
    same(got["results"], expected)
    assert got["checkpoint"] == str(tiny_checkpoint)


def test_a_clip_embedding_finds_its_own_clip(extracted):
    clip = load_embeddings(extracted)["clip"]
    for index in (load_index(extracted), exact_index(clip)):
        scores, rows = search(index, clip, 3)
        assert rows.shape == (len(clip), 3)
        assert (rows[:, 0] == np.arange(len(clip))).all()
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert search(exact_index(clip), clip[:2], len(clip) + 5)[1].shape == (2, len(clip))  # k capped


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="extract.json does not exist.*extract_embeddings"):
        tool.main(["--index", str(tmp_path), "--text", "x"])
    with pytest.raises(FileNotFoundError, match="neither embeddings.safetensors nor clip.npy"):
        load_index(tmp_path)
    with pytest.raises(SystemExit):
        tool.parse_args(["--index", "x", "--text", "y", "--top-k", "0"])
