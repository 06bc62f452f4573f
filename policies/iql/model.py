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
from policies.networks import ObservationNormalizer, head_mlp


class TwinQ(nn.Module):
    """Two Q networks ``(B, D) x (B, A) -> (B,), (B,)``; with ``task_heads`` a head per task, picked
    by the one-hot in the observation's last ``task_heads`` entries."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: list[int], task_heads: int = 0):
        super().__init__()
        start = observation_dim - task_heads
        self.q1 = head_mlp(observation_dim + action_dim, 1, hidden_dims, task_heads, start)
        self.q2 = head_mlp(observation_dim + action_dim, 1, hidden_dims, task_heads, start)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([observation, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class GaussianActor(nn.Module):
    """pi(a | s) = N(tanh(f(s)), diag(exp(log_std))^2) with a state-independent, clamped log-std
    (``task_heads``: f has a head per task, as :class:`TwinQ`)."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: list[int], log_std_min: float, log_std_max: float,
                 task_heads: int = 0):
        super().__init__()
        self.mean = head_mlp(observation_dim, action_dim, hidden_dims, task_heads, observation_dim - task_heads,
                             output_activation=nn.Tanh)
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
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        dims = config.hidden_dims
        self.normalizer = ObservationNormalizer(observation_dim)
        heads = config.task_heads
        if heads > observation_dim:
            raise ValueError(f"task_heads={heads} exceeds the observation size {observation_dim}: the task one-hot is "
                             "the observation's last task_heads entries")
        self.critic = TwinQ(observation_dim, action_dim, dims, heads)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = head_mlp(observation_dim, 1, dims, heads, observation_dim - heads)
        self.actor = GaussianActor(observation_dim, action_dim, dims, config.log_std_min, config.log_std_max, heads)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.learning_rate, fused=True)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=config.learning_rate, fused=True)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate, fused=True)
        self.actor_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        # The losses (forward and, through AOTAutograd, backward) compiled once when asked; the
        # modules and their state dicts stay as they are, so checkpoints do not change.
        self._losses = torch.compile(self.losses, dynamic=False) if config.compile else self.losses

    # -- setup ---------------------------------------------------------------------------------
    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)
        self.set_total_steps(total_steps)

    def set_total_steps(self, total_steps: int | None) -> None:
        """Start the actor's cosine learning-rate decay over ``total_steps`` updates, from the
        configured learning rate (also after an earlier decay: a continual run starts one per task;
        torch's scheduler would otherwise continue from the decayed rate, about 0)."""
        if self.config.actor_cosine_decay and total_steps:
            for group in self.actor_optimizer.param_groups:
                group["lr"] = group["initial_lr"] = self.config.learning_rate
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
    def losses(self, obs, action, reward, next_obs, terminal) -> dict[str, torch.Tensor]:
        """The three losses on one batch (observations already normalised).

        Every network is evaluated once: min_i Q_hat_i(s, a) and V(s') without gradient, V(s)
        with gradient for Eq. (5) and detached for the advantage of Eq. (7) (V before this
        step's update, as in CORL's reimplementation). Each loss reaches only its own network.

        Returns:
            ``value_loss`` (Eq. 5), ``critic_loss`` (Eq. 6, both critics), ``actor_loss``
            (Eq. 7), and ``advantage`` (batch mean of Q_hat - V, detached).
        """
        with torch.no_grad():
            target_q = torch.min(*self.target_critic(obs, action))
            target = reward + self.config.discount * (1.0 - terminal) * self.value(next_obs).squeeze(-1)
        v = self.value(obs).squeeze(-1)
        value_loss = expectile_loss(target_q - v, self.config.expectile)
        q1, q2 = self.critic(obs, action)
        critic_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        advantage = target_q - v.detach()
        weight = torch.exp(self.config.temperature * advantage).clamp(max=self.config.max_weight)
        log_prob = self.actor.distribution(obs).log_prob(action).sum(-1)
        actor_loss = -(weight * log_prob).mean()
        return {"value_loss": value_loss, "critic_loss": critic_loss, "actor_loss": actor_loss,
                "advantage": advantage.mean()}

    # -- update --------------------------------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One IQL step: V, critics and actor together (disjoint parameters, one backward pass),
        then the cosine actor schedule and the Polyak target update."""
        if "reward" not in batch:
            raise KeyError("IQL needs rewards in the batch: train with algo.reward=learned or algo.reward=gt")
        obs, next_obs = self.normalizer(batch["observation"]), self.normalizer(batch["next_observation"])
        reward = self.config.reward_scale * batch["reward"] + self.config.reward_bias
        losses = self._losses(obs, batch["action"], reward, next_obs, batch["terminal"])
        for optimizer in (self.value_optimizer, self.critic_optimizer, self.actor_optimizer):
            optimizer.zero_grad(set_to_none=True)
        (losses["value_loss"] + losses["critic_loss"] + losses["actor_loss"]).backward()
        for optimizer in (self.value_optimizer, self.critic_optimizer, self.actor_optimizer):
            optimizer.step()
        if self.actor_scheduler is not None:
            self.actor_scheduler.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_critic.parameters()), list(self.critic.parameters()), self.config.tau)
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def transition_diagnostics(self, observation: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                               next_observation: torch.Tensor, terminal: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-transition quantities of the trained networks, for diagnosis (raw observations
        ``(N, D)``, actions ``(N, A)``, the training rewards ``(N,)`` before ``reward_scale``, and
        terminals ``(N,)``); each output is ``(N,) float32``:

        - ``advantage``: ``A = min_i Q_hat_i(s, a) - V(s)``, also the residual of the expectile
          loss of Eq. (5) (a share of about ``1 - tau`` is negative once V has fitted), and
          ``weight``: ``min(exp(beta A), max_weight)``, the actor's weight of Eq. (7);
        - ``td_error``: ``min_i Q_i(s, a) - (r + gamma (1 - d) V(s'))``, the critic's error in Eq. (6);
        - ``target``: ``r + gamma (1 - d) V(s')``;
        - ``log_prob``: the actor's ``log pi(a | s)`` of the dataset action.
        """
        obs, next_obs = self.normalizer(observation), self.normalizer(next_observation)
        reward = self.config.reward_scale * reward + self.config.reward_bias
        target_q = torch.min(*self.target_critic(obs, action))
        v = self.value(obs).squeeze(-1)
        target = reward + self.config.discount * (1.0 - terminal.float()) * self.value(next_obs).squeeze(-1)
        advantage = target_q - v
        return {"advantage": advantage,
                "weight": torch.exp(self.config.temperature * advantage).clamp(max=self.config.max_weight),
                "td_error": torch.min(*self.critic(obs, action)) - target, "target": target,
                "log_prob": self.actor.distribution(obs).log_prob(action).sum(-1)}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic action: the actor's tanh mean, ``(B, A)`` in [-1, 1].

        Raises:
            ValueError: a condition was given (IQL is not conditioned).
        """
        self.check_condition(condition, observation.shape[0])
        return self.actor.mean(self.normalizer(observation))

    @torch.no_grad()
    def explore(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """A sample of pi(a | s), clipped to [-1, 1], ``(B, A)``.

        Raises:
            ValueError: a condition was given (IQL is not conditioned).
        """
        self.check_condition(condition, observation.shape[0])
        return self.actor.distribution(self.normalizer(observation)).sample().clamp(-1.0, 1.0)


__all__ = ["GaussianActor", "IQLLearner", "TwinQ", "expectile_loss"]
