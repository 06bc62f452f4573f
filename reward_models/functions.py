"""The reward-function seam: transitions or frames in, rewards ``(N,) float32`` out.

A reward function has a ``name``, the batch ``fields`` it reads (those of
:meth:`policies.data.EpisodeData.gather`: ``reward``, ``observation``, ``action``,
``next_observation``, ``next_frame``) and ``__call__(batch) -> (N,) float32``. The same object
relabels an offline dataset (:func:`relabel`) and scores steps online:

- :class:`TrueReward`: the environment's reward (oracle baselines);
- :class:`BradleyTerryReward`: the ensemble mean of a Bradley-Terry reward model;
- :class:`CLIPFrameReward`: the VLM-RM zero-shot reward of the frame after each step.

:func:`normalize_rewards` applies one normalisation to any of them, so that IQL on the true
reward and IQL on a learned reward see rewards on the same scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from policies.data import EpisodeData

#: Reward normalisations (:func:`normalize_rewards`).
NORMALIZATIONS = ("none", "standardize", "return_range")


class RewardFunction(Protocol):
    """Transitions (or frames) in, rewards out."""

    name: str
    #: Batch fields read by ``__call__``.
    fields: tuple[str, ...]
    #: Frames are resized to this many pixels squared before the call (None: as stored).
    frame_size: int | None

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rewards ``(N,) float32`` for a batch whose fields are ``(N, ...)``."""


class TrueReward:
    """The environment's (ground-truth) reward, ``batch["reward"]``."""

    name = "gt"
    fields = ("reward",)
    frame_size = None

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch["reward"].float()


class BradleyTerryReward:
    """The ensemble-mean reward of a Bradley-Terry model
    (:class:`reward_models.bradley_terry.RewardEnsemble`, Christiano et al. 2017, Eq. 1)."""

    name = "learned"

    def __init__(self, model: Any):
        self.model = model.eval()
        self.fields = model.fields
        self.frame_size = model.config.image_size if model.config.inputs == "image" else None

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.model({k: batch[k] for k in self.fields}).float()


class CLIPFrameReward:
    """VLM-RM's zero-shot reward (Rocamonde et al. 2024) of the frame after each step:
    ``r = 1 - 0.5 ||(s - g) P||^2`` (:class:`reward_models.clip.CLIPReward`).

    Args:
        clip: a :class:`reward_models.clip.CLIPReward`.
    """

    name = "clip"
    fields = ("next_frame",)
    frame_size = None

    def __init__(self, clip: Any):
        self.clip = clip

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        frames = batch["next_frame"]
        return torch.as_tensor(self.clip(frames.cpu().numpy()), dtype=torch.float32, device=frames.device)


@torch.no_grad()
def relabel(reward: RewardFunction, episodes: Sequence, device: str | torch.device = "cpu",
            chunk: int = 4096) -> torch.Tensor:
    """Rewards ``(N,) float32`` of every transition of ``episodes`` (in order) under ``reward``.

    Raises:
        ValueError: the reward function reads frames and an episode has none; a non-finite reward.
    """
    frames = any(f.endswith("frame") for f in reward.fields)
    data = EpisodeData(episodes, device, include_reward="reward" in reward.fields, frames=frames,
                       frame_size=reward.frame_size if frames else None)
    rows = torch.arange(data.size, device=data.device)
    out = torch.cat([reward(data.gather(part, reward.fields)).reshape(-1) for part in rows.split(chunk)])
    if not torch.isfinite(out).all():
        raise ValueError(f"reward function {reward.name!r} gave non-finite rewards")
    return out.float()


def normalize_rewards(rewards: torch.Tensor, mode: str, episode: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Normalise rewards ``(N,) float32`` of a dataset.

    Modes:
        ``none``: as they are;
        ``standardize``: ``(r - mean) / std`` over the dataset;
        ``return_range``: ``r * L / (R_max - R_min)`` with ``R`` the episode returns and ``L`` the
        longest episode's length (the IQL paper's locomotion normalisation, Kostrikov et al. 2022,
        App. B, where L = 1000).

    Args:
        rewards: ``(N,)``.
        mode: one of :data:`NORMALIZATIONS`.
        episode: ``(N,) int64`` episode of each reward (``return_range`` only).

    Returns:
        The rewards and the statistics used (``reward_mean``, ``reward_std``, ``scale``, ``shift``:
        normalised = (r - shift) * scale).

    Raises:
        ValueError: an unknown mode, or ``return_range`` without episodes.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"reward normalization {mode!r}; expected one of {NORMALIZATIONS}")
    rewards = rewards.float()
    mean, std = float(rewards.mean()), float(rewards.std(unbiased=False))
    shift, scale = 0.0, 1.0
    if mode == "standardize":
        shift, scale = mean, 1.0 / (std + 1e-8)
    elif mode == "return_range":
        if episode is None:
            raise ValueError("return_range normalisation needs the episode of each reward")
        returns = torch.zeros(int(episode.max()) + 1, device=rewards.device).index_add_(0, episode, rewards)
        longest = float(torch.bincount(episode).max())
        scale = longest / max(float(returns.max() - returns.min()), 1e-8)
    stats = {"reward_mean": mean, "reward_std": std, "shift": shift, "scale": scale}
    return (rewards - shift) * scale, stats


__all__ = ["BradleyTerryReward", "CLIPFrameReward", "NORMALIZATIONS", "RewardFunction", "TrueReward",
           "normalize_rewards", "relabel"]
