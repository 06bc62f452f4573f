"""Shared fixtures: composed configs and small helpers for subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

import embodied  # noqa: F401  (selects MUJOCO_GL before mujoco is imported)
import embodied.config  # noqa: F401  (registers schemas and resolvers)

REPO = Path(__file__).resolve().parents[1]

TINY = "embodied-test-tiny-clip"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 32-pixel, 2-layer open_clip model from a custom config, saved as a local weights file:
    ``(path, model)``."""
    import json

    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("clip")
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / f"{TINY}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY)
    path = folder / "tiny_open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path, model.eval()


@pytest.fixture(autouse=True)
def datasets_root(tmp_path_factory, monkeypatch) -> Path:
    """Every test writes Minari datasets to its own folder (subprocesses inherit it)."""
    root = tmp_path_factory.mktemp("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def compose_config():
    """``compose_config(overrides, config_name="config") -> DictConfig`` through Hydra's compose
    API (no run folder)."""

    def _compose(overrides: list[str], config_name: str = "config"):
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)

    yield _compose
    GlobalHydra.instance().clear()


def compose_online(overrides: list[str]):
    """The online loop's config (``conf/online.yaml``) with ``overrides``, through Hydra's compose API."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="online", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def small_train_overrides(run_root: Path) -> list[str]:
    """Overrides for a quick PointMass run: few episodes, few steps, no progress bars."""
    return [
        "+task=pointmass",
        "algo=bc",
        "dataset.episodes=6",
        "trainer.steps=40",
        "trainer.batch_size=32",
        "trainer.log_every=10",
        "trainer.checkpoint_every=20",
        "trainer.progress=false",
        "eval.episodes=2",
        "eval.episodes_during_training=1",
        "eval.video_size=64",
        "device=cpu",
        f"output_root={run_root}",
    ]


def run_module(module: str, *args: str, cwd: Path, timeout: float = 300, full_error: bool = True
               ) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, capturing output (with ``HYDRA_FULL_ERROR=1``
    unless ``full_error`` is False: then errors print as a user sees them)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
