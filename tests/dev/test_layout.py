"""The layout's import rule: src/ never imports the developer tools (tools/) or the launchers' folder."""
import ast
import glob
import os

from conftest import REPO


def imported_modules(source: str) -> set:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_imported_modules_sees_nested_imports():
    assert imported_modules("def f():\n    from tools.bench import x\nimport os.path\n") == {"tools.bench", "os.path"}


def test_src_never_imports_tools_or_scripts():
    offending = []
    for path in glob.glob(os.path.join(REPO, "src", "**", "*.py"), recursive=True):
        with open(path) as f:
            for name in imported_modules(f.read()):
                if name.split(".")[0] in ("tools", "scripts"):
                    offending.append(f"{os.path.relpath(path, REPO)} imports {name}")
    assert offending == []
