"""The one training loop every entry point runs: updates, logging, evaluation, checkpoints,
resume and the progress bar (the shape of d3rlpy's ``fit`` and LeRobot's ``train.py``).

:func:`fit` takes a learner (:class:`policies.base.Learner`), a sampler (:mod:`policies.data`)
and a checkpoint folder. A folder that already holds a checkpoint is resumed from it: weights,
optimiser state, the sampler's generator and its state (a replay buffer's contents) are restored,
so the resumed run draws the same batches as an uninterrupted one. The main job
(:func:`embodied.pipeline.train`), the benchmark, and the continual and online loops to come are
entry points over it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from embodied.checkpoint import latest_checkpoint, load_checkpoint
from embodied.learners import restore_learner, save_learner
from embodied.loggers import Logger
from policies.base import Learner
from policies.data import Sampler


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        start_step: the step it started from (0, or the checkpoint's step when resumed).
        step: the last step (``steps``).
        checkpoint: the newest checkpoint folder.
        final_metrics: the final evaluation's metrics (empty without ``evaluate``).
        resumed: whether it continued from a checkpoint.
    """

    start_step: int
    step: int
    checkpoint: Path | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    resumed: bool = False


def fit(
    learner: Learner,
    sampler: Sampler,
    *,
    steps: int,
    batch_size: int,
    checkpoints: str | Path,
    generator: torch.Generator,
    make_logger: Callable[[int | None], Logger],
    prepare: Callable[[], None] | None = None,
    on_start: Callable[[Logger], None] | None = None,
    evaluate: Callable[[bool], Mapping[str, float]] | None = None,
    eval_every: int = 0,
    log_every: int = 100,
    checkpoint_every: int = 1000,
    keep_checkpoints: int | None = 3,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train ``learner`` for ``steps`` updates on batches of ``batch_size`` from ``sampler``.

    Args:
        learner: the learner; ``learner.config.name`` is recorded in checkpoints.
        sampler: where batches come from; its ``state_dict()`` goes into checkpoints.
        steps: total updates (a resumed run does the rest).
        batch_size: B.
        checkpoints: the ``checkpoints/`` folder; a checkpoint there is resumed from.
        generator: the sampler's random generator (its state is checkpointed).
        make_logger: ``make_logger(resume_step)`` builds the logger (``resume_step`` None when
            starting fresh, so a resumed logger can drop rows after the checkpoint).
        prepare: called once when starting fresh (fit statistics, schedules).
        on_start: called once with the logger when starting fresh (step-0 rows).
        evaluate: ``evaluate(final) -> metrics``; called every ``eval_every`` updates with
            ``final=False`` (the progress bar says "evaluating"; it should show no bar of its own)
            and once at the end with ``final=True``, after the bar closed; logged under ``eval/``. The
            final metrics are stored in the last checkpoint, so a finished run is not evaluated
            again.
        eval_every: updates between evaluations during training (0: only the final one).
        log_every: updates between ``train/`` rows.
        checkpoint_every: updates between checkpoints (one is always written at the end).
        keep_checkpoints: newest checkpoints kept (None: all).
        progress: show a progress bar with rate and ETA.
        extra: JSON-able facts stored in every checkpoint (``state["extra"]``).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: ``steps``, ``batch_size``, ``log_every`` or ``checkpoint_every`` < 1, or
            ``eval_every`` < 0.
        embodied.checkpoint.CheckpointError: the folder's checkpoint does not fit the learner.
    """
    if min(steps, batch_size, log_every, checkpoint_every) < 1 or eval_every < 0:
        raise ValueError(f"fit: steps={steps}, batch_size={batch_size}, log_every={log_every}, checkpoint_every="
                         f"{checkpoint_every} must be >= 1 and eval_every={eval_every} >= 0")
    checkpoints = Path(checkpoints)
    latest = latest_checkpoint(checkpoints)
    start, final = 0, {}
    if latest is not None:
        checkpoint = load_checkpoint(latest)
        restore_learner(learner, checkpoint, generator)
        sampler.load_state_dict(checkpoint.state.get("sampler", {}))
        start = checkpoint.step
        final = dict(checkpoint.state.get("final_metrics", {}))
        print(f"resuming from {latest} (step {start})")
    elif prepare is not None:
        prepare()

    def save(step: int, final_metrics: Mapping[str, float] | None = None) -> Path:
        return save_learner(checkpoints, step, learner, learner.observation_dim, learner.action_dim, generator,
                            extra=dict(extra or {}), keep_last=keep_checkpoints,
                            sampler_state=sampler.state_dict(), final_metrics=final_metrics)

    if start >= steps and (final or evaluate is None):  # finished: its final evaluation is in the checkpoint
        learner.eval()
        return FitResult(start_step=start, step=start, checkpoint=latest, final_metrics=final, resumed=True)
    logger = make_logger(start if latest is not None else None)
    try:
        if latest is None and on_start is not None:
            on_start(logger)
        learner.train()
        bar = tqdm(total=steps, initial=min(start, steps), desc="train", unit="step", disable=not progress,
                   mininterval=1.0)
        for step in range(start + 1, steps + 1):
            losses = learner.update(sampler.sample(batch_size, generator))
            if step % log_every == 0:
                values = logger.log({f"train/{k}": v for k, v in losses.items()}, step=step)
                bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            if evaluate is not None and eval_every and step % eval_every == 0 and step < steps:
                learner.eval()
                bar.set_postfix_str("evaluating", refresh=True)
                logger.log({f"eval/{k}": v for k, v in evaluate(False).items()}, step=step)
                learner.train()
            if step % checkpoint_every == 0 and step < steps:
                save(step)
            bar.update(1)
        bar.close()
        learner.eval()
        # The final evaluation is logged before the final checkpoint and stored in it: a job killed
        # after it resumes from the previous checkpoint (dropping the row), one killed after the
        # checkpoint returns the stored metrics; no row is ever written twice.
        if evaluate is not None:
            final = dict(evaluate(True))
            logger.log({f"eval/{k}": v for k, v in final.items()}, step=steps)
        save(steps, final)
    finally:
        logger.close()
    return FitResult(start_step=start, step=steps, checkpoint=latest_checkpoint(checkpoints),
                     final_metrics=final, resumed=latest is not None)


__all__ = ["FitResult", "fit"]
