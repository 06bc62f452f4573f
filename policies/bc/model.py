"""Behaviour cloning: regress the dataset's actions from observations.

Loss (Pomerleau 1989; the BC baseline of the IQL paper, Kostrikov et al. 2022):
``L(theta) = E_{(s, a) ~ D} || pi_theta(s) - a ||^2`` with ``pi_theta(s) = tanh(f_theta(s))``.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.base import Learner
from policies.bc.config import BCConfig
from policies.networks import ObservationNormalizer, mlp


class BCLearner(Learner):
    """Deterministic behaviour cloning.

    Args:
        config: hyperparameters.
        observation_dim: D, size of the flat float32 observation.
        action_dim: A, size of the action, in [-1, 1].
    """

    def __init__(self, config: BCConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.normalizer = ObservationNormalizer(observation_dim)
        self.actor = mlp(observation_dim, action_dim, config.hidden_dims, output_activation=nn.Tanh)
        self.optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.optimizer}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One Adam step on ``E ||pi(s) - a||^2`` (mean over batch and action dimensions)."""
        prediction = self.actor(self.normalizer(batch["observation"]))
        loss = (prediction - batch["action"]).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"actor_loss": loss.detach()}

    @torch.no_grad()
    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """Actions ``(B, A) float32`` in [-1, 1] for observations ``(B, D) float32``."""
        return self.actor(self.normalizer(observation))
