"""Nothing present is a stub, and every package the project declares imports."""

from __future__ import annotations

import ast
import importlib

import pytest

from tests.conftest import REPO

PACKAGES = ["embodied", "envs", "reward_models", "policies", "real_robot", "conf"]


def _sources():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports(package):
    assert importlib.import_module(package).__doc__


def test_no_function_only_raises_not_implemented():
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
                if len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0]):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not offenders, offenders


def test_every_entry_point_module_has_a_main():
    for name in ("train", "collect", "evaluate", "label"):
        module = importlib.import_module(f"embodied.{name}")
        assert callable(module.main)


def test_no_run_artefact_is_tracked_or_left_unignored():
    """MuJoCo's MUJOCO_LOG.TXT, run folders and datasets written in the checkout stay out of git."""
    import shutil
    import subprocess

    from tests.conftest import REPO

    if shutil.which("git") is None or not (REPO / ".git").exists():
        raise AssertionError("this check needs the git checkout (CI runs on a clone)")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert not [p for p in tracked if p.endswith("MUJOCO_LOG.TXT") or p.startswith(("outputs/", "multirun/"))]
    for path in ("MUJOCO_LOG.TXT", "outputs/2026-01-01/00-00-00_dressing_iql/train.log", "multirun/x"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert ignored.returncode == 0, f"{path} is not ignored by .gitignore"
