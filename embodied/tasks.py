"""Building a task's environment and behaviour policies from its config node."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from hydra.utils import instantiate

from envs.policies import Policy


def make_env(task: Any, **overrides: Any) -> gym.Env:
    """Instantiate ``task.env`` (a ``_target_`` node), with keyword overrides such as
    ``render_mode="rgb_array"``.

    Raises:
        TypeError: the result is not a gymnasium env with a flat ``Box`` observation space.
    """
    env = instantiate(task.env, **overrides)
    if not isinstance(env, gym.Env):
        raise TypeError(f"task {task.name!r}: env node built a {type(env).__name__}, not a gymnasium.Env")
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise TypeError(f"task {task.name!r}: expected a flat Box observation space, got {space}")
    return env


def make_policies(task: Any, action_space: gym.spaces.Space, names: list[str] | None = None) -> dict[str, Policy]:
    """Instantiate the task's behaviour policies (all, or ``names``) with ``action_space``.

    Raises:
        KeyError: a requested name is not among the task's policies (lists them).
    """
    available = list(task.policies)
    names = available if names is None else list(names)
    missing = [n for n in names if n not in task.policies]
    if missing:
        raise KeyError(f"task {task.name!r} has no behaviour policies {missing}; it has {available}")
    return {n: instantiate(task.policies[n], action_space=action_space) for n in names}
