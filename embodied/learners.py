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
) -> Path:
    """Checkpoint a learner: weights, optimiser state, sampler RNG, and how to rebuild it.

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
    return save_checkpoint(root, step, learner.state_dict(), state, keep_last=keep_last)


def restore_learner(learner: Learner, checkpoint: Checkpoint, generator: torch.Generator | None = None) -> None:
    """Load weights, optimiser state and (if given) the sampler RNG into existing objects.

    Raises:
        CheckpointError: the weights do not fit the learner (names the mismatching tensors).
    """
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
    """A learner behind the behaviour-policy interface (numpy in, numpy out, deterministic)."""

    def __init__(self, learner: Learner, device: str | torch.device = "cpu"):
        self.learner = learner
        self.device = torch.device(device)

    def reset(self, seed: int | None = None) -> None:
        """Deterministic policy: nothing to reset."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action ``(A,) float32`` in [-1, 1] for one observation ``(D,)``."""
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=self.device)[None]
        return self.learner.act(obs)[0].cpu().numpy().astype(np.float32)
