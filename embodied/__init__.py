"""embodied: robot learning from unlabeled data.

Entry points (Hydra, configured from ``conf/``): ``python -m embodied.train``,
``python -m embodied.collect``, ``python -m embodied.evaluate``. Importing this package picks a
headless OpenGL backend for MuJoCo first (see :mod:`envs.rendering`).
"""

import envs  # noqa: F401  (selects MUJOCO_GL before anything imports mujoco)

__version__ = "0.1.0"
