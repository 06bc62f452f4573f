"""Meta-World v3 tasks behind the project's conventions.

- any v3 task by name (``task="drawer-open-v3"``), through ``gym.make("Meta-World/MT1", ...)``;
- ``reset(seed=s)`` is reproducible: the same seed gives the same task variant (object and goal
  positions) and trajectory (Meta-World's own task sampler draws before it is reseeded);
- observations ``(39,) float32``; actions ``Box(-1, 1, (4,))``; episodes truncate at 500 steps;
- ``info["success"]`` a bool (the episode succeeded if it was ever true);
- frames upright: cameras whose image-up axis points down in the world (Meta-World's ``corner``
  cameras) are rotated by 180 degrees;
- the scripted experts of ``metaworld.policies`` behind the behaviour-policy interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

#: Cameras of the v3 scenes.
CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")


def task_names() -> list[str]:
    """All Meta-World v3 task names (the 50 of MT50), sorted."""
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(ENV_POLICY_MAP)


def camera_is_upside_down(model: Any, data: Any, camera: str) -> bool:
    """Whether ``camera``'s image-up axis points down in the world (its frames need a 180 degree
    turn to be upright). MuJoCo cameras look along their -z axis with +y as image up."""
    import mujoco

    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam < 0:
        raise ValueError(f"camera {camera!r} not in the scene; expected one of {CAMERAS}")
    up = data.cam_xmat[cam].reshape(3, 3)[:, 1]
    return bool(up[2] < 0)


class MetaWorldEnv(gym.Wrapper):
    """A Meta-World v3 task (see the module docstring).

    Args:
        task: v3 task name, e.g. ``"drawer-open-v3"``.
        render_mode: ``None`` or ``"rgb_array"``.
        camera: one of :data:`CAMERAS`. Default ``"corner2"``.
        width, height: frame size, px.
        seed: seed of the task sampler before the first ``reset``.

    Raises:
        ValueError: unknown task or camera.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, task: str = "drawer-open-v3", render_mode: str | None = None, camera: str = "corner2",
                 width: int = 128, height: int = 128, seed: int = 0):
        import metaworld  # noqa: F401  (registers the Meta-World namespace)

        if task not in task_names():
            raise ValueError(f"unknown Meta-World task {task!r}; v3 tasks are: {', '.join(task_names())}")
        if camera not in CAMERAS:
            raise ValueError(f"camera={camera!r}; expected one of {CAMERAS}")
        env = gym.make("Meta-World/MT1", env_name=task, seed=seed, render_mode=render_mode, camera_name=camera,
                       width=width, height=height, disable_env_checker=True)
        super().__init__(env)
        self.task, self.camera = task, camera
        self._kwargs = {"task": task, "render_mode": render_mode, "camera": camera, "width": width, "height": height,
                        "seed": seed}
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=env.action_space.shape, dtype=np.float32)
        base = env.unwrapped
        self._flip = camera_is_upside_down(base.model, base.data, camera)

    @property
    def spec(self) -> gym.envs.registration.EnvSpec | None:
        """``embodied/MetaWorld-v0`` with this env's arguments (what Minari records to recreate
        it), rather than Meta-World's inner wrapper chain, which cannot be recreated."""
        if "embodied/MetaWorld-v0" not in gym.registry:
            return None
        return dataclasses.replace(gym.spec("embodied/MetaWorld-v0"), kwargs=dict(self._kwargs))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.env.unwrapped.seed(int(seed))  # the task sampler draws from this RNG on reset
        observation, info = self.env.reset(options=options)
        return observation.astype(np.float32), {**info, "success": False}

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float64))
        info = {**info, "success": bool(info.get("success", 0.0))}
        return observation.astype(np.float32), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        frame = self.env.render()
        if frame is None:
            return None
        return np.ascontiguousarray(frame[::-1, ::-1]) if self._flip else frame


class MetaWorldExpert:
    """The scripted expert of a Meta-World task (``metaworld.policies``), as a behaviour policy.

    Args:
        action_space: bounds for the returned action (default [-1, 1]).
        task: v3 task name.

    Raises:
        ValueError: no scripted expert for ``task``.
    """

    def __init__(self, action_space: gym.spaces.Box | None = None, task: str = "drawer-open-v3"):
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise ValueError(f"no scripted Meta-World expert for {task!r}")
        self.policy = ENV_POLICY_MAP[task]()
        self.low = -1.0 if action_space is None else action_space.low
        self.high = 1.0 if action_space is None else action_space.high

    def reset(self, seed: int | None = None) -> None:
        """The scripted experts are stateless."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """Action ``(4,) float32`` for an observation ``(39,)``."""
        action = self.policy.get_action(np.asarray(observation, dtype=np.float64))
        return np.clip(action, self.low, self.high).astype(np.float32)


def suite_tasks(suite: str) -> list[str]:
    """The task names of a Meta-World suite: ``mt1:<task>``, ``mt10``, ``mt50`` or
    ``mt50_minus_mt10`` (the 40 MT50 tasks outside MT10: where settings chosen on MT10 are
    reported), in benchmark order.

    Raises:
        ValueError: unknown suite or task.
    """
    from metaworld import env_dict

    name = suite.lower()
    if name == "mt10":
        return list(env_dict.MT10_V3)
    if name == "mt50":
        return list(env_dict.MT50_V3)
    if name == "mt50_minus_mt10":
        return [task for task in env_dict.MT50_V3 if task not in env_dict.MT10_V3]
    if name.startswith("mt1:"):
        task = suite.split(":", 1)[1]
        if task not in task_names():
            raise ValueError(f"unknown Meta-World task {task!r} in suite {suite!r}")
        return [task]
    raise ValueError(f"unknown Meta-World suite {suite!r}; expected mt10, mt50, mt50_minus_mt10 or mt1:<task>")


def official_eval_env(task: str, seed: int) -> gym.vector.SyncVectorEnv:
    """The evaluation env of one task exactly as Meta-World's MT benchmarks build it.

    ``metaworld.make_mt_envs``: the task's 50 goal variants drawn with ``seed``, a new variant on
    every reset, ``TimeLimit`` 500, ``AutoTerminateOnSuccessWrapper``, ``RecordEpisodeStatistics``
    and the goal in the observation; one env in a synchronous vector env that resets in the same
    step (``SAME_STEP``), as ``gym.make_vec("Meta-World/MT10")`` holds one env per task.
    Observations ``(1, 39) float64``, actions ``(1, 4)`` in [-1, 1].

    Raises:
        ValueError: unknown task.
    """
    import metaworld

    if task not in task_names():
        raise ValueError(f"unknown Meta-World task {task!r}")
    return gym.vector.SyncVectorEnv([lambda: metaworld.make_mt_envs(task, seed=int(seed))],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class _OfficialAgent:
    """``metaworld.evaluation.Agent`` around a one-observation policy; counts finished episodes."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray], on_episode_end: Callable[[int], None] | None):
        self.act, self.on_episode_end, self.started = act, on_episode_end, False

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self.act(o.astype(np.float32)), dtype=np.float64) for o in observations])

    def reset(self, env_mask: np.ndarray) -> None:
        if not self.started:  # the first call marks every env at the start, not an episode's end
            self.started = True
        elif self.on_episode_end is not None and env_mask.any():
            self.on_episode_end(int(env_mask.sum()))


def official_evaluation(act: Callable[[np.ndarray], np.ndarray], task: str, episodes: int = 50, seed: int = 0,
                        on_episode_end: Callable[[int], None] | None = None) -> dict[str, float]:
    """Evaluate a policy on one task with Meta-World's own protocol (``metaworld.evaluation``).

    The episode ends on success (the protocol turns ``terminate_on_success`` on) or after 500
    steps; the success rate counts episodes that ended in success over the first ``episodes``.
    MT suites use 50 episodes a task.

    Args:
        act: ``observation (39,) float32 -> action (4,)`` in [-1, 1].
        task: v3 task name.
        episodes: episodes to count (50 in the MT protocol).
        seed: seed of the evaluation env (goal variants and resets).
        on_episode_end: called with the number of episodes that just ended (progress bars).

    Returns:
        ``success_rate``, ``return_mean``, ``return_std`` (returns of Meta-World's v2 reward, to
        the end of each episode) and ``episodes``.

    Raises:
        ValueError: unknown task, or ``episodes < 1``.
    """
    from metaworld.evaluation import evaluation

    if episodes < 1:
        raise ValueError(f"episodes={episodes}; expected >= 1")
    envs = official_eval_env(task, seed)
    try:
        success, _, _, returns = evaluation(_OfficialAgent(act, on_episode_end), envs, num_episodes=episodes)
    finally:
        envs.close()
    values = np.asarray(returns[task], dtype=np.float64)
    return {"success_rate": float(success), "return_mean": float(values.mean()),
            "return_std": float(values.std()), "episodes": float(len(values))}


def hand_at_goal(observation: np.ndarray) -> np.ndarray:
    """The observation ``(39,)`` with the hand (entries 0-2, and their copy in the previous frame,
    18-20) on the goal (36-38): the state in which a reach task's goal is reached. Zero-shot goal
    prompts on reach tasks use it: ``+task=metaworld task.env.task=reach-v3
    task.goal_observation=envs.metaworld_adapter.hand_at_goal``."""
    goal_state = np.array(observation, dtype=np.float32, copy=True)
    goal_state[0:3] = goal_state[36:39]
    goal_state[18:21] = goal_state[36:39]
    return goal_state
