"""Where things live in a run folder: one place instead of path strings in every module.

``<run>/`` holds ``.hydra/config.yaml`` (the resolved config), ``metrics.jsonl`` and
``tensorboard/`` (per-step metrics), ``labels/labels.sqlite`` (the label store) and the
labelers' own caches in ``labels/``, ``reward_model/`` (the Bradley-Terry checkpoint),
``checkpoints/<step>/`` and ``checkpoints/last``, ``videos/``, ``plots/``, ``metrics.json`` and
``report.md``.
"""

from __future__ import annotations

from pathlib import Path


class RunPaths:
    """The paths of run folder ``root`` (attributes, all :class:`pathlib.Path`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hydra_config = self.root / ".hydra" / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.labels = self.root / "labels"  # the label store and the labelers' caches
        self.label_store = self.labels / "labels.sqlite"
        self.reward_model = self.root / "reward_model"
        self.metrics_jsonl = self.root / "metrics.jsonl"
        self.tensorboard = self.root / "tensorboard"
        self.metrics = self.root / "metrics.json"  # the final report's numbers
        self.report = self.root / "report.md"
        self.videos = self.root / "videos"
        self.plots = self.root / "plots"
        self.lock = self.root / ".lock"  # held while a job writes the folder
        self.identity = self.root / "run_identity.json"  # the settings that decide what the run computes

    def __repr__(self) -> str:
        return f"RunPaths({str(self.root)!r})"


__all__ = ["RunPaths"]
