"""Seeding and device selection."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and CUDA).

    Environments are seeded separately, through ``env.reset(seed=...)``.

    Args:
        seed: integer in [0, 2**32).

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for batch sampling; its state goes in
        checkpoints so a resumed run draws the same batches.

    Raises:
        ValueError: ``seed`` outside [0, 2**32).
    """
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed={seed}; expected an integer in [0, 2**32)")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(device: str = "auto") -> torch.device:
    """Turn a device setting into a ``torch.device``.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Raises:
        ValueError: unknown setting, or CUDA asked for but not available.
    """
    setting = str(device).strip().lower()
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" or setting.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available here; use device=auto or cpu")
        return torch.device(setting)
    raise ValueError(f"device={device!r}; expected auto, cpu, cuda or cuda:N")
