"""Evaluate a policy in simulation: ``python -m embodied.evaluate +task=NAME policy=expert``.

``policy=`` names one of the task's behaviour policies (``expert``, ``noisy``, ``random``, ...);
``checkpoint=PATH`` (a step, checkpoints or run folder) evaluates a trained policy instead.
Prints the success rate and task metrics and writes them to ``metrics.json`` in the run folder.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from embodied.cli import require_task, run_folder
from embodied.config import validate_config
from embodied.io import write_json_atomic
from embodied.paths import RunPaths
from embodied.pipeline import evaluate_stage, print_json
from embodied.runtime import seed_everything
from embodied.tasks import make_policy


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    with run_folder("evaluate", cfg) as folder:
        validate_config(cfg)
        seed_everything(int(cfg.seed))
        policy, source = make_policy(cfg.task, cfg.policy, cfg.checkpoint, cfg.device, condition=cfg.condition)
        source = source if cfg.checkpoint else f"policy {source}"
        metrics = evaluate_stage(cfg, policy)
        write_json_atomic(RunPaths(folder).metrics, {"task": cfg.task.name, "policy": source, "eval": metrics})
        print_json(f"{cfg.task.name}, {source}:", metrics)
        print(f"metrics: {RunPaths(folder).metrics}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("evaluate")
    _main()


if __name__ == "__main__":
    main()
