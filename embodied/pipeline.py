"""The stages of the main job, each resuming from what its run folder already holds.

``dataset`` -> ``policy`` -> ``report`` (see ../shared/DESIGN.md; the ``label`` and ``reward``
stages slot in between dataset and policy). Every stage takes the resolved config and the run
folder; finished stages are skipped on a rerun into the same folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from embodied.checkpoint import latest_checkpoint, load_checkpoint
from embodied.config import DatasetConfig, EvalConfig, TrainerConfig, normalize_resume
from embodied.data import Episode, TransitionStore
from embodied.datasets import OfflineDataset, Recipe, collect_dataset, datasets_root, load_dataset, make_dataset_id
from embodied.evaluation import evaluate_policy
from embodied.io import write_json_atomic, write_text_atomic
from embodied.learners import LearnerPolicy, restore_learner, save_learner
from embodied.loggers import Logger
from embodied.runtime import resolve_device, seed_everything
from embodied.tasks import make_env, make_policies
from policies import make_learner


class RunFolderError(RuntimeError):
    """The run folder's contents conflict with what was asked (e.g. resume=false on checkpoints)."""


def dataset_summary(episodes: list[Episode]) -> dict[str, float]:
    """``dataset/`` metrics: episode and transition counts, success rate overall and per policy."""
    out = {
        "dataset/episodes": float(len(episodes)),
        "dataset/transitions": float(sum(len(ep) for ep in episodes)),
        "dataset/success_rate": float(np.mean([ep.success for ep in episodes])),
    }
    for name in sorted({ep.policy for ep in episodes if ep.policy}):
        mine = [ep.success for ep in episodes if ep.policy == name]
        out[f"dataset/success_rate_{name}"] = float(np.mean(mine))
    return out


def dataset_stage(cfg: DictConfig, keep_frames: bool = False) -> OfflineDataset:
    """Load the run's Minari dataset, collecting it first when it is ours and missing.

    ``dataset.id`` unset: ``embodied/<task>/<recipe>-v0`` under the datasets root, collected
    with the task's behaviour policies (resumable). Set: that id or folder, loaded as it is.

    Raises:
        DatasetError: the dataset is missing (and not ours to collect), malformed, or exists
            with a different recipe.
    """
    config: DatasetConfig = OmegaConf.to_object(cfg.dataset)
    root = Path(config.root) if config.root else datasets_root()
    dataset_id = config.id or make_dataset_id(cfg.task.name, config.recipe)
    if config.id is None:
        recipe = Recipe(name=config.recipe, episodes=config.episodes, mixture=config.mixture, seed=config.seed,
                        frames=config.frames, width=config.width, height=config.height)
        render = {"render_mode": "rgb_array", "width": config.width, "height": config.height} if config.frames else {}
        probe = make_env(cfg.task)
        try:
            policies = make_policies(cfg.task, probe.action_space, names=list(config.mixture))
            spec_id = probe.spec.id if probe.spec is not None else "unknown"
        finally:
            probe.close()
        collect_dataset(
            dataset_id, lambda: make_env(cfg.task, **render), policies, recipe,
            info_keys=list(dict.fromkeys([*cfg.task.info_keys, *cfg.task.metrics])),
            provenance={"task": cfg.task.name, "env_id": spec_id, "task_config": OmegaConf.to_container(cfg.task, resolve=True)},
            root=root, progress=bool(cfg.trainer.progress),
        )
    return load_dataset(dataset_id, root, keep_frames=keep_frames, progress=bool(cfg.trainer.progress))


def evaluate_stage(cfg: DictConfig, policy: Any) -> dict[str, float]:
    """Evaluate a policy on the task with ``eval.*`` settings; returns ``summarize`` metrics."""
    evaluation: EvalConfig = OmegaConf.to_object(cfg.eval)
    env = make_env(cfg.task)
    try:
        return evaluate_policy(
            env, policy, evaluation.episodes, evaluation.seed,
            info_keys=list(cfg.task.info_keys), metric_keys=list(cfg.task.metrics),
            progress=bool(cfg.trainer.progress),
        )
    finally:
        env.close()


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """The main job: dataset -> policy training (checkpointed, resumable) -> evaluation report.

    Returns:
        The report's metrics (also written to ``run_dir/metrics.json``).

    Raises:
        RunFolderError: ``resume=false`` but the run folder already has checkpoints.
    """
    run_dir = Path(run_dir)
    resume = normalize_resume(cfg.resume)
    trainer: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    generator = seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    checkpoints = run_dir / "checkpoints"
    latest = latest_checkpoint(checkpoints)
    if latest is not None and resume == "false":
        raise RunFolderError(
            f"{run_dir} already holds checkpoint {latest.name} and resume=false; choose a new "
            "folder, or drop resume=false to continue it"
        )

    report_path = run_dir / "metrics.json"
    if latest is not None and report_path.exists():
        done = json.loads(report_path.read_text())
        if done.get("step") == trainer.steps and Path(done.get("checkpoint", "")) == latest:
            print(f"{run_dir} is finished (step {trainer.steps}); nothing to do")
            return done

    started = time.time()
    dataset = dataset_stage(cfg)
    episodes = dataset.episodes
    store = TransitionStore(episodes, device, include_reward=cfg.algo.reward == "gt")
    observation_dim = store.tensors["observation"].shape[1]
    action_dim = store.tensors["action"].shape[1]
    learner = make_learner(instantiate(cfg.algo.learner), observation_dim, action_dim, device=str(device))
    if learner.needs_reward and "reward" not in store.tensors:
        raise ValueError(
            f"algo={cfg.algo.name} learns from rewards but algo.reward=none; train with "
            "algo.reward=gt (the ground-truth reward: an oracle baseline)"
        )

    start = 0
    if latest is not None:
        checkpoint = load_checkpoint(latest)
        restore_learner(learner, checkpoint, generator)
        start = checkpoint.step
        print(f"resuming from {latest} (step {start})")
    else:
        learner.prepare(store.tensors["observation"], total_steps=trainer.steps)

    logger: Logger = instantiate(cfg.logger)(run_dir=run_dir, resume_step=start if latest else None)
    try:
        if latest is None:
            logger.log(dataset_summary(episodes), step=0)
        learner.train()
        bar = tqdm(total=trainer.steps, initial=start, desc="train", unit="step",
                   disable=not trainer.progress, mininterval=1.0)
        for step in range(start + 1, trainer.steps + 1):
            losses = learner.update(store.sample(trainer.batch_size, generator))
            if step % trainer.log_every == 0:
                values = logger.log({f"train/{k}": v for k, v in losses.items()}, step=step)
                bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            if step % trainer.checkpoint_every == 0 or step == trainer.steps:
                save_learner(checkpoints, step, learner, observation_dim, action_dim, generator,
                             extra={"task": cfg.task.name}, keep_last=trainer.keep_checkpoints)
            bar.update(1)
        bar.close()
        learner.eval()

        metrics = evaluate_stage(cfg, LearnerPolicy(learner, device))
        logger.log({f"eval/{k}": v for k, v in metrics.items()}, step=trainer.steps)
    finally:
        logger.close()

    final = latest_checkpoint(checkpoints)
    report = {
        "task": cfg.task.name,
        "algo": cfg.algo.name,
        "seed": int(cfg.seed),
        "step": trainer.steps,
        "checkpoint": str(final),
        "wall_time_s": round(time.time() - started, 1),
        "eval": metrics,
        "dataset": dataset_summary(episodes),
        "dataset_id": dataset.source,
        "dataset_path": str(dataset.path),
    }
    write_json_atomic(report_path, report)
    write_text_atomic(run_dir / "report.md", render_report(report))
    return report


def render_report(report: dict[str, Any]) -> str:
    """``report.md``: what ran, the evaluation table and where the checkpoint is."""
    lines = [
        f"# {report['task']} / {report['algo']} (seed {report['seed']})",
        "",
        f"Trained {report['step']} steps; this invocation took {report['wall_time_s']} s.",
        "",
        "## Evaluation",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in report["eval"].items()],
        "",
        "## Dataset",
        "",
        f"`{report['dataset_id']}` at `{report['dataset_path']}`",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k.split('/', 1)[1]} | {v:.4g} |" for k, v in report["dataset"].items()],
        "",
        f"Checkpoint to deploy from: `{report['checkpoint']}`",
        "",
        "Raw numbers: `metrics.json`; curves: `metrics.jsonl` and `tensorboard/`.",
        "",
    ]
    return "\n".join(lines)


def print_json(title: str, data: dict[str, Any]) -> None:
    """Print a titled, indented JSON block (the entry points' final output)."""
    print(f"{title}\n{json.dumps(data, indent=2, sort_keys=True)}")
