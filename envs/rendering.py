"""Headless OpenGL backend selection for MuJoCo rendering.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so the choice has to be made
before that import. :func:`select_mujoco_gl` is called from ``envs/__init__.py``, which every
entry point imports before any simulator.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

#: Backends MuJoCo's Python bindings accept for ``MUJOCO_GL``.
SUPPORTED_GL_BACKENDS = ("egl", "osmesa", "glfw", "disabled")


def nvidia_gpu_visible() -> bool:
    """Whether an NVIDIA GPU is visible to this process.

    True when the NVIDIA kernel driver lists at least one GPU (``/proc/driver/nvidia/gpus``) or a
    ``/dev/nvidia0`` device node exists, unless ``CUDA_VISIBLE_DEVICES`` hides every device
    (set to ``""`` or ``"-1"``).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    return Path("/dev/nvidia0").exists()


def select_mujoco_gl() -> str:
    """Pick the MuJoCo OpenGL backend and export it, before ``mujoco`` is imported.

    Order: keep ``MUJOCO_GL`` when the user set it; else ``egl`` when an NVIDIA GPU is visible;
    else ``osmesa`` (software rendering, needs the system package ``libosmesa6``).
    ``PYOPENGL_PLATFORM`` is set to match unless already set.

    Returns:
        The backend name now in ``os.environ["MUJOCO_GL"]``.

    Raises:
        ValueError: ``MUJOCO_GL`` is set to a backend MuJoCo does not know.
    """
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if backend:
        if backend not in SUPPORTED_GL_BACKENDS:
            raise ValueError(
                f"MUJOCO_GL={backend!r} is not a MuJoCo rendering backend; "
                f"expected one of {SUPPORTED_GL_BACKENDS}"
            )
    else:
        backend = "egl" if nvidia_gpu_visible() else "osmesa"
        if "mujoco" in sys.modules:
            # Too late to change what mujoco chose; do not pretend otherwise.
            return os.environ.get("MUJOCO_GL", "glfw")
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    if backend == "osmesa":
        _load_triton_before_osmesa()
    return backend


def _load_triton_before_osmesa() -> None:
    """Import triton (if installed) before OSMesa's LLVM is loaded.

    PyOpenGL loads ``libOSMesa`` with ``RTLD_GLOBAL``, which brings Debian's ``libLLVM-15`` into
    the global symbol namespace when ``mujoco`` is imported. torch imports triton lazily (its
    optimisers touch ``torch._dynamo``); triton's own LLVM then binds to LLVM-15's symbols and
    the process dies with a segmentation fault. Loading triton first avoids it (0.3 s).
    """
    if "mujoco" in sys.modules or "triton" in sys.modules:
        return
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


# PyOpenGL logs at INFO that its optional C accelerator is missing; not worth a line per run.
logging.getLogger("OpenGL").setLevel(logging.WARNING)


class OffscreenRendering:
    """Offscreen ``rgb_array`` rendering for our MuJoCo envs (mixed in before ``gym.Env``): the
    render-mode and frame-size checks, a ``mujoco.Renderer`` built on the first frame (in
    ``_renderer``, where :class:`FastRender` finds its scene), and ``close``.

    The env sets ``self.model`` and ``self.data`` and calls :meth:`_setup_rendering` in its
    constructor; its ``render`` returns ``self._render_camera(name)``.
    """

    def _setup_rendering(self, render_mode: str | None, width: int, height: int) -> None:
        """Check and keep the render settings.

        Raises:
            ValueError: ``render_mode`` other than None or ``"rgb_array"``; a frame size outside
                1..512 px.
        """
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}; expected None or 'rgb_array'")
        if not (0 < width <= 512 and 0 < height <= 512):
            raise ValueError(f"frame size {width}x{height} px; expected 1..512 on each side")
        self.render_mode, self.width, self.height = render_mode, int(width), int(height)
        self._renderer = None

    def _render_camera(self, camera: str) -> Any:
        """``(height, width, 3) uint8`` from ``camera``, or None without ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            import mujoco

            self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        """Release the renderer (the env can render again afterwards)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _find_scene(env: Any) -> Any:
    """The ``MjvScene`` an env renders with, once its renderer exists (else ``None``).

    Knows our envs (a ``mujoco.Renderer`` in ``_renderer``) and gymnasium's MuJoCo envs such as
    Meta-World (``mujoco_renderer`` holding offscreen viewers with ``scn``).
    """
    renderer = getattr(env, "_renderer", None)
    if renderer is not None and hasattr(renderer, "scene"):
        return renderer.scene
    mujoco_renderer = getattr(env, "mujoco_renderer", None)
    if mujoco_renderer is not None:
        viewer = getattr(mujoco_renderer, "viewer", None) or next(iter(getattr(mujoco_renderer, "_viewers", {}).values()), None)
        if viewer is not None:
            return viewer.scn
    return None


class FastRender(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Cheaper offscreen frames: no shadows, no reflections, no multisampling.

    With OSMesa (software OpenGL) these three effects cost most of a frame; for a fixed camera
    on a lit scene the image stays faithful (same geometry, colours and lighting; hard shadow
    edges and floor reflections are gone). ``benchmarks/bench_envs.py`` measures both the time
    and the pixel difference against the default renderer.

    Works for our MuJoCo envs and gymnasium MuJoCo envs (Meta-World). Multisampling is turned off
    through ``model.vis.quality.offsamples = 0``, which must happen before the first frame, so
    wrap the env before rendering it.

    Raises:
        TypeError: the wrapped env has no MuJoCo ``model``.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        model = getattr(env.unwrapped, "model", None)
        if model is None or not hasattr(model, "vis"):
            raise TypeError(f"FastRender needs a MuJoCo env with a model; got {type(env.unwrapped).__name__}")
        model.vis.quality.offsamples = 0
        self._scene_configured = False

    def render(self):
        frame = self.env.render()
        if not self._scene_configured and frame is not None:
            scene = _find_scene(self.env.unwrapped)
            if scene is not None:
                import mujoco

                scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
                scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
                self._scene_configured = True
                frame = self.env.render()
        return frame


class FrameInInfo(gym.Wrapper):
    """Puts the frame rendered after each ``reset`` and ``step`` into ``info["frame"]``
    (``(H, W, 3) uint8``), so a vector env that resets a finished copy within the step still hands
    over the frame of the episode's last state (in ``info["final_info"]["frame"]``). The env must
    render ``rgb_array``.

    Raises:
        ValueError: the env's ``render_mode`` is not ``rgb_array``.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"FrameInInfo needs render_mode='rgb_array', the env has {env.render_mode!r}")

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return observation, {**info, "frame": np.asarray(self.env.render(), np.uint8)}

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated, truncated, {**info, "frame": np.asarray(self.env.render(), np.uint8)}
