"""The layering holds, imports inside functions included: a stage never reaches up to the
orchestration above it, a backend or an executor never imports the package that dispatches
to it, and the bottom layer (``config``, ``answers``, ``loader``) imports nothing above it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

WINNOW = Path(__file__).resolve().parent.parent / "winnow"

NEVER = [
    ("stages/*.py", "winnow.adaptive", "whether a score is put together from adaptive steps is the pipeline's choice"),
    ("config/*.py", "winnow.executors", "the executors are configured by config, not the other way"),
    ("answers.py", "winnow.rewards", "an extractor is loaded by winnow.loader"),
    ("loader.py", "winnow.rewards", "the loader is at the bottom"),
]
"""(files under winnow/, a module they may not import, why)."""


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """Every import of a file, at any depth: (line, module, the names taken from it)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize(("files", "banned", "why"), NEVER)
def test_a_lower_layer_never_imports_a_higher_one(files, banned, why):
    found = [
        f"{path.relative_to(WINNOW.parent)}:{line}: {module}"
        for path in sorted(WINNOW.glob(files))
        for line, module, _ in imports(path)
        if module == banned or module.startswith(banned + ".")
    ]
    assert found == [], why


@pytest.mark.parametrize("package", ["generate", "executors"])
def test_a_package_module_takes_nothing_from_its_own_init(package):
    """``from winnow.generate import decode`` (a sibling module) is fine; ``from
    winnow.generate import Sampling`` runs the dispatching ``__init__``'s names back into a
    backend it dispatches to: the contract lives in a module of its own."""
    folder = WINNOW / package
    siblings = {p.stem for p in folder.glob("*.py")}
    found = [
        f"{path.name}:{line}: {name}"
        for path in sorted(folder.glob("*.py"))
        if path.name != "__init__.py"
        for line, module, names in imports(path)
        if module == f"winnow.{package}"
        for name in names
        if name not in siblings
    ]
    assert found == []


def test_every_test_folder_names_a_winnow_package():
    """tests/ mirrors the package: a folder of tests is tests/<package>/ for a package of
    winnow (one with an __init__.py), at any depth; a folder of data (no Python) may lie
    beside the tests that read it."""
    tests = Path(__file__).resolve().parent
    folders = [p for p in sorted(tests.rglob("*")) if p.is_dir() and "__pycache__" not in p.parts]
    with_code = [p.relative_to(tests) for p in folders if any(p.glob("*.py"))]
    assert with_code, "no test folders found"
    stray = [str(p) for p in with_code if not (WINNOW / p / "__init__.py").is_file()]
    assert stray == [], "a tests/ folder that names no winnow package"
    assert not list(tests.rglob("__init__.py")), "tests/ holds no packages: pytest imports each file by its path"


def test_the_suite_runs_the_doctests_of_every_module():
    """The whole of winnow/ is a test path, not a hand-kept list of modules with doctests."""
    import tomllib

    options = tomllib.loads((WINNOW.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "winnow" in options["testpaths"] and "--doctest-modules" in options["addopts"].split()


BELOW_CONFIG = ("winnow.errors", "winnow.records")
"""All of winnow that configuration may import: it is the bottom layer the rest is configured from."""


def test_config_imports_nothing_above_errors_and_records():
    found = [
        f"{path.relative_to(WINNOW.parent)}:{line}: {module}"
        for path in sorted((WINNOW / "config").glob("*.py"))
        for line, module, _ in imports(path)
        if module.startswith("winnow") and module not in BELOW_CONFIG and not module.startswith("winnow.config")
    ]
    assert found == []
    code = "import sys, winnow.config; print(sorted(m for m in sys.modules if m.startswith('winnow')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    above = [
        m
        for m in ast.literal_eval(loaded)
        if m != "winnow" and m not in BELOW_CONFIG and not m.startswith("winnow.config")
    ]
    assert above == []


def module_graph() -> dict[str, set[str]]:
    """winnow's modules -> the modules of winnow each imports, imports inside functions
    included. ``from winnow.x import y`` is an arrow to ``winnow.x.y`` where that is a module
    (a sibling taken by name), else to ``winnow.x``."""
    names = {}
    for path in WINNOW.rglob("*.py"):
        parts = path.relative_to(WINNOW.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = set()
        for _, module, taken in imports(path):
            subs = [f"{module}.{t}" for t in taken if f"{module}.{t}" in names]
            targets |= set(subs) if subs and len(subs) == len(taken) else {module, *subs}
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted.

    >>> cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}})
    [['a', 'b']]
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = module_graph()
    assert len(graph) > 90 and "winnow.executors.ray" in graph["winnow.executors"]  # function-level, seen
    assert cycles(graph) == []


def diagram_layers() -> list[list[str]]:
    """The layering diagram in CONTRIBUTING.md, highest line first: each line's modules as
    dotted names (``stages/`` the package and all in it, ``demo*`` each module so named)."""
    text = (WINNOW.parent / "CONTRIBUTING.md").read_text().split("## Layering", 1)[1]
    block = text.split("```", 2)[1].strip().splitlines()
    return [[name.strip() for name in line.split("  ", 1)[0].split(",")] for line in block]


def layer_of(module: str, layers: list[list[str]]) -> int:
    """The index of the diagram line that holds ``module`` (0 = the top line)."""
    rest = module.removeprefix("winnow.") if module != "winnow" else "__init__"
    for i, names in enumerate(layers):
        for name in names:
            if name.endswith("/") and (rest == name[:-1] or rest.startswith(name[:-1] + ".")):
                return i
            if (name.endswith("*") and rest.startswith(name[:-1])) or rest == name:
                return i
    raise AssertionError(f"{module} stands on no line of CONTRIBUTING.md's layering diagram")


def test_the_layering_diagram_holds():
    """No module imports one on a higher line of the diagram (the package's face, which
    only hands names on lazily, stands above everything and is left out)."""
    layers = diagram_layers()
    graph = module_graph()
    upward = [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        if module != "winnow"
        for target in sorted(targets)
        if layer_of(target, layers) < layer_of(module, layers)
    ]
    assert upward == []
