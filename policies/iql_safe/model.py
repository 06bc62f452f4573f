"""Cost-constrained IQL: IQL's reward side, a cost critic trained on the judges' costs, and a
feasibility filter on the actor's advantage weights.

The weighting follows FISOR (Zheng et al., "Safe Offline Reinforcement Learning with
Feasibility-Guided Diffusion Model", ICLR 2024, Eq. 11), with a discounted cost value in place
of its Hamilton-Jacobi reachability value, and IQL's Gaussian actor in place of its diffusion
policy. On a batch (s, a, r, c, s', d):

- reward side, IQL Eqs. (5)-(6): V and twin Q as in :mod:`policies.iql.model`;
- cost critic:  L_Qc = sum_i E[ (c + gamma_c (1 - d) V_c(s') - Q_c,i(s, a))^2 ];
- cost value:   L_Vc = E[ L2^tau_c( max_i Q_hat_c,i(s, a) - V_c(s) ) ], tau_c < 0.5: V_c(s)
  approaches the lowest cost-to-go the dataset's actions reach from s (the pessimistic max over
  the twin target critics keeps Q_c from under-estimating);
- actor:        L_pi = -E[ w(s, a) log pi(a | s) ] with
  w = 1[V_c(s) <= eps] 1[Q_c(s, a) <= eps] min(exp(beta A(s, a)), w_max)
    + 1[V_c(s) > eps] min(exp(-beta_c A_c(s, a)), w_max),
  A = Q_hat - V, A_c = Q_hat_c - V_c: in feasible states, imitate the better of the feasible
  actions; in infeasible ones, the actions that lower the cost the most.

Each loss reaches only its own network; the cost critics have their own Polyak targets.
"""

from __future__ import annotations

import copy

import torch

from policies.base import BatchSpec
from policies.iql.model import IQLLearner, TwinQ, expectile_loss
from policies.iql_safe.config import IQLSafeConfig
from policies.networks import mlp


class IQLSafeLearner(IQLLearner):
    """IQL with a cost critic and a feasibility-filtered actor (module docstring).

    Args:
        config: hyperparameters (:class:`IQLSafeConfig`).
        observation_dim: D; action_dim: A (actions in [-1, 1]).

    Batches need IQL's fields and ``cost (B,)`` float32 (the judges' per-step costs,
    ``judges=[force,...]``).
    """

    needs_cost = True

    def __init__(self, config: IQLSafeConfig, observation_dim: int, action_dim: int):
        super().__init__(config, observation_dim, action_dim)
        dims = config.hidden_dims
        self.cost_critic = TwinQ(observation_dim, action_dim, dims)
        self.target_cost_critic = copy.deepcopy(self.cost_critic).requires_grad_(False)
        self.cost_value = mlp(observation_dim, 1, dims)
        self.cost_critic_optimizer = torch.optim.Adam(self.cost_critic.parameters(), lr=config.learning_rate, fused=True)
        self.cost_value_optimizer = torch.optim.Adam(self.cost_value.parameters(), lr=config.learning_rate, fused=True)
        self._losses = torch.compile(self.losses, dynamic=False) if config.compile else self.losses

    def batch_spec(self) -> BatchSpec:
        return BatchSpec("transitions", reward=True, cost=True)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimizers(), "cost_critic": self.cost_critic_optimizer, "cost_value": self.cost_value_optimizer}

    def losses(self, obs, action, reward, next_obs, terminal, cost=None) -> dict[str, torch.Tensor]:
        """IQL's value and critic losses, the cost critic's and cost value's, and the
        feasibility-filtered actor loss on one batch (observations already normalised).

        Returns:
            ``value_loss``, ``critic_loss``, ``cost_value_loss``, ``cost_critic_loss``,
            ``actor_loss``, and detached batch statistics: ``advantage``, ``cost_advantage``,
            ``feasible`` (share of states with V_c <= eps) and ``cost_value`` (mean V_c).

        Raises:
            ValueError: no ``cost``.
        """
        if cost is None:
            raise ValueError("iql_safe needs per-step costs: configure judges (judges=[force])")
        c = self.config
        with torch.no_grad():
            target_q = torch.min(*self.target_critic(obs, action))
            target = reward + c.discount * (1.0 - terminal) * self.value(next_obs).squeeze(-1)
            target_qc = torch.max(*self.target_cost_critic(obs, action))
            target_c = cost + c.cost_discount * (1.0 - terminal) * self.cost_value(next_obs).squeeze(-1)
        v = self.value(obs).squeeze(-1)
        value_loss = expectile_loss(target_q - v, c.expectile)
        q1, q2 = self.critic(obs, action)
        critic_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        vc = self.cost_value(obs).squeeze(-1)
        cost_value_loss = expectile_loss(target_qc - vc, c.cost_expectile)
        qc1, qc2 = self.cost_critic(obs, action)
        cost_critic_loss = (qc1 - target_c).pow(2).mean() + (qc2 - target_c).pow(2).mean()

        advantage = target_q - v.detach()
        cost_advantage = target_qc - vc.detach()
        feasible_state = vc.detach() <= c.cost_threshold
        feasible_action = target_qc <= c.cost_threshold
        reward_weight = torch.exp(c.temperature * advantage).clamp(max=c.max_weight)
        recovery_weight = torch.exp(-c.cost_temperature * cost_advantage).clamp(max=c.max_weight)
        weight = torch.where(feasible_state, reward_weight * feasible_action, recovery_weight)
        log_prob = self.actor.distribution(obs).log_prob(action).sum(-1)
        actor_loss = -(weight * log_prob).mean()
        return {"value_loss": value_loss, "critic_loss": critic_loss, "cost_value_loss": cost_value_loss,
                "cost_critic_loss": cost_critic_loss, "actor_loss": actor_loss, "advantage": advantage.mean(),
                "cost_advantage": cost_advantage.mean(), "feasible": feasible_state.float().mean(),
                "cost_value": vc.detach().mean()}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step of all five networks (disjoint parameters, one backward pass), the actor's
        cosine schedule and the Polyak updates of both target critics.

        Raises:
            KeyError: a batch without ``reward`` or ``cost``.
        """
        if "reward" not in batch or "cost" not in batch:
            raise KeyError("iql_safe needs rewards and costs in the batch: algo.reward=learned (or gt) and judges=[force]")
        obs, next_obs = self.normalizer(batch["observation"]), self.normalizer(batch["next_observation"])
        reward = self.config.reward_scale * batch["reward"] + self.config.reward_bias
        losses = self._losses(obs, batch["action"], reward, next_obs, batch["terminal"], batch["cost"])
        optimizers = list(self.optimizers().values())
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        (losses["value_loss"] + losses["critic_loss"] + losses["cost_value_loss"] + losses["cost_critic_loss"]
         + losses["actor_loss"]).backward()
        for optimizer in optimizers:
            optimizer.step()
        if self.actor_scheduler is not None:
            self.actor_scheduler.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target_critic.parameters()), list(self.critic.parameters()), self.config.tau)
            torch._foreach_lerp_(list(self.target_cost_critic.parameters()), list(self.cost_critic.parameters()),
                                 self.config.tau)
        return {k: v.detach() for k, v in losses.items()}


__all__ = ["IQLSafeLearner"]
