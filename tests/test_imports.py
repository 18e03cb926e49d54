"""The house, read from the source: the floors from the imports (no import circle, and no import
that runs back up a floor), and no function longer than a screen."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Imports run one way, top to bottom: a module imports only from its own floor or below.
FLOORS = {
    "inceptionv4.files": 0, "inceptionv4.settings": 0, "inceptionv4.extras": 0, "inceptionv4.version": 0, "inceptionv4.devices": 0, "inceptionv4.distributed": 0, "inceptionv4.plots": 0,
    "inceptionv4.models": 1, "inceptionv4.precision": 1, "inceptionv4.scoring": 1,
    "inceptionv4.data": 2, "inceptionv4.weights": 2,
    "inceptionv4.api": 3, "inceptionv4.engines": 3, "inceptionv4.timm_contract": 4,
    "inceptionv4.infer": 4, "inceptionv4.serve": 4, "inceptionv4.train": 4, "inceptionv4.tools": 4,
    "inceptionv4.cli": 5, "inceptionv4.demo": 5, "inceptionv4.__main__": 5, "inceptionv4": 5,
}  # fmt: skip

#: What is left to move (the house step): each may only go away.
KNOWN_UPWARD: set[tuple[str, str]] = set()  # none left
KNOWN_CIRCLES: set[frozenset[str]] = set()  # none left


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(name: str) -> bool:
    base = SRC / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or base.is_dir()


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports, at its top or inside a
    function alike (a lazy import still runs its target's floor into the caller)."""
    graph = {}
    for path in sorted((SRC / "inceptionv4").rglob("*.py")):
        name = _module(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "inceptionv4"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if source.split(".")[0] != "inceptionv4":
                    continue
                for a in node.names:  # `from pkg import module` names a module
                    targets.add(f"{source}.{a.name}" if _exists(f"{source}.{a.name}") else source)
        graph[name] = targets - {name}
    return graph


def floor(module: str) -> int:
    while module not in FLOORS:
        module = module.rpartition(".")[0]
    return FLOORS[module]


def circles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), set(), [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_runs_back_up_a_floor():
    graph = import_graph()
    assert "inceptionv4.train.trainer" in graph and len(graph) > 60
    upward = {(a, b) for a, targets in graph.items() for b in targets if floor(b) > floor(a)}
    assert upward - KNOWN_UPWARD == set(), "imports that run back up a floor"
    assert KNOWN_UPWARD - upward == set(), "moved: strike these off KNOWN_UPWARD"
    # training needs nothing from inference, and eval nothing from training
    assert not any(b.startswith("inceptionv4.infer") for b in graph["inceptionv4.train.trainer"])
    assert not any(b.startswith("inceptionv4.train") for b in graph["inceptionv4.infer.evaluate"])


def test_no_new_import_circle():
    found = circles(import_graph())
    assert found - KNOWN_CIRCLES == set(), "new import circles"
    assert KNOWN_CIRCLES - found == set(), "broken: strike these off KNOWN_CIRCLES"


def test_the_checks_see_a_circle_and_an_upward_import():
    """The reader itself: a made-up graph's circle is found, and floors rank the packages."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset({"a", "b", "c"})}
    assert floor("inceptionv4.engines.open") > floor("inceptionv4.data.views") > floor("inceptionv4.models.layers")


#: the longest a function in src/ may be: one screen, read at once
MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in sorted((SRC / "inceptionv4").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "split these"


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore is its module's own: another module that needs it needs a
    public name (and a docstring) for it."""
    private = []
    for path in sorted((SRC / "inceptionv4").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("inceptionv4")):
                private += [f"{path.relative_to(SRC)}:{node.lineno} {a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert private == []
