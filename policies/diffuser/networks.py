"""Networks of the diffusion planners: a temporal U-Net over trajectories (Janner et al. 2022,
Fig. 2 / Appendix C), a value network on noisy trajectories, and an inverse-dynamics MLP.

A trajectory is ``(B, H, C) float32``: H steps of C channels (normalised states, or states and
actions). Convolutions run over the time axis; the diffusion step ``t`` (and a condition such as
a return or attribute targets, for classifier-free guidance) enters every residual block as an
additive embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from policies.networks import mlp


class SinusoidalEmbedding(nn.Module):
    """``t (B,) -> (B, dim)``: ``[sin(t w_i), cos(t w_i)]`` with ``w_i = 10000^(-i / (dim/2 - 1))``
    (Vaswani et al. 2017), the usual diffusion-step embedding."""

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"embedding dim={dim}; expected an even number >= 4")
        half = dim // 2
        self.register_buffer("frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.float()[:, None] * self.frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvBlock(nn.Sequential):
    """Conv1d (same length), GroupNorm, Mish: ``(B, C_in, H) -> (B, C_out, H)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, groups: int = 8):
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(min(groups, out_channels), out_channels), nn.Mish())


class ResidualBlock(nn.Module):
    """Two conv blocks with the embedding added between them and a residual connection:
    ``(B, C_in, H), (B, E) -> (B, C_out, H)``."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, kernel_size: int = 5):
        super().__init__()
        self.first, self.second = ConvBlock(in_channels, out_channels, kernel_size), ConvBlock(out_channels, out_channels,
                                                                                              kernel_size)
        self.embed = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, out_channels))
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.first(x) + self.embed(embedding)[:, :, None]
        return self.second(h) + self.skip(x)


class TemporalUNet(nn.Module):
    """eps_theta(tau_t, t[, y]): ``(B, H, C), (B,) [, (B, Y)] -> (B, H, C)``.

    Levels of ``dims`` channels; each halves the horizon except the last, so H must be divisible
    by ``2 ** (len(dims) - 1)``. ``condition_dim`` > 0 adds a condition y (a return, attribute
    targets) embedded and added to the step embedding; ``condition_mask (B, 1)`` zeroes that
    embedding for classifier-free guidance's unconditional branch (Ajay et al. 2023, Sec. 3.1).

    Raises:
        ValueError: a horizon the levels cannot halve, or a bad width.
    """

    def __init__(self, horizon: int, channels: int, dims: Sequence[int] = (32, 64, 128), embed_dim: int = 32,
                 condition_dim: int = 0, kernel_size: int = 5):
        super().__init__()
        dims = [int(d) for d in dims]
        if not dims or min(dims) < 1 or horizon % (2 ** (len(dims) - 1)):
            raise ValueError(f"horizon={horizon} must be divisible by 2^(levels - 1) = {2 ** (len(dims) - 1)} "
                             f"for U-Net dims {dims}")
        self.horizon, self.channels, self.condition_dim = int(horizon), int(channels), int(condition_dim)
        self.time_embedding = nn.Sequential(SinusoidalEmbedding(embed_dim), nn.Linear(embed_dim, 4 * embed_dim), nn.Mish(),
                                            nn.Linear(4 * embed_dim, embed_dim))
        self.condition_embedding = nn.Sequential(nn.Linear(condition_dim, 4 * embed_dim), nn.Mish(),
                                                 nn.Linear(4 * embed_dim, embed_dim)) if condition_dim else None
        widths = [channels, *dims]
        self.down = nn.ModuleList()
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == len(dims) - 1
            self.down.append(nn.ModuleList([ResidualBlock(w_in, w_out, embed_dim, kernel_size),
                                            ResidualBlock(w_out, w_out, embed_dim, kernel_size),
                                            nn.Conv1d(w_out, w_out, 3, stride=2, padding=1) if not last else nn.Identity()]))
        self.mid = nn.ModuleList([ResidualBlock(dims[-1], dims[-1], embed_dim, kernel_size),
                                  ResidualBlock(dims[-1], dims[-1], embed_dim, kernel_size)])
        self.up = nn.ModuleList()
        for w_out, w_in in reversed(list(zip(dims[:-1], dims[1:]))):
            self.up.append(nn.ModuleList([ResidualBlock(2 * w_in, w_out, embed_dim, kernel_size),
                                          ResidualBlock(w_out, w_out, embed_dim, kernel_size),
                                          nn.ConvTranspose1d(w_out, w_out, 4, stride=2, padding=1)]))
        self.out = nn.Sequential(ConvBlock(dims[0], dims[0], kernel_size), nn.Conv1d(dims[0], channels, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None,
                condition_mask: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.time_embedding(t.expand(len(x)))
        if self.condition_embedding is not None and condition is not None:
            y_embedding = self.condition_embedding(condition)
            embedding = embedding + (y_embedding if condition_mask is None else y_embedding * condition_mask)
        h = x.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down:
            h = second(first(h, embedding), embedding)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, embedding)
        for first, second, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(second(first(h, embedding), embedding))
        return self.out(h).transpose(1, 2)


class TrajectoryValue(nn.Module):
    """J_phi(tau_t, t): the down half of a temporal U-Net, pooled over time, then an MLP:
    ``(B, H, C), (B,) -> (B,)`` (Diffuser's value function on noisy trajectories).

    Raises:
        ValueError: see :class:`TemporalUNet`.
    """

    def __init__(self, horizon: int, channels: int, dims: Sequence[int] = (32, 64), hidden_dims: Sequence[int] = (256,),
                 embed_dim: int = 32, kernel_size: int = 5):
        super().__init__()
        dims = [int(d) for d in dims]
        self.time_embedding = nn.Sequential(SinusoidalEmbedding(embed_dim), nn.Linear(embed_dim, 4 * embed_dim), nn.Mish(),
                                            nn.Linear(4 * embed_dim, embed_dim))
        widths = [channels, *dims]
        self.blocks = nn.ModuleList(ResidualBlock(w_in, w_out, embed_dim, kernel_size) for w_in, w_out in zip(widths[:-1], widths[1:]))
        self.head = mlp(dims[-1] + embed_dim, 1, list(hidden_dims))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        embedding = self.time_embedding(t.expand(len(x)))
        h = x.transpose(1, 2)
        for block in self.blocks:
            h = block(h, embedding)
        return self.head(torch.cat([h.mean(-1), embedding], dim=-1)).squeeze(-1)


class InverseDynamics(nn.Module):
    """a_t = f(s_t, s_{t+1}): ``(B, D), (B, D) -> (B, A)`` in [-1, 1] (Decision Diffuser's action
    model, Ajay et al. 2023, Eq. 4)."""

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = mlp(2 * observation_dim, action_dim, list(hidden_dims), output_activation=nn.Tanh)

    def forward(self, observation: torch.Tensor, next_observation: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([observation, next_observation], dim=-1))


__all__ = ["ConvBlock", "InverseDynamics", "ResidualBlock", "SinusoidalEmbedding", "TemporalUNet", "TrajectoryValue"]
