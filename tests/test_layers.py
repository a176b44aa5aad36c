"""Layers import one way (DESIGN.md, "The layers"): a module may import from the layers
above it, never from those below, lazily or not. Read from the source with ``ast``, so a
function-level import counts as much as a module-level one."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tachimeter"

# Top to bottom, as DESIGN.md draws them; the last row is the server/cli layer, which
# also holds the report and export packages.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("model",),
    ("config",),
    ("privacy",),
    ("metrics",),
    ("collect",),
    ("store",),
    ("missions",),
    ("analyze",),
    ("alerts",),
    ("server", "cli", "report", "export"),
)
RANK = {package: rank for rank, row in enumerate(LAYERS) for package in row}

# The one known upward edge, kept visible here rather than hidden: spec 414 puts
# ``calculate_metrics`` on the MissionTracker, and the computation lives in analyze. The
# import is lazy (inside the method), so ``import tachimeter`` never loads analyze.
ALLOWED = {("tachimeter.missions.tracker", "tachimeter.analyze.missions")}


def _module_name(path: Path) -> str:
    parts = ("tachimeter", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tachimeter" else None


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(RANK), f"packages without a layer: {sorted(packages - set(RANK))}"


def test_no_module_imports_a_lower_layer() -> None:
    wrong: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        mine = RANK.get(_layer(module) or "")
        if mine is None:  # top-level wiring modules (tachimeter/__init__, defaults, testing)
            continue
        wrong += [
            f"{module} line {line} imports {target}"
            for line, target in _imports(path)
            if RANK.get(_layer(target) or "", -1) > mine and (module, target) not in ALLOWED
        ]
    assert not wrong, "imports from lower layers:\n" + "\n".join(wrong)
