"""One logger interface for every job: JSON lines, TensorBoard, or nothing.

Keys are namespaced (``train/actor_loss``, ``eval/success_rate``, ``label/accuracy``) and every
call names its step explicitly, so the same numbers land in ``metrics.jsonl``, TensorBoard and
the report.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def _scalar(key: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {key!r} is a tensor of shape {tuple(value.shape)}; expected a scalar")
        value = value.item()  # the only device sync: at logging time, not per update
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {key!r}={value!r} is not a number") from None


def _check(metrics: Mapping[str, Any], step: int) -> dict[str, float]:
    if int(step) != step or step < 0:
        raise ValueError(f"step={step!r}; expected a non-negative integer")
    out = {}
    for key, value in metrics.items():
        if "/" not in key or key.startswith("/") or key.endswith("/"):
            raise ValueError(f"metric key {key!r} must be namespaced, like 'train/{key}'")
        out[key] = _scalar(key, value)
    return out


class Logger:
    """Base logger: validates, then does nothing (the no-op logger for tests and notebooks)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        """Record scalar metrics at ``step``.

        Args:
            metrics: namespaced key -> number or one-element tensor.
            step: the step they belong to (>= 0).

        Returns:
            The metrics as python floats.

        Raises:
            ValueError: a key without a namespace, a non-scalar value, or a bad step.
        """
        return _check(metrics, step)

    def close(self) -> None:
        """Flush and release files."""


class JsonlLogger(Logger):
    """Appends ``{"step": s, "time": unix_s, key: value, ...}`` lines to ``metrics.jsonl``.

    Args:
        path: the file.
        resume_step: when resuming from a checkpoint at this step, lines with a larger step
            (written after that checkpoint by the run that died) are dropped first, atomically.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = []
            with open(self.path) as f:
                for line in f:
                    try:
                        if json.loads(line)["step"] <= resume_step:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a kill
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)
        self._file = open(self.path, "a")

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        values = _check(metrics, step)
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return values

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger(Logger):
    """Scalars to TensorBoard event files in ``log_dir``; a resumed run purges the steps after
    its checkpoint's (those of the checkpoint's own step were written before it and stay)."""

    def __init__(self, log_dir: str | Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        values = _check(metrics, step)
        for key, value in values.items():
            self._writer.add_scalar(key, value, global_step=int(step))
        return values

    def close(self) -> None:
        self._writer.close()


class MultiLogger(Logger):
    """Sends every call to several loggers."""

    def __init__(self, loggers: Sequence[Logger]):
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        values = _check(metrics, step)
        for logger in self.loggers:
            logger.log(values, step)
        return values

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


BACKENDS = ("jsonl", "tensorboard")


def build_logger(run_dir: str | Path, backends: Sequence[str] = BACKENDS, resume_step: int | None = None) -> Logger:
    """The logger of a run folder: ``metrics.jsonl`` and/or ``tensorboard/`` inside ``run_dir``.

    Args:
        run_dir: the run folder.
        backends: any of ``"jsonl"``, ``"tensorboard"``; empty gives the no-op logger.
        resume_step: step of the checkpoint a resumed run continues from (see the backends).

    Raises:
        ValueError: an unknown backend name.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown logger backends {unknown}; expected any of {BACKENDS}")
    run_dir = Path(run_dir)
    loggers: list[Logger] = []
    if "jsonl" in backends:
        loggers.append(JsonlLogger(run_dir / "metrics.jsonl", resume_step))
    if "tensorboard" in backends:
        loggers.append(TensorBoardLogger(run_dir / "tensorboard", resume_step))
    return MultiLogger(loggers)
