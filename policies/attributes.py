"""The attribute strength model of attribute-conditioned planning (AlignDiff, Dong et al. 2024):
``zeta(tau) in R^k`` from observation windows, an ensemble of Bradley-Terry models, one output
per attribute. It lives with the learners because the planner keeps one to rank its plans (and
a checkpoint carries it); :mod:`reward_models.attributes` labels and fits it."""

from __future__ import annotations

import torch
from torch import nn

from policies.networks import ObservationNormalizer


class AttributeStrengthModel(nn.Module):
    """zeta(tau): observation windows ``(B, T, D)`` -> attribute strengths, per member
    ``(E, B, k)``: each member a temporal convolution (kernel 3, over ``[s_t, s_{t+1} - s_t]``) and
    an MLP, averaged over time. Observations are standardised with :meth:`fit_normalizer`'s
    statistics; strengths are scaled to [0, 1] by :meth:`fit_range` (the range over the
    dataset's windows).

    Args:
        observation_dim: D.
        attributes: k.
        hidden: channels of the convolutions and the MLP.
        members: E, ensemble members.
    """

    def __init__(self, observation_dim: int, attributes: int, hidden: int = 64, members: int = 3):
        super().__init__()
        if attributes < 1 or members < 1 or hidden < 1:
            raise ValueError(f"attributes={attributes}, members={members}, hidden={hidden}; expected >= 1")
        self.observation_dim, self.attributes, self.members = int(observation_dim), int(attributes), int(members)
        self.hidden = int(hidden)
        self.nets = nn.ModuleList(nn.ModuleDict({
            "conv": nn.Sequential(nn.Conv1d(2 * observation_dim, hidden, 3, padding=1), nn.Mish(),
                                  nn.Conv1d(hidden, hidden, 3, padding=1), nn.Mish()),
            "head": nn.Sequential(nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, attributes))}) for _ in range(members))
        self.normalizer = ObservationNormalizer(observation_dim)
        self.register_buffer("low", torch.zeros(attributes))
        self.register_buffer("high", torch.ones(attributes))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before 2026-11-30 (d3ea04b) kept the statistics as the buffers
        # ``mean`` and ``std`` and divided by ``std`` alone; the normalizer divides by std + eps.
        # Rename them and take eps off the std, so that old checkpoints give the same strengths.
        old_mean, old_std = prefix + "mean", prefix + "std"
        if old_mean in state_dict and old_std in state_dict and prefix + "normalizer.mean" not in state_dict:
            state_dict[prefix + "normalizer.mean"] = state_dict.pop(old_mean)
            state_dict[prefix + "normalizer.std"] = state_dict.pop(old_std) - self.normalizer.eps
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit_normalizer(self, observations: torch.Tensor) -> None:
        """Standardisation statistics from observations ``(N, D)``."""
        self.normalizer.fit(observations)

    def member_strengths(self, windows: torch.Tensor) -> torch.Tensor:
        """Raw strengths ``(E, B, k)`` of windows ``(B, T, D)``, T >= 2."""
        if windows.ndim != 3 or windows.shape[-1] != self.observation_dim or windows.shape[1] < 2:
            raise ValueError(f"windows must be (B, T >= 2, {self.observation_dim}), got {tuple(windows.shape)}")
        x = self.normalizer(windows)
        pairs = torch.cat([x[:, :-1], x[:, 1:] - x[:, :-1]], dim=-1).transpose(1, 2)  # (B, 2D, T - 1)
        return torch.stack([net["head"](net["conv"](pairs).mean(-1)) for net in self.nets])

    @torch.no_grad()
    def fit_range(self, windows: torch.Tensor, chunk: int = 4096) -> None:
        """Set the [0, 1] scaling from the mean strengths of ``windows (N, T, D)`` (their min and max)."""
        values = torch.cat([self.member_strengths(windows[i:i + chunk]).mean(0) for i in range(0, len(windows), chunk)])
        self.low.copy_(values.min(0).values)
        self.high.copy_(values.max(0).values)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Strengths ``(B, k)`` in about [0, 1]: the members' mean, scaled by :meth:`fit_range`."""
        return (self.member_strengths(windows).mean(0) - self.low) / (self.high - self.low).clamp_min(1e-6)


__all__ = ["AttributeStrengthModel"]
