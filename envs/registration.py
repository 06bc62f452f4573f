"""Registration of the project's environments with gymnasium."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.rendering import FastRender

#: gymnasium id -> (entry point, max_episode_steps (None: the env truncates by itself), kwargs)
_ENVIRONMENTS: dict[str, tuple[str, int | None, dict[str, Any]]] = {
    "embodied/PointMass-v0": ("envs.pointmass:PointMassEnv", 100, {}),
    # v0: the gripper is kinematic (a mocap body): a snagged sleeve's force is the contact solver's
    # and not timestep-converged. Kept to reproduce results made with it.
    "embodied/Dressing-v0": ("envs.dressing.env:DressingEnv", 150, {}),
    # v1: an impedance-controlled gripper (300 N/m, 1 kg, critically damped) and 5 physics steps
    # per control step: the force on the person rises with the stretch, converged in the timestep.
    "embodied/Dressing-v1": ("envs.dressing.env:DressingEnv", 150, {"substeps": 5, "gripper_stiffness": 300.0}),
    "embodied/MetaWorld-v0": ("envs.metaworld_adapter:MetaWorldEnv", None, {}),
    # gymnasium-robotics' PointMaze, flat observation; its own time limit (Medium: 600 steps).
    "embodied/PointMaze-v0": ("envs.pointmaze:PointMazeEnv", None, {"maze": "medium"}),
}


def _register_all() -> None:
    for env_id, (entry_point, max_steps, kwargs) in _ENVIRONMENTS.items():
        if env_id not in gym.registry:
            # Meta-World's spaces trip gymnasium's passive checker (equal low/high bounds).
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps, kwargs=kwargs,
                         disable_env_checker=env_id.startswith("embodied/MetaWorld"))


def registered_ids() -> list[str]:
    """The gymnasium ids this package registers, sorted."""
    return sorted(_ENVIRONMENTS)


def make(id: str, fast_render: bool = True, **kwargs: Any) -> gym.Env:  # noqa: A002 - gymnasium's name
    """Create an environment by gymnasium id, registering ours first.

    Args:
        id: a gymnasium id, e.g. ``"embodied/Dressing-v1"``.
        fast_render: with ``render_mode="rgb_array"``, wrap in :class:`envs.rendering.FastRender`
            (no shadows, reflections or multisampling).
        **kwargs: passed to ``gymnasium.make`` (``render_mode``, ``width``, ``height``, ...).

    Raises:
        gymnasium.error.Error: the id is unknown; the message lists the ``embodied/`` ids.
    """
    _register_all()
    try:
        env = gym.make(id, **kwargs)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound) as error:
        raise type(error)(
            f"{error}. Environments registered by this package: {registered_ids()}"
        ) from error
    if fast_render and kwargs.get("render_mode") == "rgb_array":
        env = FastRender(env)
    return env


_register_all()
