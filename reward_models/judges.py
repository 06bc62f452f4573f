"""Judges beside labelers: rules whose verdicts are constraints, not preferences.

A labeler says which of two segments is better; a judge says, step by step, whether a rule was
broken (a force on the person over its limit, the gripper outside its workspace, a VLM's yes
to a safety question about the frame) and at what cost. In the mixture of judges (CGPO: Xu et al. 2024, "The Perfect Blend: Redefining RLHF with
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
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reward_models.labeling import SQLiteTable
from reward_models.preferences import FIRST, SECOND, PreferenceLabels
from reward_models.vlm import ChatAPI, VLMRequestError

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
        limit: N (``conf/judges/force.yaml``: the task's ``comfort_force``, dressing 5 N).
        force_index: observation entry holding the force, N (dressing: 24).
        cost: ``indicator`` (1 per violating step: the expected cost is the expected number of
            unsafe steps) or ``excess`` (N over the limit).

    Raises:
        ValueError: ``limit <= 0``, a negative index, an unknown ``cost``; an episode whose
            observations do not have the index, or hold a NaN there.
    """

    name = "force"

    def __init__(self, limit: float = 20.0, force_index: int = 24, cost: str = "indicator"):
        if limit is None or force_index is None:
            raise ValueError("force judge: no limit or force_index; the task declares no force (task.comfort_force, "
                             "task.force_index): set judges.force.limit and judges.force.force_index")
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


SAFETY_PROMPT = (
    "You see one image of a robot doing a task near a person. The task is: {task}.\n"
    "Safety question: {question}\n"
    "Look at the image and answer the question. Reply with a single line holding only yes or no."
)
_YES_NO = re.compile(r"^[\s*_`'\"(\[]*(yes|no)[\s*_`'\".!)\]]*$", re.IGNORECASE)
UNPARSEABLE = ("safe", "violation")


def parse_yes_no(answer: str) -> bool | None:
    """``True`` for yes, ``False`` for no: the word alone on the last non-empty line (punctuation
    and emphasis around it allowed, ``"**Yes.**"``); ``None`` for anything else."""
    lines = [line.strip() for line in str(answer).strip().splitlines() if line.strip()]
    match = _YES_NO.match(lines[-1]) if lines else None
    return None if match is None else match.group(1).lower() == "yes"


class VLMSafetyJudge(ChatAPI, Judge):
    """A vision-language model answers a yes/no safety question about frames (yes = violation),
    over an OpenAI-compatible chat-completions API, with the VLM labeler's retries, rate limit,
    answer cache and key handling (:class:`reward_models.vlm.ChatAPI`).

    Every ``stride``-th frame after a step is asked about (frame ``t + 1`` is the state after
    step t), and the last; a step takes the verdict of the first asked frame at or after it, so a
    violation seen in a frame covers the ``stride`` steps leading to it. The cost is 1 per
    violating step (indicator). A frame whose answer cannot be parsed counts as ``unparseable_as``
    (``safe`` by default; ``violation`` to err on the side of caution), and is counted in
    :attr:`counts` (``unparseable``).

    Args:
        base_url, model, api_key_env, concurrency, requests_per_minute, timeout_s, max_retries,
            backoff_s, backoff_max_s, max_tokens, temperature: as :class:`reward_models.vlm.VLMPreferenceLabeler`.
        task: the task in words.
        question: the yes/no question; yes means unsafe.
        stride: ask about every ``stride``-th frame (1: every frame).
        unparseable_as: ``safe`` or ``violation``.
        cache_path: the answer cache file (SQLite); None: ``cache_dir/vlm_safety_cache.sqlite`` when
            the judge stage sets ``cache_dir`` (the run's ``labels/``), else in memory.

    Raises:
        ValueError: a bad setting (named); an episode without frames.
        VLMRequestError: the API refused a request for good (400, 401, 404, ...), or a request
            still failed after all retries (rerun: answers received so far are cached).
    """

    name = "vlm_safety"
    needs_frames = True

    def __init__(self, base_url: str, model: str, task: str, question: str, api_key_env: str = "OPENAI_API_KEY",
                 stride: int = 1, unparseable_as: str = "safe", concurrency: int = 4, requests_per_minute: float = 60.0,
                 timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 max_tokens: int = 16, temperature: float = 0.0, cache_path: str | None = None):
        super().__init__(base_url, model, api_key_env, concurrency, requests_per_minute, timeout_s, max_retries, backoff_s,
                         backoff_max_s, max_tokens, temperature)
        if not str(question).strip() or not str(task).strip():
            raise ValueError("vlm_safety judge: task and question must be non-empty text")
        if stride < 1 or unparseable_as not in UNPARSEABLE:
            raise ValueError(f"vlm_safety judge: stride={stride} (>= 1) and unparseable_as={unparseable_as!r} "
                             f"(one of {UNPARSEABLE}) expected")
        self.task, self.question = str(task).strip(), str(question).strip()
        self.stride, self.unparseable_as, self.cache_path = int(stride), unparseable_as, cache_path
        self.cache_dir: Path | None = None
        self.prompt_hash = hashlib.sha256(SAFETY_PROMPT.encode()).hexdigest()[:16]

    def settings(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "prompt_hash": self.prompt_hash, "task": self.task,
                "question": self.question, "stride": self.stride, "unparseable_as": self.unparseable_as,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def asked_frames(self, steps: int) -> np.ndarray:
        """Indices of the frames asked about in an episode of ``steps`` transitions: ``stride``,
        ``2 stride``, ... and the last frame ``steps``."""
        return np.unique(np.append(np.arange(self.stride, steps + 1, self.stride), steps)) if steps else np.array([], int)

    def judge(self, episode: Any) -> Verdicts:
        from concurrent.futures import ThreadPoolExecutor

        from reward_models.vlm import AnswerCache, _RateLimiter, _RequestFailed, encode_png

        frames = getattr(episode, "frames", None)
        steps = len(episode.actions)
        if frames is None or len(frames) != steps + 1:
            raise ValueError("vlm_safety judge: the episode has no frames (one per observation); collect the dataset with "
                             "dataset.frames=true dataset.recipe=mixed-frames")
        asked = self.asked_frames(steps)
        path = self.cache_path or (Path(self.cache_dir) / "vlm_safety_cache.sqlite" if self.cache_dir else None)
        cache, limiter = AnswerCache(path), _RateLimiter(self.requests_per_minute)
        text = SAFETY_PROMPT.format(task=self.task, question=self.question)

        def ask(client, index: int) -> bool:
            png = encode_png(np.asarray(frames[index], dtype=np.uint8))
            answer = parse_yes_no(self._ask(client, limiter, cache, "safety", [hashlib.sha256(png).hexdigest(), text],
                                            text, [png]))
            if answer is None:
                self._count("unparseable")
                return self.unparseable_as == "violation"
            return answer

        try:
            with self._client() as client, ThreadPoolExecutor(self.concurrency) as pool:
                unsafe = list(pool.map(lambda index: ask(client, int(index)), asked))
        except _RequestFailed as error:
            raise VLMRequestError(f"vlm_safety judge: {error}; the answers received so far are cached, rerun to "
                                  "ask only the rest") from None
        finally:
            cache.close()
        # step t (frame t + 1) takes the verdict of the first asked frame at or after t + 1
        verdict_of = np.searchsorted(asked, np.arange(1, steps + 1))
        violation = np.asarray(unsafe, dtype=bool)[verdict_of] if steps else np.zeros(0, dtype=bool)
        return Verdicts(violation, violation.astype(np.float32))


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


__all__ = ["COSTS", "ForceJudge", "Judge", "VLMSafetyJudge", "VerdictStore", "Verdicts", "WorkspaceJudge", "apply_judges",
           "episode_costs", "judge_key", "parse_yes_no", "segment_violations"]
