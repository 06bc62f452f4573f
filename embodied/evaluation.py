"""Evaluation of a policy in simulation: success rate, return and the task's metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
    desc: str = "evaluate",
    record: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Run ``episodes`` episodes (episode i reset with ``seed + i``) and :func:`summarize` them;
    ``desc`` names the progress bar. ``record``, when given, receives each task metric's
    per-episode final values ``(episodes,) float64`` and the ``return`` of each episode (for
    histograms)."""
    keys = list(dict.fromkeys([*info_keys, *metric_keys]))
    rollouts = [
        rollout(env, policy, seed + i, keys)
        for i in tqdm(range(episodes), desc=desc, unit="episode", disable=not progress, mininterval=1.0)
    ]
    if record is not None:
        record["return"] = np.asarray([float(ep.rewards.sum()) for ep in rollouts])
        for key in metric_keys:
            record[key] = np.asarray([float(ep.infos[key][-1]) for ep in rollouts])
    return summarize(rollouts, metric_keys)


def evaluate_metaworld(task: Any, policy: Policy, episodes: int, seed: int, progress: bool = True,
                       desc: str = "evaluate") -> dict[str, float]:
    """Evaluate on a Meta-World task with Meta-World's official protocol
    (:func:`envs.metaworld_adapter.official_evaluation`: 50 episodes a task in MT suites, a new
    goal variant per episode, the episode ends on success).

    Args:
        task: the task config node; its env must be ``embodied/MetaWorld-v0`` (``+task=metaworld``).
        policy: deterministic policy, ``act(observation (39,)) -> action (4,)``.
        episodes: episodes counted; seed: the evaluation env's seed.

    Returns:
        ``success_rate``, ``return_mean``, ``return_std``, ``episodes``.

    Raises:
        ValueError: the task is not a Meta-World task.
    """
    from envs.metaworld_adapter import official_evaluation

    env_id = str(task.env.get("id", ""))
    if env_id != "embodied/MetaWorld-v0":
        raise ValueError(f"eval.protocol=metaworld needs a Meta-World task (+task=metaworld); task "
                         f"{task.name!r} builds {env_id or task.env.get('_target_')!r}")
    policy.reset(seed)
    with tqdm(total=episodes, desc=f"{desc} (Meta-World protocol)", unit="episode", disable=not progress,
              mininterval=1.0) as bar:
        return official_evaluation(policy.act, str(task.env.task), episodes, seed,
                                   on_episode_end=lambda n: bar.update(min(n, episodes - bar.n)))
