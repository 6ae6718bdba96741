"""The package's shape, checked: small modules and classes, no import cycle, layers that import
only downwards (``docs/architecture.md``), Ray imported by one package, and a core that knows
nothing of the adserving product.

Run alone as the "import cycle" check: ``pytest tests/unit/project/test_layout.py``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "streamtasks"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200
#: Modules of the public face that name the product on purpose: the lazy
#: ``streamtasks.AsyncProcessingSystem`` and the ``streamtasks.builtins`` alias.
PRODUCT_FACADES = {"streamtasks", "streamtasks.builtins"}
PRODUCT_VARIABLES = ("TRAINING_DATA_STREAM", "ASYNC_PROCESSING", "DEBUG_ENABLED")


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """What ``from X import a, b`` imports: the modules ``X.a`` and ``X.b`` where they are
    modules (``from .. import keys``), else ``X`` itself."""
    if node.level == 0:
        base = node.module or ""
    else:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    names = [f"{base}.{alias.name}" for alias in node.names]
    known = _module_names()
    if all(name in known for name in names):
        return names
    return [base, *names]


@functools.cache
def _module_names() -> frozenset[str]:
    return frozenset(name for name, _ in _modules())


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    """streamtasks modules ``module`` imports (at module level, TYPE_CHECKING blocks aside)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(module, path, node))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    known = _module_names()
    return {name for name in found if name in known and name != module}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    return {name: _imports(name, path, top_level_only) for name, path in _modules()}


def test_no_module_over_400_lines_and_no_class_over_200() -> None:
    too_long = {}
    for name, path in _modules():
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long[name] = lines
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long[f"{name}.{node.name}"] = size
    assert not too_long


def test_the_package_has_no_import_cycle() -> None:
    """Module-level imports form a DAG (a package's ``__init__`` importing its own modules is
    the usual re-export, not a cycle)."""
    graph = _graph(top_level_only=True)
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}  # a module -> its package
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle.extend([*stack[stack.index(dep) :], dep] if dep in stack else [node, dep])
                return True
            if dep not in state and visit(dep, [*stack, dep]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if name not in state and visit(name, [name]):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_core_imports_nothing_of_the_product() -> None:
    graph = _graph(top_level_only=False)
    offenders = {
        name: sorted(d for d in deps if d.startswith("streamtasks.adserving"))
        for name, deps in graph.items()
        if not name.startswith("streamtasks.adserving") and name not in PRODUCT_FACADES
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_core_names_no_product_variable() -> None:
    named = [
        f"{name}: {var}"
        for name, path in _modules()
        if not name.startswith("streamtasks.adserving")
        for var in PRODUCT_VARIABLES
        if var in path.read_text()
    ]
    assert named == []


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test modules by basename (tests import helpers from each other): two
    ``test_x.py`` in different directories stop the whole run at collection."""
    names = [p.name for p in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


#: Where a unit test lives besides a subpackage's own directory (``tests/unit/worker/`` holds
#: the tests of ``streamtasks/worker/``): the modules directly under ``streamtasks/``, and the
#: repository itself (layout, docs site, deploy files, examples).
UNIT_TEST_HOMES = {"core", "project"}


def test_unit_tests_follow_the_package() -> None:
    """``tests/unit/<area>/test_<module>*.py``: the area is the subpackage the test is about."""
    unit = PACKAGE.parent / "tests" / "unit"
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    homes = {p.relative_to(unit).parts[0] for p in unit.rglob("test_*.py")}
    assert not [p.name for p in unit.glob("test_*.py")], "a unit test belongs in an area directory"
    assert homes - packages - UNIT_TEST_HOMES == set()


#: The layers, bottom up, and what each may import (besides itself). A module's layer is its
#: subpackage; modules directly under ``streamtasks/`` are the ground floor, but for the public
#: face (``streamtasks``, ``streamtasks.builtins``, ``streamtasks.__main__``).
MAY_IMPORT = {
    "ground": set(),
    "schedule": {"ground"},
    "worker": {"ground", "schedule"},
    "ray": {"ground", "schedule", "worker"},
    "serve": {"ground", "schedule", "worker", "ray"},
    "observe": {"ground", "schedule", "worker"},
    "testing": {"ground", "schedule", "worker"},
    "cli": {"ground", "schedule", "worker", "serve", "observe"},
    "adserving": {"ground", "schedule", "worker", "serve", "observe", "cli"},
    "face": {"ground", "cli", "adserving"},
}
FACE = {"streamtasks", "streamtasks.builtins", "streamtasks.__main__"}


def _layer(module: str) -> str:
    if module in FACE:
        return "face"
    parts = module.split(".")
    if parts[1] in MAY_IMPORT:
        return parts[1]
    return "serve" if parts[1] == "serve" else "ground"


def test_layers_import_only_what_is_below_them() -> None:
    """Function-level imports included: a lazy import is still a dependency."""
    wrong = sorted(
        f"{name} -> {dep}"
        for name, deps in _graph(top_level_only=False).items()
        for dep in deps
        if _layer(dep) != _layer(name) and _layer(dep) not in MAY_IMPORT[_layer(name)]
    )
    assert wrong == []


def test_only_the_ray_package_imports_ray() -> None:
    found = []
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "ray" or n.startswith("ray.") for n in names) and not name.startswith(
                "streamtasks.ray"
            ):
                found.append(name)
    assert found == []
