"""The package's import graph: no circles, and the layers import only downwards.

Every ``import`` in a library module counts, at module level or inside a
function (a function-local import is still a dependency, only a later one);
imports under ``if TYPE_CHECKING:`` do not, since they never run. The rules:

- no module of ``comdml_jax`` reaches itself through its imports;
- ``comdml_jax.models`` imports neither ``train`` nor ``system`` (a model
  knows nothing of how it is trained or priced);
- ``comdml_jax.system`` imports no JAX (the planner and the timing model are
  host-side NumPy);
- the leaves ``comdml_jax.errors``, ``comdml_jax.streams`` and ``comdml_jax.system.cache`` import
  nothing of the project;
- no library module imports ``experiments``, ``benchmarks`` or ``tests``;
- the data contract ``comdml_jax.train.types``, the methods' base and DP in the
  round reach no ``train.engine``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "comdml_jax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _skip_type_checking(tree: ast.AST):
    """Every node of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _skip_type_checking(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    g = nx.DiGraph()
    for name, path in modules.items():
        g.add_node(name, external=set())
        for target in _imports(path):
            hit = target
            while hit and hit not in modules:
                hit = hit.rpartition(".")[0]
            if hit:
                if hit != name:
                    g.add_edge(name, hit)
            else:
                g.nodes[name]["external"].add(target.split(".")[0])
    return g


def test_the_import_graph_has_no_circle(graph):
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert circles == []


def test_the_graph_is_read_correctly(graph):
    # guards the walk itself: edges that exist, and a function-local one
    assert graph.has_edge("comdml_jax.config_check", "comdml_jax.errors")
    assert graph.has_edge("comdml_jax.system.timing", "comdml_jax.system.route_stats")
    assert graph.has_edge("comdml_jax.run_inputs", "comdml_jax.train.profile")  # in a function
    assert "jax" in graph.nodes["comdml_jax.models.resnet"]["external"]


def _reach(graph, prefix):
    return [n for n in graph if n == prefix or n.startswith(prefix + ".")]


def test_models_import_no_train_or_system(graph):
    for m in _reach(graph, "comdml_jax.models"):
        for t in nx.descendants(graph, m):
            assert not t.startswith(("comdml_jax.train", "comdml_jax.system")), (m, t)


def test_the_system_layer_imports_no_jax(graph):
    for m in _reach(graph, "comdml_jax.system"):
        deps = {m} | nx.descendants(graph, m)
        jax_users = [d for d in deps if {"jax", "flax", "optax"} & graph.nodes[d]["external"]]
        assert jax_users == [], (m, jax_users)


def test_the_leaves_import_nothing_of_the_project(graph):
    for leaf in ("comdml_jax.errors", "comdml_jax.streams", "comdml_jax.system.cache"):
        assert list(graph.successors(leaf)) == []


def test_no_library_module_imports_the_drivers(graph):
    for m in graph:
        bad = graph.nodes[m]["external"] & {"experiments", "benchmarks", "tests"}
        assert not bad, (m, bad)


def test_the_data_contract_imports_no_engine(graph):
    # methods and privacy read the round's models through train.types, not the engine
    for m in ("comdml_jax.train.types", "comdml_jax.methods.base", "comdml_jax.privacy.rounds"):
        assert "comdml_jax.train.engine" not in nx.descendants(graph, m) | {m}, m


LAYER_CONFIGS = (
    "comdml_jax.data.config",
    "comdml_jax.models.config",
    "comdml_jax.train.config",
    "comdml_jax.privacy.config",
)


def test_the_layers_config_checks_reach_no_config_check(graph):
    # each layer validates its own section; config_check imports the layers, never back
    for m in LAYER_CONFIGS:
        assert "comdml_jax.config_check" not in nx.descendants(graph, m), m
    assert {"comdml_jax.config_check"} <= set(nx.ancestors(graph, "comdml_jax.data.config"))


@pytest.mark.parametrize("module", LAYER_CONFIGS)
def test_a_layers_config_check_loads_neither_config_check_nor_jax(module):
    """Imported alone in a fresh process: a layer's check runs before JAX loads."""
    import subprocess
    import sys

    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        "banned = ('comdml_jax.config_check', 'jax', 'flax', 'optax')\n"
        "print(','.join(m for m in banned if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"{module} imported: {out.stdout.strip()}"
