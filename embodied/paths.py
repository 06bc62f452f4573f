"""Where things live in a run folder: one place instead of path strings in every module.

``<run>/`` holds ``.hydra/config.yaml`` (the resolved config), ``metrics.jsonl`` and
``tensorboard/`` (per-step metrics), ``labels/labels.sqlite`` (the label store) and the
labelers' own caches in ``labels/``, ``reward_model/`` (the Bradley-Terry checkpoint),
``checkpoints/<step>/`` and ``checkpoints/last``, ``videos/``, ``plots/``, ``metrics.json`` and
``report.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """The paths of run folder ``root``."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def hydra_config(self) -> Path:
        return self.root / ".hydra" / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def labels(self) -> Path:
        """Folder of the label store and the labelers' caches."""
        return self.root / "labels"

    @property
    def label_store(self) -> Path:
        return self.labels / "labels.sqlite"

    @property
    def reward_model(self) -> Path:
        return self.root / "reward_model"

    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def metrics(self) -> Path:
        """``metrics.json``: the final report's numbers."""
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def plots(self) -> Path:
        return self.root / "plots"


__all__ = ["RunPaths"]
