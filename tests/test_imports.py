"""The dependency order of lmx (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md) holds.

`lint-imports` checks the contracts (`make test` also runs it before pytest); the other tests keep
imports at module level, where the contracts see them and a cycle shows up at once.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lmx"

# Function-level imports of lmx modules that stay, with the reason (one entry each).
LAZY_LMX_IMPORTS = {
    ("lmx/__init__.py", "lmx.api"): "lmx.api loads grain; `import lmx` must work without it",
}


def test_import_contracts_are_kept():
    # -c puts the repository root first on sys.path, so this checkout's lmx is the one analysed
    out = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    report = out.stdout[out.stdout.find("Contracts"):]  # the report without the banner
    assert out.returncode == 0, f"lint-imports failed:\n{report[-6000:]}\n{out.stderr[-2000:]}"
    assert "0 broken" in out.stdout


def _function_level_imports():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        seen = set()
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in seen:
                    seen.add(node.lineno)
                    yield path, node


def _modules(node) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names]


def test_lmx_modules_are_imported_at_module_level():
    found = []
    for path, node in _function_level_imports():
        for module in _modules(node):
            key = (path.relative_to(ROOT).as_posix(), module)
            if (module == "lmx" or module.startswith("lmx.")) and key not in LAZY_LMX_IMPORTS:
                found.append(f"{key[0]}:{node.lineno}: {module}")
    assert not found, "import these at module level (a cycle is a layering problem):\n" + "\n".join(found)


def test_function_level_imports_say_why():
    missing = []
    for path, node in _function_level_imports():
        lines = path.read_text(encoding="utf-8").splitlines()
        first = node.lineno - 1
        while first > 0 and lines[first - 1].lstrip().startswith(("import ", "from ")):
            first -= 1  # the comment may head a block of imports
        said = any("#" in line for line in lines[first:node.lineno]) or (
            first > 0 and lines[first - 1].lstrip().startswith("#"))
        if not said:
            missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not missing, "a function-level import needs a comment saying why it is not at module level:\n" + \
        "\n".join(missing)


def test_importing_every_module_starts_no_jax_backend():
    # lmx.cli imports everything before it calls jax.distributed.initialize, which must come first
    script = """
import importlib, pkgutil
import lmx
for info in pkgutil.walk_packages(lmx.__path__, "lmx."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
from jax._src import xla_bridge
assert not xla_bridge._backends, sorted(xla_bridge._backends)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
