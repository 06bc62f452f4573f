"""Building a task's environment and behaviour policies from its config node."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
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


def task_spaces(task: Any) -> tuple[gym.spaces.Box, gym.spaces.Space]:
    """The observation and action spaces of the task's env (built once and closed again)."""
    probe = make_env(task)
    try:
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


def task_sizes(task: Any) -> tuple[int, int]:
    """``(D, A)``: the sizes of the task's flat observation and of its action."""
    observation_space, action_space = task_spaces(task)
    return int(observation_space.shape[0]), int(np.prod(action_space.shape))


def make_policies(task: Any, action_space: gym.spaces.Space, names: list[str] | None = None) -> dict[str, Policy]:
    """Instantiate the task's behaviour policies (all, or ``names``) with ``action_space``.

    Raises:
        ValueError: a requested name is not among the task's policies (lists them).
    """
    available = list(task.policies)
    names = available if names is None else list(names)
    missing = [n for n in names if n not in task.policies]
    if missing:
        raise ValueError(f"task {task.name!r} has no behaviour policies {missing}; it has {available}")
    return {n: instantiate(task.policies[n], action_space=action_space) for n in names}


def make_policy(task: Any, policy: str = "expert", checkpoint: str | None = None, device: str = "auto",
                action_space: gym.spaces.Space | None = None, condition: Any = None) -> tuple[Policy, str]:
    """The policy an entry point runs: a trained learner from ``checkpoint`` (a step, checkpoints
    or run folder), else the task's behaviour policy named ``policy``. Used by evaluate, deploy
    and benchmark.

    Args:
        task: the task config node.
        policy: a behaviour policy of the task (``expert``, ``noisy``, ...), when no checkpoint.
        checkpoint: a checkpoint to load the learner from.
        device: torch device of a loaded learner (``auto``: CUDA when present).
        action_space: the env's action space (default: read from a probe env of the task).
        condition: ``(C,)`` floats a conditioned learner acts towards (a goal, a latent z).

    Returns:
        The policy and a description of its source (``checkpoint <path>`` or the policy name).

    Raises:
        KeyError: no behaviour policy of that name.
        ValueError: a checkpoint whose observation or action size differs from the task's; a
            condition for a behaviour policy or an unconditioned learner, or none (or one of the
            wrong size) for a conditioned learner.
        embodied.checkpoint.CheckpointError: an unreadable checkpoint.
    """
    if checkpoint:
        import torch

        from embodied.learners import LearnerPolicy, load_learner
        from embodied.runtime import resolve_device

        resolved = resolve_device(device)
        learner, loaded = load_learner(checkpoint, resolved)
        sizes = task_sizes(task)
        if sizes != (learner.observation_dim, learner.action_dim):
            raise ValueError(
                f"checkpoint {loaded.path} was trained on observations of size {learner.observation_dim} and actions "
                f"of size {learner.action_dim}; task {task.name!r} has {sizes[0]} and {sizes[1]}: evaluate it on "
                "the task it was trained on (+task=..., or the task of its run folder)"
            )
        values = None if condition is None else np.asarray([float(c) for c in condition], dtype=np.float32)
        learner.check_condition(None if values is None else torch.as_tensor(values)[None], 1)
        return LearnerPolicy(learner, resolved, values), f"checkpoint {loaded.path}"
    if condition is not None:
        raise ValueError(f"condition={list(condition)} given, but behaviour policy {policy!r} takes none; "
                         "conditions are for conditioned learners loaded from a checkpoint")
    if action_space is None:
        action_space = task_spaces(task)[1]
    return make_policies(task, action_space, names=[policy])[policy], str(policy)
