"""Dual behaviour cloning (DBC, OER Sec. 4.2) on top of IQL, top to bottom.

OER's finding: in continual offline RL, adding the behaviour-cloning loss of replayed old-task
data to the policy that Q-learning improves for the new task disturbs that Q-learning. DBC keeps
two policies:

- the Q-learning policy pi_Q with IQL's critics and value (:class:`policies.iql.IQLLearner`,
  Eqs. 5-7 of the IQL paper), trained on the current task's transitions only;
- the continual policy mu (deterministic, tanh), the one that acts, trained by cloning:

      L_mu = w_d E_{s ~ D_t} || mu(s) - pi_Q(s) ||^2  +  lambda E_{(s, a) ~ B} || mu(s) - a ||^2,

  the first term distils the new task's policy (pi_Q's tanh mean, no gradient), the second
  clones the replay buffer B's actions of past tasks. L_mu reaches mu only; IQL's losses never
  reach mu.

Batches: the current task's transitions under the usual keys, and (once past tasks exist) the
buffer's under ``replay_observation``, ``replay_action`` (:class:`policies.data.MixedSampler`
with ``mode="separate"``).
"""

from __future__ import annotations

import torch
from torch import nn

from policies.iql.model import IQLLearner
from policies.networks import head_mlp
from policies.oer.config import OERConfig


class OERLearner(IQLLearner):
    """IQL for the current task plus the continual policy mu of dual behaviour cloning.

    Args:
        config: :class:`OERConfig`.
        observation_dim: D (the task one-hot included in continual runs).
        action_dim: A; actions in [-1, 1].
    """

    def __init__(self, config: OERConfig, observation_dim: int, action_dim: int):
        super().__init__(config, observation_dim, action_dim)
        self.policy = head_mlp(observation_dim, action_dim, config.policy_hidden_dims, config.task_heads,
                               observation_dim - config.task_heads, output_activation=nn.Tanh)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_learning_rate, fused=True)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "policy": self.policy_optimizer}

    def dbc_loss(self, obs: torch.Tensor, replay_obs: torch.Tensor | None,
                 replay_action: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """L_mu on normalised observations: ``distill_loss`` (mu against pi_Q's mean on the current
        task, pi_Q without gradient) and ``replay_bc_loss`` (mu against replayed actions; 0 without
        replay), and their weighted sum ``policy_loss``."""
        with torch.no_grad():
            teacher = self.actor.mean(obs)
        distill = (self.policy(obs) - teacher).pow(2).mean()
        replay = (self.policy(replay_obs) - replay_action).pow(2).mean() if replay_obs is not None else torch.zeros((), device=obs.device)
        total = self.config.distill_weight * distill + self.config.replay_weight * replay
        return {"policy_loss": total, "distill_loss": distill, "replay_bc_loss": replay}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One IQL step on the current task's transitions, then one step of L_mu.

        Raises:
            KeyError: no rewards in the batch.
        """
        losses = super().update(batch)
        obs = self.normalizer(batch["observation"])
        replay_obs = self.normalizer(batch["replay_observation"]) if "replay_observation" in batch else None
        dbc = self.dbc_loss(obs, replay_obs, batch.get("replay_action"))
        self.policy_optimizer.zero_grad(set_to_none=True)
        dbc["policy_loss"].backward()
        self.policy_optimizer.step()
        return {**losses, **{k: v.detach() for k, v in dbc.items()}}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The continual policy's action mu(s), ``(B, A)`` in [-1, 1].

        Raises:
            ValueError: a condition was given.
        """
        self.check_condition(condition, observation.shape[0])
        return self.policy(self.normalizer(observation))

    @torch.no_grad()
    def explore(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """mu(s) plus Gaussian noise of the Q-learning actor's standard deviation, clipped, ``(B, A)``."""
        self.check_condition(condition, observation.shape[0])
        std = self.actor.log_std.clamp(self.actor.log_std_min, self.actor.log_std_max).exp()
        return (self.act(observation) + std * torch.randn(observation.shape[0], self.action_dim, device=observation.device)).clamp(-1.0, 1.0)


__all__ = ["OERLearner"]
