"""The package's dependency direction is visible and kept (issue 19):

    base (errors, plans, config_io, ...) <- geometry <- data <- model, objects <- runtime, train, eval, mono3d
    <- ros, cli, ask, up

Every import of a ``threed_llm_ros`` module is read with ``ast`` (module level, inside functions and under
``TYPE_CHECKING`` alike: a lazy import is still a dependency), and a module may import only its own layer or
a lower one. Within the runtime layer, ``runtime`` imports neither ``train``, ``eval`` nor ``mono3d``, and
``train`` imports neither ``runtime`` nor ``eval``: they stand beside each other. Module-level imports form no
cycle (a cycle is what a function-level import used to hide). Only ``ros`` imports rclpy.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

PACKAGE = "threed_llm_ros"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# The layer of each top-level part of the package (a subpackage or a module directly in it).
LAYERS: dict[str, int] = {
    "errors": 0, "safe_text": 0, "config_io": 0, "resources": 0, "plans": 0, "processes": 0, "bags": 0,
    "build_interfaces": 0,
    "geometry": 1,
    "data": 2,
    "model": 3, "objects": 3,
    "runtime": 4, "train": 4, "eval": 4, "mono3d": 4,
    "ros": 5, "cli": 5, "ask": 5, "up": 5,
}
# Parts of the same layer that must not import each other (importer -> imported).
FORBIDDEN_SIBLINGS: dict[str, set[str]] = {
    "runtime": {"train", "eval", "mono3d"},
    "train": {"runtime", "eval"},
}
# Known exceptions, each with its reason: (importing module, imported module) -> why. Empty: none today.
ALLOWED: dict[tuple[str, str], str] = {}

HEAVY_ROS = ("rclpy",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """The top-level part of ``threed_llm_ros.<part>...`` ('' for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str, source: str) -> list[tuple[str, int, bool]]:
    """(imported name, line, at module level) for every import in ``source``; relative imports resolved."""
    tree = ast.parse(source)
    module_level = set()

    def collect(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module_level.add(id(node))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                collect(node.body)
                collect(node.orelse)
            elif isinstance(node, ast.Try):
                collect(node.body)
                for handler in node.handlers:
                    collect(handler.body)
                collect(node.orelse)
                collect(node.finalbody)

    collect(tree.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in module_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            # `from pkg import name`: name may be a submodule; the cycle check maps it back to the module holding it
            found += [(f"{base}.{alias.name}", node.lineno, id(node) in module_level) for alias in node.names]
    return found


def layering_violations(sources: dict[str, str]) -> list[str]:
    """Each import in ``sources`` (module name -> source text) that goes against the layers, as one line."""
    problems = []
    for module, source in sorted(sources.items()):
        importer = _part(module)
        seen = set()
        for imported, line, _ in _imports(module, source):
            if (line, _part(imported)) in seen:
                continue  # one line per import statement and target part
            seen.add((line, _part(imported)))
            if imported.split(".")[0] in HEAVY_ROS and importer != "ros":
                problems.append(f"{module}:{line} imports {imported}: only threed_llm_ros.ros may import rclpy")
            if not imported.startswith(PACKAGE + ".") or any(
                    module == allowed_importer and (imported == allowed or imported.startswith(allowed + "."))
                    for allowed_importer, allowed in ALLOWED):
                continue
            target = _part(imported)
            if importer not in LAYERS or target not in LAYERS:
                problems.append(f"{module}:{line}: {importer or target!r} has no layer: add it to LAYERS")
            elif LAYERS[target] > LAYERS[importer]:
                problems.append(f"{module}:{line} imports {imported}: layer {importer} ({LAYERS[importer]}) "
                                f"may not import {target} ({LAYERS[target]})")
            elif target in FORBIDDEN_SIBLINGS.get(importer, set()):
                problems.append(f"{module}:{line} imports {imported}: {importer} stands beside {target}, not above it")
    return problems


def module_level_cycles(sources: dict[str, str]) -> list[list[str]]:
    """Cycles among module-level imports (a package importing its own submodules is not one)."""
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for module, source in sources.items():
        for imported, _, at_module_level in _imports(module, source):
            if not at_module_level:
                continue
            while imported and imported not in sources:  # `from pkg import name`: the module that holds it
                imported = imported.rpartition(".")[0]
            if imported and imported != module and not module.startswith(imported + "."):
                graph[module].add(imported)
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(sources):
        if module not in state:
            visit(module, [module])
    return cycles


def _package_sources() -> dict[str, str]:
    return {_module_name(path): path.read_text() for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def test_no_module_imports_a_higher_layer() -> None:
    problems = layering_violations(_package_sources())
    assert not problems, "\n".join(problems)


def test_module_level_imports_form_no_cycle() -> None:
    cycles = module_level_cycles(_package_sources())
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {_part(module) for module in _package_sources()} - {""}
    assert parts <= set(LAYERS), f"no layer for {sorted(parts - set(LAYERS))}: add them to LAYERS"


def test_the_checks_catch_what_they_are_for() -> None:
    """A lazy upward import, a forbidden sibling, rclpy outside ros and a cycle are each reported."""
    sources = {
        "threed_llm_ros.geometry.bad": "def f():\n    from threed_llm_ros.runtime.engine import InferenceEngine\n",
        "threed_llm_ros.runtime.bad": "from threed_llm_ros.eval.metrics import x\n",
        "threed_llm_ros.data.bad": "import rclpy\n",
        "threed_llm_ros.model.a": "from threed_llm_ros.model.b import y\n",
        "threed_llm_ros.model.b": "from threed_llm_ros.model import a\n",
    }
    problems = "\n".join(layering_violations(sources))
    assert "threed_llm_ros.geometry.bad:2 imports threed_llm_ros.runtime.engine" in problems
    assert "runtime stands beside eval" in problems
    assert "threed_llm_ros.data.bad:1 imports rclpy" in problems
    assert module_level_cycles(sources) == [["threed_llm_ros.model.a", "threed_llm_ros.model.b", "threed_llm_ros.model.a"]]
