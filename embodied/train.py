"""The main job: ``python -m embodied.train +task=NAME [overrides]``.

Stages (see :mod:`embodied.pipeline`): collect or load the dataset, train the learner
(``algo=``) with checkpoints, evaluate in simulation, write ``report.md`` and ``metrics.json``.
Rerunning into the same run folder (``hydra.run.dir=...``) or ``resume=true`` continues from the
last checkpoint.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from embodied.cli import require_task, run_dir
from embodied.pipeline import print_json, train


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    folder = run_dir()
    report = train(cfg, folder)
    print_json("evaluation:", report["eval"])
    print(f"report: {folder / 'report.md'}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("train")
    _main()


if __name__ == "__main__":
    main()
