"""The core install (``pip install videovl``) without its extras: the core runs with every optional module
unimportable, each feature that needs one names its extra, and the exact numpy index gives faiss's
results."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_extract import tiny_checkpoint  # noqa: F401  (a fixture)
from tools import extract_embeddings
from videovl.cli import run_tool
from videovl.config import Config
from videovl.data.sources import read_manifest
from videovl.eval import extract
from videovl.eval.extract import ExactIndex, exact_index, load_index, search
from videovl.extras import OPTIONAL, MissingExtraError, optional, require
from videovl.models.factory import model_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "videovl"


def block(monkeypatch, *names: str) -> None:
    """Make ``names`` (and their loaded submodules) unimportable, as if not installed."""
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)


def extra_message(feature: str, package: str, extra: str = "train") -> str:
    return f'^{feature} needs {package}: pip install "videovl\\[{extra}\\]"'


# ------------------------------------------------------------------------------------ the core, end to end

CORE_SCRIPT = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
import torch
import videovl
from tools import extract_embeddings, search
from videovl.eval.extract import exact_index, search as search_index
from videovl.extras import MissingExtraError

from videovl.config import ConfigError

try:  # the test and demo sizes read the demo's MiniLM tokenizer, which comes with [train]
    videovl.create_model("test")
except ConfigError as e:
    size_error = str(e)
model, _, preprocess = videovl.create_model_and_transforms({checkpoint!r})
tokenizer = videovl.get_tokenizer({checkpoint!r})
with torch.no_grad():
    out = model(torch.stack([preprocess(p) for p in {videos!r}]), **tokenizer(["a digit", "two digits"]))
index = exact_index(out.video_features.clip.numpy())
scores, rows = search_index(index, out.text_features.sentence.numpy(), 2)
assert rows.shape == (2, 2), rows

args = ["--checkpoint", {checkpoint!r}, "--manifest", {manifest!r}, "--out", {out!r}, "--quiet",
        "--workers", "0", "--num-frames", "4"]
index_error = None
try:
    extract_embeddings.main(args + ["--index"])
except MissingExtraError as e:
    index_error = str(e)
counts = extract_embeddings.main(args)
found = search.main(["--index", {out!r}, "--text", {query!r}, "--top-k", "3"])
blocked = [m for m in {blocked!r} if sys.modules.get(m) is not None]
print("RESULT " + json.dumps({{"counts": counts, "found": found["results"], "index_error": index_error,
                              "size_error": size_error, "reimported": blocked}}))
"""


def test_the_core_extracts_and_searches_without_any_extra(tiny_checkpoint, tiny_demo, tmp_path):  # noqa: F811
    """In a fresh interpreter with every optional module unimportable (as after ``pip install videovl``):
    a checkpoint embeds videos and sentences (the README's Python API), a manifest is read without pyarrow,
    extraction runs, and search is exact, in numpy."""
    manifest, out = tiny_demo / "video_test.jsonl", tmp_path / "emb"
    samples = read_manifest(manifest)
    query = samples[5].captions[0]
    script = CORE_SCRIPT.format(
        blocked=sorted(OPTIONAL), checkpoint=str(tiny_checkpoint), manifest=str(manifest), out=str(out),
        query=query, videos=[s.path for s in samples[:3]],
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["index_error"] == '--index needs faiss-cpu: pip install "videovl[train]"'
    assert result["size_error"].endswith("""is not installed (pip install "videovl[train]")""")
    assert result["counts"]["clips"] == 16 and not result["reimported"]
    assert not (out / "index.faiss").exists()

    # The ranking is the brute-force one over what the extraction wrote (the query: caption 5's embedding).
    emb = extract.load_embeddings(out)
    j = extract.read_lines(out / "captions.txt").index(query)
    scores = emb["clip"] @ emb["text"][j]
    order = np.argsort(-scores, kind="stable")[:3]
    ids = extract.read_lines(out / "ids.txt")
    assert [r["id"] for r in result["found"]] == [ids[i] for i in order]
    np.testing.assert_allclose([r["score"] for r in result["found"]], scores[order], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- each extra named where needed


def test_mining_names_the_train_extra(monkeypatch):
    from videovl.train.mining import build_index, nearest_neighbours

    block(monkeypatch, "faiss")
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    for call in (lambda: build_index(x), lambda: nearest_neighbours(x, 2)):
        with pytest.raises(MissingExtraError, match=extra_message("hard-negative mining", "faiss-cpu")):
            call()


def test_a_run_with_mining_fails_before_step_one(monkeypatch):
    from videovl.config import StageConfig
    from videovl.train.checks import check_run

    cfg = Config(model=model_config("test"), stages=[StageConfig()])
    cfg.stages[0].mining.enabled = True
    block(monkeypatch, "faiss")
    with pytest.raises(
        MissingExtraError, match=extra_message(r"stages.0.mining \(hard-negative mining\)", "faiss-cpu")
    ):
        check_run(cfg, model=None)  # the extra is checked before anything of the model is


def test_extraction_with_index_fails_before_extracting(monkeypatch, tiny_checkpoint, tmp_path):  # noqa: F811
    block(monkeypatch, "faiss")
    args = [
        "--checkpoint",
        str(tiny_checkpoint),
        "--input",
        str(tmp_path / "none.mp4"),
        "--out",
        str(tmp_path),
    ]
    with pytest.raises(MissingExtraError, match=extra_message("--index", "faiss-cpu")):
        extract_embeddings.main([*args, "--index"])


def test_shards_tracker_demo_and_captions_name_their_extras(monkeypatch, tmp_path):
    from videovl.data.corpora.demo import generate_demo
    from videovl.data.sources.shards import expand_shards
    from videovl.eval import captioning
    from videovl.train.accelerator import make_accelerator

    block(monkeypatch, "webdataset", "tensorboard", "sklearn", "pycocoevalcap")
    with pytest.raises(MissingExtraError, match=extra_message("reading WebDataset shards", "webdataset")):
        expand_shards(str(tmp_path / "{0..1}.tar"))
    cfg = Config(model=model_config("test"))
    cfg.train.tracker = "tensorboard"
    with pytest.raises(
        MissingExtraError, match=r"tensorboard: pip install \"videovl\[train\]\" \(or train.tracker=null"
    ):
        make_accelerator(cfg, cpu=True)
    with pytest.raises(
        MissingExtraError,
        match=extra_message(r"generating the demo corpus \(moving digits\)", "scikit-learn"),
    ):
        generate_demo(tmp_path / "demo", train_videos=1, eval_videos=1, train_images=1, eval_images=1)
    # Cached per process: the undecorated function, so no scorer a test before this one started is lost.
    with pytest.raises(MissingExtraError, match=extra_message("caption scoring", "pycocoevalcap", "caption")):
        captioning._scorers.__wrapped__()


def test_a_tool_reports_a_missing_extra_in_one_line(monkeypatch, capsys):
    block(monkeypatch, "faiss")
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda argv: require("faiss", "--index"), [])
    assert stop.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith('error: --index needs faiss-cpu: pip install "videovl[train]"')
    )


def test_a_broken_install_keeps_its_own_error(monkeypatch):
    """Only the optional package itself being absent is a missing extra; a module it fails to import is not
    hidden behind that message."""

    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'somelib'", name="somelib")

    monkeypatch.setattr("importlib.import_module", broken)
    for call in (lambda: require("faiss", "x"), lambda: optional("faiss")):
        with pytest.raises(ModuleNotFoundError, match="somelib") as err:
            call()
        assert not isinstance(err.value, MissingExtraError)


def test_manifests_read_the_same_without_pyarrow(tiny_demo, monkeypatch):
    fast = list(read_manifest(tiny_demo / "video_train.jsonl", cache=False))
    block(monkeypatch, "pyarrow")
    assert optional("pyarrow.json") is None
    assert list(read_manifest(tiny_demo / "video_train.jsonl", cache=False)) == fast


def test_search_passes_over_an_index_file_it_cannot_read(monkeypatch, tmp_path):
    clip = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    (tmp_path / "index.faiss").write_bytes(b"")
    block(monkeypatch, "faiss")
    with pytest.warns(
        UserWarning, match="index.faiss needs faiss-cpu.*searching the clip embeddings exactly"
    ):
        index = load_index(tmp_path)
    assert isinstance(index, ExactIndex)
    assert search(index, clip, 1)[1][:, 0].tolist() == list(range(6))


# -------------------------------------------------------------------------------- the exact numpy index


def test_the_exact_index_gives_faiss_flat_results(monkeypatch):
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    reference = faiss.IndexFlatIP(16)
    normalised = x / np.linalg.norm(x, axis=1, keepdims=True)
    reference.add(normalised)
    mine = exact_index(x)
    monkeypatch.setattr(extract, "_BLOCK_SCORES", 500 * 7)  # queries in blocks of 7, the last one short
    for k in (1, 10, 500, 503):  # past the index size both pad with -1 and float32's lowest score
        want_scores, want_rows = reference.search(queries, k)
        got_scores, got_rows = mine.search(queries, k)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
        # The same rows, but for neighbours whose scores differ only in float32 rounding (two BLAS sums).
        differ = got_rows != want_rows
        assert differ.mean() < 1e-3
        exact = queries.astype(np.float64) @ normalised.astype(np.float64).T
        q = np.nonzero(differ)[0]
        np.testing.assert_allclose(exact[q, got_rows[differ]], exact[q, want_rows[differ]], atol=1e-6)
        assert got_rows.dtype == want_rows.dtype and got_scores.dtype == want_scores.dtype
    # search() normalises the queries and caps k at the index size, as it does for a faiss index.
    for index in (reference, mine):
        scores, rows = search(index, queries[:3] * 5, 600)
        assert rows.shape == (3, 500) and np.abs(scores).max() <= 1 + 1e-5


def test_the_exact_index_keeps_zero_rows_and_an_empty_index():
    index = exact_index(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(index.vectors, [[0, 0], [0.6, 0.8]])
    scores, rows = index.search(np.array([[1.0, 0.0]]), 2)
    assert rows.tolist() == [[1, 0]] and scores[0, 1] == 0
    empty = exact_index(np.zeros((0, 3)))
    scores, rows = empty.search(np.ones((2, 3)), 2)
    assert empty.ntotal == 0 and (rows == -1).all() and (scores == np.finfo(np.float32).min).all()
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones((1, 2)), 0)


def test_torch_tensors_search_like_arrays():
    x = torch.randn(5, 3)
    assert (search(exact_index(x.numpy()), x.numpy(), 1)[1][:, 0] == np.arange(5)).all()


# ------------------------------------------------------------------------------------- the install itself


def test_optional_modules_are_imported_only_where_needed():
    """No module of the package or tool imports an optional dependency at its top level (a function may,
    through ``videovl.extras``), so ``import videovl.anything`` and every tool's ``--help`` work on the core
    install. (Benchmarks are scripts for development: ``[dev]`` has everything.)"""
    problems = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tools").glob("*.py")]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports never run
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            problems += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in OPTIONAL]
    assert not problems, problems


def test_each_optional_module_is_in_the_extra_its_error_names():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    for module, (package, extra) in OPTIONAL.items():
        assert package in extras[extra], f"{module}: {package} is not in [{extra}]"
        assert package not in core, f"{package} is a core dependency and an optional one"
    # The quick start installs [dev]: every extra and the test tools.
    itself = [r[len("videovl[") : -1].split(",") for r in extras["dev"] if r.startswith("videovl[")]
    assert itself and set(itself[0]) == set(extras) - {"dev"} and {"pytest", "ruff"} <= extras["dev"]


def _name(requirement: str) -> str:
    """``faiss-cpu>=1.8`` -> ``faiss-cpu``; ``videovl[train,caption]`` stays whole."""
    return re.match(r"[A-Za-z0-9_.-]+(\[[^\]]*\])?", requirement).group(0)
