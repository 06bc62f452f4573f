"""Scripted behaviour policies of the dressing task (one interface: ``reset(seed)``, ``act(obs)``).

All read the arm keypoints and the opening centre from the observation
(:data:`envs.dressing.env.OBSERVATION_LAYOUT`) and steer the opening through waypoints on or
near the arm's centre line at up to 0.02 m per step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.dressing.env import MAX_STEP, OBSERVATION_LAYOUT, SUCCESS_MARGIN

L = OBSERVATION_LAYOUT


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


class DressingExpert:
    """Follows the arm from beyond the fingertips, over the hand, along the forearm, past the
    elbow onto the upper arm.

    Waypoints (m): 0.06 m beyond the fingertips on the forearm axis, the fingertips, the wrist,
    the elbow, then ``overshoot`` m up the upper arm; each shifted by ``offset`` (m, a vector
    perpendicular-ish to the arm; zero for the expert). The policy stops (zero action) once the
    path fraction ``stop_fraction`` is covered.

    Args:
        action_space: the env's action space (bounds of the returned action).
        overshoot: distance past the elbow of the last waypoint, m (> ``SUCCESS_MARGIN``).
        tolerance: distance at which a waypoint counts as reached, m.
    """

    def __init__(self, action_space: gym.spaces.Box | None = None, overshoot: float = SUCCESS_MARGIN + 0.07,
                 tolerance: float = 0.01):
        self.overshoot, self.tolerance = float(overshoot), float(tolerance)
        self.low = -1.0 if action_space is None else action_space.low
        self.high = 1.0 if action_space is None else action_space.high
        self._waypoints: list[np.ndarray] | None = None
        self._index = 0
        self._rng = np.random.default_rng()
        self.stop_fraction = 1.0

    def reset(self, seed: int | None = None) -> None:
        self._waypoints, self._index = None, 0
        self._rng = np.random.default_rng(seed)

    def offset(self, observation: np.ndarray) -> np.ndarray:
        """Displacement of every waypoint from the arm's centre line, m (zero for the expert)."""
        return np.zeros(3)

    def _plan(self, observation: np.ndarray) -> list[np.ndarray]:
        shoulder, elbow = observation[L["shoulder"]], observation[L["elbow"]]
        wrist, tip = observation[L["wrist"]], observation[L["hand_tip"]]
        outward = _unit(tip - wrist)
        points = [tip + 0.06 * outward, tip, wrist, elbow, elbow + self.overshoot * _unit(shoulder - elbow)]
        total = sum(np.linalg.norm(b - a) for a, b in zip(points[:-1], points[1:]))
        # Cut the path at stop_fraction of its length.
        keep, budget = [points[0]], self.stop_fraction * total
        for a, b in zip(points[:-1], points[1:]):
            length = np.linalg.norm(b - a)
            if budget >= length:
                keep.append(b)
                budget -= length
            else:
                keep.append(a + (b - a) * budget / length)
                break
        shift = self.offset(observation)
        return [p + shift for p in keep]

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action ``(3,) float32`` for an observation ``(26,)``."""
        observation = np.asarray(observation, dtype=np.float64)
        if self._waypoints is None:
            self._waypoints = self._plan(observation)
        center = observation[L["opening_center"]]
        while self._index < len(self._waypoints) - 1 and np.linalg.norm(self._waypoints[self._index] - center) < self.tolerance:
            self._index += 1
        error = self._waypoints[self._index] - center
        if np.linalg.norm(error) < self.tolerance / 2:
            return np.zeros(3, dtype=np.float32)
        action = error / MAX_STEP
        norm = np.linalg.norm(action)
        if norm > 1.0:
            action /= norm
        return np.clip(action, self.low, self.high).astype(np.float32)


class StopEarlyPolicy(DressingExpert):
    """The expert, stopping after a random fraction of the path, uniform in ``fraction_range``
    (drawn per episode): leaves the sleeve on the hand or forearm."""

    def __init__(self, action_space: gym.spaces.Box | None = None, fraction_range: tuple[float, float] = (0.4, 1.0)):
        super().__init__(action_space)
        self.fraction_range = tuple(float(v) for v in fraction_range)
        if not 0.0 <= self.fraction_range[0] <= self.fraction_range[1] <= 1.0:
            raise ValueError(f"fraction_range={fraction_range}; expected 0 <= low <= high <= 1")

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.stop_fraction = float(self._rng.uniform(*self.fraction_range))


class WrongApproachPolicy(DressingExpert):
    """Approaches and follows the arm from the side, ``distance`` m off its axis (drawn per
    episode, in a random direction across the arm): the arm never passes through the opening."""

    def __init__(self, action_space: gym.spaces.Box | None = None, distance: tuple[float, float] = (0.09, 0.14)):
        super().__init__(action_space)
        self.distance = tuple(float(v) for v in distance)
        self._offset = np.zeros(3)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._offset = np.zeros(3)

    def offset(self, observation: np.ndarray) -> np.ndarray:
        axis = _unit(observation[L["hand_tip"]] - observation[L["wrist"]])
        direction = _unit(np.cross(axis, self._rng.normal(size=3)))
        return direction * self._rng.uniform(*self.distance)


class SnagPolicy(DressingExpert):
    """Aims the opening ``distance`` m off the arm's axis (random direction across it, drawn per
    episode): the rim and the sleeve catch on the hand, the force on the person rises."""

    def __init__(self, action_space: gym.spaces.Box | None = None, distance: tuple[float, float] = (0.03, 0.06)):
        super().__init__(action_space)
        self.distance = tuple(float(v) for v in distance)

    def offset(self, observation: np.ndarray) -> np.ndarray:
        axis = _unit(observation[L["hand_tip"]] - observation[L["wrist"]])
        direction = _unit(np.cross(axis, self._rng.normal(size=3)))
        return direction * self._rng.uniform(*self.distance)


class VariedDressingExpert(DressingExpert):
    """The expert in a style drawn per episode, for data with attribute variety (AlignDiff):
    its steps scaled by ``speed ~ U(speed)`` (slower or faster), and its path lifted by ``height
    ~ U(height)`` m (the opening carried higher above or lower along the arm; lower presses more
    on it).

    With ``restyle_every=(lo, hi)`` a new style is drawn every ``U{lo..hi}`` steps within the
    episode too. A style fixed per episode can be read off the states (one observation predicts
    the previous action), so a learner conditioned on the style can ignore the condition. On
    dressing, changes within the episode did not cure that: one step after a change the state
    shows the new speed (docs/RESULTS.md, AlignDiff). Default None: one style per episode.

    Args:
        action_space: the env's action space.
        speed: range of the step scale, each in (0, 1].
        height: range of the vertical shift of the path, m.
        restyle_every: range of the steps between style draws within an episode (both >= 1), or
            None for one style per episode.

    Raises:
        ValueError: a speed range outside (0, 1] or with low > high; a bad ``restyle_every``.
    """

    def __init__(self, action_space: gym.spaces.Box | None = None, speed: tuple[float, float] = (0.3, 1.0),
                 height: tuple[float, float] = (-0.02, 0.04), restyle_every: tuple[int, int] | None = None):
        super().__init__(action_space)
        self.speed, self.height = tuple(float(v) for v in speed), tuple(float(v) for v in height)
        if not 0.0 < self.speed[0] <= self.speed[1] <= 1.0 or self.height[0] > self.height[1]:
            raise ValueError(f"speed={speed} (within (0, 1]) and height={height} (low <= high) expected")
        self.restyle_every = None if restyle_every is None else tuple(int(v) for v in restyle_every)
        if self.restyle_every is not None and not (len(self.restyle_every) == 2 and 1 <= self.restyle_every[0] <= self.restyle_every[1]):
            raise ValueError(f"restyle_every={restyle_every}; expected None or (low, high) steps with 1 <= low <= high")
        self.style = (1.0, 0.0)
        self._step, self._next_style = 0, None

    def _draw_style(self) -> None:
        self.style = (float(self._rng.uniform(*self.speed)), float(self._rng.uniform(*self.height)))
        self._next_style = (None if self.restyle_every is None
                            else self._step + int(self._rng.integers(self.restyle_every[0], self.restyle_every[1] + 1)))

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._step = 0
        self._draw_style()

    def offset(self, observation: np.ndarray) -> np.ndarray:
        return np.array([0.0, 0.0, self.style[1]])

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self._next_style is not None and self._step >= self._next_style:
            self._draw_style()
            self._waypoints = None  # the path again at the new height; the waypoint reached so far is kept
        self._step += 1
        return (self.style[0] * super().act(observation)).astype(np.float32)
