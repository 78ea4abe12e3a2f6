"""The package's structure: every internal import (lazy ones inside functions included) goes down the
layer list in edgekit/__init__.py, no modules import each other in a circle, no module is over 400 lines."""
import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).parent
LAYERS = [
    ("core", {"core"}),
    ("support", {"targets", "files"}),
    ("runtimes", {"runtimes"}),
    ("stages", {"sources", "examples", "export"}),
    ("measure", {"measure", "report"}),
    ("device", {"device"}),
    ("optimize", {"prune", "quantize"}),
    ("pipeline", {"pipeline"}),
    ("archsearch", {"archsearch"}),
    ("serve", {"serve"}),
    ("cli", {"cli"}),
]

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer of ``edgekit.x.y`` by its first part below the package; None for the package root."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for index, (_, names) in enumerate(LAYERS):
        if parts[1] in names:
            return index
    raise AssertionError(f"{module} is in no layer: add it to edgekit/__init__.py's list and LAYERS")


def imports_of(path: Path) -> set[str]:
    """Every edgekit module ``path`` imports, at any depth of the file."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, me: str, is_package: bool) -> set[str]:
    """Every edgekit module the source of module ``me`` imports, lazy ones inside functions included; not
    those under ``if TYPE_CHECKING:``, which only annotations see (a type from a layer above may be named there)."""
    package = me if is_package else me.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("edgekit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("edgekit"):
                continue
            for alias in node.names:  # 'from . import x' may name a submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if (ROOT.parent / Path(*sub.split("."))).with_suffix(".py").is_file()
                          or (ROOT.parent / Path(*sub.split("."))).is_dir() else target)
    return found - {me}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        and isinstance(test.value, ast.Name) and test.value.id == "typing")


def _runtime_nodes(tree: ast.AST):
    """ast.walk, less the bodies of ``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:`` (their ``else`` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def test_the_root_holds_only_layer_packages():
    """ls edgekit/ shows the layers: no module but the public API sits at the root."""
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name != "__init__.py")
    assert not loose, loose
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set().union(*(names for _, names in LAYERS)), packages


def test_every_module_has_a_layer_and_imports_go_down():
    upward = []
    for module, targets in graph().items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = graph()
    edges = {m: {t for t in ts if t in edges and t != "edgekit"} for m, ts in edges.items() if m != "edgekit"}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_domain_imports_only_domain():
    core = {module_name(p) for p in (ROOT / "core").rglob("*.py")}
    for path in (ROOT / "core").rglob("*.py"):
        assert imports_of(path) <= core, path


def test_the_walker_sees_lazy_and_relative_imports():
    """The checks above can fail: an import inside a function, written relatively, is found."""
    found = imports_of(ROOT / "pipeline" / "plan.py")
    assert "edgekit.quantize.onnx" in found and "edgekit.export" in found
    lazy = imports_of(ROOT / "runtimes" / "__init__.py")
    assert "edgekit.runtimes.torch_runner" in lazy  # imported inside reference_runner()
    assert layer_of("edgekit.cli.main") > layer_of("edgekit.pipeline.build") > layer_of("edgekit.prune.search")


def test_the_walker_skips_type_checking_imports():
    """An import only annotations see (under ``if TYPE_CHECKING:``) is no dependency; a lazy one still is."""
    source = """
import typing
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from ..cli.main import main
if typing.TYPE_CHECKING:
    import edgekit.serve
else:
    from ..runtimes import base
def run(device: "Device") -> None:
    from ..device import open_device
    if TYPE_CHECKING:
        from ..device import Device
"""
    found = imports_in(source, "edgekit.pipeline.stages", is_package=False)
    assert found == {"edgekit.runtimes.base", "edgekit.device"}, found
    assert imports_of(ROOT / "pipeline" / "stages.py") >= {"edgekit.device.remote"}  # device_bench, lazily


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not big, big
