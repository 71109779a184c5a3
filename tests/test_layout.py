"""The package's shape: stages import only earlier stages, no import circle, small modules.

Read from the source with `ast` (every import counts: those inside functions and under
TYPE_CHECKING too), so a backward import is caught where it is written, not where it happens to run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline" / "wetmap"

# The pipeline in order (README, Development). A module may import its own stage and earlier ones.
STAGES: list[tuple[str, ...]] = [
    ("__init__", "errors", "bands", "progress", "metrics", "config", "runtime"),
    ("io",),
    ("sample",),
    ("scenes",),
    ("masks",),
    ("chips",),
    ("model",),
    ("train",),
    ("predict",),
    ("evaluate",),
    ("change",),
    ("jobs",),
    ("cli", "__main__"),
]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, names in enumerate(STAGES):
        if top in names:
            return rank
    raise AssertionError(f"{module}: not in any stage of STAGES")


def imports(module: str, source: str | None = None) -> set[str]:
    """The wetmap modules `module` imports (a name imported from a package that is itself a
    module counts as that module)."""
    tree = ast.parse(MODULES[module].read_text() if source is None else source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "wetmap")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "wetmap":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    found.discard(module)
    return found


def test_every_module_has_a_stage() -> None:
    for module in MODULES:
        stage(module)


def backward_imports(module: str, source: str | None = None) -> list[str]:
    return [f"{module} ({STAGES[stage(module)][0]}) imports {i} ({STAGES[stage(i)][0]})"
            for i in sorted(imports(module, source)) if stage(i) > stage(module)]


def test_no_module_imports_a_later_stage() -> None:
    backward = [line for m in MODULES for line in backward_imports(m)]
    assert not backward, "\n".join(backward)


def test_no_import_circle() -> None:
    graph = {m: {i for i in imports(m) if i in MODULES} for m in MODULES}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(m):], m]))
        if m in done:
            return
        for i in sorted(graph[m]):
            visit(i, [*path, m])
        done.add(m)

    for m in MODULES:
        visit(m, [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines (at most {MAX_LINES}: split it by job)"


def test_layering_check_sees_a_backward_import() -> None:
    """The check itself: io importing predict, even inside a function, is reported; the reverse is not."""
    lazy = "def f():\n    from wetmap.predict import mosaic\n"
    assert backward_imports("wetmap.io.raster", lazy) == ["wetmap.io.raster (io) imports wetmap.predict.mosaic (predict)"]
    assert backward_imports("wetmap.predict.mosaic", "from wetmap.io.raster import Grid\n") == []
