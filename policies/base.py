"""The learner contract every algorithm in :mod:`policies` follows, and the batch it declares."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BATCH_KINDS = ("transitions", "windows", "future")


@dataclass(frozen=True)
class BatchSpec:
    """The batches a learner trains on; the loop builds the matching sampler
    (:func:`policies.data.make_sampler`).

    Attributes:
        kind: ``transitions`` (``(B, D)`` fields), ``windows`` (``(B, H, D)`` fields and a
            ``mask (B, H)``), or ``future`` (transitions and a ``future_observation (B, D)`` of the
            same episode at a geometric offset).
        reward: whether batches must carry a ``reward``.
        cost: whether batches must carry a ``cost`` (the judges' per-step costs; cost-constrained
            learners).
        horizon: H of ``windows``.
        discount: gamma of the geometric offset of ``future`` (mean offset ``1 / (1 - gamma)``).

    Raises:
        ValueError: an unknown kind, ``horizon`` < 1 or ``discount`` outside [0, 1).
    """

    kind: str = "transitions"
    reward: bool = False
    horizon: int = 1
    discount: float = 0.99
    cost: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BATCH_KINDS:
            raise ValueError(f"batch kind {self.kind!r}; expected one of {BATCH_KINDS}")
        if self.horizon < 1 or not 0.0 <= self.discount < 1.0:
            raise ValueError(f"horizon={self.horizon} (>= 1) and discount={self.discount} (in [0, 1)) expected")


class NoiseSource:
    """A learner's own random generator for the noise of its updates and of ``explore`` (SAC's
    reparameterised samples, a TD3-style actor's noise), so a resumed run draws the same noise
    as an uninterrupted one: seeded from torch's global generator when built, saved with the
    optimisers (``state_dict``). The generator lives on the device it is asked for; a saved state
    restores only on the same kind of device (a CPU state does not fit a CUDA generator), else
    the generator is reseeded."""

    def __init__(self) -> None:
        self.seed = int(torch.randint(0, 2**62, (1,)))
        self._generator: torch.Generator | None = None
        self._pending: tuple[str, torch.Tensor] | None = None

    def get(self, device: torch.device) -> torch.Generator:
        """The generator on ``device`` (made on first use)."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
            pending, self._pending = self._pending, None
            if pending is not None and pending[0] == device.type:
                self._generator.set_state(pending[1])
        return self._generator

    def state_dict(self) -> dict[str, Any]:
        generator = self._generator
        return {"seed": self.seed, "device": None if generator is None else generator.device.type,
                "rng": None if generator is None else generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state.get("seed", self.seed))
        self._generator = None
        rng = state.get("rng")
        self._pending = None if rng is None else (str(state.get("device")), torch.as_tensor(rng, dtype=torch.uint8))


class Learner(nn.Module, abc.ABC):
    """Base class of learners.

    A learner owns its networks (submodules and buffers: everything in ``state_dict()`` is saved
    as weights) and its optimisers. Subclasses implement:

    - ``update(batch) -> dict[str, Tensor]``: one gradient step on a batch of the kind
      :meth:`batch_spec` declares (transitions: ``observation (B, D) float32``, ``action (B, A)
      float32`` in [-1, 1], ``reward (B,)``, ``next_observation (B, D)``, ``terminal (B,)
      float32``); returns detached scalar tensors so the loop never waits for the device;
    - ``act(observation (B, D) float32, condition=None) -> (B, A) float32``: the deterministic
      action in [-1, 1]; ``condition (B, C) float32`` is a goal, a latent z, attribute targets
      or a return for conditioned learners (others refuse one);
    - ``prepare(observations (N, D), total_steps)``: fit data statistics (observation
      normalisation) and schedules once before training.

    Optional: ``reset()`` at the start of each episode (planners drop their plan, stateful
    policies their memory), ``explore(observation, condition)`` for acting while learning online
    (default: ``act``).

    ``training_state()`` / ``load_training_state()`` carry the optimiser and scheduler state that
    a resumed run needs; weights are ``state_dict()``.
    """

    #: Whether batches must carry a ``reward`` (offline RL) or not (imitation).
    needs_reward: bool = False
    #: D and A, set by each learner's constructor (recorded in checkpoints).
    observation_dim: int
    action_dim: int
    #: Size C of the condition ``act`` takes; 0 for unconditioned learners.
    condition_dim: int = 0

    def batch_spec(self) -> BatchSpec:
        """The batches :meth:`update` takes. Default: transitions, with rewards if ``needs_reward``."""
        return BatchSpec("transitions", reward=self.needs_reward)

    def prepare(self, observations: torch.Tensor, total_steps: int | None = None) -> None:
        """Before training: fit statistics from the dataset's observations ``(N, D) float32``;
        ``total_steps`` is the planned number of updates (for learning-rate schedules)."""

    def reset(self) -> None:
        """Start of an episode: forget per-episode state (a plan, a history). Default: nothing."""

    @abc.abstractmethod
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step; returns detached scalar losses keyed by name."""

    @abc.abstractmethod
    def act(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic actions ``(B, A) float32`` in [-1, 1] for ``(B, D)`` observations."""

    def explore(self, observation: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Actions ``(B, A) float32`` in [-1, 1] for acting while learning. Default: :meth:`act`."""
        return self.act(observation, condition)

    def check_condition(self, condition: torch.Tensor | None, batch: int) -> None:
        """Validate ``condition`` against :attr:`condition_dim` for a batch of ``batch`` observations.

        Raises:
            ValueError: a condition given to an unconditioned learner, none given to a conditioned
                one, or one of the wrong shape or with non-finite values.
        """
        name = type(self).__name__
        if self.condition_dim == 0:
            if condition is not None:
                raise ValueError(f"{name} is not conditioned; act(observation) takes no condition")
            return
        if condition is None:
            raise ValueError(f"{name} acts towards a condition (B, {self.condition_dim}); none was given")
        if tuple(condition.shape) != (batch, self.condition_dim) or not torch.isfinite(condition).all():
            raise ValueError(f"{name}: condition must be finite ({batch}, {self.condition_dim}) float32, "
                             f"got {tuple(condition.shape)}")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers whose state is saved in checkpoints."""
        return {}

    def training_state(self) -> dict[str, Any]:
        """Optimiser states (tensors allowed inside), for checkpoints."""
        return {name: opt.state_dict() for name, opt in self.optimizers().items()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`training_state` returned.

        Raises:
            KeyError: an optimiser of this learner is missing from ``state``.
        """
        for name, opt in self.optimizers().items():
            if name not in state:
                raise KeyError(f"checkpoint has no state for optimiser {name!r}; has {sorted(state)}")
            opt.load_state_dict(state[name])
