"""The labeler seam: one protocol for every labeler and one store that keeps every answer.

**Protocol.** A labeler (:class:`Labeler`) answers questions about pairs of segments. It has a
``name``, says whether it ``needs_frames``, describes itself with :meth:`Labeler.settings` (a
JSON-able dict of everything its answers depend on: model, prompts, thresholds), and yields its
answers one at a time from :meth:`Labeler.answers` as they arrive, in any order, each an
:class:`Answer` naming the pair it belongs to. Its answer to a pair must not depend on which
other pairs it is asked about in the same call (scripted teachers draw their randomness per
pair from ``(seed, pair)``), so a job asked again for the missing pairs gives the labels an
uninterrupted job would have given. Scripted B-Pref teachers, the CLIP and the VLM labelers
and people on the labeling page (:mod:`reward_models.human`) follow it.

**Store.** :class:`LabelStore` is one SQLite file (``labels/labels.sqlite`` in a run folder).
:func:`label_pairs` writes each answer in its own transaction the moment the labeler yields it,
keyed by the labeler's settings hash, the segment length and the pair, with its outcome, extra
information and the time. A labeling job killed at any moment loses no answer, and a rerun asks
the labeler only for the pairs the store does not hold. Answers whose outcome is ``failed``
(a request that never got through) are not stored, so a rerun asks again.
"""

from __future__ import annotations

import abc
import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reward_models.preferences import ABSTAIN, PreferenceLabels

#: Outcomes an answer may have; ``failed`` answers are never stored.
OUTCOMES = ("answered", "tie", "unsure", "abstain", "unparseable", "swap_inconsistent", "failed")


@dataclass
class Answer:
    """One answer about pair ``index`` of the pairs a labeler was asked about.

    Attributes:
        index: position in the ``pairs`` array given to :meth:`Labeler.answers`.
        label: P(second segment preferred): 0, 0.5 (tie), 1, or NaN (abstain).
        outcome: one of :data:`OUTCOMES`.
        info: JSON-able extras (a VLM's reasoning, an annotator's name, the time taken).
    """

    index: int
    label: float
    outcome: str = "answered"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"answer outcome {self.outcome!r}; expected one of {OUTCOMES}")
        if not (np.isnan(self.label) or self.label in (0.0, 0.5, 1.0)):
            raise ValueError(f"answer label {self.label}; expected 0, 0.5, 1 or NaN (abstain)")


class Labeler(abc.ABC):
    """What every labeler implements; see the module docstring."""

    name: str = "labeler"
    #: Whether the labeler looks at rendered frames (the dataset must hold them).
    needs_frames: ClassVar[bool] = False

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able settings its answers depend on (their hash keys the label store)."""

    @abc.abstractmethod
    def answers(self, episodes: Sequence, pairs: np.ndarray, segment_length: int, seed: int = 0,
                workdir: Path | None = None) -> Iterator[Answer]:
        """Yield one :class:`Answer` per pair of ``pairs (N, 2, 2)`` of ``(episode, start)``
        segments of ``segment_length`` steps, as each arrives.

        Args:
            episodes: the episodes the pairs index.
            pairs: ``(N, 2, 2) int64``.
            segment_length: H, transitions per segment.
            seed: randomness of the answers (per pair, see the module docstring).
            workdir: a folder for the labeler's own caches (e.g. the VLM's request cache).
        """

    def run_counts(self) -> dict[str, int]:
        """Counters of the last :meth:`answers` call (requests, retries, cache hits); default none."""
        return {}

    def label_segments(self, episodes: Sequence, pairs: np.ndarray, segment_length: int,
                       rng: np.random.Generator | None = None, workdir: Path | None = None,
                       store: LabelStore | None = None, seed: int | None = None) -> PreferenceLabels:
        """Label ``pairs`` through :func:`label_pairs` (an in-memory store unless ``store``)."""
        if seed is None:
            seed = int(rng.integers(2**31)) if rng is not None else 0
        return label_pairs(self, episodes, pairs, segment_length, seed=seed, store=store, workdir=workdir)


def labeler_key(labeler: Labeler) -> str:
    """SHA-256 (hex, 16 characters) of the labeler's name and settings: answers of labelers with
    different settings never mix in a store."""
    text = json.dumps({"name": labeler.name, **labeler.settings()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SQLiteTable:
    """One SQLite file shared by threads, with an ``answers`` table; each write is committed
    before the call returns. Files use the write-ahead log, so a committed write survives a
    SIGKILL of the process.

    Args:
        path: the database file (created with its folder); None: in memory.
        schema: ``CREATE TABLE IF NOT EXISTS`` statements (one script).
    """

    def __init__(self, path: str | Path | None, schema: str):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", check_same_thread=False)
            with self._lock:
                if self.path:
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(schema)
                self._db.commit()
        except sqlite3.DatabaseError as error:  # not a database, unreadable, a folder, a foreign schema
            raise ValueError(f"{self.path} cannot be opened as this store's SQLite database ({error}); move it away "
                             "to start an empty one (its answers are lost to this run)") from None

    def _write(self, sql: str, values: tuple) -> None:
        with self._lock:
            self._db.execute(sql, values)
            self._db.commit()

    def _read(self, sql: str, values: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, values).fetchall()

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM answers")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class LabelStore(SQLiteTable):
    """Answers about segment pairs in one SQLite file, saved as they arrive.

    Rows: labeler key, segment length, the pair ``(e0, s0, e1, s1)``, the label (NULL =
    abstain), the outcome, JSON info and the time; the ``labelers`` table holds each labeler's
    settings (provenance).

    Args:
        path: the database file (created with its folder); None: in memory.
    """

    def __init__(self, path: str | Path | None = None):
        super().__init__(path, (
            "CREATE TABLE IF NOT EXISTS labelers (key TEXT PRIMARY KEY, name TEXT NOT NULL, settings TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS answers (labeler TEXT NOT NULL, segment_length INTEGER NOT NULL,"
            " e0 INTEGER NOT NULL, s0 INTEGER NOT NULL, e1 INTEGER NOT NULL, s1 INTEGER NOT NULL,"
            " label REAL, outcome TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL,"
            " PRIMARY KEY (labeler, segment_length, e0, s0, e1, s1));"
        ))

    def register(self, labeler: Labeler) -> str:
        """Record the labeler's settings; returns its key."""
        key = labeler_key(labeler)
        self._write("INSERT OR IGNORE INTO labelers VALUES (?, ?, ?)",
                    (key, labeler.name, json.dumps(labeler.settings(), sort_keys=True, default=str)))
        return key

    def put(self, key: str, pair: np.ndarray, segment_length: int, answer: Answer) -> None:
        """Save one answer about ``pair (2, 2)`` (committed before returning)."""
        (e0, s0), (e1, s1) = np.asarray(pair, dtype=np.int64).tolist()
        label = None if np.isnan(answer.label) else float(answer.label)
        self._write("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, int(segment_length), e0, s0, e1, s1, label, answer.outcome,
                     json.dumps(answer.info, default=str), time.time()))

    def lookup(self, key: str, pairs: np.ndarray, segment_length: int) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Stored answers for ``pairs (N, 2, 2)``: labels ``(N,) float32`` (NaN: abstain or
        missing), found ``(N,) bool`` and the outcome of each (None when missing)."""
        rows = self._read("SELECT e0, s0, e1, s1, label, outcome FROM answers WHERE labeler = ? AND segment_length = ?",
                          (key, int(segment_length)))
        table = {(e0, s0, e1, s1): (label, outcome) for e0, s0, e1, s1, label, outcome in rows}
        labels = np.full(len(pairs), ABSTAIN, dtype=np.float32)
        found = np.zeros(len(pairs), dtype=bool)
        outcomes: list[str | None] = [None] * len(pairs)
        for i, pair in enumerate(np.asarray(pairs, dtype=np.int64).reshape(-1, 4).tolist()):
            hit = table.get(tuple(pair))
            if hit is not None:
                found[i] = True
                labels[i] = ABSTAIN if hit[0] is None else hit[0]
                outcomes[i] = hit[1]
        return labels, found, outcomes

    def labelers(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every labeler with answers in the store: ``(key, name, settings)``."""
        return [(key, name, json.loads(settings)) for key, name, settings in
                self._read("SELECT key, name, settings FROM labelers ORDER BY rowid")]


def labeler_display_name(name: str, settings: dict[str, Any]) -> str:
    """How reports name a labeler: its name, and the annotator for people (``human:alice``)."""
    return f"{name}:{settings['annotator']}" if "annotator" in settings else name


def compare_labels(labels: PreferenceLabels, sources: Sequence[str | Path], truth: np.ndarray | None = None) -> dict[str, float]:
    """Agreement of ``labels`` with every labeler in other label stores, on the pairs both decided.

    Two annotators who label the same pairs (same dataset, seed and pair count) in their own runs
    are compared by listing the other run here (``labeler.compare_with``).

    Args:
        labels: this run's labels.
        sources: label store files, or run folders (their ``labels/labels.sqlite``).
        truth: ``(N,)`` the true-reward oracle's labels of ``labels.pairs`` (simulation), or None.

    Returns:
        Flat report keys per other labeler ``X`` (``human:bob``, ``vlm``, ...) with answers on
        these pairs: ``agreement_with_X`` (share of the pairs both decided, ties and abstains
        left out), ``pairs_shared_with_X``, and with ``truth`` ``X_agreement_with_true_reward``.

    Raises:
        FileNotFoundError: a source that is neither a store file nor a run folder holding one.
    """
    out: dict[str, float] = {}
    mine = labels.answered & (labels.labels != 0.5)
    for source in sources:
        path = Path(source)
        if path.is_dir():
            path = path / "labels" / "labels.sqlite"
        if not path.is_file():
            raise FileNotFoundError(f"labeler.compare_with: {source} is neither a label store (labels.sqlite) nor a run "
                                    "folder holding labels/labels.sqlite")
        store = LabelStore(path)
        try:
            for key, name, settings in store.labelers():
                other, found, _ = store.lookup(key, labels.pairs, labels.segment_length)
                if not found.any():
                    continue
                label = labeler_display_name(name, settings)
                while f"pairs_shared_with_{label}" in out:  # the same labeler in two stores
                    label += "'"
                theirs = found & ~np.isnan(other) & (other != 0.5)
                both = mine & theirs
                out[f"pairs_shared_with_{label}"] = float(both.sum())
                out[f"agreement_with_{label}"] = float((labels.labels[both] == other[both]).mean()) if both.any() else float("nan")
                if truth is not None:
                    right = theirs & (truth != 0.5)
                    out[f"{label}_agreement_with_true_reward"] = (float((other[right] == truth[right]).mean())
                                                                 if right.any() else float("nan"))
        finally:
            store.close()
    return out


def label_pairs(labeler: Labeler, episodes: Sequence, pairs: np.ndarray, segment_length: int, seed: int = 0,
                store: LabelStore | None = None, workdir: Path | None = None) -> PreferenceLabels:
    """Labels for ``pairs (N, 2, 2)``: those ``store`` holds, the rest asked from ``labeler``
    and saved one by one as they arrive.

    Returns:
        Labels in the order of ``pairs``, with provenance: the labeler's name and settings,
        ``counts`` of outcomes over these pairs (plus ``failed`` and the labeler's run counters
        of this call), ``asked`` (distinct pairs asked this time), ``failures`` (up to 3 distinct
        reasons pairs failed, e.g. a refused connection), start and finish times.

    Raises:
        ValueError: the labeler needs frames and an episode of a pair has none; what the labeler
            raises (e.g. :class:`reward_models.vlm.VLMRequestError`).
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    if labeler.needs_frames:
        for e in np.unique(pairs[..., 0]):
            if getattr(episodes[e], "frames", None) is None:
                raise ValueError(f"episode {e} has no frames; labeler {labeler.name} needs a dataset collected "
                                 "with dataset.frames=true")
    own = store is None
    if store is None:
        store = LabelStore()
    started = time.time()
    try:
        key = store.register(labeler)
        _, found, _ = store.lookup(key, pairs, segment_length)
        # each pair the store lacks, asked once (a sample may hold the same pair twice)
        _, first = np.unique(pairs.reshape(-1, 4), axis=0, return_index=True)
        missing = np.sort(first[~found[first]])
        failed, errors = 0, []
        if len(missing):
            for answer in labeler.answers(episodes, pairs[missing], segment_length, seed=seed, workdir=workdir):
                if answer.outcome == "failed":
                    failed += 1
                    message = str(answer.info.get("error", "no reason given"))
                    if message not in errors and len(errors) < 3:
                        errors.append(message)
                    continue
                store.put(key, pairs[missing[answer.index]], segment_length, answer)
        labels, _, outcomes = store.lookup(key, pairs, segment_length)
    finally:
        if own:
            store.close()
    counts = Counter(o for o in outcomes if o is not None)
    if failed:
        counts["failed"] = failed
    provenance = {"labeler": labeler.name, "name": labeler.name, **labeler.settings(), "seed": int(seed),
                  "asked": int(len(missing)), "started": started, "finished": time.time(), "failures": errors,
                  "counts": {**{k: int(v) for k, v in counts.items()}, **labeler.run_counts()}}
    return PreferenceLabels(pairs, labels, segment_length, provenance)


__all__ = ["Answer", "LabelStore", "Labeler", "OUTCOMES", "SQLiteTable", "compare_labels", "label_pairs", "labeler_display_name",
           "labeler_key"]
