"""Data flows one way (data -> models -> losses -> tasks -> eval -> train -> cli); config, distributed
and progress are leaves."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "videovl"
ORDER = ["data", "models", "losses", "tasks", "eval", "train", "cli"]
LEAVES = {"config", "distributed", "progress"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_modules_import_only_from_their_left_and_the_leaves():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        layer = _layer(path)
        if layer == "__init__":
            continue  # the package's lazy public API
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "videovl" or len(parts) < 2:
                continue
            target = parts[1]
            if target in LEAVES or target == layer:
                continue
            if layer in LEAVES or ORDER.index(target) > ORDER.index(layer):
                problems.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not problems, "imports against the data flow:\n" + "\n".join(problems)


def test_only_train_imports_accelerate_and_only_distributed_uses_torch_distributed():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        names = _imports(path)
        if any(n.split(".")[0] == "accelerate" for n in names) and _layer(path) != "train":
            problems.append(f"{path.name} imports accelerate")
        if any(n.startswith("torch.distributed") for n in names) and path.stem != "distributed":
            problems.append(f"{path.name} imports torch.distributed")
    assert not problems, problems
