"""Learners in checkpoints, and learners as policies for evaluation and deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from embodied.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from policies import config_from_dict, config_to_dict, make_learner
from policies.base import Learner


def save_learner(
    root: str | Path,
    step: int,
    learner: Learner,
    observation_dim: int,
    action_dim: int,
    generator: torch.Generator | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = None,
    sampler_state: dict[str, Any] | None = None,
    final_metrics: dict[str, float] | None = None,
) -> Path:
    """Checkpoint a learner: weights, optimiser state, sampler RNG and state (a replay buffer's
    contents), and how to rebuild it.

    ``state["learner"]`` holds ``name``, ``config``, ``observation_dim`` and ``action_dim``, so
    :func:`load_learner` needs nothing but the folder.
    """
    state = {
        "learner": {
            "name": learner.config.name,
            "config": config_to_dict(learner.config),
            "observation_dim": int(observation_dim),
            "action_dim": int(action_dim),
        },
        "training": learner.training_state(),
        "extra": dict(extra or {}),
    }
    if generator is not None:
        state["sampler_rng"] = generator.get_state()
    if sampler_state:
        state["sampler"] = sampler_state
    if final_metrics:
        state["final_metrics"] = {k: float(v) for k, v in final_metrics.items()}
    return save_checkpoint(root, step, learner.state_dict(), state, keep_last=keep_last)


def restore_learner(learner: Learner, checkpoint: Checkpoint, generator: torch.Generator | None = None) -> None:
    """Load weights, optimiser state and (if given) the sampler RNG into existing objects.

    Raises:
        CheckpointError: the checkpoint is of another learner or other observation / action sizes
            (names them), or its weights do not fit (names the mismatching tensors).
    """
    info = checkpoint.state.get("learner", {})
    mine = {"name": learner.config.name, "observation_dim": learner.observation_dim, "action_dim": learner.action_dim}
    theirs = {k: info.get(k) for k in mine}
    if info and theirs != mine:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds learner {theirs['name']!r} for observations of size "
            f"{theirs['observation_dim']} and actions of size {theirs['action_dim']}; this run builds "
            f"{mine['name']!r} for {mine['observation_dim']} and {mine['action_dim']} (another task or dataset?); "
            "use a new run folder, or the task and dataset the checkpoint was trained on"
        )
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    wrong = [f"{k} {tuple(v.shape)} (expected {shapes[k]})" for k, v in checkpoint.weights.items()
             if k in shapes and tuple(v.shape) != shapes[k]]
    if wrong:
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit {type(learner).__name__}: tensor shapes "
                              f"{wrong[:3]} (other network sizes?)")
    result = learner.load_state_dict(checkpoint.weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not fit {type(learner).__name__}: missing "
            f"{result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    learner.load_training_state(checkpoint.state.get("training", {}))
    if generator is not None and "sampler_rng" in checkpoint.state:
        generator.set_state(checkpoint.state["sampler_rng"])


def load_learner(path: str | Path, device: str | torch.device = "cpu") -> tuple[Learner, Checkpoint]:
    """Rebuild a learner from a checkpoint folder alone.

    Raises:
        CheckpointError: unreadable checkpoint or one without learner information.
    """
    checkpoint = load_checkpoint(path)
    info = checkpoint.state.get("learner")
    if not isinstance(info, dict):
        raise CheckpointError(f"checkpoint {checkpoint.path} holds no learner description")
    config = config_from_dict(info["name"], info["config"])
    learner = make_learner(config, info["observation_dim"], info["action_dim"], device="cpu")
    restore_learner(learner, checkpoint)
    return learner.to(device).eval(), checkpoint


class LearnerPolicy:
    """A learner behind the behaviour-policy interface (numpy in, numpy out).

    Args:
        learner: the learner (its ``reset`` is called at each episode).
        device: where observations go.
        condition: ``(C,) float32`` passed to ``act`` on every step (a goal, a latent z, attribute
            targets, a return), for conditioned learners; None for the others.
        explore: act with ``learner.explore`` (stochastic) instead of ``learner.act``.
    """

    def __init__(self, learner: Learner, device: str | torch.device = "cpu", condition: np.ndarray | None = None,
                 explore: bool = False):
        self.learner = learner
        self.device = torch.device(device)
        self.condition = None if condition is None else torch.as_tensor(
            np.asarray(condition, dtype=np.float32), device=self.device)[None]
        self.explore = bool(explore)

    def reset(self, seed: int | None = None) -> None:
        """Start of an episode: the learner's ``reset`` (a planner drops its plan)."""
        self.learner.reset()

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action ``(A,) float32`` in [-1, 1] for one observation ``(D,)``.

        Raises:
            ValueError: the condition does not fit the learner (see ``Learner.check_condition``).
        """
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=self.device)[None]
        step = self.learner.explore if self.explore else self.learner.act
        return step(obs, self.condition)[0].cpu().numpy().astype(np.float32)
