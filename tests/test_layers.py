"""The layer table (issue 21): every module of twins/, scenarios/ and interventions/ belongs to one layer, and an
import (function-level ones included) may point only down or sideways. KNOWN_UPWARD lists upward imports tolerated as
debt (none are left): the test fails on any other upward import, and on an entry that no longer occurs.
docs/architecture.md §5 describes the layers; this table is the one place they are defined."""
from __future__ import annotations

import ast

from tests.conftest import ROOT

# bottom first: (layer, module prefixes); a module belongs to the layer of its longest matching prefix
LAYERS = [
    ("core", ["twins.core"]),
    ("views", ["twins.plots"]),
    ("kernels", ["twins.traffic.kernels", "twins.traffic.state", "twins.traffic.native", "twins.traffic.control",
                 "twins.molecular.kernels", "twins.molecular.state"]),
    ("twins", ["twins.traffic", "twins.molecular"]),
    ("scenarios", ["scenarios"]),
    ("interventions", ["interventions"]),
    ("compute", ["twins.compute"]),
    ("experiment", ["twins.core.config", "twins.ethics.config", "twins.core.pipeline", "interventions._evaluate",
                    "interventions.sweep", "interventions.search", "interventions.search_objectives",
                    "interventions.search_space", "interventions.search_study", "interventions.search_confirm",
                    "interventions.search_outputs", "interventions.search_config", "interventions.transfer",
                    "twins.calibration"]),
    ("review", ["twins.ethics"]),
    ("front ends", ["twins.core.runner", "twins.ethics.cli", "twins.cli", "twins.__main__", "twins.results"]),
]
PACKAGES = ("twins", "scenarios", "interventions")

KNOWN_UPWARD: set = set()  # (importer, imported): upward imports tolerated for now; none are left


def _modules() -> dict:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _from_imports(name: str, path):
    """``(module, node)`` of every ``from ... import`` in ``path``, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else [])), node
            else:
                yield node.module, node


def _imports(name: str, path, mods: dict) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    for mod, node in _from_imports(name, path):
        out.add(mod)
        out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods)
    return {m for m in out if m in mods and m not in PACKAGES}


def layer(module: str) -> int:
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = i, len(p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"
    return best


def upward_imports() -> set:
    mods = _modules()
    return {(a, b) for a, p in mods.items() if a not in PACKAGES
            for b in _imports(a, p, mods) if layer(b) > layer(a)}


def test_every_module_is_in_a_layer():
    for m in _modules():
        if m not in PACKAGES:
            layer(m)


def test_no_new_import_points_up_a_layer():
    up = upward_imports()
    new = sorted(up - KNOWN_UPWARD)
    assert not new, "imports that point up a layer: " + ", ".join(
        f"{a} ({LAYERS[layer(a)][0]}) -> {b} ({LAYERS[layer(b)][0]})" for a, b in new)
    gone = sorted(KNOWN_UPWARD - up)
    assert not gone, f"fixed, so delete from KNOWN_UPWARD in tests/test_layers.py: {gone}"


def test_the_parser_sees_function_level_and_relative_imports():
    mods = _modules()
    # twins/traffic/outcomes.py imports its kernels relatively, and twins.plots inside a function
    seen = _imports("twins.traffic.outcomes", mods["twins.traffic.outcomes"], mods)
    assert {"twins.traffic.kernels", "twins.plots"} <= seen


def test_a_module_over_500_lines_says_why_at_its_top():
    """Issue 21: no module over ~500 lines without a reason written at its top (its docstring has a paragraph
    starting "Length", or, for the traffic model, the sentence that says so)."""
    silent = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > 500:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "\nLength" not in doc and "longer than ~500 lines" not in doc:
                silent.append(f"{name} ({text.count(chr(10))} lines)")
    assert not silent, "say at the top why these are long, or split them: " + ", ".join(silent)


def _private_imports(name: str, path, mods: dict) -> list[str]:
    """``from <project module> import _name`` in ``path`` where the module is another one (a package importing
    from its own ``__init__`` excepted)."""
    return [f"{name}: from {mod} import {a.name}" for mod, node in _from_imports(name, path)
            if mod in mods and mod != name for a in node.names
            if a.name.startswith("_") and not a.name.startswith("__")]


def test_private_names_stay_in_their_module():
    """Issue 21 item 6: no module imports another project module's underscored name (make it public, or keep the
    code that needs it in its module)."""
    mods = _modules()
    found = [hit for name, path in mods.items() for hit in _private_imports(name, path, mods)]
    assert not found, "private names imported across modules: " + "; ".join(found)


def test_the_private_import_check_can_fail(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from twins.core.noise import _secret\nfrom .x import public\n")
    mods = _modules()
    assert _private_imports("twins.core.probe", probe, mods) == [
        "twins.core.probe: from twins.core.noise import _secret"]
