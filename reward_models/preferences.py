"""Segment pairs and preference labels.

A segment is ``segment_length`` consecutive transitions of one episode, named by
``(episode, start)``. A labelled pair holds two segments and a label in Bradley-Terry's
convention: ``label`` is the probability that the **second** segment is preferred, so
``0.0`` = first preferred, ``1.0`` = second preferred, ``0.5`` = tie (equally preferable);
``NaN`` = abstain (no usable answer; never trained on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FIRST, SECOND, TIE = 0.0, 1.0, 0.5
ABSTAIN = float("nan")


@dataclass
class PreferenceLabels:
    """Labelled segment pairs.

    Attributes:
        pairs: ``(N, 2, 2) int64``: ``pairs[i, j] = (episode, start)`` of segment j of pair i.
        labels: ``(N,) float32`` in {0, 0.5, 1} or NaN (abstain); see the module docstring.
        segment_length: transitions per segment (H).
        provenance: who labelled and how (labeler name, settings), JSON-able.
    """

    pairs: np.ndarray
    labels: np.ndarray
    segment_length: int
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.pairs.ndim != 3 or self.pairs.shape[1:] != (2, 2):
            raise ValueError(f"pairs must be (N, 2, 2) (episode, start) indices, got {self.pairs.shape}")
        if self.labels.shape != (len(self.pairs),):
            raise ValueError(f"labels must be ({len(self.pairs)},), got {self.labels.shape}")
        valid = np.isnan(self.labels) | np.isin(self.labels, [FIRST, TIE, SECOND])
        if not valid.all():
            bad = self.labels[~valid][:3]
            raise ValueError(f"labels must be 0, 0.5, 1 or NaN (abstain), got {bad.tolist()}")

    @property
    def answered(self) -> np.ndarray:
        """``(N,) bool``: pairs with a label (not abstained)."""
        return ~np.isnan(self.labels)

    def rates(self) -> dict[str, float]:
        """Fractions of pairs: ``abstain``, ``tie`` (of all pairs)."""
        n = max(len(self.labels), 1)
        return {"abstain": float(np.isnan(self.labels).sum() / n), "tie": float((self.labels == TIE).sum() / n)}


def sample_pairs(
    episode_lengths: Sequence[int],
    segment_length: int,
    n_pairs: int,
    rng: np.random.Generator,
    terminated: Sequence[bool] | None = None,
) -> np.ndarray:
    """Uniformly random segment pairs, ``(n_pairs, 2, 2)`` of ``(episode, start)``.

    Each segment is drawn uniformly among all segments that fit in an episode; the two
    segments of a pair differ. In an episode that ended in a **termination** (``terminated``),
    a segment may also start in its last ``H - 1`` steps and run past the end into the absorbing
    state, whose reward is 0 (the same convention the offline learner's terminal flag uses).
    Without this, the terminal transition (a success, a safety stop) would be in a single
    segment start per episode instead of H, and a reward model would barely see it.
    Episodes cut off by a time limit are not padded: what follows them is unknown.

    Raises:
        ValueError: ``segment_length`` < 1, ``terminated`` of the wrong length, or fewer than
            two segments fit in the data.
    """
    lengths = np.asarray(episode_lengths, dtype=np.int64)
    if segment_length < 1:
        raise ValueError(f"segment_length={segment_length}; expected >= 1")
    starts_per_episode = np.maximum(lengths - segment_length + 1, 0)
    if terminated is not None:
        terminated = np.asarray(terminated, dtype=bool)
        if terminated.shape != lengths.shape:
            raise ValueError(f"terminated has {terminated.shape[0]} entries for {len(lengths)} episodes")
        starts_per_episode = np.where(terminated, lengths, starts_per_episode)
    total = int(starts_per_episode.sum())
    if total < 2:
        raise ValueError(f"segments of {segment_length} steps do not fit twice in episodes of lengths {lengths.tolist()}")
    offsets = np.concatenate([[0], np.cumsum(starts_per_episode)])

    def locate(flat: np.ndarray) -> np.ndarray:
        episode = np.searchsorted(offsets, flat, side="right") - 1
        return np.stack([episode, flat - offsets[episode]], axis=-1)

    first = rng.integers(0, total, n_pairs)
    second = (first + rng.integers(1, total, n_pairs)) % total  # never the same segment
    return np.stack([locate(first), locate(second)], axis=1)


def segment_sums(values: Sequence[np.ndarray], pairs: np.ndarray, segment_length: int, gamma: float = 1.0) -> np.ndarray:
    """Discounted sums over each segment: ``sum_t gamma^(H-1-t) v[start + t]``, ``(N, 2)``.

    ``gamma < 1`` weighs the end of the segment most (B-Pref's myopic teacher). Steps past the
    end of an episode (a segment into the absorbing state after a termination) count as 0.
    """
    weights = gamma ** np.arange(segment_length - 1, -1, -1, dtype=np.float64)
    out = np.empty(pairs.shape[:2], dtype=np.float64)
    for i, pair in enumerate(pairs):
        for j, (episode, start) in enumerate(pair):
            v = np.asarray(values[episode][start : start + segment_length], dtype=np.float64)
            out[i, j] = float(np.dot(weights[: len(v)], v))
    return out


def select_by_disagreement(member_returns: np.ndarray, n_pairs: int) -> np.ndarray:
    """Indices of the ``n_pairs`` candidate pairs the ensemble disagrees on most.

    Disagreement is the standard deviation across members of ``P(second preferred) =
    sigmoid(R_1 - R_0)`` (B-Pref's and PEBBLE's ensemble-disagreement sampling).

    Args:
        member_returns: ``(K, M, 2)`` predicted segment returns of K members for M candidates.
        n_pairs: how many to keep (<= M).

    Raises:
        ValueError: wrong shape or ``n_pairs`` larger than the candidates.
    """
    member_returns = np.asarray(member_returns, dtype=np.float64)
    if member_returns.ndim != 3 or member_returns.shape[-1] != 2:
        raise ValueError(f"member_returns must be (K, M, 2), got {member_returns.shape}")
    if n_pairs > member_returns.shape[1]:
        raise ValueError(f"n_pairs={n_pairs} > {member_returns.shape[1]} candidates")
    p_second = 1.0 / (1.0 + np.exp(-(member_returns[..., 1] - member_returns[..., 0])))
    return np.argsort(-p_second.std(axis=0), kind="stable")[:n_pairs]
