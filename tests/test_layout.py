"""The layout of DESIGN.md section 3: five import packages whose dependencies point one way."""

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
# The command line is the composition root: it wires the labeler (eval) and the server (serving).
COMPOSITION_ROOTS = {ROOT / "rrg" / "cli.py": {"eval", "serving"}}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


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
