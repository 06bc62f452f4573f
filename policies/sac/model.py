"""Soft Actor-Critic (Haarnoja et al., "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
Reinforcement Learning with a Stochastic Actor", ICML 2018; "Soft Actor-Critic Algorithms and
Applications", 2018), top to bottom.

Losses (Applications paper equations), on a batch of transitions (s, a, r, s', d):

- critic, Eq. (5):  J_Q(theta_i) = E[ (Q_theta_i(s, a) - y)^2 ],
                    y = r + gamma (1 - d) ( min_j Q_theta_bar_j(s', a') - alpha log pi(a' | s') ),
                    a' ~ pi(. | s'), theta_bar the target critics (Polyak averaging, rate tau);
- actor, Eq. (7):   J_pi(phi) = E[ alpha log pi_phi(a~ | s) - min_i Q_theta_i(s, a~) ],
                    a~ = tanh(mu_phi(s) + sigma_phi(s) eps), eps ~ N(0, I) (reparameterised);
- temperature, Eq. (18): J(alpha) = E[ -alpha ( log pi(a~ | s) + H_bar ) ], H_bar = -A by default,
                    alpha = exp(log_alpha) so it stays positive.

Each loss reaches only its own parameters: the critics are evaluated inside the actor loss with
detached parameters (the gradient flows through a~ into the actor only) and log pi is detached in
the temperature loss. The deterministic action is tanh(mu(s)).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from policies.base import Learner, NoiseSource
from policies.iql.model import TwinQ
from policies.networks import ObservationNormalizer, mlp
from policies.sac.config import SACConfig


class SquashedGaussianActor(nn.Module):
    """pi(a | s): a = tanh(u), u ~ N(mu(s), diag(sigma(s))^2), with
    ``log sigma = log_std_min + (log_std_max - log_std_min) (tanh(x) + 1) / 2`` (smooth bounds).

    ``(B, D)`` observations -> ``(B, A)`` actions in (-1, 1) and ``(B,)`` log-probabilities in nats.
    """

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: list[int], log_std_min: float,
                 log_std_max: float):
        super().__init__()
        self.net = mlp(observation_dim, 2 * action_dim, hidden_dims)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_sigma)``, each ``(B, A)`` float32 (pre-tanh)."""
        mean, raw = self.net(observation).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        return mean, log_std

    def sample(self, observation: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample ``a~ (B, A)`` and ``log pi(a~ | s) (B,)``; eps drawn from
        ``generator`` (on the observation's device; None: torch's global generator).

        log pi(a | s) = sum_k [ log N(u_k; mu_k, sigma_k) - log(1 - tanh(u_k)^2) ] (SAC 2018,
        Appendix C, Eq. 21), with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) for stability.
        """
        mean, log_std = self(observation)
        std = log_std.exp()
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * eps
        gaussian = -0.5 * ((u - mean) / std).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        squash = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), (gaussian - squash).sum(-1)

    def mode(self, observation: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(mu(s)), ``(B, A)``."""
        return torch.tanh(self(observation)[0])


class SACLearner(Learner):
    """SAC with twin critics, target critics, a tanh-squashed Gaussian actor and automatic
    temperature.

    Args:
        config: hyperparameters (:class:`SACConfig`).
        observation_dim: D, flat observation size.
        action_dim: A, action size; actions in [-1, 1].

    Batches need ``observation (B, D)``, ``action (B, A)``, ``reward (B,)``,
    ``next_observation (B, D)`` and ``terminal (B,)`` float32 tensors (``terminal`` 1 only where
    the episode ended in a terminal state, not at a time limit).
    """

    needs_reward = True

    def __init__(self, config: SACConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        self.normalizer = ObservationNormalizer(observation_dim)
        self.critic = TwinQ(observation_dim, action_dim, config.hidden_dims)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = SquashedGaussianActor(observation_dim, action_dim, config.hidden_dims, config.log_std_min,
                                           config.log_std_max)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.initial_temperature)), requires_grad=config.autotune)
        self.target_entropy = float(-action_dim if config.target_entropy is None else config.target_entropy)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_learning_rate)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_learning_rate)
        self.temperature_optimizer = torch.optim.Adam([self.log_alpha], lr=config.temperature_learning_rate)
        self.noise = NoiseSource()  # the actor's noise, checkpointed (a resumed run draws the same)

    def reset_critic(self) -> None:
        """Fresh critics, targets and critic optimiser (PEBBLE, after unsupervised pre-training:
        the critics learned the intrinsic reward's values, not the task's)."""
        device = next(self.critic.parameters()).device
        fresh = TwinQ(self.observation_dim, self.action_dim, self.config.hidden_dims).to(device)
        self.critic.load_state_dict(fresh.state_dict())
        self.target_critic.load_state_dict(fresh.state_dict())
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.config.critic_learning_rate)

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "actor": self.actor_optimizer, "temperature": self.temperature_optimizer}

    def training_state(self) -> dict:
        return {**super().training_state(), "noise": self.noise.state_dict()}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.noise.load_state_dict(state.get("noise") or {})

    @property
    def temperature(self) -> float:
        """alpha, the current entropy temperature."""
        return float(self.log_alpha.detach().exp())

    def losses(self, obs, action, reward, next_obs, terminal) -> dict[str, torch.Tensor]:
        """The three losses on one batch (observations already normalised).

        Returns:
            ``critic_loss`` (Eq. 5, both critics), ``actor_loss`` (Eq. 7), ``temperature_loss``
            (Eq. 18; 0 without autotune), and detached ``entropy`` (-E[log pi(a~ | s)], nats),
            ``temperature`` (alpha) and ``q`` (batch mean of Q_1(s, a)).
        """
        alpha = self.log_alpha.exp()
        generator = self.noise.get(obs.device)
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_obs, generator)
            next_q = torch.min(*self.target_critic(next_obs, next_action)) - alpha * next_log_prob
            target = self.config.reward_scale * reward + self.config.discount * (1.0 - terminal) * next_q
        q1, q2 = self.critic(obs, action)
        critic_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        new_action, log_prob = self.actor.sample(obs, generator)
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        q_new = torch.min(*functional_call(self.critic, frozen, (obs, new_action)))
        actor_loss = (alpha.detach() * log_prob - q_new).mean()
        if self.config.autotune:
            temperature_loss = -(alpha * (log_prob.detach() + self.target_entropy)).mean()
        else:
            temperature_loss = torch.zeros((), device=obs.device)
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "temperature_loss": temperature_loss,
                "entropy": -log_prob.detach().mean(), "temperature": alpha.detach(), "q": q1.detach().mean()}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One SAC step: critics, actor and temperature together (disjoint parameters, one backward
        pass), then the Polyak target update.

        Raises:
            KeyError: the batch has no ``reward``.
        """
        if "reward" not in batch:
            raise KeyError("SAC needs rewards in the batch (the true reward, CLIP, or a Bradley-Terry model)")
        obs, next_obs = self.normalizer(batch["observation"]), self.normalizer(batch["next_observation"])
        losses = self.losses(obs, batch["action"], batch["reward"], next_obs, batch["terminal"])
        optimizers = (self.critic_optimizer, self.actor_optimizer) + ((self.temperature_optimizer,) if self.config.autotune else ())
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        (losses["critic_loss"] + losses["actor_loss"] + losses["temperature_loss"]).backward()
        for optimizer in optimizers:
            optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_critic.parameters()), list(self.critic.parameters()), self.config.tau)
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic action tanh(mu(s)), ``(B, A)`` in (-1, 1).

        Raises:
            ValueError: a condition was given (SAC is not conditioned).
        """
        self.check_condition(condition, observation.shape[0])
        return self.actor.mode(self.normalizer(observation))

    @torch.no_grad()
    def explore(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """A sample a ~ pi(. | s), ``(B, A)`` in (-1, 1).

        Raises:
            ValueError: a condition was given (SAC is not conditioned).
        """
        self.check_condition(condition, observation.shape[0])
        return self.actor.sample(self.normalizer(observation), self.noise.get(observation.device))[0]


__all__ = ["SACLearner", "SquashedGaussianActor"]
