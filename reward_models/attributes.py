"""Behaviour attributes for attribute-conditioned planning (AlignDiff: Dong et al., "Aligning
Diverse Human Preferences via Behavior-Customisable Diffusion Model", ICLR 2024).

An attribute says *how* a task is done (speed, force on the person, height of the sleeve above
the forearm, smoothness). Here:

- **measurements** in simulation, from a segment's observations ``(H + 1, D)`` (the functions
  below, named in a task's ``attributes`` config): what a scripted attribute teacher compares;
- :class:`AttributeTeacher`: for each attribute, prefers the segment in which it is stronger
  (B-Pref's rules: ties below a threshold, mistakes with a probability);
- :class:`AttributeStrengthModel`: ``zeta(tau) in R^k``, one Bradley-Terry model per attribute
  (``P(tau_1 >_i tau_0) = sigmoid(zeta_i(tau_1) - zeta_i(tau_0))``, AlignDiff Eq. 2), an ensemble,
  over observation windows; its strengths, scaled to [0, 1] by their range over the dataset's
  windows (AlignDiff's normalisation), relabel every window for the planner;
- :func:`mae_area`: the paper's metric, the mean over 100 thresholds of the share of episodes
  whose masked mean absolute attribute error is below the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from policies.attributes import AttributeStrengthModel
from reward_models.preferences import FIRST, SECOND, TIE

#: Dressing: control period (s) and observation layout entries (envs/dressing OBSERVATION_LAYOUT).
DRESSING_DT = 0.1
_EE, _ELBOW, _WRIST, _OPENING, _FORCE = slice(0, 3), slice(6, 9), slice(9, 12), slice(15, 18), 24
#: Meta-World: control period (s): 5 physics steps of 2.5 ms; the hand is entries 0-2.
METAWORLD_DT = 0.0125


def _segment(observations: np.ndarray) -> np.ndarray:
    observations = np.asarray(observations, dtype=np.float64)
    if observations.ndim != 2 or len(observations) < 2:
        raise ValueError(f"a segment is (H + 1, D) observations with H >= 1, got shape {observations.shape}")
    return observations


def dressing_speed(observations: np.ndarray) -> float:
    """Mean speed of the gripper (m/s) over a segment ``(H + 1, 26)``."""
    obs = _segment(observations)
    return float(np.linalg.norm(np.diff(obs[:, _EE], axis=0), axis=1).mean() / DRESSING_DT)


def dressing_force(observations: np.ndarray) -> float:
    """Mean contact force on the person (N) over the segment's steps."""
    return float(_segment(observations)[1:, _FORCE].mean())


def dressing_height(observations: np.ndarray) -> float:
    """Mean height (m) of the sleeve opening's centre above the forearm axis: the vertical offset
    from the nearest point of the wrist-elbow segment (positive: above)."""
    obs = _segment(observations)
    wrist, elbow, center = obs[:, _WRIST], obs[:, _ELBOW], obs[:, _OPENING]
    axis = elbow - wrist
    u = np.clip(np.einsum("td,td->t", center - wrist, axis) / np.maximum(np.einsum("td,td->t", axis, axis), 1e-9), 0.0, 1.0)
    nearest = wrist + u[:, None] * axis
    return float((center[:, 2] - nearest[:, 2]).mean())


def metaworld_speed(observations: np.ndarray) -> float:
    """Mean speed of the hand (m/s) over a Meta-World segment ``(H + 1, 39)``."""
    obs = _segment(observations)
    return float(np.linalg.norm(np.diff(obs[:, 0:3], axis=0), axis=1).mean() / METAWORLD_DT)


def metaworld_smoothness(observations: np.ndarray) -> float:
    """Smoothness of the hand's motion: minus the mean norm of its acceleration (m/s^2), so that
    larger is smoother; needs H >= 2."""
    obs = _segment(observations)
    if len(obs) < 3:
        raise ValueError("smoothness needs segments of at least 3 observations")
    return float(-np.linalg.norm(np.diff(obs[:, 0:3], n=2, axis=0), axis=1).mean() / METAWORLD_DT**2)


def segment_observations(episodes: Sequence, pairs: np.ndarray, segment_length: int) -> np.ndarray:
    """Observations of each segment of ``pairs (N, 2, 2)`` (episode, start): ``(N, 2, H + 1, D)``
    float32, ``observations[start : start + H + 1]`` (segments must fit in their episode).

    Raises:
        ValueError: a segment that runs past its episode's last observation.
    """
    out = []
    for pair in np.asarray(pairs, dtype=np.int64):
        both = []
        for episode, start in pair:
            obs = episodes[episode].observations[start:start + segment_length + 1]
            if len(obs) != segment_length + 1:
                raise ValueError(f"segment (episode {episode}, start {start}) of {segment_length} steps runs past the "
                                 f"episode's {len(episodes[episode].observations) - 1} steps")
            both.append(obs)
        out.append(both)
    return np.asarray(out, dtype=np.float32)


@dataclass
class AttributeTeacher:
    """A scripted attribute teacher (B-Pref's rules per attribute): for attribute i with measured
    values ``m_0, m_1`` of two segments, answers the second (1.0) when ``m_1 > m_0``, else the
    first (0.0); a tie (0.5) when ``|m_1 - m_0| <= eps_equal * s_i`` (``s_i``: the standard
    deviation of the measured values over the pairs); each answer flipped with probability
    ``eps_mistake``.

    Attributes:
        measures: one function per attribute, ``observations (H + 1, D) -> float``.
        names: the attributes' names (as many as ``measures``).
        eps_equal, eps_mistake: in [0, 1].

    Raises:
        ValueError: names and measures of different counts, or a threshold outside [0, 1].
    """

    measures: Sequence[Callable[[np.ndarray], float]]
    names: Sequence[str]
    eps_equal: float = 0.0
    eps_mistake: float = 0.0
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.measures) != len(self.names) or not self.names:
            raise ValueError(f"{len(self.names)} attribute names for {len(self.measures)} measures; expected as many, >= 1")
        if not (0.0 <= self.eps_equal <= 1.0 and 0.0 <= self.eps_mistake <= 1.0):
            raise ValueError(f"eps_equal={self.eps_equal} and eps_mistake={self.eps_mistake}; expected in [0, 1]")

    def measure(self, segments: np.ndarray) -> np.ndarray:
        """Measured attributes ``(..., k)`` float64 of segments ``(..., H + 1, D)``."""
        flat = segments.reshape(-1, *segments.shape[-2:])
        values = np.array([[m(s) for m in self.measures] for s in flat], dtype=np.float64)
        return values.reshape(*segments.shape[:-2], len(self.measures))

    def label(self, segments: np.ndarray, rng: np.random.Generator, values: np.ndarray | None = None) -> np.ndarray:
        """Labels ``(N, k) float32`` in {0, 0.5, 1} for segment pairs ``(N, 2, H + 1, D)``;
        ``values (N, 2, k)``: their measurements when already made (:meth:`measure`)."""
        values = self.measure(segments) if values is None else np.asarray(values, dtype=np.float64)
        m0, m1 = values[:, 0], values[:, 1]
        labels = np.where(m1 > m0, SECOND, FIRST).astype(np.float32)
        flip = rng.random(labels.shape) < self.eps_mistake
        labels[flip] = 1.0 - labels[flip]
        if self.eps_equal > 0:
            spread = values.reshape(-1, values.shape[-1]).std(axis=0)
            labels[np.abs(m1 - m0) <= self.eps_equal * spread] = TIE
        return labels


def attribute_loss(strengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry cross-entropy per attribute (AlignDiff Eq. 2), averaged over the answered
    labels: ``strengths (..., N, 2, k)`` (the two segments), ``labels (N, k)`` in [0, 1] (1: the
    second is stronger) or NaN (an abstain, e.g. a VLM answer that could not be parsed), which
    adds nothing. All labels NaN: a zero loss (with a gradient of zero)."""
    logits = strengths[..., 1, :] - strengths[..., 0, :]
    labels = labels.expand_as(logits)
    answered = ~torch.isnan(labels)
    if not answered.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[answered], labels[answered])


def attribute_accuracy(strengths: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per attribute, the share of decided pairs (label 0 or 1; ties and NaN abstains are left out)
    where the larger strength is the preferred segment: ``strengths (N, 2, k)``, ``labels (N, k)``
    -> ``(k,)`` (NaN: none decided)."""
    strengths, labels = np.asarray(strengths), np.asarray(labels)
    predicted = (strengths[:, 1] > strengths[:, 0]).astype(np.float32)
    decided = (labels == FIRST) | (labels == SECOND)
    return np.array([float((predicted[decided[:, i], i] == labels[decided[:, i], i]).mean()) if decided[:, i].any()
                     else math.nan for i in range(labels.shape[1])])


def fit_attribute_model(model: AttributeStrengthModel, segments: np.ndarray, labels: np.ndarray, steps: int = 1000,
                        batch_size: int = 64, learning_rate: float = 1e-3, heldout: float = 0.1,
                        generator: torch.Generator | None = None) -> dict[str, list[float]]:
    """Fit every member on the labelled pairs (each on its own bootstrap of the training pairs).

    Args:
        model: the ensemble (its normaliser fitted, or fitted here from the segments).
        segments: ``(N, 2, T, D)`` observation windows of the pairs.
        labels: ``(N, k)`` in {0, 0.5, 1}, or NaN for an abstain (left out of the loss).
        steps: Adam steps per member.
        heldout: share of pairs kept out of training for the accuracy report.

    Returns:
        ``train_accuracy`` and ``heldout_accuracy`` per attribute.

    Raises:
        ValueError: shapes that do not match, or non-finite values.
    """
    segments_t = torch.as_tensor(segments, dtype=torch.float32)
    labels_t = torch.as_tensor(labels, dtype=torch.float32)
    if segments_t.ndim != 4 or segments_t.shape[1] != 2 or labels_t.shape != (len(segments_t), model.attributes):
        raise ValueError(f"segments (N, 2, T, D) and labels (N, {model.attributes}) expected, got "
                         f"{tuple(segments_t.shape)} and {tuple(labels_t.shape)}")
    if not torch.isfinite(segments_t).all():
        raise ValueError("segments must be finite")
    if torch.isinf(labels_t).any() or ((labels_t < 0) | (labels_t > 1)).any():
        raise ValueError("labels must be in [0, 1], or NaN for an abstain")
    generator = generator or torch.Generator().manual_seed(0)
    if torch.all(model.normalizer.std == 1.0) and torch.all(model.normalizer.mean == 0.0):  # not fitted yet
        model.fit_normalizer(segments_t.reshape(-1, segments_t.shape[-1]))
    order = torch.randperm(len(segments_t), generator=generator)
    n_heldout = int(round(heldout * len(order)))
    held, train = order[:n_heldout], order[n_heldout:]
    for member, net in enumerate(model.nets):
        optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
        boot = train[torch.randint(len(train), (len(train),), generator=generator)]
        for _ in range(steps):
            rows = boot[torch.randint(len(boot), (min(batch_size, len(boot)),), generator=generator)]
            x = segments_t[rows]
            strengths = model.member_strengths(x.reshape(-1, *x.shape[2:]))[member].reshape(len(rows), 2, -1)
            loss = attribute_loss(strengths, labels_t[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        strengths = model.member_strengths(segments_t.reshape(-1, *segments_t.shape[2:])).mean(0).reshape(len(segments_t), 2, -1)
    return {"train_accuracy": attribute_accuracy(strengths[train], labels_t[train]).tolist(),
            "heldout_accuracy": attribute_accuracy(strengths[held], labels_t[held]).tolist() if n_heldout else []}


def masked_mae(realized: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per episode, the mean absolute error over the asked attributes: ``sum_i m_i |v_i - t_i| /
    sum_i m_i`` for ``(n, k)`` arrays (AlignDiff's evaluation).

    Raises:
        ValueError: an episode with no attribute asked.
    """
    mask = np.asarray(mask, dtype=np.float64)
    if (mask.sum(-1) == 0).any():
        raise ValueError("every episode must ask for at least one attribute (a mask row of zeros)")
    return (mask * np.abs(np.asarray(realized) - np.asarray(target))).sum(-1) / mask.sum(-1)


#: AlignDiff's 100 thresholds: 90 from 1 down to e^-4.6 (about 0.01) evenly in log, then 10 down to 0.
MAE_THRESHOLDS = np.concatenate([np.exp(np.linspace(0.0, -4.6, 90)), np.linspace(np.exp(-4.6), 0.0, 10)])


def mae_area(errors: np.ndarray, thresholds: np.ndarray = MAE_THRESHOLDS) -> float:
    """AlignDiff's MAE-area: the mean over ``thresholds`` of the share of episodes whose error
    (``errors (n,)``, e.g. :func:`masked_mae`) is below the threshold; 1 is perfect alignment.

    Raises:
        ValueError: no errors, or non-finite ones.
    """
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0 or not np.isfinite(errors).all():
        raise ValueError("mae_area needs at least one finite error")
    return float(np.mean([(errors < threshold).mean() for threshold in thresholds]))


__all__ = ["AttributeStrengthModel", "AttributeTeacher", "MAE_THRESHOLDS", "attribute_accuracy", "attribute_loss",
           "dressing_force", "dressing_height", "dressing_speed", "fit_attribute_model", "mae_area", "masked_mae",
           "metaworld_smoothness", "metaworld_speed", "segment_observations"]
