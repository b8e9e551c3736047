"""The code's shape (issue 13): no import cycle in ``src/``, no file over 600 lines, no function
over 60. Read from the source itself, so a new cycle or a swollen function fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[3] / "src" / "snapshoe"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    # Migrations are history: a released revision is never rewritten, and its upgrade() is
    # one table definition after another.
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def _cycles() -> list[list[str]]:
    graph = grimp.build_graph("snapshoe", include_external_packages=False, cache_dir=None)
    modules = sorted(graph.modules)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == 1:
                found.append([*stack[stack.index(imported) :], imported])
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = 2

    for module in modules:
        if module not in state:
            visit(module)
    return found


def test_no_import_cycle_in_src() -> None:
    assert _cycles() == []


def test_no_file_over_600_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_over_60_lines() -> None:
    long: dict[str, int] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - first + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(SRC)}:{node.lineno} {node.name}"] = length
    assert long == {}
