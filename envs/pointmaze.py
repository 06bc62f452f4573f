"""Point-mass navigation in a maze with walls: gymnasium-robotics' PointMaze (MuJoCo) behind a
flat observation, and a scripted expert that plans a path through the maze.

Observation ``(6,) float32``: ``x, y`` (m), ``vx, vy`` (m/s) of the ball and the goal ``gx, gy``
(m). Action ``(2,)`` in [-1, 1]: the force on the ball along x and y. ``info``: ``success`` (the
ball within 0.45 m of the goal, gymnasium-robotics' rule) and ``distance`` (m). The episode
ends on success (``continuing_task=False``) or at the maze's time limit (UMaze 300, Medium 600,
Large 800 steps). Goals and starts are drawn among the free cells at each reset.

A goal observation for goal-conditioned prompts is ``goal_observation(g)``: the ball at rest on
the goal, ``[gx, gy, 0, 0, gx, gy]``.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

#: maze name -> (gymnasium-robotics id, map constant in gymnasium_robotics.envs.maze.maps)
MAZES: dict[str, tuple[str, str]] = {
    "umaze": ("PointMaze_UMaze-v3", "U_MAZE"),
    "medium": ("PointMaze_Medium-v3", "MEDIUM_MAZE"),
    "large": ("PointMaze_Large-v3", "LARGE_MAZE"),
}


def maze_map(maze: str) -> np.ndarray:
    """The maze's cells ``(rows, cols) int``: 1 wall, 0 free.

    Raises:
        ValueError: an unknown maze name.
    """
    if maze not in MAZES:
        raise ValueError(f"maze={maze!r}; expected one of {sorted(MAZES)}")
    from gymnasium_robotics.envs.maze import maps

    return np.asarray([[1 if cell == 1 else 0 for cell in row] for row in getattr(maps, MAZES[maze][1])], dtype=np.int64)


def cell_center(cells: np.ndarray, row: int, col: int) -> np.ndarray:
    """Centre ``(x, y)`` (m) of cell ``(row, col)`` (gymnasium-robotics' convention, 1 m cells)."""
    rows, cols = cells.shape
    return np.array([col + 0.5 - cols / 2.0, rows / 2.0 - (row + 0.5)])


def cell_of(cells: np.ndarray, xy: np.ndarray) -> tuple[int, int]:
    """The cell ``(row, col)`` that holds position ``xy`` (m)."""
    rows, cols = cells.shape
    return int(math.floor(rows / 2.0 - xy[1])), int(math.floor(xy[0] + cols / 2.0))


def goal_observation(goal: np.ndarray) -> np.ndarray:
    """The observation of the ball at rest on ``goal (2,)``: ``[gx, gy, 0, 0, gx, gy]`` float32."""
    goal = np.asarray(goal, dtype=np.float32)
    return np.concatenate([goal, np.zeros(2, np.float32), goal])


def goal_observation_of(observation: np.ndarray) -> np.ndarray:
    """The observation in which ``observation``'s goal is reached (``task.goal_observation``)."""
    return goal_observation(np.asarray(observation)[4:6])


class PointMazeEnv(gym.Wrapper):
    """gymnasium-robotics' PointMaze with the flat observation of the module docstring.

    Args:
        maze: ``umaze``, ``medium`` or ``large``.
        render_mode: ``None`` or ``rgb_array``.
        width, height: rendered frame size (pixels).
        camera: the free camera's settings (MuJoCo ``mjvCamera`` fields: ``distance`` m,
            ``elevation`` and ``azimuth`` deg, ``lookat`` m) over gymnasium-robotics' default,
            a top-down view (elevation -90) from 8.8 m (Medium). None: that default.

    Raises:
        ValueError: an unknown maze or camera field.
    """

    CAMERA_FIELDS = ("distance", "elevation", "azimuth", "lookat")

    def __init__(self, maze: str = "medium", render_mode: str | None = None, width: int = 480, height: int = 480,
                 camera: dict[str, Any] | None = None):
        if maze not in MAZES:
            raise ValueError(f"maze={maze!r}; expected one of {sorted(MAZES)}")
        unknown = sorted(set(camera or {}) - set(self.CAMERA_FIELDS))
        if unknown:
            raise ValueError(f"camera field {unknown[0]!r}; expected some of {self.CAMERA_FIELDS}")
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        kwargs: dict[str, Any] = {"continuing_task": False}
        if render_mode is not None:
            kwargs.update(render_mode=render_mode, width=width, height=height)
        super().__init__(gym.make(MAZES[maze][0], **kwargs))
        self.maze = maze
        # gymnasium-robotics writes the maze's MJCF beside the system's temporary folder and never
        # deletes it (one file per env); MuJoCo has loaded it by now
        Path(self.env.unwrapped.tmp_xml_file_path).unlink(missing_ok=True)
        if camera:  # read by the renderer when it makes its viewer, at the first render
            renderer = self.env.unwrapped.point_env.mujoco_renderer
            renderer.default_cam_config = {**(renderer.default_cam_config or {}), **dict(camera)}
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    @staticmethod
    def _flat(observation: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        flat = np.concatenate([observation["observation"], observation["desired_goal"]]).astype(np.float32)
        return flat, float(np.linalg.norm(observation["achieved_goal"] - observation["desired_goal"]))

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        flat, distance = self._flat(observation)
        return flat, {"success": bool(info.get("success", False)), "distance": distance}

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float64))
        flat, distance = self._flat(observation)
        return flat, float(reward), bool(terminated), bool(truncated), {"success": bool(info.get("success", False)),
                                                                        "distance": distance}


class PointMazeExpert:
    """Plans the shortest path of free cells (breadth-first search) from the ball's cell to the
    goal's, and steers to the centre of the next cell on it (the goal itself in the goal's cell)
    with a PD law ``a = clip(k_p (w - p) - k_d v, -1, 1)``.

    Args:
        action_space: the env's action space (bounds).
        maze: the maze's name (its map).
        kp: 1/m; kd: s/m.
    """

    def __init__(self, action_space: gym.spaces.Box | None = None, maze: str = "medium", kp: float = 10.0,
                 kd: float = 1.0):
        self.cells = maze_map(maze)
        self.kp, self.kd = float(kp), float(kd)
        self.low = -1.0 if action_space is None else action_space.low
        self.high = 1.0 if action_space is None else action_space.high

    def reset(self, seed: int | None = None) -> None:
        """Stateless; present for the policy interface."""

    def next_waypoint(self, position: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The point to steer to (m): the next cell's centre on the shortest path, or the goal."""
        start, target = cell_of(self.cells, position), cell_of(self.cells, goal)
        if start == target:
            return goal
        rows, cols = self.cells.shape
        previous = {target: None}
        queue = deque([target])
        while queue:  # search from the goal, so each cell knows its next step towards it
            cell = queue.popleft()
            if cell == start:
                break
            r, c = cell
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < rows and 0 <= nc < cols and not self.cells[nr, nc] and (nr, nc) not in previous:
                    previous[(nr, nc)] = cell
                    queue.append((nr, nc))
        step = previous.get(start)
        if step is None:  # outside the free cells (numerical edge): head for the goal
            return goal
        return goal if step == target else cell_center(self.cells, *step)

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action ``(2,) float32`` for an observation ``(6,)`` (module layout)."""
        observation = np.asarray(observation, dtype=np.float64)
        position, velocity, goal = observation[0:2], observation[2:4], observation[4:6]
        waypoint = self.next_waypoint(position, goal)
        return np.clip(self.kp * (waypoint - position) - self.kd * velocity, self.low, self.high).astype(np.float32)


__all__ = ["MAZES", "PointMazeEnv", "PointMazeExpert", "cell_center", "cell_of", "goal_observation", "goal_observation_of",
           "maze_map"]
