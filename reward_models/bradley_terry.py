"""Bradley-Terry reward models learned from segment preferences.

The preference model (Bradley and Terry 1952; Christiano et al. 2017, Eq. 1):

    P(sigma_1 > sigma_0) = exp(sum_t r(s1_t, a1_t)) / (exp(sum_t r(s0_t, a0_t)) + exp(sum_t r(s1_t, a1_t)))
                         = sigmoid(R_1 - R_0),

trained by cross-entropy against the label (the probability that the second segment is
preferred; ties are the soft target 0.5; abstains are skipped). An ensemble of K independently
initialised members is trained on shuffled minibatches, each member stopping early on held-out
preference accuracy; the reward is the ensemble mean.

What a member sees of transition t is set by ``RewardModelConfig.inputs``:

- ``"s"``: ``r(s_t)``; ``"sa"``: ``r(s_t, a_t)``; ``"sas"``: ``r(s_t, a_t, s_{t+1})``, an MLP on
  the standardised state(s) and the action. ``sas`` sees the outcome of the step, which is what
  a teacher judges when an event (a force spike, a success) shows only in ``s_{t+1}``.
- ``"image"``: ``r(o_{t+1})``, a small CNN on the rendered frame after the step (the frame a
  VLM labeler judged), frames resized to ``image_size`` squared pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from policies.data import EpisodeData
from policies.networks import ObservationNormalizer, check_hidden_dims, mlp
from reward_models.preferences import PreferenceLabels

INPUTS = ("s", "sa", "sas", "image")


@dataclass
class RewardModelConfig:
    """Hyperparameters of the Bradley-Terry ensemble.

    Raises:
        ValueError: a count below 1, ``holdout_fraction`` outside (0, 1), or unknown ``inputs``.
    """

    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of each member's MLP (after the CNN for images). Default [256, 256]."""
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
    inputs: str = "sas"
    """What a member sees: ``s``, ``sa``, ``sas`` or ``image`` (module docstring). Default sas."""
    image_size: int = 64
    """Frames are resized to this many pixels squared for ``inputs=image``. Default 64."""
    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 32, 32])
    """Channels of the stride-2 3x3 convolutions for ``inputs=image``. Default [16, 32, 32, 32]."""

    def __post_init__(self) -> None:
        self.hidden_dims = check_hidden_dims(self.hidden_dims, "reward_model.hidden_dims")
        for name in ("ensemble_size", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction={self.holdout_fraction}; expected in (0, 1)")
        if self.inputs not in INPUTS:
            raise ValueError(f"reward model inputs={self.inputs!r}; expected one of {', '.join(INPUTS)}")
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size}; expected >= 16 pixels")


def reward_inputs(episodes: Sequence, config: RewardModelConfig, device: str | torch.device = "cpu") -> EpisodeData:
    """The episodes as the tensors a reward model of ``config`` reads: observations and actions,
    or for ``inputs=image`` also the frames resized to ``image_size`` squared pixels.

    Raises:
        ValueError: ``inputs=image`` but an episode has no frames.
    """
    image = config.inputs == "image"
    if image:
        missing = [i for i, ep in enumerate(episodes) if ep.frames is None]
        if missing:
            raise ValueError(f"episode {missing[0]} has no frames but reward_model.inputs=image needs them; "
                             "collect the dataset with dataset.frames=true")
    return EpisodeData(episodes, device, frames=image, frame_size=config.image_size if image else None)


def segment_rows(data: EpisodeData, pairs: np.ndarray, segment_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Transition rows ``(N, 2, H) int64`` of the segments of ``pairs (N, 2, 2)`` of ``(episode,
    start)``, and a mask ``(N, 2, H) float32``: 0 for steps past the end of an episode (a segment
    into the absorbing state after a termination, whose reward is 0)."""
    pairs_t = torch.as_tensor(np.asarray(pairs), dtype=torch.long, device=data.device)
    return data.window_rows(pairs_t[..., 0], pairs_t[..., 1], segment_length)


class _ImageReward(nn.Module):
    """One CNN member: ``(..., S, S, 3) uint8 -> (...)`` float32."""

    def __init__(self, config: RewardModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, *config.cnn_channels]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = mlp(channels[-1], 1, config.hidden_dims)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        batch = frame.shape[:-3]
        x = frame.reshape(-1, *frame.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        return self.head(self.encoder(x)).reshape(batch)


class RewardEnsemble(nn.Module):
    """K reward members ``inputs -> (K, ...)`` with shared observation normalisation.

    ``inputs`` is a dict as :meth:`policies.data.EpisodeData.gather` returns (``observation``,
    ``action``, ``next_observation``, or ``next_frame (..., S, S, 3) uint8`` for images); leading
    dimensions are free.
    """

    def __init__(self, config: RewardModelConfig, observation_dim: int, action_dim: int):
        super().__init__()
        self.config = config
        self.normalizer = ObservationNormalizer(observation_dim)
        if config.inputs == "image":
            self.members = nn.ModuleList(_ImageReward(config) for _ in range(config.ensemble_size))
        else:
            in_dim = {"s": observation_dim, "sa": observation_dim + action_dim,
                      "sas": 2 * observation_dim + action_dim}[config.inputs]
            self.members = nn.ModuleList(mlp(in_dim, 1, config.hidden_dims) for _ in range(config.ensemble_size))

    def _features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.inputs == "image":
            return inputs["next_frame"]
        parts = [self.normalizer(inputs["observation"])]
        if self.config.inputs in ("sa", "sas"):
            parts.append(inputs["action"])
        if self.config.inputs == "sas":
            parts.append(self.normalizer(inputs["next_observation"]))
        return torch.cat(parts, dim=-1)

    @property
    def fields(self) -> tuple[str, ...]:
        """The transition fields the members read."""
        return ("next_frame",) if self.config.inputs == "image" else ("observation", "action", "next_observation")

    def member_reward(self, k: int, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Member ``k``'s reward ``(...)`` for each transition of ``inputs``."""
        out = self.members[k](self._features(inputs))
        return out if self.config.inputs == "image" else out.squeeze(-1)

    def member_rewards(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-member rewards ``(K, ...)``."""
        return torch.stack([self.member_reward(k, inputs) for k in range(len(self.members))])

    @torch.no_grad()
    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Ensemble-mean reward ``(...)``."""
        return self.member_rewards(inputs).mean(0)


def bradley_terry_loss(returns: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``sigmoid(R_1 - R_0)`` against ``labels`` in [0, 1].

    Args:
        returns: ``(..., N, 2)`` predicted segment returns.
        labels: ``(N,)`` probability that the second segment is preferred (0.5 = tie).
    """
    logits = returns[..., 1] - returns[..., 0]
    return F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits))


def preference_accuracy(returns: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of non-tie pairs where the larger predicted return is the preferred segment."""
    decided = labels != 0.5
    if not decided.any():
        return float("nan")
    predicted = (returns[..., 1] > returns[..., 0]).float()
    return float((predicted[decided] == labels[decided]).float().mean())


def _segment_returns(model: RewardEnsemble, k: int | None, data: EpisodeData, rows: torch.Tensor,
                     mask: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Segment returns ``(N, 2)`` (member ``k``, or the ensemble mean when None) of ``rows (N, 2, H)``,
    steps where ``mask`` is 0 left out."""
    out = []
    for part, part_mask in zip(rows.split(chunk), mask.split(chunk)):
        inputs = data.gather(part, model.fields)
        reward = model.member_reward(k, inputs) if k is not None else model.member_rewards(inputs).mean(0)
        out.append((reward * part_mask).sum(-1))
    return torch.cat(out) if out else torch.zeros(0, 2, device=rows.device)


def fit_reward_model(
    episodes: Sequence,
    labels: PreferenceLabels,
    config: RewardModelConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[RewardEnsemble, dict[str, float]]:
    """Train a Bradley-Terry ensemble on the answered pairs of ``labels``.

    Args:
        episodes: the episodes the pairs index (``observations (T+1, D)``, ``actions (T, A)``,
            ``frames (T+1, H, W, 3) uint8`` for ``inputs=image``).
        labels: labelled pairs (abstains are dropped).
        config: hyperparameters.
        seed: seeds the split, initialisation and shuffling.
        device: torch device.
        progress: show a progress bar over members x epochs (an early stop skips a member's
            remaining epochs), with the held-out accuracy.

    Returns:
        The model (each member at its best held-out epoch) and a report: ``heldout_accuracy``,
        ``train_accuracy`` (ensemble mean), ``pairs_train``, ``pairs_heldout``, ``epochs``.

    Raises:
        ValueError: fewer than 10 answered pairs; ``inputs=image`` without frames.
    """
    answered = labels.answered
    pairs, targets = labels.pairs[answered], labels.labels[answered]
    if len(pairs) < 10:
        raise ValueError(f"only {len(pairs)} answered pairs; a reward model needs at least 10")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n_held = max(1, int(round(config.holdout_fraction * len(pairs))))
    held, train = order[:n_held], order[n_held:]
    data = reward_inputs(episodes, config, device)
    rows, mask = segment_rows(data, pairs, labels.segment_length)
    y = torch.as_tensor(targets, device=device)

    torch.manual_seed(seed)
    observation_dim = episodes[0].observations.shape[-1]
    model = RewardEnsemble(config, observation_dim, episodes[0].actions.shape[-1]).to(device)
    if config.inputs != "image":
        model.normalizer.fit(data.observations)
    held_t, train_t = torch.as_tensor(held, device=device), torch.as_tensor(train, device=device)
    epochs_used = 0
    bar = tqdm(total=len(model.members) * config.max_epochs, desc="reward model", unit="epoch", disable=not progress,
               mininterval=1.0)
    for k, member in enumerate(model.members):
        optimizer = torch.optim.Adam(member.parameters(), lr=config.learning_rate)
        best, best_state, stale = -1.0, None, 0
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        for epoch in range(config.max_epochs):
            for batch in torch.randperm(len(train), generator=generator).split(config.batch_size):
                index = train_t[batch.to(device)]
                returns = (model.member_reward(k, data.gather(rows[index], model.fields)) * mask[index]).sum(-1)
                loss = bradley_terry_loss(returns, y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                accuracy = preference_accuracy(_segment_returns(model, k, data, rows[held_t], mask[held_t]), y[held_t])
            bar.update(1)
            bar.set_postfix(member=k, heldout_accuracy=f"{accuracy:.3f}", refresh=False)
            if accuracy > best:
                best, stale = accuracy, 0
                best_state = {n: p.detach().clone() for n, p in member.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience:
                    bar.update(config.max_epochs - epoch - 1)
                    break
        epochs_used = max(epochs_used, epoch + 1)
        member.load_state_dict(best_state)
    bar.close()
    model.eval()
    with torch.no_grad():
        held_returns = _segment_returns(model, None, data, rows[held_t], mask[held_t])
        train_returns = _segment_returns(model, None, data, rows[train_t], mask[train_t])
    report = {
        "heldout_accuracy": preference_accuracy(held_returns, y[held_t]),
        "train_accuracy": preference_accuracy(train_returns, y[train_t]),
        "pairs_train": float(len(train)),
        "pairs_heldout": float(len(held)),
        "epochs": float(epochs_used),
    }
    return model, report


@torch.no_grad()
def ensemble_segment_returns(model: RewardEnsemble, episodes: Sequence, pairs: np.ndarray, segment_length: int) -> np.ndarray:
    """Every member's predicted returns of the segments of ``pairs``: ``(K, N, 2)`` float32."""
    device = next(model.parameters()).device
    data = reward_inputs(episodes, model.config, device)
    rows, mask = segment_rows(data, pairs, segment_length)
    return np.stack([_segment_returns(model, k, data, rows, mask).cpu().numpy() for k in range(len(model.members))])
