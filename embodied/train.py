"""The main job: ``python -m embodied.train +task=NAME [overrides]``.

Stages (see :mod:`embodied.pipeline`): collect or load the dataset, train the learner
(``algo=``) with checkpoints, evaluate in simulation, write ``report.md`` and ``metrics.json``.
Rerunning the same command after a kill or an error continues that unfinished run
(``resume=auto``, the default: the newest unfinished run with the same settings); rerunning into
a run folder (``hydra.run.dir=...``) or ``resume=true`` continues from its last checkpoint;
``resume=false`` starts a new run. The console is copied into ``train.log`` in the run folder.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from embodied.cli import require_task, run_folder
from embodied.config import normalize_resume
from embodied.pipeline import find_unfinished_run, print_json, train


def continue_unfinished(cfg: DictConfig, folder: Path) -> Path | None:
    """``resume=auto``: the unfinished run with this config's identity to continue instead of the
    new ``folder`` (see :func:`embodied.pipeline.find_unfinished_run`)."""
    if normalize_resume(cfg.resume) != "auto":
        return None
    try:
        return find_unfinished_run(cfg, exclude=folder)
    except Exception:  # an invalid config: the job itself names what is wrong
        return None


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    with run_folder("train", cfg, redirect=lambda folder: continue_unfinished(cfg, folder)) as folder:
        report = train(cfg, folder)
        print_json("evaluation:", report["eval"])
        print(f"report: {folder / 'report.md'}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("train")
    _main()


if __name__ == "__main__":
    main()
