"""Imports point down only: each package may import the ones its `__init__` docstring names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cbirq"

# What each part of cbirq may import from cbirq (itself always). Anything not listed is refused.
ALLOWED = {
    "settings": set(),
    "errors": set(),
    "arguments": {"settings", "errors"},
    "files": {"errors"},
    "store": {"settings", "errors"},
    "cluster": {"settings", "errors", "files"},
    "training": {"errors", "arguments", "store"},
    "rank": {"settings", "errors", "arguments", "files", "store"},  # settings: usable_cores
    # settings: the ENGINES names; rank: the ranking options a model family defaults to
    "embed": {"settings", "errors", "files", "store", "training", "rank"},
    "evaluation": {"errors", "store", "rank"},
    # client: an index job's coordinator, which runs on a worker as well as in the client
    "tasks": {
        *("settings", "errors", "store", "cluster", "training", "embed", "rank", "evaluation"),
        "client",
    },
    "web": {"errors", "client", "embed"},
    # the client side of the CLI and the Python API; the embedded dispatcher imports the task
    # modules by name (cluster.celery_app.TASK_MODULES), never with an import statement
    "client": {
        "settings",
        "errors",
        "arguments",
        "store",
        "cluster",
        "training",
        "embed",
        "rank",
        "evaluation",
    },
    # The CLI works through the client: neither the store nor the dispatcher (client.dispatch).
    "cli": {"settings", "errors", "arguments", "cluster", "training", "embed", "client", "web"},
}


def part_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "cbirq"


def cbirq_imports(path: Path) -> set[str]:
    """Every `cbirq.X...` module the file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cbirq"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(names if node.module == "cbirq" else [node.module])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("cbirq."))
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in {"__init__.py", "__main__.py"})


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path):
    relative = path.relative_to(PACKAGE)
    part = relative.parts[0].removesuffix(".py")
    allowed = ALLOWED[part] | {part, "__version__"}
    upward = {m for m in cbirq_imports(path) if part_of(m) not in allowed}
    assert not upward, f"{relative} imports {sorted(upward)}"


def test_every_part_of_the_package_has_a_rule():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}
    assert parts == set(ALLOWED)


def test_the_rules_have_no_cycle():
    def reaches(start: str, target: str, seen: frozenset = frozenset()) -> bool:
        return any(
            nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt}))
            for nxt in ALLOWED[start]
        )

    assert not [part for part in ALLOWED if reaches(part, part)]


def test_the_cli_and_the_web_page_reach_work_through_the_client_only():
    reaching = {
        str(path.relative_to(PACKAGE)): sorted(found)
        for part in ("cli", "web")
        for path in (PACKAGE / part).rglob("*.py")
        if (
            found := {
                m
                for m in cbirq_imports(path)
                if m.startswith(("cbirq.store", "cbirq.client.dispatch"))
            }
        )
    }
    assert not reaching
