"""Registration of the project's environments with gymnasium."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

#: gymnasium id -> (entry point, max_episode_steps)
_ENVIRONMENTS: dict[str, tuple[str, int]] = {
    "embodied/PointMass-v0": ("envs.pointmass:PointMassEnv", 100),
    "embodied/Dressing-v0": ("envs.dressing.env:DressingEnv", 150),
}


def _register_all() -> None:
    for env_id, (entry_point, max_steps) in _ENVIRONMENTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


def registered_ids() -> list[str]:
    """The gymnasium ids this package registers, sorted."""
    return sorted(_ENVIRONMENTS)


def make(id: str, **kwargs: Any) -> gym.Env:  # noqa: A002 - gymnasium's own argument name
    """Create an environment by gymnasium id, registering ours first.

    Args:
        id: a gymnasium id, e.g. ``"embodied/PointMass-v0"``.
        **kwargs: passed to ``gymnasium.make`` (``render_mode``, ``width``, ``height``, ...).

    Raises:
        gymnasium.error.Error: the id is unknown; the message lists the ``embodied/`` ids.
    """
    _register_all()
    try:
        return gym.make(id, **kwargs)
    except (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound) as error:
        raise type(error)(
            f"{error}. Environments registered by this package: {registered_ids()}"
        ) from error


_register_all()
