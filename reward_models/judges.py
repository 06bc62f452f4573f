"""Judges beside labelers: rules whose verdicts are constraints, not preferences.

A labeler says which of two segments is better; a judge says, step by step, whether a rule was
broken (a force on the person over its limit, the gripper outside its workspace) and at what
cost. In the mixture of judges (CGPO: Xu et al. 2024, "The Perfect Blend: Redefining RLHF with
Mixture of Judges", Sec. 3), a judge's verdict is not traded off against the reward: a pair in
which exactly one segment violates a judge is decided by the judge (the other segment is
preferred), whatever the labeler said. Pairs where both or neither violate keep the labeler's
label. The per-step costs are also what a cost-constrained learner trains its cost critic on.

Verdicts are stored with provenance in the run's label store (table ``verdicts``, keyed by the
judge's settings), like labels.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reward_models.labeling import SQLiteTable
from reward_models.preferences import FIRST, SECOND, PreferenceLabels

COSTS = ("indicator", "excess")


@dataclass
class Verdicts:
    """A judge's verdict on each transition of one episode.

    Attributes:
        violation: ``(T,) bool``: the rule is broken in the state after step t.
        cost: ``(T,) float32`` >= 0, zero where there is no violation.
    """

    violation: np.ndarray
    cost: np.ndarray


class Judge(ABC):
    """A rule checked on every transition of an episode (module docstring)."""

    name: str = "judge"

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able settings: with :attr:`name`, the judge's provenance."""

    @abstractmethod
    def judge(self, episode: Any) -> Verdicts:
        """The verdicts on ``episode``'s ``T`` transitions (observations ``(T+1, D)``: the state
        after step t is row t + 1)."""


def _cost(values: np.ndarray, limit: float, violation: np.ndarray, kind: str) -> np.ndarray:
    if kind == "indicator":
        return violation.astype(np.float32)
    return np.where(violation, values - limit, 0.0).astype(np.float32)


class ForceJudge(Judge):
    """The force on the person after a step must stay at or below ``limit`` N.

    Args:
        limit: N (dressing: 20 N, the task's ``force_limit``).
        force_index: observation entry holding the force, N (dressing: 24).
        cost: ``indicator`` (1 per violating step: the expected cost is the expected number of
            unsafe steps) or ``excess`` (N over the limit).

    Raises:
        ValueError: ``limit <= 0``, a negative index, an unknown ``cost``; an episode whose
            observations do not have the index, or hold a NaN there.
    """

    name = "force"

    def __init__(self, limit: float = 20.0, force_index: int = 24, cost: str = "indicator"):
        if not limit > 0 or force_index < 0 or cost not in COSTS:
            raise ValueError(f"force judge: limit={limit} N (> 0), force_index={force_index} (>= 0), cost={cost!r} "
                             f"(one of {COSTS}) expected")
        self.limit, self.force_index, self.cost = float(limit), int(force_index), cost

    def settings(self) -> dict[str, Any]:
        return {"limit": self.limit, "force_index": self.force_index, "cost": self.cost}

    def judge(self, episode: Any) -> Verdicts:
        observations = np.asarray(episode.observations)
        if observations.ndim != 2 or observations.shape[1] <= self.force_index:
            raise ValueError(f"force judge: observations of shape {observations.shape} have no entry "
                             f"{self.force_index}; set the judge's force_index to the task's force entry")
        force = observations[1:, self.force_index].astype(np.float64)
        if not np.isfinite(force).all():
            raise ValueError(f"force judge: a non-finite force reading at step {int(np.argmin(np.isfinite(force)))}")
        violation = force > self.limit
        return Verdicts(violation, _cost(force, self.limit, violation, self.cost))


class WorkspaceJudge(Judge):
    """The end effector after a step must stay inside the box ``[low, high]`` (m).

    Args:
        low, high: corners, m, one value per position entry ((x, y, z) for dressing).
        position_indices: observation entries of the end-effector position (dressing: 0, 1, 2).
        cost: ``indicator``, or ``excess`` (m outside the box, the largest axis).

    Raises:
        ValueError: corners of another length than ``position_indices`` or with ``low > high``,
            an unknown ``cost``.
    """

    name = "workspace"

    def __init__(self, low: Sequence[float], high: Sequence[float], position_indices: Sequence[int] = (0, 1, 2),
                 cost: str = "indicator"):
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.position_indices, self.cost = [int(i) for i in position_indices], cost
        n = len(self.position_indices)
        if self.low.shape != (n,) or self.high.shape != (n,) or (self.low > self.high).any() or cost not in COSTS:
            raise ValueError(f"workspace judge: low={list(low)}, high={list(high)} ({n} values each, one per position "
                             f"entry {self.position_indices}, low <= high, m) and cost={cost!r} (one of {COSTS}) expected")

    def settings(self) -> dict[str, Any]:
        return {"low": self.low.tolist(), "high": self.high.tolist(), "position_indices": self.position_indices,
                "cost": self.cost}

    def judge(self, episode: Any) -> Verdicts:
        position = np.asarray(episode.observations)[1:, self.position_indices].astype(np.float64)
        outside = np.maximum(self.low - position, position - self.high).max(axis=1)
        violation = outside > 0
        return Verdicts(violation, _cost(outside, 0.0, violation, self.cost))


def judge_key(judge: Judge) -> str:
    """``<name>-<hash of its settings>``: verdicts of other settings are kept apart."""
    settings = json.dumps(judge.settings(), sort_keys=True, default=str)
    return f"{judge.name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


class VerdictStore(SQLiteTable):
    """Verdicts of judges in the run's label store file (tables ``judges`` and ``verdicts``):
    per judge and episode, the violating steps and their costs."""

    def __init__(self, path: Any = None):
        super().__init__(path, (
            "CREATE TABLE IF NOT EXISTS judges (key TEXT PRIMARY KEY, name TEXT NOT NULL, settings TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS verdicts (judge TEXT NOT NULL, episode INTEGER NOT NULL, steps INTEGER NOT NULL,"
            " violations TEXT NOT NULL, costs TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (judge, episode));"
        ))

    def verdicts(self, judge: Judge, episodes: Sequence[Any]) -> list[Verdicts]:
        """Each episode's verdicts: stored ones read back, the others judged and stored."""
        key = judge_key(judge)
        self._write("INSERT OR IGNORE INTO judges VALUES (?, ?, ?)",
                    (key, judge.name, json.dumps(judge.settings(), sort_keys=True, default=str)))
        rows = {e: (n, json.loads(v), json.loads(c)) for e, n, v, c in
                self._read("SELECT episode, steps, violations, costs FROM verdicts WHERE judge = ?", (key,))}
        out = []
        for index, episode in enumerate(episodes):
            stored = rows.get(index)
            if stored is not None and stored[0] == len(episode):
                violation = np.zeros(len(episode), dtype=bool)
                cost = np.zeros(len(episode), dtype=np.float32)
                violation[stored[1]] = True
                cost[stored[1]] = stored[2]
                out.append(Verdicts(violation, cost))
                continue
            verdict = judge.judge(episode)
            steps = np.flatnonzero(verdict.violation)
            self._write("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                        (key, index, len(episode), json.dumps(steps.tolist()),
                         json.dumps(verdict.cost[steps].astype(float).tolist()), time.time()))
            out.append(verdict)
        return out


def segment_violations(verdicts: Sequence[Verdicts], pairs: np.ndarray, segment_length: int) -> np.ndarray:
    """``(N, 2) bool``: whether segment j of pair i holds a violating step."""
    pairs = np.asarray(pairs, dtype=np.int64)
    out = np.zeros(pairs.shape[:2], dtype=bool)
    for i, pair in enumerate(pairs):
        for j, (e, s) in enumerate(pair):
            out[i, j] = bool(verdicts[e].violation[s:s + segment_length].any())
    return out


def apply_judges(labels: PreferenceLabels, judged: Mapping[str, Sequence[Verdicts]]) -> PreferenceLabels:
    """The mixture of judges (CGPO): a pair in which exactly one segment violates any judge is
    decided by the judges, the other segment preferred, whatever the labeler answered (an
    abstain included); other pairs keep the labeler's label.

    Args:
        labels: the labeler's labels.
        judged: judge name -> its verdicts on every episode.

    Returns:
        The labels after the judges, with provenance ``judges`` (names),
        ``judge_overrides`` (labels changed), ``judge_agreed`` (the labeler had already
        preferred the non-violating segment), ``judge_decided_abstains`` and the pairs with a
        violation on both sides (``judge_both_violate``).
    """
    if not judged:
        return labels
    violates = np.zeros(labels.pairs.shape[:2], dtype=bool)
    for verdicts in judged.values():
        violates |= segment_violations(verdicts, labels.pairs, labels.segment_length)
    decided = violates[:, 0] != violates[:, 1]
    verdict = np.where(violates[:, 0], SECOND, FIRST).astype(np.float32)
    before = labels.labels
    after = np.where(decided, verdict, before).astype(np.float32)
    agreed = decided & (before == verdict)
    provenance = {**labels.provenance, "judges": sorted(judged),
                  "judge_overrides": int((decided & ~agreed & ~np.isnan(before)).sum()),
                  "judge_agreed": int(agreed.sum()),
                  "judge_decided_abstains": int((decided & np.isnan(before)).sum()),
                  "judge_both_violate": int((violates[:, 0] & violates[:, 1]).sum())}
    return PreferenceLabels(labels.pairs, after, labels.segment_length, provenance)


def episode_costs(judged: Mapping[str, Sequence[Verdicts]], episodes: Sequence[Any]) -> list[np.ndarray]:
    """Per-transition cost ``(T,) float32`` of each episode: the sum over judges (what a
    cost critic trains on)."""
    out = [np.zeros(len(ep), dtype=np.float32) for ep in episodes]
    for verdicts in judged.values():
        for i, verdict in enumerate(verdicts):
            out[i] += verdict.cost
    return out


__all__ = ["COSTS", "ForceJudge", "Judge", "VerdictStore", "Verdicts", "WorkspaceJudge", "apply_judges",
           "episode_costs", "judge_key", "segment_violations"]
