"""Scripted behaviour policies behind one interface, for data collection and baselines.

Every policy has ``reset(seed)`` (called at the start of each episode) and
``act(observation) -> action``. Observations and actions are numpy arrays in the environment's
own spaces; actions are ``float32`` inside the action space's bounds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import gymnasium as gym
import numpy as np


@runtime_checkable
class Policy(Protocol):
    """The behaviour-policy interface shared by scripted, random and learned policies."""

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; ``seed`` makes any randomness of the policy reproducible."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action for one observation (no batch dimension)."""


class RandomPolicy:
    """Uniformly random actions from a ``Box`` action space.

    Raises:
        TypeError: the action space is not a bounded ``gymnasium.spaces.Box``.
    """

    def __init__(self, action_space: gym.spaces.Space):
        if not isinstance(action_space, gym.spaces.Box) or not action_space.is_bounded():
            raise TypeError(f"RandomPolicy needs a bounded Box action space, got {action_space}")
        self.action_space = action_space
        self._rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def act(self, observation: np.ndarray) -> np.ndarray:
        low, high = self.action_space.low, self.action_space.high
        return self._rng.uniform(low, high).astype(self.action_space.dtype)


class NoisyPolicy:
    """A base policy with Gaussian action noise, clipped to the action bounds.

    ``a = clip(pi(o) + eps, low, high)``, ``eps ~ N(0, noise_std^2)`` per dimension; with
    probability ``random_action_prob`` a uniformly random action replaces it.

    Args:
        base: the policy whose actions are perturbed.
        action_space: bounded ``Box`` action space of the environment.
        noise_std: standard deviation of the noise, in action units (>= 0).
        random_action_prob: probability of a uniformly random action per step, in [0, 1].

    Raises:
        ValueError: ``noise_std`` < 0 or ``random_action_prob`` outside [0, 1].
    """

    def __init__(
        self,
        base: Policy,
        action_space: gym.spaces.Box,
        noise_std: float = 0.3,
        random_action_prob: float = 0.0,
    ):
        if noise_std < 0:
            raise ValueError(f"noise_std={noise_std}; expected >= 0")
        if not 0.0 <= random_action_prob <= 1.0:
            raise ValueError(f"random_action_prob={random_action_prob}; expected in [0, 1]")
        self.base = base
        self.random = RandomPolicy(action_space)
        self.noise_std = float(noise_std)
        self.random_action_prob = float(random_action_prob)
        self._rng = np.random.default_rng()

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self.base.reset(seed)
        self.random.reset(None if seed is None else seed + 1)

    def act(self, observation: np.ndarray) -> np.ndarray:
        space = self.random.action_space
        if self.random_action_prob and self._rng.random() < self.random_action_prob:
            return self.random.act(observation)
        action = self.base.act(observation) + self._rng.normal(0.0, self.noise_std, space.shape)
        return np.clip(action, space.low, space.high).astype(space.dtype)
