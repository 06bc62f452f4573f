"""The main job: ``python -m embodied.train +task=NAME [overrides]``.

Stages (see :mod:`embodied.pipeline`): collect or load the dataset, train the learner
(``algo=``) with checkpoints, evaluate in simulation, write ``report.md`` and ``metrics.json``.
Rerunning the same command after a kill or an error continues that unfinished run
(``resume=auto``, the default: the newest unfinished run with the same settings); rerunning into
a run folder (``hydra.run.dir=...``) or ``resume=true`` continues from its last checkpoint;
``resume=false`` starts a new run. The console is copied into ``train.log`` in the run folder.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from embodied.cli import require_task, run_folder
from embodied.pipeline import continue_unfinished, print_json, train


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
