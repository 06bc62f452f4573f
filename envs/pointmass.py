"""PointMass: a planar MuJoCo reaching task, small enough for tests and quick end-to-end runs.

A 0.1 kg ball moves on a 0.6 m x 0.6 m table on two slide joints (x, y) with viscous damping,
pushed by two motors; it must reach a goal marker. Both positions are drawn uniformly per
episode. The task is fully observed and solved by a PD controller (:class:`PointMassExpert`),
so mixed-quality offline data is easy to make and a learned policy's quality is easy to read.

Spaces:
    observation: ``(6,) float32`` = ``[x, y, vx, vy, goal_x, goal_y]`` in m and m/s.
    action: ``Box(-1, 1, (2,), float32)``, force along x and y as a fraction of 0.3 N.

Control: 20 Hz (5 physics steps of 10 ms per action). Episodes are truncated at 100 steps (5 s).

Ground-truth reward (evaluation, oracle baselines and scripted teachers only): ``-distance`` to
the goal in m per step. ``info``: ``distance`` (m), ``success`` (distance < 0.02 m).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.rendering import OffscreenRendering

_XML = """
<mujoco model="pointmass">
  <option timestep="0.01" gravity="0 0 -9.81"/>
  <visual>
    <global offwidth="512" offheight="512"/>
    <headlight ambient="0.3 0.3 0.3" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".85 .85 .85" rgb2=".75 .75 .75"
             width="64" height="64"/>
    <material name="grid" texture="grid" texrepeat="6 6"/>
  </asset>
  <worldbody>
    <light pos="0 0 1.5" dir="0 0 -1" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <camera name="top" pos="0 0 0.9" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <geom name="table" type="plane" size="0.3 0.3 0.01" material="grid"/>
    <body name="ball" pos="0 0 0.02">
      <joint name="x" type="slide" axis="1 0 0" damping="1" range="-0.29 0.29" limited="true"/>
      <joint name="y" type="slide" axis="0 1 0" damping="1" range="-0.29 0.29" limited="true"/>
      <geom name="ball" type="sphere" size="0.02" mass="0.1" rgba="0.15 0.35 0.85 1"
            contype="0" conaffinity="0"/>
    </body>
    <site name="goal" pos="0 0 0.02" size="0.02" type="sphere" rgba="0.9 0.2 0.2 0.6"/>
  </worldbody>
  <actuator>
    <motor name="fx" joint="x" gear="0.3" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="fy" joint="y" gear="0.3" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""

#: Half side of the square in which start and goal positions are drawn, m.
SPAWN_HALF_SIDE = 0.22
#: Distance under which the episode counts as a success, m.
SUCCESS_RADIUS = 0.02
#: Physics steps per control step (10 ms each: 20 Hz control).
FRAME_SKIP = 5


class PointMassEnv(OffscreenRendering, gym.Env):
    """Planar point-mass reaching in MuJoCo; see the module docstring for spaces and units.

    Args:
        render_mode: ``None`` or ``"rgb_array"`` (``(height, width, 3) uint8`` from the top camera).
        width, height: rendered frame size in pixels (at most 512).

    Raises:
        ValueError: unknown ``render_mode`` or a frame size outside 1..512.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, width: int = 128, height: int = 128):
        self._setup_rendering(render_mode, width, height)
        self.model = mujoco.MjModel.from_xml_string(_XML)
        self.data = mujoco.MjData(self.model)
        self._goal_site = self.model.site("goal").id
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        start, goal = self.np_random.uniform(-SPAWN_HALF_SIDE, SPAWN_HALF_SIDE, size=(2, 2))
        self.data.qpos[:] = start
        self.model.site_pos[self._goal_site, :2] = goal
        mujoco.mj_forward(self.model, self.data)
        return self._observation(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 2 finite numbers in [-1, 1], got {action!r}")
        self.data.ctrl[:] = np.clip(action, -1.0, 1.0)
        mujoco.mj_step(self.model, self.data, nstep=FRAME_SKIP)
        info = self._info()
        reward = -info["distance"]
        return self._observation(), float(reward), False, False, info

    def render(self):
        return self._render_camera("top")

    # -- helpers -------------------------------------------------------------------------------
    @property
    def goal(self) -> np.ndarray:
        """Goal position ``(2,) float64`` in m."""
        return self.model.site_pos[self._goal_site, :2].copy()

    def _observation(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel, self.goal]).astype(np.float32)

    def _info(self) -> dict[str, Any]:
        distance = float(np.linalg.norm(self.data.qpos - self.goal))
        return {"distance": distance, "success": distance < SUCCESS_RADIUS}


class PointMassExpert:
    """PD controller to the goal: ``a = clip(k_p (g - p) - k_d v, low, high)``.

    Args:
        action_space: the env's action space, for the clipping bounds (default [-1, 1]).
        kp: proportional gain, 1/m (action units per metre of error).
        kd: damping gain, s/m (action units per m/s of velocity).
    """

    def __init__(self, action_space: gym.spaces.Box | None = None, kp: float = 12.0, kd: float = 3.0):
        self.kp, self.kd = float(kp), float(kd)
        self.low = -1.0 if action_space is None else action_space.low
        self.high = 1.0 if action_space is None else action_space.high

    def reset(self, seed: int | None = None) -> None:
        """Stateless; present for the policy interface."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action ``(2,) float32`` in the bounds for an observation ``(6,)`` (module layout)."""
        observation = np.asarray(observation, dtype=np.float64)
        position, velocity, goal = observation[0:2], observation[2:4], observation[4:6]
        action = self.kp * (goal - position) - self.kd * velocity
        return np.clip(action, self.low, self.high).astype(np.float32)
