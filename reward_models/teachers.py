"""B-Pref scripted teachers (Lee, Smith and Abbeel, "B-Pref: Benchmarking Preference-Based
Reinforcement Learning", NeurIPS 2021 Datasets and Benchmarks), from the ground-truth reward.

For a pair of segments with discounted returns ``R_0, R_1`` (``sum_t gamma^(H-1-t) r_t``):

1. skip: abstain when ``max(R_0, R_1) < eps_skip * c``;
2. equal: tie when ``|R_0 - R_1| < eps_equal * c``;
3. otherwise ``P(second preferred) = sigmoid(beta (R_1 - R_0))`` (``beta = inf``: the
   rational choice), sampled;
4. mistake: the answer is flipped with probability ``eps_mistake``.

``c`` is the mean return of the episodes times ``H / T`` (the segment's share of an episode;
its magnitude for the tie threshold). The reference implementation squares ``eps`` in these
thresholds; FACTS.md records that as a bug, so ``eps`` enters linearly here. The skip rule
assumes returns that are mostly positive, as in B-Pref's tasks. Named teachers
(:data:`TEACHERS`): oracle, noisy (beta 1), mistake (eps 0.1), skip (eps 0.1), equal (eps 0.1),
myopic (gamma 0.9).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reward_models.labeling import Answer, Labeler
from reward_models.preferences import ABSTAIN, FIRST, SECOND, TIE, PreferenceLabels, segment_sums


def pair_uniforms(seed: int, pairs: np.ndarray, k: int = 2) -> np.ndarray:
    """``(N, k)`` uniforms in [0, 1) for ``pairs (N, 2, 2)``, each row drawn from a generator
    seeded by ``(seed, pair)``: a pair's draws do not depend on the other pairs asked with it."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 4)
    return np.array([np.random.default_rng([int(seed) & 0x7FFFFFFF, *p]).random(k) for p in pairs.tolist()]).reshape(-1, k)


@dataclass
class ScriptedTeacher(Labeler):
    """A B-Pref teacher; see the module docstring for the decision rule.

    Attributes:
        name: for provenance.
        beta: rationality (``math.inf`` = always the better segment).
        gamma: myopic discount in (0, 1].
        eps_mistake: probability of flipping the answer.
        eps_skip: skip threshold factor (0 = never skip).
        eps_equal: tie threshold factor (0 = never tie).
    """

    name: str = "oracle"
    beta: float = math.inf
    gamma: float = 1.0
    eps_mistake: float = 0.0
    eps_skip: float = 0.0
    eps_equal: float = 0.0

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta}; expected > 0 (inf for a rational teacher)")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma}; expected in (0, 1]")
        for key in ("eps_mistake", "eps_skip", "eps_equal"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{key}={getattr(self, key)}; expected in [0, 1]")

    def label(
        self,
        rewards: Sequence[np.ndarray],
        pairs: np.ndarray,
        segment_length: int,
        rng: np.random.Generator,
    ) -> PreferenceLabels:
        """Label segment pairs from per-episode ground-truth rewards ``(T_e,)``.

        Args:
            rewards: one reward array per episode.
            pairs: ``(N, 2, 2)`` from :func:`reward_models.preferences.sample_pairs`.
            segment_length: H.
            rng: randomness of noisy answers and mistakes.
        """
        uniforms = rng.random((2, len(pairs))).T
        labels = self._decide(rewards, np.asarray(pairs, dtype=np.int64), segment_length, uniforms)
        return PreferenceLabels(pairs, labels, segment_length, provenance={"labeler": self.name, **asdict(self)})

    def _decide(self, rewards: Sequence[np.ndarray], pairs: np.ndarray, segment_length: int,
                uniforms: np.ndarray) -> np.ndarray:
        """Labels ``(N,) float32`` from the rule of the module docstring; ``uniforms (N, 2)``
        drive the noisy choice (column 0) and the mistake flip (column 1)."""
        returns = segment_sums(rewards, pairs, segment_length, self.gamma)
        lengths = np.asarray([len(r) for r in rewards], dtype=np.float64)
        # c: the mean episode return, scaled to a segment (signed).
        scale = float(np.mean([np.sum(r) for r in rewards])) * segment_length / float(lengths.mean())
        r0, r1 = returns[:, 0], returns[:, 1]
        if math.isinf(self.beta):
            labels = np.where(r1 > r0, SECOND, FIRST).astype(np.float32)
        else:
            p_second = 1.0 / (1.0 + np.exp(-self.beta * (r1 - r0)))
            labels = np.where(uniforms[:, 0] < p_second, SECOND, FIRST).astype(np.float32)
        flip = uniforms[:, 1] < self.eps_mistake
        labels[flip] = 1.0 - labels[flip]
        if self.eps_equal > 0:
            labels[np.abs(r1 - r0) < self.eps_equal * abs(scale)] = TIE
        if self.eps_skip > 0:
            labels[np.maximum(r0, r1) < self.eps_skip * scale] = ABSTAIN
        return labels

    def settings(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    def answers(self, episodes: Sequence, pairs: np.ndarray, segment_length: int, seed: int = 0,
                workdir: Path | None = None) -> Iterator[Answer]:
        """Answers from the episodes' ground-truth ``rewards``, as a simulated person; the random
        draws of pair i come from ``(seed, pair)`` (:func:`pair_uniforms`).

        Raises:
            ValueError: an episode of a pair has no rewards.
        """
        pairs = np.asarray(pairs, dtype=np.int64)
        if any(getattr(ep, "rewards", None) is None for ep in episodes):
            raise ValueError("scripted teachers read the true reward; an episode has no rewards")
        labels = self._decide([ep.rewards for ep in episodes], pairs, segment_length, pair_uniforms(seed, pairs))
        for i, label in enumerate(labels.tolist()):
            outcome = "abstain" if np.isnan(label) else "tie" if label == TIE else "answered"
            yield Answer(i, float(label), outcome)


#: The six B-Pref teachers with the reference settings (FACTS.md).
TEACHERS: dict[str, ScriptedTeacher] = {
    "oracle": ScriptedTeacher("oracle"),
    "noisy": ScriptedTeacher("noisy", beta=1.0),
    "mistake": ScriptedTeacher("mistake", eps_mistake=0.1),
    "skip": ScriptedTeacher("skip", eps_skip=0.1),
    "equal": ScriptedTeacher("equal", eps_equal=0.1),
    "myopic": ScriptedTeacher("myopic", gamma=0.9),
}
