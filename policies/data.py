"""Tensor-resident episodes and the samplers every learner, reward model and loop draws from.

:class:`EpisodeData` keeps a list of episodes on one device with their episode and time indices;
every observation is stored once (``T + 1`` rows per episode), and a transition's observation and
next observation are two rows of that table. Samplers (all with ``sample(batch_size, generator)``,
indices drawn on the CPU from a ``torch.Generator``, so a batch sequence is reproducible and
resumes from the generator's state in a checkpoint):

- :class:`TransitionSampler`: transitions ``(B, D)`` (IQL, BC);
- :class:`WindowSampler`: windows ``(B, H, D)`` of consecutive steps with a ``mask (B, H)`` that
  is 0 past the episode's end (diffusion planners, preference segments);
- :class:`FutureSampler`: transitions plus an observation of the same episode ``k ~ Geometric(1 -
  gamma)`` steps after the transition's (forward-backward and goal-conditioned learners);
- :class:`ReplayBuffer`: a growing buffer with ``add``, a capacity and a pluggable selection rule
  (FIFO or reservoir), saved and restored with checkpoints (online RL, continual replay).

:func:`make_sampler` builds the sampler a learner declares with its :class:`policies.base.BatchSpec`.
Episodes are duck-typed: anything with ``observations (T+1, D)``, ``actions (T, A)``,
``rewards (T,)``, ``terminations (T,)``, ``truncations (T,)`` and optional ``frames (T+1, H, W, 3)``
(:class:`embodied.data.Episode`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional as F

#: Rows checked for finiteness at a time (bounds the temporary bool array of the check).
_CHECK_ROWS = 65_536


def _concat_checked(name: str, arrays: Sequence[np.ndarray], dtype: np.dtype = np.float32) -> torch.Tensor:
    """Concatenate episode arrays into one CPU tensor (one copy), checking finiteness in chunks.

    Raises:
        ValueError: a non-finite value (names the field and the first bad row).
    """
    try:
        out = np.concatenate([np.asarray(a) for a in arrays]).astype(dtype, copy=False)
    except ValueError as error:  # e.g. observations of another size in one episode
        raise ValueError(f"transition field {name!r}: episodes do not stack ({error})") from error
    if np.issubdtype(out.dtype, np.floating):
        for start in range(0, len(out), _CHECK_ROWS):
            part = out[start:start + _CHECK_ROWS]
            if not np.isfinite(part).all():
                bad = start + int(np.argwhere(~np.isfinite(part.reshape(len(part), -1)).all(1))[0, 0])
                raise ValueError(f"transition field {name!r} has non-finite values (first at row {bad}); "
                                 "expected finite float32")
    return torch.from_numpy(np.ascontiguousarray(out))


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """``(T, H, W, 3) uint8`` -> ``(T, size, size, 3) uint8`` by area averaging.

    Raises:
        ValueError: frames not ``(T, H, W, 3)``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    x = torch.as_tensor(frames)
    if x.shape[1:3] != (size, size):
        x = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(size, size), mode="area")
        x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.contiguous()


class EpisodeData:
    """Episodes as tensors on one device, with episode and time indices.

    Attributes (N transitions, E episodes, ``N + E`` observations):
        observations: ``(N + E, D) float32``; episode e's observations are rows
            ``offsets[e] + e + arange(lengths[e] + 1)``.
        actions: ``(N, A) float32``.
        rewards: ``(N,) float32`` or None (``include_reward=False``: learners from feedback get
            rewards from a reward function instead of the ground truth).
        terminals: ``(N,) float32``, 1 where the episode terminated (no bootstrapping).
        timeouts: ``(N,) float32``, 1 where it was truncated (bootstrap).
        frames: ``(N + E, H, W, 3) uint8`` rendered with each observation, or None.
        episode: ``(N,) int64`` episode of each transition; time: ``(N,) int64`` its step t.
        observation_row: ``(N,) int64`` row of each transition's observation (next: ``+ 1``).
        offsets, lengths: ``(E,) int64`` first transition and number of transitions per episode.

    Args:
        episodes: the episodes (at least one, each with T >= 1 transitions).
        device: torch device of the tensors.
        include_reward: keep the episodes' ``rewards``.
        frames: keep the episodes' frames (all episodes must have them).
        frame_size: resize the kept frames to this many pixels squared (area averaging).

    Raises:
        ValueError: no episodes, an empty episode, inconsistent shapes, non-finite values, or
            frames asked for but missing.
    """

    def __init__(self, episodes: Sequence[Any], device: str | torch.device = "cpu", include_reward: bool = False,
                 frames: bool = False, frame_size: int | None = None):
        if not episodes:
            raise ValueError("EpisodeData needs at least one episode")
        lengths = np.asarray([len(ep.actions) for ep in episodes], dtype=np.int64)
        for e, ep in enumerate(episodes):
            if lengths[e] < 1 or len(ep.observations) != lengths[e] + 1:
                raise ValueError(f"episode {e}: {len(ep.observations)} observations for {lengths[e]} actions; "
                                 "expected T+1 observations for T >= 1 actions")
        self.device = torch.device(device)
        dev = self.device
        self.observations = _concat_checked("observation", [ep.observations for ep in episodes]).to(dev)
        self.actions = _concat_checked("action", [ep.actions for ep in episodes]).to(dev)
        self.rewards = _concat_checked("reward", [ep.rewards for ep in episodes]).to(dev) if include_reward else None
        self.terminals = _concat_checked("terminal", [ep.terminations for ep in episodes]).to(dev)
        self.timeouts = _concat_checked("timeout", [ep.truncations for ep in episodes]).to(dev)
        self.frames = None
        if frames:
            missing = [e for e, ep in enumerate(episodes) if getattr(ep, "frames", None) is None]
            if missing:
                raise ValueError(f"episodes {missing[:5]} have no frames; collect the dataset with dataset.frames=true")
            if frame_size is None:
                self.frames = torch.from_numpy(np.concatenate([ep.frames for ep in episodes])).to(dev)
            else:
                self.frames = torch.cat([resize_frames(ep.frames, frame_size) for ep in episodes]).to(dev)
        self.lengths = torch.from_numpy(lengths).to(dev)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)[:-1]])).to(dev)
        self.episode = torch.repeat_interleave(torch.arange(len(lengths), device=dev), self.lengths)
        self.time = torch.arange(int(lengths.sum()), device=dev) - self.offsets[self.episode]
        self.observation_row = torch.arange(int(lengths.sum()), device=dev) + self.episode
        per_transition = {"action": self.actions, "terminal": self.terminals, "timeout": self.timeouts,
                          **({"reward": self.rewards} if self.rewards is not None else {})}
        for name, value in per_transition.items():
            if len(value) != len(self.episode):
                raise ValueError(f"transition field {name!r} has {len(value)} rows for {len(self.episode)} "
                                 "transitions; expected one per action in every episode")
        if self.observations.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(f"observations {tuple(self.observations.shape)} and actions {tuple(self.actions.shape)}; "
                             "expected flat (N + E, D) and (N, A)")
        self.size = len(self.actions)
        self.num_episodes = len(lengths)

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def transition_observations(self) -> torch.Tensor:
        """``(N, D) float32``: the observation of every transition (for normalisation statistics)."""
        return take_rows(self.observations, self.observation_row)

    def episode_returns(self, rewards: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``(E,) float32`` of each episode under ``rewards (N,)`` (default: the stored rewards).

        Raises:
            ValueError: no rewards given and none stored.
        """
        rewards = self.rewards if rewards is None else rewards
        if rewards is None:
            raise ValueError("no rewards: EpisodeData was built with include_reward=False")
        return torch.zeros(self.num_episodes, device=rewards.device).index_add_(0, self.episode, rewards)

    def gather(self, rows: torch.Tensor, fields: Sequence[str] = ("observation", "action", "next_observation"),
               rewards: torch.Tensor | None = None, costs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Fields of the transitions at ``rows`` (any shape S, int64): each ``(*S, ...)``.

        Fields: ``observation``, ``next_observation``, ``action``, ``reward`` (``rewards`` if given,
        else the stored ones), ``cost`` (``costs (N,)``, the judges' per-step costs), ``terminal``,
        ``timeout``, ``frame`` (the frame with the observation), ``next_frame`` (the frame after
        the step).

        Raises:
            KeyError: an unknown field, or one this data does not hold.
        """
        flat = rows.reshape(-1)
        out: dict[str, torch.Tensor] = {}
        for name in fields:
            if name in ("observation", "next_observation", "frame", "next_frame"):
                source = self.observations if name.endswith("observation") else self.frames
                if source is None:
                    raise KeyError(f"field {name!r}: this data holds no frames (build it with frames=True)")
                index = self.observation_row.index_select(0, flat) + int(name.startswith("next"))
                value = take_rows(source, index)
            elif name == "action":
                value = take_rows(self.actions, flat)
            elif name == "reward":
                source = self.rewards if rewards is None else rewards
                if source is None:
                    raise KeyError("field 'reward': no rewards stored or given")
                value = source.index_select(0, flat)
            elif name == "cost":
                if costs is None:
                    raise KeyError("field 'cost': no costs given (judges=[...] make them)")
                value = costs.index_select(0, flat)
            elif name == "terminal":
                value = self.terminals.index_select(0, flat)
            elif name == "timeout":
                value = self.timeouts.index_select(0, flat)
            else:
                raise KeyError(f"unknown field {name!r}; expected observation, next_observation, action, reward, "
                               "cost, terminal, timeout, frame or next_frame")
            out[name] = value.reshape(*rows.shape, *value.shape[1:])
        return out

    def window_rows(self, episode: torch.Tensor, start: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Transition rows ``(*S, H) int64`` of windows of ``horizon`` steps from ``(episode, start)``
        (each ``(*S,)`` int64), and their mask ``(*S, H) float32``: 0 for steps past the episode's
        end, whose rows repeat the episode's last transition."""
        step = start[..., None] + torch.arange(horizon, device=start.device)
        length = self.lengths[episode][..., None]
        mask = (step < length).float()
        return self.offsets[episode][..., None] + torch.minimum(step, length - 1), mask


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` along dim 0 for a 1-D ``index`` (int64): ``(len(index), *table.shape[1:])``.

    Rows of 2-D and larger tables are gathered as an embedding lookup, which on the CPU is several
    times faster than ``index_select`` for wide rows and large batches
    (``benchmarks/bench_samplers.py``); 1-D tables use ``index_select``.
    """
    if table.ndim == 1:
        return table.index_select(0, index)
    return F.embedding(index, table.reshape(len(table), -1)).reshape(len(index), *table.shape[1:])


def _draw(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``batch_size`` uniform indices in [0, n) drawn on the CPU, moved without a host sync."""
    return torch.randint(n, (batch_size,), generator=generator).to(device, non_blocking=True)


class Sampler(Protocol):
    """What :func:`embodied.fit.fit` draws batches from."""

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A batch of tensors keyed by field name."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue (tensors allowed); ``{}`` when stateless."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class _Stateless:
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


TRANSITION_FIELDS = ("observation", "action", "next_observation", "terminal", "timeout")


class TransitionSampler(_Stateless):
    """Uniform transitions (with replacement): ``observation (B, D)``, ``action (B, A)``,
    ``next_observation (B, D)``, ``terminal (B,)``, ``timeout (B,)`` float32, and ``reward (B,)``
    when the data (or ``rewards``) has rewards.

    Args:
        data: the episodes.
        rewards: ``(N,) float32`` rewards to use instead of the stored ones (relabelled data).
        costs: ``(N,) float32`` per-transition costs (the judges'), sampled as ``cost (B,)``.

    Raises:
        ValueError: ``costs`` of another length than the data's transitions.
    """

    def __init__(self, data: EpisodeData, rewards: torch.Tensor | None = None, costs: torch.Tensor | None = None):
        self.data = data
        self.rewards, self.costs = rewards, costs
        if costs is not None and costs.shape != (data.size,):
            raise ValueError(f"costs of shape {tuple(costs.shape)}; expected ({data.size},), one per transition")
        has_reward = rewards is not None or data.rewards is not None
        self.fields = (*TRANSITION_FIELDS, *(("reward",) if has_reward else ()), *(("cost",) if costs is not None else ()))

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.data.gather(_draw(self.data.size, batch_size, generator, self.data.device), self.fields, self.rewards,
                                self.costs)


def returns_to_go(rewards: torch.Tensor, data: EpisodeData, discount: float) -> torch.Tensor:
    """Discounted return from each transition to its episode's end, ``G_t = sum_{k >= 0}
    gamma^k r_{t+k}`` (Diffuser's value target, Decision Diffuser's return condition), for
    rewards ``(N,) float32`` in ``data``'s transition order; ``(N,) float32`` (float64 sums).

    Raises:
        ValueError: rewards of another length than the data's transitions, or gamma outside [0, 1].
    """
    if rewards.shape != (data.size,):
        raise ValueError(f"rewards of shape {tuple(rewards.shape)}; expected ({data.size},), one per transition")
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount={discount}; expected in [0, 1]")
    values = rewards.detach().double().cpu().numpy()
    out = np.empty_like(values)
    for start, length in zip(data.offsets.tolist(), data.lengths.tolist()):
        running = 0.0
        for t in range(start + length - 1, start - 1, -1):
            running = values[t] + discount * running
            out[t] = running
    return torch.from_numpy(out).float().to(rewards.device)


class WindowSampler(_Stateless):
    """Windows of ``horizon`` consecutive transitions starting at a uniform transition:
    every transition field ``(B, H, ...)``, ``mask (B, H) float32`` (0 past the episode's end,
    where rows repeat the last transition), ``episode (B,)`` and ``time (B,)`` int64 of the start;
    with ``discount``, also ``return_to_go (B,) float32``: the discounted return from the window's
    first step to the episode's end (:func:`returns_to_go`).

    Raises:
        ValueError: ``horizon`` < 1; ``discount`` without rewards.
    """

    def __init__(self, data: EpisodeData, horizon: int, rewards: torch.Tensor | None = None,
                 discount: float | None = None):
        if horizon < 1:
            raise ValueError(f"horizon={horizon}; expected >= 1")
        self.data, self.horizon, self.rewards = data, int(horizon), rewards
        has_reward = rewards is not None or data.rewards is not None
        self.fields = (*TRANSITION_FIELDS, "reward") if has_reward else TRANSITION_FIELDS
        self.returns = None
        if discount is not None:
            if not has_reward:
                raise ValueError("returns-to-go need rewards: the data has none and none were given (relabel first)")
            self.returns = returns_to_go(rewards if rewards is not None else data.rewards, data, discount)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        start = _draw(self.data.size, batch_size, generator, self.data.device)
        episode, time = self.data.episode[start], self.data.time[start]
        rows, mask = self.data.window_rows(episode, time, self.horizon)
        batch = {**self.data.gather(rows, self.fields, self.rewards), "mask": mask, "episode": episode, "time": time}
        if self.returns is not None:
            batch["return_to_go"] = self.returns.index_select(0, start)
        return batch


class FutureSampler(_Stateless):
    """Transitions plus ``future_observation (B, D)``: the observation ``k`` steps after the
    transition's observation in the same episode, ``k ~ Geometric(1 - discount)`` (k >= 1,
    ``P(k) = (1 - gamma) gamma^(k-1)``), clipped to the episode's last observation. This is the
    discounted future-state distribution that forward-backward representations (Touati and
    Ollivier 2021) and hindsight goal relabelling sample from.

    Raises:
        ValueError: ``discount`` outside [0, 1).
    """

    def __init__(self, data: EpisodeData, discount: float, rewards: torch.Tensor | None = None):
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"discount={discount}; expected in [0, 1)")
        self.data, self.discount = data, float(discount)
        self.transitions = TransitionSampler(data, rewards)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        data = self.data
        rows = _draw(data.size, batch_size, generator, data.device)
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64).clamp_min(1e-12).to(data.device)
        if self.discount > 0:
            offset = torch.floor(torch.log(u) / math.log(self.discount)).long() + 1
        else:
            offset = torch.ones_like(u, dtype=torch.long)
        remaining = data.lengths[data.episode[rows]] - data.time[rows]  # steps to the last observation
        future = data.observation_row[rows] + torch.minimum(offset, remaining)
        batch = data.gather(rows, self.transitions.fields, self.transitions.rewards)
        batch["future_observation"] = take_rows(data.observations, future)
        batch["future_offset"] = torch.minimum(offset, remaining)
        return batch


# -- replay buffer ------------------------------------------------------------------------------

SelectionRule = Callable[[int, int, int, torch.Generator], torch.Tensor]
"""``rule(size, capacity, seen, n, generator) -> slots (n,) int64``: where each of ``n`` incoming
items goes (``-1``: not kept), given the buffer's current ``size``, its ``capacity`` and how many
items it has been offered before (``seen``)."""


def fifo_selection(size: int, capacity: int, seen: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """First in, first out: item i of the stream goes to slot ``i % capacity`` (a ring buffer); of
    an add larger than the capacity only the last ``capacity`` items are kept."""
    slots = (seen + torch.arange(n)) % capacity
    slots[: max(0, n - capacity)] = -1
    return slots


def reservoir_selection(size: int, capacity: int, seen: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Reservoir sampling (Vitter 1985, algorithm R): after ``m`` offered items the buffer holds a
    uniform sample of them; item ``i >= capacity`` replaces a uniform slot with probability
    ``capacity / (i + 1)`` (the rule of continual-learning replay, e.g. Rolnick et al. 2019)."""
    index = seen + torch.arange(n)
    slot = torch.where(index < capacity, index, torch.full_like(index, -1))
    late = index >= capacity
    if late.any():
        draw = (torch.rand(int(late.sum()), generator=generator, dtype=torch.float64) * (index[late] + 1).double()).long()
        slot[late] = torch.where(draw < capacity, draw, torch.full_like(draw, -1))
    return slot


SELECTION_RULES: dict[str, SelectionRule] = {"fifo": fifo_selection, "reservoir": reservoir_selection}


class ReplayBuffer:
    """A fixed-capacity buffer of items (transitions, or anything with a leading batch axis).

    The fields and their shapes are fixed by the first :meth:`add`. Where an item goes is decided
    by the selection rule (:data:`SELECTION_RULES` or a callable, see :data:`SelectionRule`).
    :meth:`state_dict` holds the contents and counters, so a checkpoint restores the buffer.

    Args:
        capacity: items kept at most.
        selection: ``"fifo"`` (default), ``"reservoir"``, or a :data:`SelectionRule`.
        device: torch device of the storage.

    Raises:
        ValueError: capacity < 1 or an unknown rule name.
    """

    def __init__(self, capacity: int, selection: str | SelectionRule = "fifo", device: str | torch.device = "cpu"):
        if capacity < 1:
            raise ValueError(f"capacity={capacity}; expected >= 1")
        if isinstance(selection, str):
            if selection not in SELECTION_RULES:
                raise ValueError(f"selection={selection!r}; expected one of {sorted(SELECTION_RULES)} or a callable")
            self.selection_name, selection = selection, SELECTION_RULES[selection]
        else:
            self.selection_name = getattr(selection, "__name__", "custom")
        self.capacity, self.rule, self.device = int(capacity), selection, torch.device(device)
        self.storage: dict[str, torch.Tensor] = {}
        self.size = 0
        self.seen = 0

    def __len__(self) -> int:
        return self.size

    def add(self, items: Mapping[str, torch.Tensor | np.ndarray], generator: torch.Generator | None = None) -> int:
        """Offer ``n`` items (every field ``(n, ...)``); returns how many were kept.

        Raises:
            ValueError: fields differ from the first add's, their lengths differ, a shape or dtype
                changed, or a floating value is not finite.
        """
        batch = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v) for k, v in items.items()}
        lengths = {k: len(v) for k, v in batch.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"replay add: fields have different lengths {lengths}")
        n = next(iter(lengths.values()))
        if not self.storage:
            self.storage = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)
                            for k, v in batch.items()}
        if set(batch) != set(self.storage):
            raise ValueError(f"replay add: fields {sorted(batch)}; the buffer holds {sorted(self.storage)}")
        for k, v in batch.items():
            if v.shape[1:] != self.storage[k].shape[1:] or v.dtype != self.storage[k].dtype:
                raise ValueError(f"replay add: field {k!r} is {tuple(v.shape[1:])} {v.dtype}; the buffer holds "
                                 f"{tuple(self.storage[k].shape[1:])} {self.storage[k].dtype}")
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"replay add: field {k!r} has non-finite values")
        slots = self.rule(self.size, self.capacity, self.seen, n, generator or torch.Generator().manual_seed(self.seen))
        keep = slots >= 0
        if keep.any():
            target = slots[keep].to(self.device)
            for k, v in batch.items():
                self.storage[k][target] = v[keep].to(self.device)
            self.size = min(self.capacity, max(self.size, int(slots[keep].max()) + 1))
        self.seen += n
        return int(keep.sum())

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Uniform items (with replacement), every field ``(B, ...)``.

        Raises:
            ValueError: the buffer is empty.
        """
        if self.size == 0:
            raise ValueError("replay buffer is empty; add items before sampling")
        index = _draw(self.size, batch_size, generator, self.device)
        return {k: take_rows(v, index) for k, v in self.storage.items()}

    def state_dict(self) -> dict[str, Any]:
        """Contents (only the filled rows) and counters, for checkpoints."""
        return {"capacity": self.capacity, "size": self.size, "seen": self.seen, "selection": self.selection_name,
                "storage": {k: v[: self.size].cpu() for k, v in self.storage.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: a different capacity or selection rule.
        """
        if int(state["capacity"]) != self.capacity or state["selection"] != self.selection_name:
            raise ValueError(f"replay state has capacity {state['capacity']} and selection {state['selection']!r}; "
                             f"this buffer has {self.capacity} and {self.selection_name!r}")
        self.size, self.seen = int(state["size"]), int(state["seen"])
        self.storage = {}
        for k, v in state["storage"].items():
            full = torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=self.device)
            full[: self.size] = v.to(self.device)
            self.storage[k] = full


class TaskReplayBuffer:
    """The replay buffer of continual learning: transitions of past tasks under one budget.

    Each task's transitions are offered once, ranked (the first are the ones to keep longest:
    a random permutation for experience replay, the model-based selection's order for OER).
    With ``per_task`` unset every task seen so far keeps ``budget // tasks`` of its ranking (the
    oldest tasks give up their last-ranked rows as new tasks arrive); with ``per_task`` set every
    task keeps that many and ``budget`` caps the total. The buffer never holds more than
    ``budget`` transitions. :meth:`state_dict` holds the contents, so checkpoints restore it.

    Args:
        budget: transitions kept at most, over all tasks (0: no replay).
        per_task: transitions kept per task (None: an equal share of ``budget``).
        device: torch device of the storage.

    Raises:
        ValueError: ``budget`` < 0, or ``per_task`` < 1.
    """

    def __init__(self, budget: int, per_task: int | None = None, device: str | torch.device = "cpu"):
        if budget < 0 or (per_task is not None and per_task < 1):
            raise ValueError(f"budget={budget} (>= 0) and per_task={per_task} (None or >= 1) expected")
        self.budget, self.per_task, self.device = int(budget), per_task, torch.device(device)
        self.tasks: dict[int, dict[str, torch.Tensor]] = {}
        self._joined: dict[str, torch.Tensor] | None = None  # all tasks' rows in one table, built on demand

    def __len__(self) -> int:
        return sum(self.task_sizes().values())

    def task_sizes(self) -> dict[int, int]:
        """Transitions held per task id."""
        return {task: len(next(iter(items.values()))) for task, items in self.tasks.items()}

    def share(self, tasks: int) -> int:
        """Transitions each of ``tasks`` tasks may keep."""
        if tasks == 0:
            return 0
        return min(self.per_task, self.budget // tasks) if self.per_task else self.budget // tasks

    def add_task(self, task: int, items: Mapping[str, torch.Tensor | np.ndarray]) -> int:
        """Offer task ``task``'s transitions, ranked (every field ``(n, ...)``, row 0 kept longest);
        the buffer keeps the first :meth:`share` rows of each task. Returns how many of this task's
        rows are kept.

        Raises:
            ValueError: the task was added before, fields or lengths differ from the other tasks',
                or a floating value is not finite.
        """
        if task in self.tasks:
            raise ValueError(f"task {task} is already in the replay buffer; each task is offered once")
        batch = {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v) for k, v in items.items()}
        lengths = {k: len(v) for k, v in batch.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"replay add_task: fields have different lengths {lengths}")
        if self.tasks:
            first = next(iter(self.tasks.values()))
            if set(first) != set(batch) or any(first[k].shape[1:] != v.shape[1:] for k, v in batch.items()):
                raise ValueError(f"replay add_task: fields {({k: tuple(v.shape[1:]) for k, v in batch.items()})}; the "
                                 f"buffer holds {({k: tuple(v.shape[1:]) for k, v in first.items()})}")
        for k, v in batch.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"replay add_task: field {k!r} has non-finite values")
        keep = self.share(len(self.tasks) + 1)
        self.tasks[int(task)] = {k: v[:keep].to(self.device) for k, v in batch.items()}
        for other in self.tasks:  # older tasks give up their last-ranked rows
            self.tasks[other] = {k: v[:keep] for k, v in self.tasks[other].items()}
        self._joined = None
        return min(keep, next(iter(lengths.values())))

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Uniform transitions over everything held (with replacement), every field ``(B, ...)``.

        Raises:
            ValueError: the buffer is empty.
        """
        if len(self) == 0:
            raise ValueError("replay buffer is empty; no past task has been added (or the budget is 0)")
        if self._joined is None:
            fields = next(iter(self.tasks.values()))
            self._joined = {k: torch.cat([items[k] for items in self.tasks.values()]) for k in fields}
        index = _draw(len(self), batch_size, generator, self.device)
        return {k: take_rows(v, index) for k, v in self._joined.items()}

    def state_dict(self) -> dict[str, Any]:
        """Contents per task, budget and share rule, for checkpoints."""
        return {"budget": self.budget, "per_task": self.per_task,
                "tasks": {str(t): {k: v.cpu() for k, v in items.items()} for t, items in self.tasks.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            ValueError: a different budget or share rule.
        """
        if int(state["budget"]) != self.budget or state["per_task"] != self.per_task:
            raise ValueError(f"replay state has budget {state['budget']} and per_task {state['per_task']}; this buffer "
                             f"has {self.budget} and {self.per_task}")
        self.tasks = {int(t): {k: v.to(self.device) for k, v in items.items()} for t, items in state["tasks"].items()}
        self._joined = None


class MixedSampler:
    """Batches from the current task's sampler mixed with a :class:`TaskReplayBuffer`.

    ``mode="joint"`` (experience replay): ``round(replay_fraction * B)`` rows of every field come
    from the buffer and the rest from the current task, concatenated (the learner trains on both
    alike). ``mode="separate"`` (dual behaviour cloning): the current task's ``B`` rows as they
    are, plus the buffer's ``B`` rows under ``replay_<field>`` keys. An empty buffer gives the
    current task's batch alone. The buffer is the sampler's state (saved with checkpoints).

    Raises:
        ValueError: an unknown mode or ``replay_fraction`` outside [0, 1].
    """

    def __init__(self, current: Sampler, replay: TaskReplayBuffer, mode: str = "joint", replay_fraction: float = 0.5):
        if mode not in ("joint", "separate") or not 0.0 <= replay_fraction <= 1.0:
            raise ValueError(f"mode={mode!r} (joint or separate) and replay_fraction={replay_fraction} (in [0, 1]) expected")
        self.current, self.replay, self.mode, self.replay_fraction = current, replay, mode, float(replay_fraction)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if len(self.replay) == 0:
            return self.current.sample(batch_size, generator)
        if self.mode == "separate":
            batch = self.current.sample(batch_size, generator)
            batch.update({f"replay_{k}": v for k, v in self.replay.sample(batch_size, generator).items()})
            return batch
        n_replay = int(round(self.replay_fraction * batch_size))
        batch = self.current.sample(batch_size - n_replay, generator)
        old = self.replay.sample(n_replay, generator)
        missing = sorted(set(batch) - set(old))
        if missing:
            raise ValueError(f"replay holds fields {sorted(old)}; the current batch also has {missing}")
        return {k: torch.cat([v, old[k].to(v.device)]) for k, v in batch.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"replay": self.replay.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "replay" in state:
            self.replay.load_state_dict(state["replay"])


def make_sampler(spec: Any, data: EpisodeData, rewards: torch.Tensor | None = None,
                 costs: torch.Tensor | None = None) -> Sampler:
    """The sampler a learner's :class:`policies.base.BatchSpec` asks for, over ``data``
    (``costs``: per-transition costs for a spec with ``cost``).

    Raises:
        ValueError: an unknown ``spec.kind``; costs asked for by a spec that is not ``transitions``.
    """
    if getattr(spec, "cost", False) and spec.kind != "transitions":
        raise ValueError(f"costs are sampled with transitions only, not {spec.kind!r}")
    if spec.kind == "transitions":
        return TransitionSampler(data, rewards, costs if getattr(spec, "cost", False) else None)
    if spec.kind == "windows":  # with rewards: discounted returns-to-go at the spec's discount too
        return WindowSampler(data, spec.horizon, rewards, spec.discount if spec.reward else None)
    if spec.kind == "future":
        return FutureSampler(data, spec.discount, rewards)
    raise ValueError(f"batch kind {spec.kind!r}; expected transitions, windows or future")


__all__ = ["EpisodeData", "FutureSampler", "MixedSampler", "ReplayBuffer", "TaskReplayBuffer", "SELECTION_RULES", "Sampler", "SelectionRule",
           "TransitionSampler", "WindowSampler", "fifo_selection", "make_sampler", "reservoir_selection",
           "returns_to_go"]
