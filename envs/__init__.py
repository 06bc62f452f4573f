"""Gymnasium environments, wrappers and scripted behaviour policies.

Importing this package first picks a headless OpenGL backend for MuJoCo (see
:mod:`envs.rendering`) and registers the environments with gymnasium under the ``embodied/``
namespace. Simulator modules are imported lazily, by :func:`make`.
"""

from envs.rendering import select_mujoco_gl

select_mujoco_gl()

from envs.registration import make, registered_ids  # noqa: E402

__all__ = ["make", "registered_ids", "select_mujoco_gl"]
