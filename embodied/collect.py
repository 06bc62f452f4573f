"""Collect an offline dataset: ``python -m embodied.collect +task=NAME dataset.episodes=N``.

Runs the task's behaviour policies in the ``dataset.mixture`` proportions and writes the Minari
dataset ``embodied/<task>/<dataset.recipe>-v0`` under the datasets root (see
:mod:`embodied.datasets`); ``dataset.frames=true`` stores frames. An interrupted collection
resumes where it stopped when the same command is run again. Prints the dataset's summary, wall
time, frames per second and size on disk, and writes them to ``metrics.json`` in the run folder.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

from embodied.cli import require_task, run_folder
from embodied.config import validate_config
from embodied.io import write_json_atomic
from embodied.paths import RunPaths
from embodied.pipeline import dataset_stage, dataset_summary, print_json
from embodied.runtime import seed_everything


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    with run_folder("collect", cfg) as folder:
        validate_config(cfg)
        seed_everything(int(cfg.seed))
        started = time.time()
        dataset = dataset_stage(cfg)
        elapsed = time.time() - started
        steps = sum(len(ep) + 1 for ep in dataset.episodes)
        size = sum(p.stat().st_size for p in dataset.path.rglob("*") if p.is_file())
        summary = {
            **dataset_summary(dataset.episodes),
            "dataset/wall_time_s": round(elapsed, 1),
            "dataset/observations_per_s": round(steps / max(elapsed, 1e-9), 1),
            "dataset/size_mb": round(size / 2**20, 2),
            "dataset/frames": float(dataset.has_frames),
        }
        write_json_atomic(RunPaths(folder).metrics, {"dataset_id": dataset.source, "path": str(dataset.path), **summary})
        print_json(f"{dataset.source}:", summary)
        print(f"dataset: {dataset.path}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("collect")
    _main()


if __name__ == "__main__":
    main()
