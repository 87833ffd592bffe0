"""The layers hold: the contracts in pyproject.toml catch a wrong import, and no import runs in a circle.

`./dev test` runs the contracts on the real package (`lint-imports`); these tests prove the check
has teeth, by running it on a copy of the package with one wrong import planted, and measure the
import graph itself. `python -m tests.architecture.test_layers` prints the graph's depth and its
longest chain.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import grimp
import pytest

import mcp_swarm

PACKAGE = Path(mcp_swarm.__file__).parent
PROJECT = PACKAGE.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# Modules in the longest chain of imports, the entry point included: sixteen before the layers,
# fourteen after. A deeper chain is a sign that something reaches round the layers.
MAX_DEPTH = 14


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "mcp_swarm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(project: Path, module: str, line: str) -> None:
    """Add `line` to `module` of the copy, after its docstring and `from __future__` import."""
    path = project / Path(*module.split(".")).with_suffix(".py")
    text = path.read_text(encoding="utf-8")
    anchor = "from __future__ import annotations\n"
    assert anchor in text, path
    path.write_text(text.replace(anchor, f"{anchor}\n{line}\n", 1), encoding="utf-8")


def _lint(project: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"lint-imports is not installed next to {sys.executable}: pip install -e '.[test]'")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_package_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "line", "complaint"),
    [
        # The engine reaching up into the MCP surface.
        (
            "mcp_swarm.engine.swarm",
            "import mcp_swarm.server.mayor",
            "is not allowed to import mcp_swarm.server",
        ),
        # Also when only the type checker would follow it.
        (
            "mcp_swarm.engine.supervision",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mcp_swarm.app",
            "is not allowed to import mcp_swarm.app",
        ),
        # The store reaching up into the rules it serves.
        (
            "mcp_swarm.store.tasks",
            "import mcp_swarm.ledger.tasks",
            "is not allowed to import mcp_swarm.ledger",
        ),
        # A placement reading the database.
        (
            "mcp_swarm.placement.processes",
            "import mcp_swarm.store",
            "is not allowed to import mcp_swarm.store",
        ),
        # The MCP SDK anywhere but the server.
        ("mcp_swarm.engine.waiting", "import mcp", "is not allowed to import mcp"),
        # The ledger starting processes.
        ("mcp_swarm.ledger.mail", "import subprocess", "is not allowed to import subprocess"),
        # Two modules of one layer importing each other.
        ("mcp_swarm.engine.verdicts", "import mcp_swarm.engine.swarm", "No cycles are allowed"),
    ],
)
def test_a_wrong_import_fails_the_layer_check(tmp_path: Path, module: str, line: str, complaint: str) -> None:
    project = _copy(tmp_path)
    _plant(project, module, line)
    done = _lint(project)
    assert done.returncode != 0, f"planting {line!r} in {module} went unnoticed"
    assert complaint in done.stdout, done.stdout


@cache
def _graph() -> dict[str, set[str]]:
    """Each module of mcp_swarm and the modules of ours it imports, TYPE_CHECKING imports included."""
    graph = grimp.build_graph("mcp_swarm", cache_dir=None)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def longest_chain() -> list[str]:
    """The longest chain of imports, each module importing the next; an import that closes a
    cycle is not followed (the cycle test reports those)."""
    graph = _graph()
    longest: dict[str, list[str]] = {}
    for start in sorted(graph):
        # Iterative depth-first search, so that no chain can exhaust the recursion limit.
        stack: list[tuple[str, bool]] = [(start, False)]
        visiting: set[str] = set()
        while stack:
            module, expanded = stack.pop()
            if module in longest or (module in visiting and not expanded):
                continue
            if expanded:
                visiting.discard(module)
                none: list[str] = []
                below = max((longest.get(m, none) for m in graph[module]), key=len, default=none)
                longest[module] = [module, *below]
                continue
            visiting.add(module)
            stack.append((module, True))
            stack.extend((m, False) for m in graph[module] if m not in longest and m not in visiting)
    return max(longest.values(), key=len)


def test_no_module_is_reached_again_from_what_it_imports() -> None:
    graph = _graph()
    # Kahn's algorithm: what cannot be ordered lies on a cycle.
    waiting = {module: len(imported) for module, imported in graph.items()}
    importers: dict[str, list[str]] = {module: [] for module in graph}
    for module, imported in graph.items():
        for target in imported:
            importers[target].append(module)
    ready = [module for module, count in waiting.items() if count == 0]
    while ready:
        for importer in importers[ready.pop()]:
            waiting[importer] -= 1
            if waiting[importer] == 0:
                ready.append(importer)
    assert sorted(module for module, count in waiting.items() if count) == []


def test_the_import_graph_stays_shallow() -> None:
    chain = longest_chain()
    assert len(chain) <= MAX_DEPTH, " -> ".join(chain)


if __name__ == "__main__":
    chain = longest_chain()
    print(f"{len(_graph())} modules; the longest chain of imports has {len(chain)}:")
    print(" -> ".join(chain))
