"""Data flows one way (data -> models -> api -> losses -> tasks -> eval -> train -> cli); config,
distributed, progress and extras are leaves. ``api`` (the public entry points) composes the data layer's
preprocessing with the models, so it sits just above both."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "videovl"
ORDER = ["data", "models", "api", "losses", "tasks", "eval", "train", "cli"]
LEAVES = {"config", "distributed", "progress", "extras"}


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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level (a name imported from a package counts as
    an import of that package's ``__init__``; imports inside functions are deferred and cannot circle)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def test_no_import_cycles_even_inside_a_package():
    graph, state, cycles = _import_graph(), {}, []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [node, nxt]) if nxt in trail else nxt)
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("videovl"):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                if private:
                    problems.append(
                        f"{path.relative_to(PACKAGE.parent)} imports {private} from {node.module}"
                    )
    assert not problems, "\n".join(problems)


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    monkeypatch.setitem(globals(), "_import_graph", lambda: graph)
    try:
        test_no_import_cycles_even_inside_a_package()
    except AssertionError as e:
        assert "a -> b -> c -> a" in str(e)
    else:
        raise AssertionError("a three-module cycle was not reported")
