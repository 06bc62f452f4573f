"""Bradley-Terry reward models learned from segment preferences, and relabeling.

The preference model (Bradley and Terry 1952; Christiano et al. 2017, Eq. 1):

    P(sigma_1 > sigma_0) = exp(sum_t r(s1_t, a1_t)) / (exp(sum_t r(s0_t, a0_t)) + exp(sum_t r(s1_t, a1_t)))
                         = sigmoid(R_1 - R_0),

trained by cross-entropy against the label (the probability that the second segment is
preferred; ties are the soft target 0.5; abstains are skipped). An ensemble of K independently
initialised MLPs ``r(s, a)`` is trained on shuffled minibatches, each member stopping early on
held-out preference accuracy; the reward is the ensemble mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policies.networks import ObservationNormalizer, mlp
from reward_models.preferences import PreferenceLabels


@dataclass
class RewardModelConfig:
    """Hyperparameters of the Bradley-Terry ensemble."""

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of each member. Default [256, 256]."""
    ensemble_size: int = 3
    """K members. Default 3."""
    learning_rate: float = 3e-4
    """Adam learning rate. Default 3e-4."""
    batch_size: int = 64
    """Pairs per gradient step. Default 64."""
    max_epochs: int = 100
    """Upper bound on passes over the training pairs. Default 100."""
    patience: int = 10
    """Epochs without a better held-out accuracy before a member stops. Default 10."""
    holdout_fraction: float = 0.2
    """Share of answered pairs kept for held-out accuracy. Default 0.2."""
    use_action: bool = True
    """r(s, a) when True, r(s) otherwise. Default True."""

    def __post_init__(self) -> None:
        if self.ensemble_size < 1 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("ensemble_size, batch_size, max_epochs and patience must be >= 1")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction={self.holdout_fraction}; expected in (0, 1)")


class RewardEnsemble(nn.Module):
    """K reward MLPs ``(B, D) [, (B, A)] -> (K, B)`` with shared observation normalisation."""

    def __init__(self, config: RewardModelConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.normalizer = ObservationNormalizer(observation_dim)
        in_dim = observation_dim + (action_dim if config.use_action else 0)
        self.members = nn.ModuleList(mlp(in_dim, 1, config.hidden_dims) for _ in range(config.ensemble_size))

    def member_rewards(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Per-member rewards ``(K, ...)`` for ``observation (..., D)``, ``action (..., A)``."""
        x = self.normalizer(observation)
        if self.config.use_action:
            x = torch.cat([x, action], dim=-1)
        return torch.stack([m(x).squeeze(-1) for m in self.members])

    @torch.no_grad()
    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Ensemble-mean reward ``(...)``."""
        return self.member_rewards(observation, action).mean(0)


def bradley_terry_loss(returns: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``sigmoid(R_1 - R_0)`` against ``labels`` in [0, 1].

    Args:
        returns: ``(..., N, 2)`` predicted segment returns.
        labels: ``(N,)`` probability that the second segment is preferred (0.5 = tie).
    """
    logits = returns[..., 1] - returns[..., 0]
    return F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits))


def _segments(episodes, pairs: np.ndarray, length: int, key: str) -> np.ndarray:
    out = []
    for pair in pairs:
        out.append([getattr(episodes[e], key)[s : s + length] for e, s in pair])
    return np.asarray(out, dtype=np.float32)  # (N, 2, H, dim)


def preference_accuracy(returns: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of non-tie pairs where the larger predicted return is the preferred segment."""
    decided = labels != 0.5
    if not decided.any():
        return float("nan")
    predicted = (returns[..., 1] > returns[..., 0]).float()
    return float((predicted[decided] == labels[decided]).float().mean())


def fit_reward_model(
    episodes: Sequence,
    labels: PreferenceLabels,
    config: RewardModelConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[RewardEnsemble, dict[str, float]]:
    """Train a Bradley-Terry ensemble on the answered pairs of ``labels``.

    Args:
        episodes: the episodes the pairs index (``observations (T+1, D)``, ``actions (T, A)``).
        labels: labelled pairs (abstains are dropped).
        config: hyperparameters.
        seed: seeds the split, initialisation and shuffling.
        device: torch device.

    Returns:
        The model (each member at its best held-out epoch) and a report: ``heldout_accuracy``,
        ``train_accuracy`` (ensemble mean), ``pairs_train``, ``pairs_heldout``, ``epochs``.

    Raises:
        ValueError: fewer than 10 answered pairs.
    """
    answered = labels.answered
    pairs, targets = labels.pairs[answered], labels.labels[answered]
    if len(pairs) < 10:
        raise ValueError(f"only {len(pairs)} answered pairs; a reward model needs at least 10")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n_held = max(1, int(round(config.holdout_fraction * len(pairs))))
    held, train = order[:n_held], order[n_held:]
    H = labels.segment_length
    obs = torch.as_tensor(_segments(episodes, pairs, H, "observations"), device=device)
    act = torch.as_tensor(_segments(episodes, pairs, H, "actions"), device=device)
    y = torch.as_tensor(targets, device=device)

    torch.manual_seed(seed)
    model = RewardEnsemble(config, obs.shape[-1], act.shape[-1]).to(device)
    model.normalizer.fit(obs[train].reshape(-1, obs.shape[-1]))
    epochs_used = 0
    for k, member in enumerate(model.members):
        optimizer = torch.optim.Adam(member.parameters(), lr=config.learning_rate)
        best, best_state, stale = -1.0, None, 0
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        for epoch in range(config.max_epochs):
            for batch in torch.randperm(len(train), generator=generator).split(config.batch_size):
                index = torch.as_tensor(train, device=device)[batch.to(device)]
                returns = _member_returns(model, k, obs[index], act[index])
                loss = bradley_terry_loss(returns, y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                accuracy = preference_accuracy(_member_returns(model, k, obs[held], act[held]), y[held])
            if accuracy > best:
                best, stale = accuracy, 0
                best_state = {n: p.detach().clone() for n, p in member.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    break
        epochs_used = max(epochs_used, epoch + 1)
        member.load_state_dict(best_state)
    with torch.no_grad():
        held_returns = model(obs[held], act[held]).sum(-1)
        train_returns = model(obs[train], act[train]).sum(-1)
    report = {
        "heldout_accuracy": preference_accuracy(held_returns, y[held]),
        "train_accuracy": preference_accuracy(train_returns, y[train]),
        "pairs_train": float(len(train)),
        "pairs_heldout": float(len(held)),
        "epochs": float(epochs_used),
    }
    return model.eval(), report


@torch.no_grad()
def ensemble_segment_returns(model: RewardEnsemble, episodes: Sequence, pairs: np.ndarray, segment_length: int) -> np.ndarray:
    """Every member's predicted returns of the segments of ``pairs``: ``(K, N, 2)``."""
    device = next(model.parameters()).device
    obs = torch.as_tensor(_segments(episodes, pairs, segment_length, "observations"), device=device)
    act = torch.as_tensor(_segments(episodes, pairs, segment_length, "actions"), device=device)
    return np.stack([_member_returns(model, k, obs, act).cpu().numpy() for k in range(len(model.members))])


def _member_returns(model: RewardEnsemble, k: int, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Segment returns ``(N, 2)`` of member ``k`` for segments ``(N, 2, H, D|A)``."""
    x = model.normalizer(obs)
    if model.config.use_action:
        x = torch.cat([x, act], dim=-1)
    return model.members[k](x).squeeze(-1).sum(-1)


@torch.no_grad()
def relabel(model: RewardEnsemble, episodes: Sequence, normalize: bool = True) -> list[np.ndarray]:
    """Learned rewards ``(T,) float32`` for every episode's transitions ``(s_t, a_t)``.

    With ``normalize`` the rewards are standardised over the whole dataset (zero mean, unit
    standard deviation), the usual input scale for the offline learner.
    """
    device = next(model.parameters()).device
    out = []
    for ep in episodes:
        obs = torch.as_tensor(np.asarray(ep.observations[:-1], dtype=np.float32), device=device)
        act = torch.as_tensor(np.asarray(ep.actions, dtype=np.float32), device=device)
        out.append(model(obs, act).cpu().numpy().astype(np.float32))
    if normalize:
        flat = np.concatenate(out)
        mean, std = float(flat.mean()), float(flat.std()) + 1e-8
        out = [(r - mean) / std for r in out]
    return out
