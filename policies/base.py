"""The learner contract every algorithm in :mod:`policies` follows."""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn


class Learner(nn.Module, abc.ABC):
    """Base class of offline learners.

    A learner owns its networks (submodules and buffers: everything in ``state_dict()`` is saved
    as weights) and its optimisers. Subclasses implement:

    - ``update(batch) -> dict[str, Tensor]``: one gradient step on a batch of transitions
      (``observation (B, D) float32``, ``action (B, A) float32`` in [-1, 1], ``reward (B,)``,
      ``next_observation (B, D)``, ``terminal (B,) float32``); returns detached scalar tensors so
      the loop never waits for the device;
    - ``act(observation (B, D) float32) -> (B, A) float32``: deterministic action in [-1, 1];
    - ``prepare(observations (N, D), total_steps)``: fit data statistics (observation
      normalisation) and schedules once before training.

    ``training_state()`` / ``load_training_state()`` carry the optimiser and scheduler state that
    a resumed run needs; weights are ``state_dict()``.
    """

    #: Whether batches must carry a ``reward`` (offline RL) or not (imitation).
    needs_reward: bool = False

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        """Before training: fit statistics from the dataset's observations ``(N, D) float32``;
        ``total_steps`` is the planned number of updates (for learning-rate schedules)."""

    @abc.abstractmethod
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step; returns detached scalar losses keyed by name."""

    @abc.abstractmethod
    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """Deterministic actions ``(B, A) float32`` in [-1, 1] for ``(B, D)`` observations."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers whose state is saved in checkpoints."""
        return {}

    def training_state(self) -> dict[str, Any]:
        """Optimiser states (tensors allowed inside), for checkpoints."""
        return {name: opt.state_dict() for name, opt in self.optimizers().items()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned.

        Raises:
            KeyError: an optimiser of this learner is missing from ``state``.
        """
        for name, opt in self.optimizers().items():
            if name not in state:
                raise KeyError(f"checkpoint has no state for optimiser {name!r}; has {sorted(state)}")
            opt.load_state_dict(state[name])
