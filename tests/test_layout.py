"""The layout of DESIGN.md section 3: five import packages whose dependencies point one way, rooms
inside `rrg` (data, model, training, demo), and no import cycle between any two modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rrg", "retrieval", "prompts", "serving", "eval")
# Which of our packages each package may import.
ALLOWED = {
    "prompts": set(),
    "retrieval": {"prompts"},
    "rrg": {"retrieval", "prompts"},
    "eval": {"rrg", "retrieval", "prompts"},
    "serving": {"rrg", "retrieval", "prompts"},
}
# The command line is the composition root: it wires the server (serving).
COMPOSITION_ROOTS = {ROOT / "rrg" / "cli.py": {"serving"}}
# The phantom demo is reached only through the command lines (and their default, the demo bundle).
DEMO_USERS = {ROOT / "rrg" / "cli.py", ROOT / "eval" / "cli.py"}


def _imported_modules(path: Path) -> set[str]:
    """Every module of ours that a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in names if name.split(".")[0] in PACKAGES}


def _imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imported_modules(path)}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_five_packages_and_top_level_files_exist():
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    for name in ("pyproject.toml", "uv.lock", "Makefile", "README.md", ".ci/run"):
        assert (ROOT / name).is_file(), name


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        allowed = ALLOWED[package] | COMPOSITION_ROOTS.get(path, set()) | {package}
        for imported in _imported_packages(path) - allowed:
            offenders.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not offenders, "\n".join(offenders)


def test_only_the_command_lines_reach_the_phantom_demo():
    offenders = [
        str(path.relative_to(ROOT)) for path in _source_files()
        if not path.is_relative_to(ROOT / "rrg" / "demo") and path not in DEMO_USERS
        and any(name == "rrg.demo" or name.startswith("rrg.demo.") for name in _imported_modules(path))
    ]
    assert not offenders, f"import rrg.demo: {offenders}"


def test_no_import_cycle_between_modules():
    modules = {_module_name(path): path for path in _source_files()}
    graph = {
        name: {imported for imported in _imported_modules(path) if imported in modules and imported != name}
        for name, path in modules.items()
    }
    # Tarjan's strongly connected components: a component of two or more modules is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_code_passes_ruff():
    import shutil
    import subprocess

    ruff = shutil.which("ruff")
    assert ruff, "ruff is installed with the dev extra"
    result = subprocess.run(
        [ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
