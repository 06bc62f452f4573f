"""Implicit Q-Learning (Kostrikov, Nair and Levine, "Offline Reinforcement Learning with Implicit
Q-Learning", ICLR 2022), top to bottom.

Losses (paper equations), on a batch of transitions (s, a, r, s', d):

- value, Eq. (5):   L_V(psi) = E[ L2^tau( min_i Q_hat_i(s, a) - V_psi(s) ) ],
                    L2^tau(u) = |tau - 1(u < 0)| u^2, Q_hat the target critics;
- critic, Eq. (6):  L_Q(theta) = sum_i E[ (r + gamma (1 - d) V_psi(s') - Q_theta_i(s, a))^2 ];
- actor, Eq. (7):   L_pi(phi) = -E[ min(exp(beta (Q_hat(s, a) - V_psi(s))), w_max) log pi_phi(a | s) ].

Each loss reaches only its own network's parameters (the others are evaluated without gradient),
targets track the critics by Polyak averaging with rate tau, the actor's learning rate follows a
cosine decay, and the deterministic action is the actor's tanh mean.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from policies.base import Learner
from policies.iql.config import IQLConfig
from policies.networks import ObservationNormalizer, mlp


class TwinQ(nn.Module):
    """Two Q networks ``(B, D) x (B, A) -> (B,), (B,)``."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.q1 = mlp(observation_dim + action_dim, 1, hidden_dims)
        self.q2 = mlp(observation_dim + action_dim, 1, hidden_dims)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([observation, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class GaussianActor(nn.Module):
    """pi(a | s) = N(tanh(f(s)), diag(exp(log_std))^2) with a state-independent, clamped log-std."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: list[int], log_std_min: float, log_std_max: float):
        super().__init__()
        self.mean = mlp(observation_dim, action_dim, hidden_dims, output_activation=nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def distribution(self, observation: torch.Tensor) -> torch.distributions.Normal:
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp()
        return torch.distributions.Normal(self.mean(observation), std)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """L2^tau(u) = |tau - 1(u < 0)| u^2, averaged over the batch (paper Eq. 5)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


class IQLLearner(Learner):
    """IQL with twin critics, a value network and an advantage-weighted Gaussian actor.

    Args:
        config: hyperparameters (:class:`IQLConfig`).
        observation_dim: D, flat observation size.
        action_dim: A, action size; actions in [-1, 1].

    Batches need ``observation (B, D)``, ``action (B, A)``, ``reward (B,)``,
    ``next_observation (B, D)`` and ``terminal (B,)`` float32 tensors.
    """

    needs_reward = True

    def __init__(self, config: IQLConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        dims = config.hidden_dims
        self.normalizer = ObservationNormalizer(observation_dim)
        self.critic = TwinQ(observation_dim, action_dim, dims)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(observation_dim, 1, dims)
        self.actor = GaussianActor(observation_dim, action_dim, dims, config.log_std_min, config.log_std_max)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.learning_rate)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=config.learning_rate)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate)
        self.actor_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    # -- setup ---------------------------------------------------------------------------------
    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)
        self.set_total_steps(total_steps)

    def set_total_steps(self, total_steps: int | None) -> None:
        """Start the actor's cosine learning-rate decay over ``total_steps`` updates."""
        if self.config.actor_cosine_decay and total_steps:
            self.actor_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, T_max=int(total_steps))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "value": self.value_optimizer, "actor": self.actor_optimizer}

    def training_state(self) -> dict:
        state = super().training_state()
        if self.actor_scheduler is not None:
            state["actor_scheduler"] = self.actor_scheduler.state_dict()
        return state

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        if "actor_scheduler" in state:
            if self.actor_scheduler is None:
                self.actor_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, T_max=1)
            self.actor_scheduler.load_state_dict(state["actor_scheduler"])

    # -- losses (paper Eqs. 5-7) ----------------------------------------------------------------
    def value_loss(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Eq. (5): expectile regression of V(s) on min_i Q_hat_i(s, a)."""
        with torch.no_grad():
            target_q = torch.min(*self.target_critic(obs, action))
        return expectile_loss(target_q - self.value(obs).squeeze(-1), self.config.expectile)

    def critic_loss(self, obs, action, reward, next_obs, terminal) -> torch.Tensor:
        """Eq. (6): both critics regress r + gamma (1 - d) V(s')."""
        with torch.no_grad():
            target = reward + self.config.discount * (1.0 - terminal) * self.value(next_obs).squeeze(-1)
        q1, q2 = self.critic(obs, action)
        return (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()

    def actor_loss(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (7): advantage-weighted regression; returns the loss and the mean advantage."""
        with torch.no_grad():
            advantage = torch.min(*self.target_critic(obs, action)) - self.value(obs).squeeze(-1)
            weight = torch.exp(self.config.temperature * advantage).clamp(max=self.config.max_weight)
        log_prob = self.actor.distribution(obs).log_prob(action).sum(-1)
        return -(weight * log_prob).mean(), advantage.mean()

    # -- update --------------------------------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of V, then the critics, then the actor, then the targets (paper Alg. 1)."""
        if "reward" not in batch:
            raise KeyError("IQL needs rewards in the batch: train with algo.reward=gt or a learned reward")
        obs, next_obs = self.normalizer(batch["observation"]), self.normalizer(batch["next_observation"])
        action, terminal = batch["action"], batch["terminal"]
        reward = self.config.reward_scale * batch["reward"] + self.config.reward_bias

        value_loss = self.value_loss(obs, action)
        self.value_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_optimizer.step()

        critic_loss = self.critic_loss(obs, action, reward, next_obs, terminal)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        actor_loss, advantage = self.actor_loss(obs, action)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        if self.actor_scheduler is not None:
            self.actor_scheduler.step()

        with torch.no_grad():
            for target, source in zip(self.target_critic.parameters(), self.critic.parameters()):
                target.lerp_(source, self.config.tau)
        return {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                "actor_loss": actor_loss.detach(), "advantage": advantage}

    @torch.no_grad()
    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """Deterministic action: the actor's tanh mean, ``(B, A)`` in [-1, 1]."""
        return self.actor.mean(self.normalizer(observation))


__all__ = ["GaussianActor", "IQLLearner", "TwinQ", "expectile_loss"]
