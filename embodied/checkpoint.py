"""Checkpoints as folders, written atomically, with a ``last`` pointer.

Layout of ``<run>/checkpoints/``::

    00001000/                  one folder per step (8 digits), complete or absent
        weights.safetensors    model weights (flat tensor names, e.g. ``actor.0.weight``)
        state.safetensors      tensors found inside ``state`` (optimiser moments, RNG states)
        state.json             {"format_version", "step", "state": json tree with tensor refs}
    last -> 00001000           symbolic link, replaced atomically after each save

A save writes everything into a hidden ``.tmp-*`` folder, flushes it to disk, then renames it
to its step name; a process killed at any moment leaves either the complete folder or a
``.tmp-*`` folder that no reader ever picks. ``last`` is moved only after the rename. No pickle
is written or read: loading runs no code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from embodied.paths import RunPaths

#: Version of the folder layout above; bumped when it changes incompatibly.
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^\d{8,}$")
_TENSOR_REF = "__tensor__"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete, or of an unknown format."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the step folder it was read from.
        step: training step at which it was written.
        weights: flat name -> tensor (CPU).
        state: the json tree given to :func:`save_checkpoint`, tensors restored in place.
    """

    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def _split_tensors(tree: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace every tensor in a json-like tree by a reference; collect the tensors."""
    if isinstance(tree, torch.Tensor):
        key = prefix or "root"
        tensors[key] = tree.detach().cpu().contiguous()
        return {_TENSOR_REF: key}
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint state keys must be str or int, got {k!r} at {prefix!r}")
            # JSON keys are strings: remember integer keys (torch optimiser state uses them).
            name = f"{k}" if isinstance(k, str) else f"__int__{k}"
            out[name] = _split_tensors(v, tensors, f"{prefix}/{name}" if prefix else name)
        return out
    if isinstance(tree, (list, tuple)):
        return [_split_tensors(v, tensors, f"{prefix}/{i}") for i, v in enumerate(tree)]
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} in a checkpoint (at {prefix!r})")


def _join_tensors(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {_TENSOR_REF}:
            return tensors[tree[_TENSOR_REF]]
        return {
            (int(k[len("__int__"):]) if k.startswith("__int__") else k): _join_tensors(v, tensors)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [_join_tensors(v, tensors) for v in tree]
    return tree


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    """Folder name of a step: 8 zero-padded digits, e.g. ``00001000``."""
    return f"{int(step):08d}"


def save_checkpoint(
    root: str | Path,
    step: int,
    weights: Mapping[str, torch.Tensor],
    state: Mapping[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write a checkpoint folder for ``step`` atomically and point ``last`` at it.

    Args:
        root: the ``checkpoints/`` folder (created if missing).
        step: training step, >= 0.
        weights: flat name -> tensor, e.g. ``module.state_dict()``.
        state: a json-like tree (dict/list/str/int/float/bool/None) that may contain tensors,
            e.g. ``{"optimizer": opt.state_dict(), "rng": generator.get_state()}``.
        keep_last: if set, delete all but the newest ``keep_last`` step folders afterwards.

    Returns:
        The path of the new step folder.

    Raises:
        TypeError: ``state`` holds something that is neither json nor a tensor.
        ValueError: negative ``step`` or ``keep_last`` < 1.
    """
    if step < 0:
        raise ValueError(f"step={step}; expected >= 0")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last={keep_last}; expected >= 1 or None")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a writer that was killed; never complete
        shutil.rmtree(stale, ignore_errors=True)

    state_tensors: dict[str, torch.Tensor] = {}
    tree = _split_tensors(dict(state or {}), state_tensors, "")
    weights = {k: v.detach().cpu().contiguous() for k, v in weights.items()}

    tmp = root / f".tmp-{step_dir_name(step)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    save_file(weights, str(tmp / "weights.safetensors"))
    save_file(state_tensors, str(tmp / "state.safetensors"))
    with open(tmp / "state.json", "w") as f:
        json.dump({"format_version": FORMAT_VERSION, "step": int(step), "state": tree}, f)
    for name in ("weights.safetensors", "state.safetensors", "state.json"):
        _fsync_file(tmp / name)
    _fsync_dir(tmp)

    final = root / step_dir_name(step)
    if final.exists():  # the same step saved again (e.g. after a resume): replace it
        trash = root / f".tmp-old-{uuid.uuid4().hex[:8]}"
        final.rename(trash)
        tmp.rename(final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(final)
    _point_last(root, final.name)
    _fsync_dir(root)

    if keep_last is not None:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _point_last(root: Path, target: str) -> None:
    link = root / f".tmp-last-{uuid.uuid4().hex[:8]}"
    os.symlink(target, link)
    os.replace(link, root / "last")


_FILES = ("weights.safetensors", "state.safetensors", "state.json")


class CheckpointWarning(UserWarning):
    """A checkpoint other than the one asked for (or pointed to) is used."""


def _missing_files(path: Path) -> list[str]:
    return [n for n in _FILES if not (path / n).is_file()]


def _is_complete(path: Path) -> bool:
    return not _missing_files(path)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete step folders under ``root``, oldest first (``.tmp-*`` folders are never listed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    steps = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and _STEP_DIR.match(p.name)]
    return sorted((p for p in steps if _is_complete(p)), key=lambda p: int(p.name))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder ``last`` points to; if it is missing or incomplete, the newest complete one.

    Returns ``None`` when ``root`` holds no complete checkpoint.
    """
    root = Path(root)
    last = root / "last"
    found = list_checkpoints(root)
    if last.is_symlink() or last.is_dir():
        target = last.resolve()
        if target.is_dir() and _STEP_DIR.match(target.name) and _is_complete(target):
            return target
        if found:
            problem = f"lacks {', '.join(_missing_files(target))}" if target.is_dir() else "does not exist"
            warnings.warn(f"{last} points to {target.name}, which {problem}; using {found[-1].name}, the newest "
                          "complete checkpoint", CheckpointWarning, stacklevel=2)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a step folder, a ``checkpoints/`` folder or a run folder; return the step folder.

    Raises:
        CheckpointError: nothing complete is found there.
    """
    path = Path(path).expanduser()
    if path.is_dir() and _is_complete(path):
        return path.resolve()
    if path.is_dir() and _STEP_DIR.match(path.name) and not path.is_symlink():
        raise CheckpointError(f"checkpoint {path} is incomplete: it lacks {', '.join(_missing_files(path))}; "
                              f"load another step of {path.parent} or the folder itself (its newest complete step)")
    for root in (path, RunPaths(path).checkpoints):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(
        f"no complete checkpoint at {path}: expected a step folder with weights.safetensors, "
        "state.safetensors and state.json, or a run/checkpoints folder that holds one"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint (see :func:`resolve_checkpoint` for what ``path`` may be).

    Raises:
        CheckpointError: missing, incomplete, unreadable, a ``format_version`` or ``step`` that is
            not a valid integer, or written by a newer format version.
    """
    step_dir = resolve_checkpoint(path)
    try:
        with open(step_dir / "state.json") as f:
            meta = json.load(f)
        weights = load_file(str(step_dir / "weights.safetensors"), device=str(map_location))
        state_tensors = load_file(str(step_dir / "state.safetensors"), device=str(map_location))
    except (OSError, ValueError, SafetensorError) as error:  # e.g. a truncated file
        raise CheckpointError(f"checkpoint {step_dir} cannot be read: {error}") from error
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"checkpoint {step_dir}/state.json has format_version={version!r}; expected an integer from 1 to "
            f"{FORMAT_VERSION}: the file was not written by embodied, or was edited"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {step_dir} has format_version={version!r}; this code reads versions "
            f"<= {FORMAT_VERSION}: upgrade embodied to load it"
        )
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {step_dir}/state.json has step={step!r}; expected an integer >= 0")
    state = _join_tensors(meta.get("state", {}), state_tensors)
    return Checkpoint(path=step_dir, step=step, weights=weights, state=state)
