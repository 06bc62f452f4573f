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
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from reward_models.preferences import ABSTAIN, FIRST, SECOND, TIE, PreferenceLabels, segment_sums


@dataclass
class ScriptedTeacher:
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
        returns = segment_sums(rewards, pairs, segment_length, self.gamma)
        lengths = np.asarray([len(r) for r in rewards], dtype=np.float64)
        # c: the mean episode return, scaled to a segment (signed).
        scale = float(np.mean([np.sum(r) for r in rewards])) * segment_length / float(lengths.mean())
        r0, r1 = returns[:, 0], returns[:, 1]
        if math.isinf(self.beta):
            labels = np.where(r1 > r0, SECOND, FIRST).astype(np.float32)
        else:
            p_second = 1.0 / (1.0 + np.exp(-self.beta * (r1 - r0)))
            labels = np.where(rng.random(len(pairs)) < p_second, SECOND, FIRST).astype(np.float32)
        flip = rng.random(len(pairs)) < self.eps_mistake
        labels[flip] = 1.0 - labels[flip]
        if self.eps_equal > 0:
            labels[np.abs(r1 - r0) < self.eps_equal * abs(scale)] = TIE
        if self.eps_skip > 0:
            labels[np.maximum(r0, r1) < self.eps_skip * scale] = ABSTAIN
        return PreferenceLabels(pairs, labels, segment_length, provenance={"labeler": "scripted", **asdict(self)})

    needs_frames: ClassVar[bool] = False

    def label_segments(self, episodes: Sequence, pairs: np.ndarray, segment_length: int,
                       rng: np.random.Generator | None = None, workdir=None) -> PreferenceLabels:
        """The labeler interface shared with the CLIP and VLM labelers: label ``pairs (N, 2, 2)``
        of the episodes' segments from their ground-truth ``rewards``, as a simulated person."""
        started = time.time()
        labels = self.label([ep.rewards for ep in episodes], pairs, segment_length, rng or np.random.default_rng())
        labels.provenance.update(started=started, finished=time.time())
        return labels


#: The six B-Pref teachers with the reference settings (FACTS.md).
TEACHERS: dict[str, ScriptedTeacher] = {
    "oracle": ScriptedTeacher("oracle"),
    "noisy": ScriptedTeacher("noisy", beta=1.0),
    "mistake": ScriptedTeacher("mistake", eps_mistake=0.1),
    "skip": ScriptedTeacher("skip", eps_skip=0.1),
    "equal": ScriptedTeacher("equal", eps_equal=0.1),
    "myopic": ScriptedTeacher("myopic", gamma=0.9),
}
