"""Behaviour cloning: regress the dataset's actions from observations.

Loss (Pomerleau 1989; the BC baseline of the IQL paper, Kostrikov et al. 2022):
``L(theta) = E_{(s, a) ~ D} || pi_theta(s) - a ||^2`` with ``pi_theta(s) = tanh(f_theta(s))``.

Attribute-conditioned (``attributes=k``; AlignDiff's BC baseline, Dong et al. 2024):
``L = E || pi_theta(s_t, [v * m, m]) - a_t ||^2`` with ``v`` the attribute strengths of the window
``s_t .. s_{t+H-1}`` and ``m`` a random mask of the attributes.

Goal-conditioned (``goal_conditioned=True``; GCSL, Ghosh et al. 2021, Eq. 3 with a squared
error): ``L(theta) = E || pi_theta(s_t, s_{t+k}) - a_t ||^2`` with ``k ~ Geometric(1 - gamma)``, the
goal ``s_{t+k}`` a later observation of the same episode (hindsight relabelling).
"""

from __future__ import annotations

import torch
from torch import nn

from policies.attributes import AttributeStrengthModel
from policies.base import BatchSpec, Learner, NoiseSource
from policies.bc.config import BCConfig
from policies.networks import ObservationNormalizer, mlp


class BCLearner(Learner):
    """Deterministic behaviour cloning, optionally goal-conditioned.

    Args:
        config: hyperparameters.
        observation_dim: D, size of the flat float32 observation.
        action_dim: A, size of the action, in [-1, 1].
    """

    def __init__(self, config: BCConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        k = int(config.attributes)
        self.condition_dim = observation_dim if config.goal_conditioned else 2 * k
        self.normalizer = ObservationNormalizer(observation_dim)
        if k:  # fitted on attribute labels before training (reward_models.attributes), then frozen
            self.attribute_model = AttributeStrengthModel(observation_dim, k, config.attribute_hidden,
                                                          config.attribute_members).requires_grad_(False)
            self.noise = NoiseSource()
        self.actor = mlp(observation_dim + self.condition_dim, action_dim, config.hidden_dims, output_activation=nn.Tanh)
        self.optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
        )

    def batch_spec(self) -> BatchSpec:
        if self.config.attributes:
            return BatchSpec("windows", horizon=self.config.attribute_horizon)
        if self.config.goal_conditioned:
            return BatchSpec("future", discount=self.config.goal_discount)
        return BatchSpec("transitions")

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.optimizer}

    def training_state(self) -> dict:
        state = super().training_state()
        return {**state, "noise": self.noise.state_dict()} if self.config.attributes else state

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        if self.config.attributes:
            self.noise.load_state_dict(state.get("noise") or {})

    def _inputs(self, observation: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        x = self.normalizer(observation)
        if not self.condition_dim:
            return x
        return torch.cat([x, condition if self.config.attributes else self.normalizer(condition)], dim=-1)

    @torch.no_grad()
    def attribute_condition(self, windows: torch.Tensor) -> torch.Tensor:
        """``[v * m, m] (B, 2k)`` for observation windows ``(B, H, D)`` (see ``BCConfig.attributes``)."""
        generator = self.noise.get(windows.device)
        v = self.attribute_model(windows).clamp(0.0, 1.0)
        m = (torch.rand(v.shape, generator=generator, device=v.device) >= self.config.attribute_dropout).float()
        return torch.cat([v * m, m], dim=-1)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One Adam step on ``E ||pi(s[, g]) - a||^2`` (mean over batch and action dimensions).

        Raises:
            KeyError: a goal-conditioned learner got a batch without ``future_observation``.
        """
        if self.config.attributes:  # the first step of each window, conditioned on the window's attributes
            condition = self.attribute_condition(batch["observation"])
            observation, action = batch["observation"][:, 0], batch["action"][:, 0]
        else:
            condition = batch["future_observation"] if self.condition_dim else None
            observation, action = batch["observation"], batch["action"]
        prediction = self.actor(self._inputs(observation, condition))
        loss = (prediction - action).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"actor_loss": loss.detach()}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Actions ``(B, A) float32`` in [-1, 1] for observations ``(B, D) float32`` (and, when
        goal-conditioned, goal observations ``condition (B, D) float32``).

        Raises:
            ValueError: see :meth:`Learner.check_condition`.
        """
        self.check_condition(condition, observation.shape[0])
        return self.actor(self._inputs(observation, condition))

    @torch.no_grad()
    def goal_condition(self, goal: torch.Tensor) -> torch.Tensor:
        """The condition that asks for goal observations ``goal (B, D) float32``: the goal itself
        (goal prompts of ``python -m embodied.zeroshot algo=gcbc``).

        Raises:
            ValueError: the learner is not goal-conditioned.
        """
        if not self.config.goal_conditioned:
            raise ValueError("BC was trained without goals (algo.learner.goal_conditioned=false); use algo=gcbc")
        return goal
