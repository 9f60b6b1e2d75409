"""The folder layout is the architecture: imports point down the layers, no module reaches into
another's private names, and files and functions stay readable (docs/architecture.md)."""

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scorealign"

# Bottom to top: a module may import its own layer and the layers below it, never above.
LAYERS = ("errors", "core", "data", "tasks", "engine", "algorithms", "rewards", "eval", "train",
          "recipes", "cli")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    """'core.batch' -> path, for every module of the package ('__init__' for the top one)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return out


def imports(name: str, path: Path):
    """(imported module, imported names) for every scorealign import in the module, function-level
    imports included, relative ones resolved."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "scorealign":
                target = node.module.partition(".")[2]
            else:
                continue
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("scorealign."):
                    yield alias.name.partition(".")[2], []


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


MODULES = modules()


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if m != "__init__" and m.split(".")[0] not in LAYERS] == []


@pytest.mark.parametrize("name", [m for m in MODULES if m != "__init__"])
def test_imports_point_down(name):
    upward = [(target, names) for target, names in imports(name, MODULES[name])
              if target and layer(target) > layer(name)]
    assert upward == [], f"{name} imports from a higher layer: {upward}"


@pytest.mark.parametrize("name", list(MODULES))
def test_no_private_name_crosses_modules(name):
    crossing = [(target, n) for target, names in imports(name, MODULES[name]) for n in names
                if n.startswith("_") and not n.startswith("__") and target != name]
    assert crossing == [], f"{name} imports private names: {crossing}"


def test_the_walk_sees_relative_and_absolute_imports():
    """Guard the guard: the walk resolves the forms the package uses."""
    found = dict(imports("train.loop", MODULES["train.loop"]))
    assert "core.checkpoint" in found or "core" in found
    assert any(target.startswith("algorithms") for target in found)


@pytest.mark.parametrize("name", list(MODULES))
def test_files_and_functions_stay_readable(name):
    path = MODULES[name]
    lines = path.read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{path.name}: {lines} lines (split by role, not arbitrarily)"
    long = [(node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_losses_import_only_torch():
    tree = ast.parse(MODULES["algorithms.losses"].read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert roots - {"__future__", "torch", "math", "typing"} == set()


def test_no_algorithm_name_drives_shared_code():
    """Everything about an algorithm sits in its registry entry: outside ``algorithms/`` no code
    compares ``algo`` with a name."""
    pattern = re.compile(r"algo ?(==|in) ?[(\"']")
    hits = [f"{path.relative_to(PACKAGE)}:{i}" for name, path in MODULES.items()
            if not name.startswith("algorithms")
            for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
