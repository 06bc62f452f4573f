"""Forward-backward representations (FB), top to bottom.

F(s, a, z) in R^d and B(s) in R^d are trained without rewards so that F(s, a, z)^T B(s+)
approximates the successor measure M^{pi_z}(s, a, ds+) / rho(ds+) of the policy pi_z (Touati and
Ollivier 2021, Eq. 5); then for any reward r, z_r = E_{s~rho}[r(s) B(s)] and pi_{z_r} is its
optimal policy. On a batch of transitions (s_i, a_i, s'_i) with latents z_i and goals g_j = s'_j
(samples of rho), following Touati et al. 2023 (Sec. 4) and Meta Motivo's code:

- FB loss:  M_ij = F_k(s_i, a_i, z_i)^T B(g_j),  T_k,ij = F_bar_k(s'_i, pi(s'_i, z_i), z_i)^T B_bar(g_j)
            (target networks), T = mean_k T_k - p |T_1 - T_2| (p = 1/2: min_k T_k, Touati et al.
            2023; p = 0: the mean, Meta Motivo),
            L_FB = sum_k [ 1/2 mean_{i != j} (M_ij - gamma (1 - d_i) T_ij)^2
                           - mean_i (M_ii - gamma (1 - d_i) T_ii) ];
- orthonormality of B: C = B(g) B(g)^T,  L_ortho = 1/2 mean_{i != j} C_ij^2 - mean_i C_ii
  (an estimate of ||E_rho[B B^T] - I||^2 up to a constant);
- actor (TD3-style, deterministic with clipped Gaussian noise):
            L_pi = -E[ mean_k Q_k - lambda |Q_1 - Q_2| ],  Q_k = F_k(s, a~, z)^T z,
            a~ = clip(pi(s, z) + clip(eps, -c, c), -1, 1).

B's output is projected onto the sphere of radius sqrt(d) (as z is), so every z and every B(s)
has norm sqrt(d). Training z are drawn uniformly on that sphere, and with probability
``goal_ratio`` replaced by B(g) of a dataset state (a future state of the same episode, or a
next state of another transition). F and B's loss reaches F and B; the actor's only the actor.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call

from policies.base import BatchSpec, Learner, NoiseSource
from policies.fb.config import FBConfig
from policies.networks import ObservationNormalizer, mlp


def project_z(z: torch.Tensor) -> torch.Tensor:
    """z onto the sphere of radius sqrt(d): ``sqrt(d) z / ||z||``, ``(..., d)``."""
    return math.sqrt(z.shape[-1]) * nn.functional.normalize(z, dim=-1)


def fb_loss(M: torch.Tensor, target: torch.Tensor, discount: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The FB loss of one forward head.

    Args:
        M: ``(B, B)`` with ``M_ij = F(s_i, a_i, z_i)^T B(g_j)``.
        target: ``(B, B)`` with ``T_ij = F_bar(s'_i, a'_i, z_i)^T B_bar(g_j)`` (no gradient).
        discount: ``(B, 1)``, gamma (1 - d_i).

    Returns:
        ``(loss, off-diagonal part, diagonal part)``: ``1/2 mean_{i != j} D_ij^2`` and
        ``-mean_i D_ii`` with ``D = M - discount T``.
    """
    diff = M - discount * target
    off = ~torch.eye(len(M), dtype=torch.bool, device=M.device)
    off_diagonal = 0.5 * diff[off].pow(2).mean()
    diagonal = -diff.diagonal().mean()
    return off_diagonal + diagonal, off_diagonal, diagonal


def orthonormality_loss(B: torch.Tensor) -> torch.Tensor:
    """``1/2 mean_{i != j} (B_i^T B_j)^2 - mean_i ||B_i||^2`` for ``B (N, d)``: minimised when
    E[B B^T] is the identity (Touati et al. 2023, Appendix)."""
    C = B @ B.T
    off = ~torch.eye(len(B), dtype=torch.bool, device=B.device)
    return 0.5 * C[off].pow(2).mean() - C.diagonal().mean()


def embedding(input_dim: int, width: int) -> nn.Sequential:
    """Meta Motivo's input embedding ``(B, input_dim) -> (B, width // 2)``: Linear, LayerNorm,
    Tanh, Linear, ReLU (the LayerNorm-Tanh first layer keeps F's scale in check)."""
    return nn.Sequential(nn.Linear(input_dim, width), nn.LayerNorm(width), nn.Tanh(), nn.Linear(width, width // 2),
                         nn.ReLU(inplace=True))


class TwoStream(nn.Module):
    """``f(x, y)`` from embeddings of ``x`` and ``y`` concatenated, then ReLU layers of
    ``hidden_dims[1:]`` and a linear output (``architecture=embedding``): F(s, a, z) embeds (s, a)
    and (s, z), the actor s and (s, z) (Tirinzoni et al. 2025's networks)."""

    def __init__(self, x_dim: int, y_dim: int, output_dim: int, hidden_dims: list[int]):
        super().__init__()
        width = hidden_dims[0]
        self.embed_x, self.embed_y = embedding(x_dim, width), embedding(y_dim, width)
        self.trunk = mlp(2 * (width // 2), output_dim, hidden_dims[1:])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([self.embed_x(x), self.embed_y(y)], dim=-1))


class ForwardHeads(nn.Module):
    """Two forward networks ``F_k(s, a, z)``: ``(B, D), (B, A), (B, d) -> (2, B, d)``; plain MLPs
    on ``[s, a, z]`` (``architecture=mlp``) or two-stream embeddings of (s, a) and (s, z)."""

    def __init__(self, observation_dim: int, action_dim: int, z_dim: int, hidden_dims: list[int],
                 architecture: str = "embedding"):
        super().__init__()
        self.architecture = architecture
        if architecture == "mlp":
            self.heads = nn.ModuleList(mlp(observation_dim + action_dim + z_dim, z_dim, hidden_dims) for _ in range(2))
        else:
            self.heads = nn.ModuleList(TwoStream(observation_dim + action_dim, observation_dim + z_dim, z_dim, hidden_dims)
                                       for _ in range(2))

    def forward(self, observation: torch.Tensor, action: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.architecture == "mlp":
            x = torch.cat([observation, action, z], dim=-1)
            return torch.stack([head(x) for head in self.heads])
        sa, sz = torch.cat([observation, action], dim=-1), torch.cat([observation, z], dim=-1)
        return torch.stack([head(sa, sz) for head in self.heads])


class BackwardNet(nn.Module):
    """``B(s)``: ``(B, D) -> (B, d)`` on the sphere of radius sqrt(d); with
    ``architecture=embedding`` its first layer is Linear, LayerNorm, Tanh (Meta Motivo)."""

    def __init__(self, observation_dim: int, z_dim: int, hidden_dims: list[int], architecture: str = "embedding"):
        super().__init__()
        if architecture == "mlp":
            self.net = mlp(observation_dim, z_dim, hidden_dims)
        else:
            width = hidden_dims[0]
            self.net = nn.Sequential(nn.Linear(observation_dim, width), nn.LayerNorm(width), nn.Tanh(),
                                     mlp(width, z_dim, hidden_dims[1:]))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return project_z(self.net(observation))


class Actor(nn.Module):
    """pi(s, z): ``(B, D), (B, d) -> (B, A)`` in [-1, 1] (tanh); an MLP on ``[s, z]`` or two-stream
    embeddings of s and (s, z)."""

    def __init__(self, observation_dim: int, z_dim: int, action_dim: int, hidden_dims: list[int],
                 architecture: str = "embedding"):
        super().__init__()
        self.architecture = architecture
        if architecture == "mlp":
            self.net = mlp(observation_dim + z_dim, action_dim, hidden_dims, output_activation=nn.Tanh)
        else:
            self.net = TwoStream(observation_dim, observation_dim + z_dim, action_dim, hidden_dims)

    def forward(self, observation: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.architecture == "mlp":
            return self.net(torch.cat([observation, z], dim=-1))
        return torch.tanh(self.net(observation, torch.cat([observation, z], dim=-1)))


class FBLearner(Learner):
    """FB with two forward heads, target F and B, and a TD3-style actor pi(s, z).

    ``act(observation, condition=z)`` acts towards a latent ``z (B, d)``; :meth:`reward_z`,
    :meth:`goal_z` and :meth:`imitation_z` turn a prompt into z without training.

    Args:
        config: hyperparameters (:class:`FBConfig`).
        observation_dim: D.
        action_dim: A (actions in [-1, 1]).

    Batches (``future`` kind, no reward): ``observation``, ``action``, ``next_observation``,
    ``terminal`` and ``future_observation`` ``(B, D)`` float32.
    """

    needs_reward = False

    def __init__(self, config: FBConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.observation_dim, self.action_dim = int(observation_dim), int(action_dim)
        self.condition_dim = int(config.z_dim)
        d = config.z_dim
        self.normalizer = ObservationNormalizer(observation_dim)
        arch = config.architecture
        self.forward_map = ForwardHeads(observation_dim, action_dim, d, config.forward_hidden_dims or config.hidden_dims, arch)
        self.backward_map = BackwardNet(observation_dim, d, config.hidden_dims, arch)
        self.target_forward = copy.deepcopy(self.forward_map).requires_grad_(False)
        self.target_backward = copy.deepcopy(self.backward_map).requires_grad_(False)
        self.actor = Actor(observation_dim, d, action_dim, config.hidden_dims, arch)
        self.forward_optimizer = torch.optim.Adam(self.forward_map.parameters(), lr=config.forward_learning_rate)
        self.backward_optimizer = torch.optim.Adam(self.backward_map.parameters(), lr=config.backward_learning_rate)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_learning_rate)
        self.noise = NoiseSource()  # the actor's noise and the latents' draws, checkpointed

    def batch_spec(self) -> BatchSpec:
        return BatchSpec("future", reward=False, discount=self.config.discount)

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        if self.config.normalize_observations:
            self.normalizer.fit(observations)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"forward": self.forward_optimizer, "backward": self.backward_optimizer, "actor": self.actor_optimizer}

    def training_state(self) -> dict:
        return {**super().training_state(), "noise": self.noise.state_dict()}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.noise.load_state_dict(state.get("noise") or {})

    # -- z ---------------------------------------------------------------------------------------
    def sample_z(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """``n`` latents uniform on the sphere of radius sqrt(d), ``(n, d)``."""
        return project_z(torch.randn(n, self.config.z_dim, generator=generator, device=device))

    @torch.no_grad()
    def reward_z(self, observations: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
        """z_r = project(E[r(s) B(s)]) from states ``(N, D)`` (the states the rewards were
        received in, e.g. next observations) and rewards ``(N,)``; ``(d,)``.

        Raises:
            ValueError: shapes that do not match, or non-finite rewards.
        """
        if rewards.shape != (len(observations),) or not torch.isfinite(rewards).all():
            raise ValueError(f"rewards must be finite ({len(observations)},), got {tuple(rewards.shape)}")
        B = self.backward_map(self.normalizer(observations))
        return project_z((rewards[:, None] * B).mean(0))

    @torch.no_grad()
    def goal_z(self, goal: torch.Tensor) -> torch.Tensor:
        """z = B(g) for goal observations ``(..., D)``; ``(..., d)``."""
        return self.backward_map(self.normalizer(goal))

    def goal_condition(self, goal: torch.Tensor) -> torch.Tensor:
        """The condition that asks for goal observations ``(B, D)``: z = B(g) (:meth:`goal_z`)."""
        return self.goal_z(goal)

    @torch.no_grad()
    def imitation_z(self, observations: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """z from a demonstration's states ``(T, D)``: project(mean_t B(s_t)) ``(d,)``, or with
        ``window`` one z per step ``(T, d)``, the mean of B over the next ``window`` states
        (tracking a long demonstration, Meta Motivo's ``tracking_inference``)."""
        B = self.backward_map(self.normalizer(observations))
        if window is None:
            return project_z(B.mean(0))
        return project_z(torch.stack([B[t:t + window].mean(0) for t in range(len(B))]))

    # -- losses ----------------------------------------------------------------------------------
    def _policy_action(self, observation: torch.Tensor, z: torch.Tensor, generator: torch.Generator,
                       actor: nn.Module | None = None) -> torch.Tensor:
        mean = (actor or self.actor)(observation, z)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device) * self.config.actor_noise
        return (mean + eps.clamp(-self.config.noise_clip, self.config.noise_clip)).clamp(-1.0, 1.0)

    def losses(self, obs, action, next_obs, terminal, goal_for_z, z_uniform, mix, permutation=None
               ) -> dict[str, torch.Tensor]:
        """All losses on one batch (observations already normalised).

        Args:
            goal_for_z: ``(B, D)`` states whose B(.) may replace the uniform latents.
            z_uniform: ``(B, d)`` latents on the sphere.
            mix: ``(B, 1)`` bool, where B(goal) replaces the uniform latent.
            permutation: reorders ``goal_for_z`` (Meta Motivo pairs z with another row's goal).
        """
        generator = self.noise.get(obs.device)
        with torch.no_grad():
            goals = goal_for_z if permutation is None else goal_for_z[permutation]
            z = torch.where(mix, self.backward_map(goals), z_uniform)
            next_action = self._policy_action(next_obs, z, generator)
            target_Ms = self.target_forward(next_obs, next_action, z) @ self.target_backward(next_obs).T  # (2, B, B)
            # mean - p |T_1 - T_2|: p = 0.5 is min(T_1, T_2) (Touati et al. 2023), p = 0 the mean (Meta Motivo)
            target_M = target_Ms.mean(0) - self.config.target_pessimism * (target_Ms[0] - target_Ms[1]).abs()
            discount = (self.config.discount * (1.0 - terminal))[:, None]
        Fs = self.forward_map(obs, action, z)  # (2, B, d)
        B = self.backward_map(next_obs)  # goals g_j = s'_j ~ rho
        parts = [fb_loss(F_k @ B.T, target_M, discount) for F_k in Fs]
        loss_fb = sum(p[0] for p in parts)
        loss_ortho = orthonormality_loss(B)
        # actor: the forward heads with detached parameters (gradient only through the action)
        frozen = {name: p.detach() for name, p in self.forward_map.named_parameters()}
        a = self._policy_action(obs, z, generator)
        Qs = (functional_call(self.forward_map, frozen, (obs, a, z)) * z).sum(-1)  # (2, B)
        Q = Qs.mean(0) - self.config.actor_pessimism * (Qs[0] - Qs[1]).abs()
        actor_loss = -Q.mean()
        return {"fb_loss": loss_fb, "orthonormality_loss": loss_ortho, "actor_loss": actor_loss,
                "fb_offdiagonal": sum(p[1] for p in parts).detach(), "fb_diagonal": sum(p[2] for p in parts).detach(),
                "q": Q.detach().mean(), "B_norm": B.detach().norm(dim=-1).mean()}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One step: F and B on the FB and orthonormality losses, the actor on its loss (one
        backward pass over disjoint parameters), then the Polyak update of the targets.

        Raises:
            KeyError: the batch has no ``future_observation`` with ``goal_source=future``.
        """
        obs, next_obs = self.normalizer(batch["observation"]), self.normalizer(batch["next_observation"])
        n, device = len(obs), obs.device
        generator = self.noise.get(device)
        if self.config.goal_source == "future":
            if "future_observation" not in batch:
                raise KeyError("FB with goal_source=future needs future_observation in the batch (the future sampler)")
            goals, permutation = self.normalizer(batch["future_observation"]), None
        else:
            goals, permutation = next_obs, torch.randperm(n, generator=generator, device=device)
        z_uniform = self.sample_z(n, generator, device)
        mix = torch.rand(n, 1, generator=generator, device=device) < self.config.goal_ratio
        losses = self.losses(obs, batch["action"], next_obs, batch["terminal"], goals, z_uniform, mix, permutation)
        for optimizer in self.optimizers().values():
            optimizer.zero_grad(set_to_none=True)
        (losses["fb_loss"] + self.config.orthonormality_weight * losses["orthonormality_loss"] + losses["actor_loss"]).backward()
        for optimizer in self.optimizers().values():
            optimizer.step()
        with torch.no_grad():
            for online, target in ((self.forward_map, self.target_forward), (self.backward_map, self.target_backward)):
                torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), self.config.tau)
        return {k: v.detach() for k, v in losses.items()}

    @torch.no_grad()
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """pi(s, z), ``(B, A)`` in [-1, 1], for ``condition = z (B, d)``.

        Raises:
            ValueError: no z, or one of the wrong shape (``Learner.check_condition``).
        """
        self.check_condition(condition, observation.shape[0])
        return self.actor(self.normalizer(observation), condition)

    @torch.no_grad()
    def explore(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """pi(s, z) with the clipped Gaussian training noise, ``(B, A)``."""
        self.check_condition(condition, observation.shape[0])
        return self._policy_action(self.normalizer(observation), condition, self.noise.get(observation.device))


__all__ = ["Actor", "BackwardNet", "TwoStream", "embedding", "FBLearner", "ForwardHeads", "fb_loss", "orthonormality_loss", "project_z"]
