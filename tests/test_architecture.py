"""The package's shape (``docs/architecture.md``), read from its source: only ``medattn.tracking`` imports mlflow,
``api.py`` is a short facade no stage imports, modules stay under 600 lines and functions under 80,
and an import inside a function body says why in a comment. The layers themselves are ``lint-imports``' job (pyproject)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medattn"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 80
MAX_API_LINES = 150
MAX_MODULE_LINES = 600


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import in the file, wherever it sits."""
    return [(n.lineno, m) for n in ast.walk(_tree(path)) for m in _imported_modules(n)]


def test_the_package_is_found():
    assert len(SOURCES) > 30 and (PACKAGE / "tracking" / "__init__.py").is_file()


def test_only_medattn_tracking_imports_mlflow():
    offenders = [
        f"{_rel(p)}:{line} imports {mod}"
        for p in SOURCES
        if "tracking" not in p.relative_to(PACKAGE).parts[:1]
        for line, mod in _imports(p)
        if mod == "mlflow" or mod.startswith("mlflow.")
    ]
    assert offenders == []


def test_api_is_a_short_facade_that_no_stage_imports():
    assert len((PACKAGE / "api.py").read_text().splitlines()) <= MAX_API_LINES
    stages = sorted((PACKAGE / "stages").glob("*.py"))
    assert {p.stem for p in stages} >= {
        "train",
        "evaluate",
        "interpret",
        "figures",
        "compare",
        "search",
        "promote",
        "demo",
        "grid",
        "bench",
    }
    offenders = [f"{_rel(p)}:{line}" for p in stages for line, mod in _imports(p) if mod == "medattn.api"]
    offenders += [
        f"{_rel(p)}:{n.lineno}"
        for p in stages
        for n in ast.walk(_tree(p))
        if isinstance(n, ast.ImportFrom) and n.module == "medattn" and any(a.name == "api" for a in n.names)
    ]
    assert offenders == []


def test_no_module_is_longer_than_600_lines():
    """A module a newcomer can read in one sitting: past 600 lines, split it along its seams."""
    long = {_rel(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines (file: lines): {long}"


def _functions(path: Path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def test_no_function_is_longer_than_80_lines():
    long = [
        f"{_rel(p)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
        for p in SOURCES
        for f in _functions(p)
        if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_an_import_inside_a_function_says_why():
    """Only optional heavy dependencies are imported lazily, each with a comment saying which and why
    (on the import line or the line above)."""
    undocumented = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for func in _functions(path):
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno > func.lineno:
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in here and not above.startswith("#"):
                        undocumented.append(f"{_rel(path)}:{node.lineno} {here.strip()}")
    assert undocumented == []


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_every_module_parses_and_has_a_docstring(path: Path):
    tree = _tree(path)
    if path.name != "__main__.py":
        assert ast.get_docstring(tree), f"{_rel(path)} has no module docstring"
