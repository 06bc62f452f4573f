"""Learners and their networks, one folder per algorithm (``config.py`` + ``model.py``).

:func:`make_learner` builds a learner from its config object and :func:`config_from_dict`
rebuilds a config saved in a checkpoint; algorithm modules are imported only when used, so
adding a learner touches its own folder and one line of :data:`LEARNERS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

#: algorithm name -> ("module:ConfigClass", "module:LearnerClass")
LEARNERS: dict[str, tuple[str, str]] = {
    "bc": ("policies.bc.config:BCConfig", "policies.bc.model:BCLearner"),
    "diffuser": ("policies.diffuser.config:DiffuserConfig", "policies.diffuser.model:DiffuserLearner"),
    "fb": ("policies.fb.config:FBConfig", "policies.fb.model:FBLearner"),
    "iql": ("policies.iql.config:IQLConfig", "policies.iql.model:IQLLearner"),
    "iql_safe": ("policies.iql_safe.config:IQLSafeConfig", "policies.iql_safe.model:IQLSafeLearner"),
    "oer": ("policies.oer.config:OERConfig", "policies.oer.model:OERLearner"),
    "sac": ("policies.sac.config:SACConfig", "policies.sac.model:SACLearner"),
}


def _load(name: str, which: int) -> type:
    if name not in LEARNERS:
        raise KeyError(f"unknown learner {name!r}; available: {sorted(LEARNERS)}")
    module_name, class_name = LEARNERS[name][which].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_learner(config: Any, observation_dim: int, action_dim: int, device: str = "cpu"):
    """Build the learner that ``config`` (e.g. :class:`policies.bc.BCConfig`) describes.

    Args:
        config: an algorithm config dataclass with a ``name`` field.
        observation_dim: D, flat observation size.
        action_dim: A, action size (actions in [-1, 1]).
        device: torch device.

    Raises:
        KeyError: no learner is registered under ``config.name``.
    """
    return _load(getattr(config, "name", None), 1)(config, observation_dim, action_dim).to(device)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A learner config as a json-able dict (``name`` included)."""
    return dataclasses.asdict(config)


def config_from_dict(name: str, values: dict[str, Any]) -> Any:
    """Rebuild the config dataclass of learner ``name`` from :func:`config_to_dict` output.

    A field missing from ``values`` (a checkpoint older than the field) takes the class's
    ``legacy_defaults`` entry when it has one (what such checkpoints were trained with), else
    the field's default.

    Raises:
        KeyError: unknown learner name.
        TypeError: a field this version of the config does not have.
    """
    cls = _load(name, 0)
    init_fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - init_fields - {"name"})
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}; it has {sorted(init_fields)}")
    values = {**getattr(cls, "legacy_defaults", {}), **values}
    return cls(**{k: v for k, v in values.items() if k in init_fields})


__all__ = ["LEARNERS", "config_from_dict", "config_to_dict", "make_learner"]
