"""Preference feedback while the agent acts: PEBBLE (Lee, Smith and Abbeel, ICML 2021) and the
B-Pref protocol (Lee et al., NeurIPS 2021 Datasets and Benchmarks).

- :func:`state_entropy_reward`: PEBBLE's unsupervised pre-training reward, the distance from a
  state to its k-th nearest neighbour among the replay buffer's states (a particle estimate of
  state entropy; paper Eq. 6, ``r_int(s) = ||s - s^k||``, normalised by a running standard
  deviation as in the authors' code).
- :class:`EpisodePool`: the recent finished episodes that queries are drawn from.
- :func:`query_segments`: a round of queries: segment pairs drawn uniformly or by the reward
  ensemble's disagreement (B-Pref's ``large_batch`` candidates, the most disputed kept), cut out
  as short episodes of ``H`` steps, so any labeler of the stack (scripted teachers, CLIP, the VLM
  labeler, people) answers them through its usual ``answers(episodes, pairs, H)``.
- :class:`FeedbackWorker`: labels each round and refits the Bradley-Terry ensemble on every
  answer so far, in a background thread (``asynchronous``) so a slow labeler never stalls the
  learner, or inline. Every round's segments (``round_NNNN.npz``) and answers
  (``round_NNNN.sqlite``, each saved as it arrives) live in the feedback folder, so a killed run
  loses no answer and asks only for the missing ones.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reward_models.bradley_terry import RewardEnsemble, RewardModelConfig, ensemble_segment_returns, fit_reward_model
from reward_models.labeling import Labeler, LabelStore, label_pairs
from reward_models.preferences import PreferenceLabels, sample_pairs, select_by_disagreement


@torch.no_grad()
def state_entropy_reward(states: torch.Tensor, reference: torch.Tensor, k: int = 5, chunk: int = 4096) -> torch.Tensor:
    """PEBBLE's intrinsic reward: ``||s - s^k||_2``, the distance from each state to its k-th
    nearest neighbour in ``reference`` (paper Eq. 6). A state that is itself in ``reference``
    counts as its own nearest neighbour (distance 0), as in the authors' code, which takes the
    (k+1)-th smallest distance from a batch drawn out of the buffer: pass ``k + 1`` then.

    Args:
        states: ``(B, D) float32``.
        reference: ``(N, D) float32``, N >= k.
        k: which neighbour (1 = nearest).
        chunk: reference rows compared at a time (bounds memory to ``B x chunk`` distances).

    Returns:
        ``(B,) float32`` distances, in the units of the states.

    Raises:
        ValueError: shapes that do not match, or fewer than ``k`` reference rows.
    """
    if states.ndim != 2 or reference.ndim != 2 or states.shape[1] != reference.shape[1]:
        raise ValueError(f"states (B, D) and reference (N, D) expected, got {tuple(states.shape)} and {tuple(reference.shape)}")
    if k < 1 or len(reference) < k:
        raise ValueError(f"k={k} nearest neighbours asked among {len(reference)} reference states")
    best = None
    for part in reference.split(chunk):
        distances = torch.cdist(states, part)
        candidates = distances if best is None else torch.cat([best, distances], dim=1)
        best = candidates.topk(min(k, candidates.shape[1]), dim=1, largest=False).values
    return best[:, k - 1].float()


class RunningStd:
    """Running mean and variance of a scalar stream (Chan et al.'s parallel update), for
    normalising the intrinsic reward; ``state_dict`` / ``load_state_dict`` for checkpoints."""

    def __init__(self, epsilon: float = 1e-4):
        self.mean, self.var, self.count = 0.0, 1.0, float(epsilon)

    def update(self, values: torch.Tensor) -> None:
        """Fold a batch of values (any shape) into the running mean and variance."""
        values = values.detach().double().reshape(-1)
        n = float(values.numel())
        if n == 0:
            return
        mean, var = float(values.mean()), float(values.var(unbiased=False))
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    @property
    def std(self) -> float:
        """The running standard deviation."""
        return float(np.sqrt(self.var))

    def state_dict(self) -> dict[str, float]:
        """Mean, variance and count, for checkpoints."""
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore :meth:`state_dict`."""
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


@dataclass
class Segment:
    """A piece of an episode as an episode of its own (what labelers read): ``observations
    (H+1, D)``, ``actions (H, A)``, true ``rewards (H,)``, ``terminations (H,)``,
    ``truncations (H,)`` and optional ``frames (H+1, h, w, 3) uint8``."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    frames: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.actions)


class EpisodePool:
    """The ``capacity`` most recent finished episodes (anything with ``observations (T+1, D)``,
    ``actions (T, A)``, ``rewards (T,)``, ``terminations``, ``truncations``), the population
    queries are drawn from (B-Pref keeps the last 100 episodes)."""

    def __init__(self, capacity: int = 100):
        if capacity < 1:
            raise ValueError(f"pool capacity={capacity}; expected >= 1")
        self.episodes: deque = deque(maxlen=int(capacity))

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episode: Any) -> None:
        """Keep a finished episode (the oldest leaves when the pool is full)."""
        self.episodes.append(episode)

    def state_dict(self) -> dict[str, Any]:
        """The episodes' arrays as tensors (frames included when kept), for checkpoints."""
        fields = ("observations", "actions", "rewards", "terminations", "truncations", "frames")
        return {"capacity": self.episodes.maxlen,
                "episodes": [{f: torch.as_tensor(np.asarray(getattr(ep, f))) for f in fields
                              if getattr(ep, f, None) is not None} for ep in self.episodes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (as :class:`Segment` objects)."""
        self.episodes = deque((Segment(**{k: np.asarray(v) for k, v in ep.items()}) for ep in state["episodes"]),
                              maxlen=int(state["capacity"]))


def cut_segment(episode: Any, start: int, length: int) -> Segment:
    """Steps ``start .. start + length`` of ``episode`` as a :class:`Segment`.

    Raises:
        ValueError: the segment does not fit in the episode.
    """
    if start < 0 or start + length > len(episode.actions):
        raise ValueError(f"segment [{start}, {start + length}) does not fit in an episode of {len(episode.actions)} steps")
    frames = getattr(episode, "frames", None)
    return Segment(np.asarray(episode.observations[start:start + length + 1]), np.asarray(episode.actions[start:start + length]),
                   np.asarray(episode.rewards[start:start + length]), np.asarray(episode.terminations[start:start + length]),
                   np.asarray(episode.truncations[start:start + length]),
                   None if frames is None else np.asarray(frames[start:start + length + 1]))


def query_segments(pool: EpisodePool, n_queries: int, segment_length: int, rng: np.random.Generator,
                   model: RewardEnsemble | None = None, candidates: int = 10) -> tuple[list[Segment], np.ndarray]:
    """One round of queries from the pool: ``n_queries`` segment pairs, uniform (``model`` None)
    or the most disputed of ``candidates x n_queries`` uniform pairs under ``model`` (ensemble
    disagreement, :func:`reward_models.preferences.select_by_disagreement`).

    Returns:
        ``2 n`` segments and pairs ``(n, 2, 2) int64`` ``[[2i, 0], [2i + 1, 0]]`` into them.

    Raises:
        ValueError: the pool's episodes hold fewer than two segments of ``segment_length``.
    """
    episodes = list(pool.episodes)
    lengths = [len(ep.actions) for ep in episodes]
    if model is None:
        pairs = sample_pairs(lengths, segment_length, n_queries, rng)
    else:
        drawn = sample_pairs(lengths, segment_length, candidates * n_queries, rng)
        pairs = drawn[select_by_disagreement(ensemble_segment_returns(model, episodes, drawn, segment_length), n_queries)]
    segments = [cut_segment(episodes[e], s, segment_length) for pair in pairs for e, s in pair]
    index = np.arange(2 * len(pairs), dtype=np.int64).reshape(-1, 2)
    return segments, np.stack([index, np.zeros_like(index)], axis=-1)


def save_round(path: Path, segments: Sequence[Segment], pairs: np.ndarray) -> None:
    """Write a round's segments and pairs to ``path`` (``.npz``) atomically."""
    arrays = {"pairs": pairs}
    for name in ("observations", "actions", "rewards", "terminations", "truncations"):
        arrays[name] = np.stack([getattr(s, name) for s in segments])
    if segments and segments[0].frames is not None:
        arrays["frames"] = np.stack([s.frames for s in segments])
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_round(path: Path) -> tuple[list[Segment], np.ndarray]:
    """Read :func:`save_round`'s file."""
    with np.load(path) as data:
        frames = data["frames"] if "frames" in data else None
        segments = [Segment(data["observations"][i], data["actions"][i], data["rewards"][i], data["terminations"][i],
                            data["truncations"][i], None if frames is None else frames[i]) for i in range(len(data["actions"]))]
        return segments, data["pairs"]


@dataclass
class FeedbackResult:
    """What a finished round hands to the learner: the refitted model and its numbers."""

    round: int
    model: RewardEnsemble
    report: dict[str, float]


class FeedbackWorker:
    """Labels rounds of queries and refits the Bradley-Terry ensemble on all answers so far.

    Args:
        labeler: any :class:`reward_models.labeling.Labeler`.
        reward_config: the ensemble's hyperparameters.
        folder: where rounds and answers are kept (``round_NNNN.npz`` / ``.sqlite``).
        seed: seeds the labeler's answers (per round) and the fits.
        asynchronous: label and fit in a background thread (the learner polls :meth:`poll`).
        device: where the reward model is fitted.

    A round that fails (the labeler raised) is reported by :meth:`poll` re-raising the error
    in the learner's thread.
    """

    def __init__(self, labeler: Labeler, reward_config: RewardModelConfig, folder: str | Path, seed: int = 0,
                 asynchronous: bool = True, device: str | torch.device = "cpu"):
        self.labeler, self.reward_config = labeler, reward_config
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seed, self.asynchronous, self.device = int(seed), bool(asynchronous), device
        self.segments: list[Segment] = []
        self.pairs = np.zeros((0, 2, 2), np.int64)
        self.labels = np.zeros(0, np.float32)
        self.rounds_done: list[int] = []
        self.label_seconds = 0.0
        self._results: queue.Queue = queue.Queue()
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pending = 0  # rounds submitted to the thread and not finished
        self._lock = threading.Condition()

    # -- files ---------------------------------------------------------------------------------
    def round_path(self, index: int) -> Path:
        """The file of round ``index``'s segments and pairs."""
        return self.folder / f"round_{index:04d}.npz"

    def saved_rounds(self) -> list[int]:
        """Rounds whose segments are on disk (answered or not), in order."""
        return sorted(int(p.stem.split("_")[1]) for p in self.folder.glob("round_*.npz"))

    # -- work ----------------------------------------------------------------------------------
    def _label(self, index: int) -> PreferenceLabels:
        segments, pairs = load_round(self.round_path(index))
        store = LabelStore(self.folder / f"round_{index:04d}.sqlite")
        try:
            started = time.time()
            labels = label_pairs(self.labeler, segments, pairs, len(segments[0]), seed=self.seed * 100_003 + index,
                                 store=store, workdir=self.folder)
            self.label_seconds += time.time() - started
        finally:
            store.close()
        offset = len(self.segments)
        self.segments.extend(segments)
        self.pairs = np.concatenate([self.pairs, pairs + np.array([offset, 0])])
        self.labels = np.concatenate([self.labels, labels.labels])
        self.rounds_done.append(index)
        return labels

    def _fit(self, index: int) -> FeedbackResult | None:
        all_labels = PreferenceLabels(self.pairs, self.labels, len(self.segments[0]), {"rounds": list(self.rounds_done)})
        if int(all_labels.answered.sum()) < 10:
            return None
        model, report = fit_reward_model(self.segments, all_labels, self.reward_config, seed=self.seed + index,
                                         device=self.device)
        report = {**report, "queries": float(len(self.labels)), "answered": float(all_labels.answered.sum()),
                  "label_seconds": round(self.label_seconds, 2)}
        return FeedbackResult(index, model.cpu(), report)

    def _run(self, index: int) -> None:
        self._label(index)
        result = self._fit(index)
        if result is not None:
            self._results.put(result)

    def _loop(self) -> None:
        while True:
            index = self._jobs.get()
            if index is None:
                return
            try:
                self._run(index)
            except BaseException as error:  # handed to the learner's thread by poll()
                self._results.put(error)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()

    def submit(self, index: int, segments: Sequence[Segment], pairs: np.ndarray) -> None:
        """Save round ``index``'s queries and label them (in the background when asynchronous;
        a round submitted while one is being labelled waits for it)."""
        save_round(self.round_path(index), segments, pairs)
        self._start(index)

    def _start(self, index: int) -> None:
        if not self.asynchronous:
            self._run(index)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="feedback", daemon=True)
            self._thread.start()
        with self._lock:
            self._pending += 1
        self._jobs.put(index)

    def resume(self, submitted: int) -> tuple[int, int]:
        """After a restart: take up every round saved in the folder, in this thread (stored
        answers are reused, only missing ones asked), then refit once. Rounds submitted after the
        learner's last checkpoint (``index >= submitted``) are taken up too, so their answers are
        kept and their queries are not drawn again.

        Returns:
            ``(rounds, queries)``: how many rounds there are now and how many queries they hold.

        Raises:
            ValueError: a gap in the saved rounds (a round file was removed).
        """
        saved = self.saved_rounds()
        if saved != list(range(len(saved))):
            raise ValueError(f"feedback rounds in {self.folder} are {saved}; expected 0..{len(saved) - 1} without gaps")
        for index in saved:
            self._label(index)
        if self.rounds_done:
            result = self._fit(self.rounds_done[-1])
            if result is not None:
                self._results.put(result)
        return max(submitted, len(saved)), int(len(self.labels))

    def poll(self) -> FeedbackResult | None:
        """The newest finished refit since the last poll (older ones are dropped), or None.

        Raises:
            Exception: what a background round raised (e.g. the labeler failed).
        """
        newest = None
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise item
            newest = item
        return newest

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background rounds submitted so far are done (tests, the end of a run)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._pending == 0, timeout=timeout):
                raise TimeoutError(f"{self._pending} feedback rounds still running after {timeout} s")

    @property
    def pending(self) -> int:
        """Rounds submitted and not finished."""
        return self._pending

    def close(self, timeout: float | None = None) -> None:
        """Stop the background thread once the rounds submitted so far are done.

        Args:
            timeout: seconds to wait for them; None (default) waits until they are done. The end
                of a run waits: a thread still fitting with torch while the interpreter exits
                aborts the process ("terminate called without an active exception", exit code
                134) after the run has finished. An interrupted run waits a few seconds only:
                the answers so far are saved, the rest are asked on the next resume.
        """
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=timeout)
            if not self._thread.is_alive():  # else still finishing: close() may be called again
                self._thread = None


__all__ = ["EpisodePool", "FeedbackResult", "FeedbackWorker", "RunningStd", "Segment", "cut_segment", "load_round",
           "query_segments", "save_round", "state_entropy_reward"]
