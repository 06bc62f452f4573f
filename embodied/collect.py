"""Collect an offline dataset: ``python -m embodied.collect +task=NAME dataset.episodes=N``.

Runs the task's behaviour policies in the ``dataset.mixture`` proportions and writes
``dataset/episodes.npz`` (atomically) in the run folder; ``dataset.path=<that file>`` then
trains on it.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from embodied.cli import require_task, run_dir
from embodied.pipeline import dataset_stage, dataset_summary, print_json
from embodied.runtime import seed_everything


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    folder = run_dir()
    seed_everything(int(cfg.seed))
    episodes, path = dataset_stage(cfg, folder)
    print_json(f"{cfg.task.name} dataset:", dataset_summary(episodes))
    print(f"dataset: {path}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("collect")
    _main()


if __name__ == "__main__":
    main()
