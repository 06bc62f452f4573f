"""Evaluation of a policy in simulation: success rate, return and the task's metrics."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from embodied.data import Episode, rollout
from envs.policies import Policy


def summarize(episodes: Sequence[Episode], metric_keys: Sequence[str] = ()) -> dict[str, float]:
    """Aggregate episodes into evaluation metrics.

    Returns:
        ``success_rate`` (fraction of episodes whose ``info["success"]`` was ever true),
        ``return_mean`` / ``return_std`` (sum of ground-truth rewards), ``length_mean`` (steps),
        ``episodes``, and ``<key>_final`` (mean over episodes of the info value at the last
        step) for each task metric.

    Raises:
        ValueError: no episodes.
    """
    if not episodes:
        raise ValueError("no episodes to summarise")
    returns = np.asarray([float(ep.rewards.sum()) for ep in episodes])
    out = {
        "success_rate": float(np.mean([ep.success for ep in episodes])),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(np.mean([len(ep) for ep in episodes])),
        "episodes": float(len(episodes)),
    }
    for key in metric_keys:
        out[f"{key}_final"] = float(np.mean([ep.infos[key][-1] for ep in episodes]))
    return out


def evaluate_policy(
    env: gym.Env,
    policy: Policy,
    episodes: int,
    seed: int,
    info_keys: Sequence[str] = ("success",),
    metric_keys: Sequence[str] = (),
    progress: bool = True,
) -> dict[str, float]:
    """Run ``episodes`` episodes (episode i reset with ``seed + i``) and :func:`summarize` them."""
    keys = list(dict.fromkeys([*info_keys, *metric_keys]))
    rollouts = [
        rollout(env, policy, seed + i, keys)
        for i in tqdm(range(episodes), desc="evaluate", unit="episode", disable=not progress, mininterval=1.0)
    ]
    return summarize(rollouts, metric_keys)
