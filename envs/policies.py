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


class VariedPolicy:
    """A base policy done in varied styles, one drawn per episode, for data with attribute
    variety (AlignDiff): actions scaled by ``s ~ U(scale)`` (slower or faster) and low-pass
    filtered, ``a_t = alpha a_{t-1} + (1 - alpha) s pi(o_t)`` with ``alpha ~ U(smoothing)``
    (smoother or jerkier), clipped to the action bounds.

    Args:
        base: the policy to vary.
        action_space: bounded ``Box`` action space.
        scale: range of the action scale, each in (0, 1].
        smoothing: range of alpha, each in [0, 1).

    Raises:
        ValueError: ranges outside those intervals or with low > high.
    """

    def __init__(self, base: Policy, action_space: gym.spaces.Box, scale: tuple[float, float] = (0.3, 1.0),
                 smoothing: tuple[float, float] = (0.0, 0.8)):
        self.base, self.action_space = base, action_space
        self.scale, self.smoothing = tuple(float(v) for v in scale), tuple(float(v) for v in smoothing)
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale={scale}; expected 0 < low <= high <= 1")
        if not 0.0 <= self.smoothing[0] <= self.smoothing[1] < 1.0:
            raise ValueError(f"smoothing={smoothing}; expected 0 <= low <= high < 1")
        self._rng = np.random.default_rng()
        self.style = (1.0, 0.0)
        self._previous: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        self.base.reset(seed)
        self._rng = np.random.default_rng(None if seed is None else [int(seed), 7])
        self.style = (float(self._rng.uniform(*self.scale)), float(self._rng.uniform(*self.smoothing)))
        self._previous = None

    def act(self, observation: np.ndarray) -> np.ndarray:
        scale, alpha = self.style
        action = scale * np.asarray(self.base.act(observation), dtype=np.float64)
        if self._previous is not None:
            action = alpha * self._previous + (1.0 - alpha) * action
        self._previous = action
        return np.clip(action, self.action_space.low, self.action_space.high).astype(self.action_space.dtype)
