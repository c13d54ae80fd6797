"""The import arrows point one way, as README.md's Architecture section draws them, and
nothing outside the local tier reaches into a Hold's internals.

Read from the source with ``ast``: every import counts, those inside functions too (a
lazy import is still an arrow), except under ``if TYPE_CHECKING:`` (annotations only).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import cargohold

SRC = Path(cargohold.__file__).parent

#: README.md's Architecture section, module by module: each may import from its own layer
#: and the layers above it (lower numbers). A new module must be placed here.
LAYERS: dict[int, set[str]] = {
    1: {
        "errors",
        "config",
        "keys",
        "_fork",
        "platform",
        "paths",
        "_logging",
        "_holder",
        "_version",
        "_io",
        "_keylocks",
        "_heartbeat",
        "_threads",
    },
    2: {"remotes", "catalog"},
    3: {"local", "_index", "_blobs", "_hot_rows", "_putlog_recovery"},
    4: {"sync"},
    5: {"hold", "_shutdown", "_local_only", "_ranged"},
    6: {
        "persist",
        "memo",
        "_canonical",
        "_lease",
        "fetch",
        "scratch",
        "_redact",
        "doctor",
        "_volume_scan",
        "fastapi",
        "gradio",
        "speed",
        "sqlite",
    },
    7: {"cli", "_cli_app", "_cli_hold", "_cli_sqlite", "__main__", "server", "fs"},
    # The package itself re-exports the public names: it may import anything, and no
    # module of cargohold imports it.
    8: {"__init__"},
}
#: Deliberate exceptions (see the README): the framework helpers mount the service.
ALLOWED_UPWARD = {("fastapi", "server"), ("gradio", "server")}
#: The local tier's own modules, and the syncer and the Hold built on it (with
#: ``_shutdown``, the Hold's signal and exit half): the only ones that may touch a Hold's
#: local tier, syncer or private state.
INSIDE = {"local", "_index", "_blobs", "_hot_rows", "_putlog_recovery", "sync", "hold", "_shutdown"}
#: Attributes of a Hold that are its internals (see Hold.local_only, Hold.local_dir,
#: Hold.sync_activity, Hold.extension and Hold.include_in_flush for what to use instead).
INTERNALS = {"local", "syncer", "_closers", "_fetch_state", "_persisted", "_extensions"}


def _unit(path: Path) -> str:
    """The layer-table name of a module: its top-level module or package under cargohold."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def _modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield _unit(path), path, ast.parse(path.read_text(), str(path))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node outside ``if TYPE_CHECKING:`` bodies (their ``else`` counts)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imported_units(path: Path, tree: ast.Module) -> Iterator[tuple[str, int]]:
    """The cargohold units ``path`` imports at run time, with the line of each import."""
    # The package a relative import starts from (a package's __init__ is in it too).
    package = list(path.relative_to(SRC.parent).with_suffix("").parts)[:-1]
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import x` imports the module x (or a name of the package).
            targets = (
                [f"{module}.{alias.name}" for alias in node.names]
                if node.module is None
                else [module]
            )
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if parts[0] != "cargohold":
                continue
            if len(parts) == 1:
                yield "__init__", node.lineno
            elif (SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").is_file():
                yield parts[1], node.lineno
            else:
                yield "__init__", node.lineno  # a name the package itself exports


def _layer_of() -> dict[str, int]:
    return {unit: layer for layer, units in LAYERS.items() for unit in units}


def test_every_module_is_placed_in_a_layer() -> None:
    placed = _layer_of()
    missing = sorted({unit for unit, _, _ in _modules()} - placed.keys())
    assert not missing, (
        f"place these modules in LAYERS (and in README.md's Architecture): {missing}"
    )


def test_imports_point_only_up_the_layers() -> None:
    placed = _layer_of()
    wrong = []
    for unit, path, tree in _modules():
        for target, line in _imported_units(path, tree):
            if target == unit or (unit, target) in ALLOWED_UPWARD:
                continue
            if placed[target] > placed[unit]:
                wrong.append(
                    f"{path.relative_to(SRC)}:{line} imports {target} "
                    f"(layer {placed[target]}) from layer {placed[unit]}"
                )
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .memo import Memo\n"
        "def f():\n"
        "    from .fetch import fetch\n"
        "    from . import scratch\n"
    )
    found = {t for t, _ in _imported_units(SRC / "hold.py", ast.parse(source))}
    assert found == {"fetch", "scratch"}


def test_no_module_outside_the_local_tier_touches_a_holds_internals() -> None:
    touched = []
    for unit, path, tree in _modules():
        if unit in INSIDE:
            continue
        for node in _runtime_nodes(tree):
            if not isinstance(node, ast.Attribute):
                continue
            if (node.attr in INTERNALS and not _is_module(node.value, "threading")) or (
                node.attr.startswith("_") and _names_a_hold(node.value)
            ):
                touched.append(f"{path.relative_to(SRC)}:{node.lineno}: .{node.attr}")
    assert not touched, "use the Hold's public surface instead:\n" + "\n".join(touched)


def _is_module(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name  # threading.local is not a Hold's


def _names_a_hold(node: ast.expr) -> bool:
    """``hold``, ``self.hold``, ``self._hold``, ``opened_hold``: what names a Hold here."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name in ("hold", "_hold", "Hold") or name.endswith("_hold")


def test_every_feature_is_provided_whichever_module_is_imported_first() -> None:
    """hold.py imports no feature: each registers itself when the package is imported.
    A program that imports only ``cargohold.hold`` (or a shell module) still gets them
    all, since importing a submodule imports the package first."""
    import subprocess
    import sys
    import typing

    from cargohold.hold import Feature

    wanted = sorted(typing.get_args(Feature))
    for first in ("cargohold.hold", "cargohold.server", "cargohold.fs", "cargohold.memo"):
        code = f"import {first}, cargohold.hold as h; print(sorted(h._features))"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
        assert out.stdout.strip() == str(wanted), (first, out.stdout, out.stderr[-2000:])
