"""The package's layers (README: Layout): imports point only downwards and there is no import circle.

Walks nightseg/ with ``ast``. Module-level imports (those that run when a module is imported,
imports inside ``try`` included) make the graph that must have no cycle; every import, also those
inside functions, must respect the layer order below. Imports under ``if TYPE_CHECKING:`` are for
annotations only and run never; they are left out. The commands
(``python -m nightseg.*``) are at the top: nothing else imports them. The tooling (nightseg.tools:
bench internals, the fault harness) sits above the library: the library never imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nightseg"

# The thin command modules behind python -m nightseg.*.
COMMANDS = {"nightseg.run", "nightseg.evaluate", "nightseg.predict", "nightseg.export", "nightseg.bench",
            "nightseg.report", "nightseg.faults", "nightseg.gpu_check", "nightseg.data.inspect_dataset",
            "nightseg.data.synthetic.__main__"}
# Layers from the top: a module may import its own layer's modules and those of any layer below.
LAYERS = [
    ("commands", COMMANDS),
    ("tools", {"nightseg.tools"}),
    ("training", {"nightseg.training"}),
    ("deploy", {"nightseg.deploy"}),
    ("inference", {"nightseg.inference"}),
    ("models", {"nightseg.models"}),
    ("nets", {"nightseg.nets"}),
    ("data", {"nightseg.data"}),
    ("infra", {"nightseg.infra"}),
    ("core", {"nightseg.core"}),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool) -> tuple[set[str], set[str]]:
    """(module-level imports, all imports) of nightseg modules."""
    top, every = set(), set()

    def visit(node, at_top: bool):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            at_top = False
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, at_top)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            # "from nightseg.infra import cache" imports the module nightseg.infra.cache
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            if n == "nightseg" or n.startswith("nightseg."):
                every.add(n)
                if at_top:
                    top.add(n)
        for child in ast.iter_child_nodes(node):
            visit(child, at_top)

    visit(tree, True)
    return top, every


def _graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    top, every = {}, {}
    for name, path in modules.items():
        t, e = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        # keep only names that are modules (drop "nightseg.infra.cache.StageCache"-like names)
        top[name] = {_owner(n, modules) for n in t} - {None, name}
        every[name] = {_owner(n, modules) for n in e} - {None, name}
    return modules, top, every


def _owner(name: str, modules) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _layer(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if module in members or any(module.startswith(m + ".") for m in members if m not in COMMANDS):
            return i
    return -1


def test_every_module_belongs_to_a_layer():
    modules, _, _ = _graph()
    loose = sorted(m for m in modules if m != "nightseg" and _layer(m) < 0)
    assert not loose, f"modules outside every layer (add them to a layer's package): {loose}"


def test_imports_point_only_downwards():
    _, _, every = _graph()
    wrong = []
    for module, targets in every.items():
        if module == "nightseg":
            continue
        for target in targets:
            if target == "nightseg" or target.startswith(module + "."):
                continue  # a package's __init__ and its own submodules
            if _layer(target) < _layer(module):
                wrong.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {target} "
                             f"({LAYERS[_layer(target)][0]})")
    assert not wrong, "imports pointing upwards:\n" + "\n".join(sorted(wrong))


def test_the_library_never_imports_commands_or_tools():
    _, _, every = _graph()
    library = [m for m in every if _layer(m) > 1]
    bad = sorted(f"{m} imports {t}" for m in library for t in every[m] if _layer(t) <= 1)
    assert not bad, bad


def test_no_import_circle():
    _, top, _ = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for t in sorted(top.get(m, ())):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if state.get(t) is None:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(top):
        if state.get(m) is None:
            visit(m)


def test_the_graph_sees_a_circle_and_an_upward_import(tmp_path):
    """The checks above would catch what issue 22 found: a circle through bench -> export -> bench."""
    tree = ast.parse("from nightseg.bench import CONF_DIR\nfrom nightseg.infra import cache\n"
                     "def f():\n    from nightseg.tools.faults import runs\n")
    top, every = _imports(tree, "nightseg.deploy.export", False)
    assert "nightseg.bench" in top and "nightseg.infra.cache" in top
    assert "nightseg.tools.faults.runs" in every and "nightseg.tools.faults.runs" not in top
    assert _layer("nightseg.bench") < _layer("nightseg.deploy.export") < _layer("nightseg.infra.cache")


def test_scoring_needs_no_training_job():
    """evaluate scores loaded models: of training it uses only the config checks, and the scoring
    (inference) never imports training, so no stage cache or training stage is involved."""
    _, _, every = _graph()
    assert {t for t in every["nightseg.evaluate"] if t.startswith("nightseg.training")} <= {
        "nightseg.training.config"}
    for module in ("nightseg.inference.evaluation", "nightseg.inference.results",
                   "nightseg.inference.loading"):
        assert not {t for t in every[module] if t.startswith("nightseg.training")}, module
