"""Online RL while acting: ``python -m embodied.online +task=metaworld task.env.task=drawer-open-v3``.

The learner (``algo=sac`` by default: :mod:`policies.sac`) acts in a gymnasium vector env of
``online.num_envs`` copies of the task (``online.vectorization=async``: one process each),
writes every transition into a replay buffer (:class:`policies.data.ReplayBuffer`, FIFO,
``online.buffer_capacity``) and updates from it. The loop is :func:`embodied.fit.fit`: the
sampler it draws from, :class:`OnlineSampler`, first steps the envs until the update is due
(``online.learning_starts`` uniform-random steps, then ``1 / online.updates_per_step`` env steps
per update, with ``learner.explore``) and then returns a batch of the buffer. So evaluation,
logging, checkpoints and resume are the main job's.

Time limits are truncations, not terminations: the critic bootstraps through them (``terminal``
is the env's ``terminated`` only). The buffer is part of every checkpoint, so a killed run
resumes with every transition it had; the episodes in progress when it was killed are lost (the
envs start new ones) and their steps stay counted.

Rewards come from ``online.reward`` (:class:`OnlineSampler`):

- ``gt``: the environment's reward (the reference);
- ``clip``: VLM-RM's CLIP goal-baseline reward of the frame after each step (the root ``clip``
  node; frames rendered by every copy, scored ``online.clip_chunk`` at a time);
- ``pebble``: PEBBLE (Lee et al. 2021): state-entropy pre-training, then rounds of segment-pair
  queries to ``labeler`` (any scripted teacher), a Bradley-Terry ensemble (``reward_model``)
  refitted after each round and the whole buffer relabelled; labeling runs in a background
  thread (:class:`reward_models.online.FeedbackWorker`), so the learner never waits for it.

Each evaluation logs the env steps so far (``eval/env_steps``) beside success and return (and,
with PEBBLE, the queries asked and the learned reward's correlation with the true one), and the
run ends with ``plots/learning_curve.png`` (success and return against env steps),
``metrics.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import hydra
import numpy as np
import torch
from filelock import FileLock
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.cli import TablesCallback, aggregate_command, require_task, run_folder
from embodied.config import validate_config
from embodied.fit import fit
from embodied.io import save_figure, write_json_atomic, write_text_atomic
from embodied.learners import LearnerPolicy
from embodied.loggers import build_logger
from embodied.paths import RunPaths
from embodied.pipeline import _identity_as_stored, continue_unfinished, evaluate_stage, record_videos
from embodied.runtime import resolve_device, seed_everything
from embodied.tasks import make_env
from envs.rendering import FrameInInfo
from policies import make_learner
from policies.base import Learner
from policies.data import ReplayBuffer
from reward_models.bradley_terry import RewardEnsemble
from reward_models.clip import CLIPReward
from reward_models.functions import BradleyTerryReward
from reward_models.online import EpisodePool, FeedbackWorker, RunningStd, Segment, query_segments, state_entropy_reward

#: Reward sources of the online loop.
ONLINE_REWARDS = ("gt", "clip", "pebble")
VECTORIZATIONS = ("sync", "async")
QUERY_SAMPLING = ("uniform", "disagreement")


@dataclass
class FeedbackSettings:
    """PEBBLE's feedback schedule (``online.feedback``); defaults are B-Pref's Meta-World runs
    (``scripts/*/run_PEBBLE.sh``: 9,000 unsupervised steps, a round of 50 queries every 5,000
    steps, segments of 50 steps, 10,000 queries in all, disagreement sampling)."""

    unsupervised_steps: int = 9_000
    """Env steps after ``learning_starts`` trained on the state-entropy reward. Default 9,000."""
    interval: int = 5_000
    """Env steps between query rounds. Default 5,000."""
    queries: int = 50
    """Segment pairs per round. Default 50."""
    max_feedback: int = 10_000
    """Queries in all (the feedback budget). Default 10,000."""
    segment_length: int = 50
    """H, steps per segment. Default 50."""
    sampling: str = "disagreement"
    """``uniform`` or ``disagreement`` (of the reward ensemble; the first round is uniform)."""
    candidates: int = 10
    """Disagreement sampling scores ``candidates x queries`` uniform pairs. Default 10."""
    pool_episodes: int = 100
    """Recent finished episodes queries are drawn from. Default 100."""
    asynchronous: bool = True
    """Label and refit in a background thread; the learner never waits. Default True."""
    entropy_k: int = 5
    """k of the k-nearest-neighbour state entropy. Default 5."""

    def __post_init__(self) -> None:
        if min(self.interval, self.queries, self.max_feedback, self.segment_length, self.candidates,
               self.pool_episodes, self.entropy_k) < 1 or self.unsupervised_steps < 0:
            raise ValueError("online.feedback: interval, queries, max_feedback, segment_length, candidates, pool_episodes "
                             "and entropy_k must be >= 1, unsupervised_steps >= 0")
        if self.sampling not in QUERY_SAMPLING:
            raise ValueError(f"online.feedback.sampling={self.sampling!r}; expected one of {QUERY_SAMPLING}")


@dataclass
class OnlineConfig:
    """Settings of the online loop (``online`` in ``conf/online.yaml``)."""

    env_steps: int = 100_000
    """Environment steps in all (summed over the vector env's copies). Default 100,000."""
    num_envs: int = 1
    """Copies of the task stepped together. Default 1."""
    vectorization: str = "sync"
    """``sync`` (one process) or ``async`` (a process per copy: gymnasium's AsyncVectorEnv)."""
    learning_starts: int = 5_000
    """Uniform-random env steps before the first update (CleanRL's default). Default 5,000."""
    updates_per_step: float = 1.0
    """Gradient updates per env step (the update-to-data ratio). Default 1."""
    buffer_capacity: int = 1_000_000
    """Transitions kept (first in, first out). Default 1,000,000."""
    eval_every: int = 10_000
    """Env steps between evaluations (``eval.episodes_during_training`` episodes each; 0: only
    the final one). Default 10,000."""
    checkpoint_every: int = 10_000
    """Env steps between checkpoints (each holds the buffer). Default 10,000."""
    reward: str = "gt"
    """Reward the learner trains on: ``gt`` (the environment's) or ``pebble`` (a Bradley-Terry
    ensemble fitted to ``labeler``'s answers while acting, :class:`FeedbackSettings`)."""
    feedback: FeedbackSettings = dataclasses.field(default_factory=FeedbackSettings)
    """PEBBLE's schedule (``reward=pebble``)."""
    frame_size: int = 128
    """``reward=clip``: pixels (square) of the frame rendered after each step. Default 128."""
    clip_chunk: int = 64
    """``reward=clip``: transitions held back until this many frames are scored in one batch
    (at most ``clip_chunk - 1`` steps of delay before they can be sampled). Default 64."""
    recent_episodes: int = 20
    """Training episodes averaged into ``eval/train_success_rate`` and ``eval/train_return``."""
    threads: int = 0
    """torch threads (0: torch's default). Default 0."""

    def __post_init__(self) -> None:
        if min(self.env_steps, self.num_envs, self.buffer_capacity, self.recent_episodes, self.clip_chunk) < 1 or self.frame_size < 16:
            raise ValueError(f"online: env_steps={self.env_steps}, num_envs={self.num_envs}, buffer_capacity="
                             f"{self.buffer_capacity}, recent_episodes={self.recent_episodes} and clip_chunk={self.clip_chunk} "
                             f"must be >= 1, frame_size={self.frame_size} >= 16")
        if min(self.learning_starts, self.eval_every, self.checkpoint_every, self.threads) < 0:
            raise ValueError("online: learning_starts, eval_every, checkpoint_every and threads must be >= 0")
        if self.learning_starts >= self.env_steps:
            raise ValueError(f"online.learning_starts={self.learning_starts} leaves no learning in "
                             f"online.env_steps={self.env_steps}; expected fewer")
        if not self.updates_per_step > 0:
            raise ValueError(f"online.updates_per_step={self.updates_per_step}; expected > 0")
        if self.vectorization not in VECTORIZATIONS:
            raise ValueError(f"online.vectorization={self.vectorization!r}; expected one of {VECTORIZATIONS}")
        if self.reward not in ONLINE_REWARDS:
            raise ValueError(f"online.reward={self.reward!r}; expected one of {ONLINE_REWARDS}")
        if isinstance(self.feedback, dict):
            self.feedback = FeedbackSettings(**self.feedback)

    @property
    def total_updates(self) -> int:
        """Updates of the run: ``(env_steps - learning_starts) * updates_per_step``."""
        return max(1, int((self.env_steps - self.learning_starts) * self.updates_per_step))

    def env_steps_before(self, update: int) -> int:
        """Env steps that must have been taken before update ``update`` (1-based)."""
        return self.learning_starts + math.ceil(update / self.updates_per_step)


def make_vector_env(task: Any, num_envs: int, vectorization: str = "sync", frame_size: int | None = None
                    ) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the task's env (:func:`embodied.tasks.make_env`) as one gymnasium
    vector env that resets a finished copy in the same step (``AutoresetMode.SAME_STEP``: the
    episode's last observation is in ``info["final_obs"]``). With ``frame_size`` every copy
    renders ``frame_size`` x ``frame_size`` frames into ``info["frame"]``
    (:class:`envs.rendering.FrameInInfo`).

    Raises:
        ValueError: an unknown ``vectorization``.
    """
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization={vectorization!r}; expected one of {VECTORIZATIONS}")
    task = OmegaConf.create(OmegaConf.to_container(task, resolve=True)) if OmegaConf.is_config(task) else task
    if frame_size:
        factories = [lambda: FrameInInfo(make_env(task, render_mode="rgb_array", width=frame_size, height=frame_size))
                     for _ in range(num_envs)]
    else:
        factories = [lambda: make_env(task) for _ in range(num_envs)]
    kind = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
    return kind(factories, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class OnlineSampler:
    """The sampler :func:`embodied.fit.fit` draws from in the online loop: each ``sample`` first
    acts in the envs until the update is due (:meth:`OnlineConfig.env_steps_before`), writing
    transitions ``observation (D,)``, ``action (A,)``, ``reward ()`` (what the learner trains
    on), ``true_reward ()`` (the env's), ``next_observation (D,)``, ``terminal ()`` (float32; 1
    only on a termination) into the buffer, then returns a batch of the buffer.

    With ``reward=clip`` (VLM-RM, Rocamonde et al. 2024) the reward of a transition is the CLIP
    goal-baseline reward of the frame after it; transitions wait until ``clip_chunk`` frames are
    scored in one batch, then enter the buffer.

    With ``reward=pebble`` (Lee et al. 2021) the batch's reward is, in turn:

    1. until the first reward model lands: the state-entropy reward of the batch's observations
       against every observation in the buffer, divided by its running standard deviation
       (unsupervised pre-training, paper Sec. 4.1);
    2. after: ``r_hat(s, a, s')`` of the newest Bradley-Terry ensemble, stored in the buffer.
       Each new model relabels the whole buffer (Sec. 4.2); the first one also resets the
       critics. Query rounds (``feedback.queries`` pairs) are submitted every
       ``feedback.interval`` env steps from the end of pre-training until ``feedback.max_feedback``
       queries were asked; with ``feedback.asynchronous`` the learner keeps acting and updating
       while they are answered.

    Args:
        envs: the vector env (:func:`make_vector_env`), actions in [-1, 1].
        learner: acts with ``explore`` after ``learning_starts`` steps.
        config: the loop's settings.
        seed: env resets and query draws are seeded from it.
        device: where observations go for the learner.
        feedback: the labeling worker of ``reward=pebble`` (None otherwise).
        frame_reward: scores frames ``(N, H, W, 3) uint8 -> (N,)`` for ``reward=clip`` (a
            :class:`reward_models.clip.CLIPReward`).
    """

    def __init__(self, envs: gym.vector.VectorEnv, learner: Learner, config: OnlineConfig, seed: int,
                 device: torch.device | str = "cpu", feedback: FeedbackWorker | None = None,
                 frame_reward: Callable[[np.ndarray], np.ndarray] | None = None):
        self.envs, self.learner, self.config = envs, learner, config
        if config.reward == "clip" and frame_reward is None:
            raise ValueError("online.reward=clip needs a frame reward (the CLIP model)")
        self.frame_reward = frame_reward
        self._staged: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        self.seed, self.device = int(seed), torch.device(device)
        self.pebble = config.reward == "pebble"
        if self.pebble and feedback is None:
            raise ValueError("online.reward=pebble needs a feedback worker (a labeler)")
        self.feedback = feedback
        # the labeler looks at frames (the VLM labeler, RL-VLM-F): the pool's episodes keep them
        self.keep_frames = bool(self.pebble and getattr(feedback.labeler, "needs_frames", False))
        self.buffer = ReplayBuffer(config.buffer_capacity, "fifo", device)
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.recent: deque[tuple[float, float, int]] = deque(maxlen=config.recent_episodes)
        self.first_env_steps: int | None = None  # env steps when this process first sampled (rates)
        self._observation: np.ndarray | None = None
        # PEBBLE
        self.pool = EpisodePool(config.feedback.pool_episodes)
        self.entropy_std = RunningStd()
        self.rounds_submitted = 0
        self.queries_asked = 0
        self.reward_model: RewardEnsemble | None = None
        self.reward_round = -1
        self.reward_report: dict[str, float] = {}
        self.relabels = 0
        self._restored_model = False  # a resumed run's critics already learned the learned reward

    # -- acting --------------------------------------------------------------------------------
    def _start_episodes(self) -> None:
        n = self.envs.num_envs
        observation, info = self.envs.reset(seed=self.seed + 10_007 * (self.env_steps + 1))
        if (self.frame_reward is not None or self.keep_frames) and "frame" not in info:
            raise ValueError("the reward or the labeler looks at frames; the vector env renders none (frame_size)")
        self._observation = np.asarray(observation, np.float32)
        self._returns, self._lengths = np.zeros(n), np.zeros(n, np.int64)
        self._success = np.zeros(n, bool)
        self._trace: list[dict[str, list]] = [{k: [] for k in ("observations", "actions", "rewards", "terminations",
                                                               "truncations")} for _ in range(n)]
        for i in range(n):
            self._trace[i]["observations"].append(self._observation[i])
        if self.keep_frames:
            for i in range(n):
                self._trace[i]["frames"] = [np.asarray(info["frame"][i], np.uint8)]

    @torch.no_grad()
    def _learned_reward(self, observation: np.ndarray, action: np.ndarray, next_observation: np.ndarray) -> np.ndarray:
        if self.reward_model is None:
            return np.zeros(len(observation), np.float32)
        batch = {"observation": torch.as_tensor(observation), "action": torch.as_tensor(action),
                 "next_observation": torch.as_tensor(next_observation)}
        return BradleyTerryReward(self.reward_model)(batch).cpu().numpy().astype(np.float32)

    def step(self) -> None:
        """One step of every copy: act, store the transitions, count finished episodes (and, with
        PEBBLE, keep them for queries and submit a round when one is due).

        Raises:
            ValueError: the env returned a non-finite observation or reward.
        """
        if self._observation is None:
            self._start_episodes()
        obs = self._observation
        n = self.envs.num_envs
        if self.env_steps < self.config.learning_starts:
            action = self.rng.uniform(-1.0, 1.0, (n, *self.envs.single_action_space.shape)).astype(np.float32)
        else:
            action = self.learner.explore(torch.as_tensor(obs, device=self.device)).cpu().numpy().astype(np.float32)
        next_obs, reward, terminated, truncated, info = self.envs.step(action)
        next_obs = np.asarray(next_obs, np.float32)
        done = np.logical_or(terminated, truncated)
        stored_next = next_obs.copy()
        if done.any():  # the copies that finished were reset in this step; their last observation is here
            for i in np.flatnonzero(done):
                stored_next[i] = np.asarray(info["final_obs"][i], np.float32)
        reward = np.asarray(reward, np.float32)
        if not (np.isfinite(stored_next).all() and np.isfinite(reward).all()):
            raise ValueError(f"env returned a non-finite observation or reward at env step {self.env_steps}")
        transitions = {"observation": obs, "action": action, "true_reward": reward, "next_observation": stored_next,
                       "terminal": np.asarray(terminated, np.float32)}
        frames = None
        if self.frame_reward is not None or self.keep_frames:
            frames = np.asarray(info["frame"], np.uint8).copy()
            for i in np.flatnonzero(done):  # the frame of the episode's last state, not of the reset
                frames[i] = info["final_info"]["frame"][i]
        if self.frame_reward is not None:
            self._staged.append((transitions, frames))
            if sum(len(f) for _, f in self._staged) >= self.config.clip_chunk:
                self.flush()
        else:
            train_reward = self._learned_reward(obs, action, stored_next) if self.pebble else reward
            self.buffer.add({**transitions, "reward": train_reward})
        self._returns += reward
        self._lengths += 1
        success = np.asarray(info.get("success", np.zeros(n, bool)), bool)
        if done.any() and "final_info" in info and "success" in info["final_info"]:
            success = np.where(done, np.asarray(info["final_info"]["success"], bool), success)
        self._success |= success
        if self.pebble:
            for i in range(n):
                trace = self._trace[i]
                trace["observations"].append(stored_next[i])
                trace["actions"].append(action[i])
                trace["rewards"].append(reward[i])
                trace["terminations"].append(bool(terminated[i]))
                trace["truncations"].append(bool(truncated[i]))
                if self.keep_frames:
                    trace["frames"].append(frames[i])
        for i in np.flatnonzero(done):
            self.recent.append((float(self._success[i]), float(self._returns[i]), int(self._lengths[i])))
            self.episodes += 1
            self._returns[i], self._lengths[i], self._success[i] = 0.0, 0, False
            if self.pebble:
                trace = self._trace[i]
                self.pool.add(Segment(*(np.asarray(trace[k]) for k in ("observations", "actions", "rewards", "terminations",
                                                                       "truncations")),
                                      frames=np.stack(trace["frames"]) if self.keep_frames else None))
                self._trace[i] = {k: [] for k in trace}
                self._trace[i]["observations"].append(next_obs[i])
                if self.keep_frames:
                    self._trace[i]["frames"].append(np.asarray(info["frame"][i], np.uint8))  # the new episode's first
        self._observation = next_obs
        self.env_steps += n
        if self.pebble:
            self._maybe_query()

    def flush(self) -> None:
        """Score the staged transitions' frames in one batch (``reward=clip``) and store them."""
        if not self._staged:
            return
        frames = np.concatenate([f for _, f in self._staged])
        rewards = np.asarray(self.frame_reward(frames), np.float32).reshape(-1)
        if rewards.shape != (len(frames),) or not np.isfinite(rewards).all():
            raise ValueError(f"the frame reward gave {rewards.shape} values for {len(frames)} frames (finite expected)")
        staged = {k: np.concatenate([t[k] for t, _ in self._staged]) for k in self._staged[0][0]}
        self.buffer.add({**staged, "reward": rewards})
        self._staged = []

    # -- PEBBLE --------------------------------------------------------------------------------
    @property
    def unsupervised_end(self) -> int:
        """Env step at which pre-training ends and the first query round is due."""
        return self.config.learning_starts + self.config.feedback.unsupervised_steps

    def _maybe_query(self) -> None:
        settings = self.config.feedback
        due = self.unsupervised_end + self.rounds_submitted * settings.interval
        if self.env_steps < due or self.queries_asked >= settings.max_feedback:
            return
        lengths = [len(ep.actions) for ep in self.pool.episodes]
        if sum(max(0, length - settings.segment_length + 1) for length in lengths) < 2:
            return  # no two segments yet: ask when an episode has finished
        n = min(settings.queries, settings.max_feedback - self.queries_asked)
        rng = np.random.default_rng([self.seed, self.rounds_submitted])
        model = self.reward_model if settings.sampling == "disagreement" and self.rounds_submitted else None
        segments, pairs = query_segments(self.pool, n, settings.segment_length, rng, model, settings.candidates)
        self.feedback.submit(self.rounds_submitted, segments, pairs)
        self.rounds_submitted += 1
        self.queries_asked += n

    @torch.no_grad()
    def _take_new_reward_model(self) -> None:
        result = self.feedback.poll()
        if result is None:
            return
        first = self.reward_model is None and not self._restored_model
        self.reward_model, self.reward_round, self.reward_report = result.model.to(self.device), result.round, result.report
        if first and hasattr(self.learner, "reset_critic"):
            self.learner.reset_critic()
        self.relabel()

    @torch.no_grad()
    def relabel(self, chunk: int = 65_536) -> None:
        """Rewrite every stored ``reward`` with the current reward model (PEBBLE Sec. 4.2)."""
        storage, size = self.buffer.storage, len(self.buffer)
        reward = BradleyTerryReward(self.reward_model)
        for start in range(0, size, chunk):
            rows = slice(start, min(size, start + chunk))
            storage["reward"][rows] = reward({k: storage[k][rows] for k in ("observation", "action", "next_observation")})
        self.relabels += 1

    def _entropy_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        reference = self.buffer.storage["observation"][: len(self.buffer)]
        k = min(self.config.feedback.entropy_k + 1, len(reference))  # the batch's own states are in the buffer
        entropy = state_entropy_reward(batch["observation"], reference, k)
        self.entropy_std.update(entropy)
        return {**batch, "reward": entropy / max(self.entropy_std.std, 1e-6)}

    # -- the sampler contract ------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Act until update ``updates + 1`` is due, then a batch of the buffer (every field ``(B, ...)``)."""
        if self.first_env_steps is None:
            self.first_env_steps = self.env_steps
        due = self.config.env_steps_before(self.updates + 1)
        while self.env_steps < due:
            self.step()
        self.updates += 1
        if len(self.buffer) == 0:
            self.flush()
        if self.pebble:
            self._take_new_reward_model()
        batch = self.buffer.sample(batch_size, generator)
        if self.pebble and self.reward_model is None:
            batch = self._entropy_batch(batch)
        return batch

    def training_stats(self) -> dict[str, float]:
        """``env_steps``, ``train_episodes``, and success rate, return and length of the recent training
        episodes (empty until one finished); with PEBBLE the queries asked and answered, the
        reward model's held-out accuracy and the correlation of the buffer's learned rewards with
        the true ones."""
        out = {"env_steps": float(self.env_steps), "train_episodes": float(self.episodes)}
        if self.recent:
            success, returns, lengths = zip(*self.recent)
            out.update(train_success_rate=float(np.mean(success)), train_return=float(np.mean(returns)),
                       train_length=float(np.mean(lengths)))
        if self.pebble:
            out.update(queries=float(self.queries_asked), rounds=float(self.rounds_submitted),
                       relabels=float(self.relabels))
            if self.reward_model is not None:
                out.update(reward_heldout_accuracy=float(self.reward_report.get("heldout_accuracy", float("nan"))),
                           answered=float(self.reward_report.get("answered", 0.0)))
                size = len(self.buffer)
                learned, true = self.buffer.storage["reward"][:size].double(), self.buffer.storage["true_reward"][:size].double()
                if size > 2 and learned.std() > 0 and true.std() > 0:
                    out["reward_correlation"] = float(torch.corrcoef(torch.stack([learned, true]))[0, 1])
        return out

    def state_dict(self) -> dict[str, Any]:
        """The buffer, the counters, the recent episodes and PEBBLE's pool and schedule (for
        checkpoints). Staged transitions (``reward=clip``) are scored and stored first, so a
        checkpoint holds every step taken."""
        self.flush()
        state = {"buffer": self.buffer.state_dict(), "env_steps": self.env_steps, "updates": self.updates,
                 "episodes": self.episodes, "recent": [list(r) for r in self.recent],
                 "rng": json.dumps(self.rng.bit_generator.state)}
        if self.pebble:
            state["pebble"] = {"pool": self.pool.state_dict(), "entropy_std": self.entropy_std.state_dict(),
                               "rounds_submitted": self.rounds_submitted, "queries_asked": self.queries_asked,
                               "has_model": self.reward_model is not None}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the envs start new episodes at the next step. With PEBBLE
        the rounds submitted before the checkpoint are taken up from the feedback folder (answers
        given since are kept; a round killed mid-way asks only its missing answers) and the
        reward model is refitted on all of them, relabelling the buffer at the next sample. Rounds
        submitted after the checkpoint are taken up too (not drawn again with other segments)."""
        if not state:
            return
        self.buffer.load_state_dict(state["buffer"])
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self.episodes = int(state["episodes"])
        self.recent = deque((tuple(r) for r in state["recent"]), maxlen=self.config.recent_episodes)
        self.rng.bit_generator.state = json.loads(state["rng"])
        self._observation = None
        if self.pebble and "pebble" in state:
            pebble = state["pebble"]
            self.pool.load_state_dict(pebble["pool"])
            self.entropy_std.load_state_dict(pebble["entropy_std"])
            self._restored_model = bool(pebble["has_model"])
            # every round on disk, those after the checkpoint included (their answers are kept)
            self.rounds_submitted, self.queries_asked = self.feedback.resume(int(pebble["rounds_submitted"]))


def read_online(cfg: DictConfig) -> OnlineConfig:
    """``cfg.online`` as an :class:`OnlineConfig` (the errors of its checks)."""
    values = OmegaConf.to_container(cfg.online, resolve=True)
    for schema, node, where in ((OnlineConfig, values, "online"), (FeedbackSettings, values.get("feedback") or {}, "online.feedback")):
        known = {f.name for f in dataclasses.fields(schema)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]} is not a setting ({where} has {', '.join(sorted(known))})")
    return OnlineConfig(**values)


def online_identity(cfg: DictConfig) -> dict[str, Any]:
    """What decides what an online run computes (``resume=auto`` continues only a run with the
    same): the main job's identity (task, algo, seed, batch size), ``online``, and the section the
    reward reads (``labeler`` and ``reward_model`` for PEBBLE, ``clip`` for CLIP)."""
    identity = {**_identity_as_stored(cfg), **{f"online.{k}": v for k, v in OmegaConf.to_container(cfg.online).items()}}
    reward = str(OmegaConf.select(cfg, "online.reward", default="gt"))
    sections = {"pebble": ("labeler", "reward_model"), "clip": ("clip",)}.get(reward, ())
    for section in sections:
        node = OmegaConf.select(cfg, section, default=None)
        if node is not None:
            identity[section] = json.loads(json.dumps(OmegaConf.to_container(node, resolve=True), default=str))
    return identity


def plot_env_step_curve(metrics_jsonl: Path, path: Path, title: str) -> Path | None:
    """``plots/learning_curve.png``: evaluation success rate and return (and those of the recent
    training episodes) against env steps, from the ``eval/`` rows of ``metrics.jsonl``. None when
    no evaluation was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines()] if metrics_jsonl.exists() else []
    rows = [r for r in rows if "eval/env_steps" in r]
    if not rows:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(8, 3), dpi=100)
    for axis, key, train_key in ((axes[0], "success_rate", "train_success_rate"), (axes[1], "return_mean", "train_return")):
        for name, label in ((key, "evaluation (deterministic)"), (train_key, "training episodes")):
            points = [(r["eval/env_steps"], r[f"eval/{name}"]) for r in rows if f"eval/{name}" in r]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=label)
        axis.set_xlabel("env steps", fontsize=8)
        axis.set_title(key.replace("_", " "), fontsize=9)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def make_feedback(cfg: DictConfig, settings: OnlineConfig, folder: Path, device: torch.device) -> FeedbackWorker:
    """The labeling worker of ``online.reward=pebble``: ``labeler.teacher`` answers (a labeler
    that looks at frames gets the frames of its segments: RL-VLM-F with ``labeler=vlm`` and
    ``online.feedback.segment_length=1``), a ``reward_model`` ensemble is refitted after each
    round."""
    teacher = instantiate(cfg.labeler.teacher)
    return FeedbackWorker(teacher, instantiate(cfg.reward_model), folder, seed=int(cfg.seed),
                          asynchronous=settings.feedback.asynchronous, device="cpu")


def train_online(cfg: DictConfig, run_dir: str | Path, progress: bool | None = None) -> dict[str, Any]:
    """Run the online loop into ``run_dir`` (resuming from its checkpoints) and write
    ``metrics.json``, ``report.md`` and ``plots/learning_curve.png``.

    Returns:
        The report: ``eval`` (final evaluation), ``env_steps``, ``updates``, ``episodes``,
        ``wall_time_s``, ``env_steps_per_s`` and ``updates_per_s`` (of this process's part).

    Raises:
        ValueError: a bad ``online`` or learner setting; a learner that needs no reward.
    """
    validate_config(cfg, sections=("algo", "trainer", "eval"))
    settings = read_online(cfg)
    paths = RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(paths.lock)):
        write_json_atomic(paths.identity, online_identity(cfg))
        if settings.threads:
            torch.set_num_threads(settings.threads)
        generator = seed_everything(int(cfg.seed))
        device = resolve_device(cfg.device)
        frame_reward = None
        if settings.reward == "clip":
            try:
                frame_reward = CLIPReward(**OmegaConf.to_container(cfg.clip, resolve=True))
            except (TypeError, ValueError) as error:
                raise ValueError(f"clip: {error}") from None
        feedback = make_feedback(cfg, settings, paths.root / "feedback", device) if settings.reward == "pebble" else None
        wants_frames = frame_reward is not None or (feedback is not None and feedback.labeler.needs_frames)
        envs = make_vector_env(cfg.task, settings.num_envs, settings.vectorization,
                               settings.frame_size if wants_frames else None)
        try:
            observation_dim = int(np.prod(envs.single_observation_space.shape))
            action_dim = int(np.prod(envs.single_action_space.shape))
            learner = make_learner(instantiate(cfg.algo.learner), observation_dim, action_dim, device)
            if not learner.needs_reward:
                raise ValueError(f"algo={cfg.algo.name}: the online loop trains a learner from rewards (algo=sac)")
            finished = False
            try:
                sampler = OnlineSampler(envs, learner, settings, int(cfg.seed), device, feedback, frame_reward)
                report = _run(cfg, settings, paths, learner, sampler, generator, device, progress)
                finished = True
            finally:
                if feedback is not None:  # a finished run lets the round in flight end (FeedbackWorker.close)
                    feedback.close(timeout=None if finished else 5.0)
        finally:
            envs.close()
    return report


def _run(cfg: DictConfig, settings: OnlineConfig, paths: RunPaths, learner: Learner, sampler: OnlineSampler,
         generator: torch.Generator, device: torch.device, progress: bool | None) -> dict[str, Any]:
    progress = bool(cfg.trainer.progress) if progress is None else progress
    updates = settings.total_updates
    policy = LearnerPolicy(learner, device)
    during = int(cfg.eval.episodes_during_training)

    def evaluate(final: bool) -> dict[str, float]:
        metrics = evaluate_stage(cfg, policy, episodes=None if final else during, progress=False)
        return {**metrics, **sampler.training_stats()}

    backends = list(dict.fromkeys(["jsonl", *(OmegaConf.select(cfg, "logger.backends", default=None) or [])]))
    make_logger: Callable = lambda step: build_logger(paths.root, backends=backends, resume_step=step)  # noqa: E731
    per_update = settings.updates_per_step
    started = time.time()
    result = fit(learner, sampler, steps=updates, batch_size=int(cfg.trainer.batch_size), checkpoints=paths.checkpoints,
                 generator=generator, make_logger=make_logger, evaluate=evaluate,
                 eval_every=max(1, round(settings.eval_every * per_update)) if settings.eval_every else 0,
                 log_every=int(cfg.trainer.log_every),
                 checkpoint_every=max(1, round(settings.checkpoint_every * per_update)) if settings.checkpoint_every else updates,
                 keep_checkpoints=int(cfg.trainer.keep_checkpoints), progress=progress,
                 extra={"job": "online", "task": str(cfg.task.name), "online": OmegaConf.to_container(cfg.online)})
    elapsed = time.time() - started
    done_updates = result.step - result.start_step
    final = dict(result.final_metrics)
    report = {
        "task": str(cfg.task.name), "env_task": str(OmegaConf.select(cfg, "task.env.task", default="") or ""),
        "algo": str(cfg.algo.name), "seed": int(cfg.seed), "reward": settings.reward,
        "labeler": str(cfg.labeler.name) if settings.reward == "pebble" else None,
        "eval": {k: v for k, v in final.items() if k not in ("env_steps", "train_episodes")},
        "env_steps": int(final.get("env_steps", sampler.env_steps)), "updates": int(result.step),
        "episodes": int(final.get("train_episodes", sampler.episodes)), "resumed": result.resumed,
        "wall_time_s": round(elapsed, 1),
        "updates_per_s": round(done_updates / elapsed, 2) if done_updates and elapsed > 0 else None,
        "env_steps_per_s": round((sampler.env_steps - sampler.first_env_steps) / elapsed, 2)
        if sampler.first_env_steps is not None and elapsed > 0 else None,
        "online": OmegaConf.to_container(cfg.online),
    }
    curve = plot_env_step_curve(paths.metrics_jsonl, paths.plots / "learning_curve.png",
                                f"{cfg.task.name}: {cfg.algo.name} online, reward {settings.reward}, seed {cfg.seed}")
    videos = record_videos(cfg, policy, paths.videos) if done_updates else []
    write_json_atomic(paths.metrics, report)
    write_text_atomic(paths.report, _render_report(report, curve, videos, paths.root))
    return report


def _render_report(report: dict[str, Any], curve: Path | None, videos: list[Path], root: Path) -> str:
    lines = [f"# Online: {report['task']}, {report['algo']}, reward {report['reward']}, seed {report['seed']}", "",
             f"{report['env_steps']} env steps, {report['updates']} updates, {report['episodes']} training episodes; "
             f"{report['wall_time_s']} s in this process"
             + (f" ({report['updates_per_s']} updates/s)." if report["updates_per_s"] else "."), "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["eval"].items()]
    if curve is not None:
        lines += ["", f"![learning curve]({curve.relative_to(root)})"]
    lines += [f"- video: [{v.name}]({v.relative_to(root)})" for v in videos]
    return "\n".join(lines) + "\n"


# -- sweeps: python -m embodied.online -m ... and ``aggregate`` ------------------------------------

def row_label(report: Mapping[str, Any]) -> str:
    """How a run's row is named in tables: ``SAC, true reward``, ``SAC, CLIP reward`` or
    ``PEBBLE, <labeler>``."""
    if report.get("reward") == "pebble":
        return f"PEBBLE, {report.get('labeler')}"
    return {"gt": "SAC, true reward", "clip": "SAC, CLIP reward"}.get(str(report.get("reward")), str(report.get("reward")))


def _eval_curve(metrics_jsonl: Path, key: str = "success_rate") -> list[tuple[float, float]]:
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines()] if metrics_jsonl.exists() else []
    return [(float(r["eval/env_steps"]), float(r[f"eval/{key}"])) for r in rows
            if "eval/env_steps" in r and f"eval/{key}" in r]


def _curve_over_seeds(curves: list[list[tuple[float, float]]]) -> list[list[float]]:
    """``[[env_steps, mean, min, max], ...]`` over the seeds evaluated at each env step."""
    points = []
    for step in sorted({s for curve in curves for s, _ in curve}):  # seeds share online.eval_every
        values = [v for curve in curves for s, v in curve if s == step]
        points.append([step, float(np.mean(values)), float(np.min(values)), float(np.max(values))])
    return points


def aggregate(folder: str | Path, wall_time_s: float | None = None, late: int = 3) -> dict[str, Any]:
    """Gather the finished online runs under ``folder`` (each a ``metrics.json`` with its
    ``metrics.jsonl``) by task and row (:func:`row_label`) into ``results.json``, ``results.md``
    and ``results_curves.png`` (success against env steps, one panel per task: the mean over
    seeds and the range).

    The final evaluation's true return (``return``) is compared with SAC's as well: where SAC on
    the true reward does not succeed within the run's env steps, success shares say nothing.
    Success at the end of a run swings between neighbouring evaluations, so ``late`` is each
    run's mean success over its last ``late`` evaluations (the final one included; 10 episodes
    each during training and 20 at the end at the online preset), averaged over seeds, and
    compared with SAC's too.

    Args:
        late: how many of the last evaluations of each run's curve make its late success (>= 1).

    Returns:
        ``{"tasks": {task: {row: {"seeds", "final", "final_mean", "final_std", "share_of_sac",
        "late", "late_mean", "late_share_of_sac", "return", "return_mean", "return_std",
        "return_share_of_sac", "queries", "curve": [[env_steps, mean, min, max], ...],
        "return_curve": [...]}}}, "runs", "late_evaluations", "wall_time_s"}`` (success rates in
        [0, 1]; returns in the task's reward units).

    Raises:
        FileNotFoundError: no finished online run under ``folder``.
        ValueError: ``late`` < 1.
    """
    from embodied.io import write_json_atomic, write_text_atomic

    if late < 1:
        raise ValueError(f"late={late}: expected at least 1 evaluation to average")
    folder = Path(folder)
    runs = []
    for path in sorted(folder.rglob("metrics.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and "online" in report and "reward" in report:
            runs.append((path.parent, report))
    if not runs:
        raise FileNotFoundError(f"no finished online run (metrics.json of embodied.online) under {folder}")
    tasks: dict[str, dict[str, Any]] = {}
    for run, report in runs:
        task = report.get("env_task") or report["task"]
        row = tasks.setdefault(task, {}).setdefault(row_label(report), {"seeds": [], "final": [], "late": [], "return": [],
                                                                         "queries": [], "curves": [], "return_curves": []})
        row["seeds"].append(int(report["seed"]))
        row["final"].append(float(report["eval"].get("success_rate", float("nan"))))
        row["return"].append(float(report["eval"].get("return_mean", float("nan"))))
        row["queries"].append(float(report["eval"].get("queries", 0.0)))
        row["curves"].append(_eval_curve(run / "metrics.jsonl"))
        row["late"].append(float(np.mean([v for _, v in row["curves"][-1][-late:]])) if row["curves"][-1] else float("nan"))
        row["return_curves"].append(_eval_curve(run / "metrics.jsonl", "return_mean"))
    for rows in tasks.values():
        sac = rows.get("SAC, true reward")
        sac_final = float(np.mean(sac["final"])) if sac else float("nan")
        sac_return = float(np.mean(sac["return"])) if sac else float("nan")
        sac_late = float(np.mean(sac["late"])) if sac else float("nan")
        for row in rows.values():
            row["final_mean"], row["final_std"] = float(np.mean(row["final"])), float(np.std(row["final"]))
            row["share_of_sac"] = row["final_mean"] / sac_final if sac_final > 0 else float("nan")
            row["late_mean"] = float(np.mean(row["late"]))
            row["late_share_of_sac"] = row["late_mean"] / sac_late if sac_late > 0 else float("nan")
            row["return_mean"], row["return_std"] = float(np.mean(row["return"])), float(np.std(row["return"]))
            row["return_share_of_sac"] = row["return_mean"] / sac_return if sac_return > 0 else float("nan")
            row["curve"] = _curve_over_seeds(row.pop("curves"))
            row["return_curve"] = _curve_over_seeds(row.pop("return_curves"))
    summary = {"tasks": tasks, "runs": len(runs), "late_evaluations": late, "wall_time_s": wall_time_s}
    write_json_atomic(folder / "results.json", summary)
    write_text_atomic(folder / "results.md", render_table(summary) + "\n")
    plot_sweep_curves(summary, folder / "results_curves.png")
    return summary


def render_table(summary: Mapping[str, Any]) -> str:
    """``results.md``: final success, late success (mean of the last evaluations) and true
    return per task and row, mean ± std over seeds, and each as a share of SAC on the true reward."""
    late = summary.get("late_evaluations", 3)
    lines = ["| task | row | final success | share of SAC's success | success, last "
             f"{late} evaluations | share of SAC's | final return | share of SAC's return | queries | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    share = lambda value: "–" if math.isnan(value) else f"{100 * value:.0f} %"  # noqa: E731
    for task, rows in summary["tasks"].items():
        for label, row in rows.items():
            lines.append(f"| {task} | {label} | {row['final_mean']:.2f} ± {row['final_std']:.2f} | {share(row['share_of_sac'])} | "
                         f"{row['late_mean']:.2f} | {share(row['late_share_of_sac'])} | "
                         f"{row['return_mean']:.0f} ± {row['return_std']:.0f} | {share(row['return_share_of_sac'])} | "
                         f"{np.mean(row['queries']):.0f} | {len(row['seeds'])} |")
    wall = summary.get("wall_time_s")
    lines.append("")
    runs = summary["runs"]
    lines.append(f"{runs} run{'' if runs == 1 else 's'}" + (f", {wall / 60:.0f} min wall time." if wall else "."))
    return "\n".join(lines)


def plot_sweep_curves(summary: Mapping[str, Any], path: Path) -> Path:
    """Success (top) and true return (bottom) against env steps, a column per task, one line
    (mean over seeds) and band (range) per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    figure, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.0), dpi=100, squeeze=False)
    for column, task in enumerate(tasks):
        for axis, key, ylabel in ((axes[0][column], "curve", "success rate"), (axes[1][column], "return_curve", "return (true reward)")):
            for label, row in summary["tasks"][task].items():
                if not row.get(key):
                    continue
                steps, mean, low, high = (np.asarray(c) for c in zip(*row[key]))
                seeds = len(row["seeds"])
                axis.plot(steps, mean, marker="o", markersize=3, label=f"{label} ({seeds} seed{'' if seeds == 1 else 's'})")
                axis.fill_between(steps, low, high, alpha=0.2)
            axis.set_title(task, fontsize=9)
            axis.set_xlabel("env steps", fontsize=8)
            axis.set_ylabel(ylabel, fontsize=8)
            if key == "curve":
                axis.set_ylim(-0.02, 1.02)
            axis.tick_params(labelsize=7)
            axis.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, path)


class AggregateResults(TablesCallback):
    """Hydra callback of the online sweeps: times the sweep and, when every run has finished, writes
    the tables (:func:`aggregate`, :func:`render_table`)."""

    aggregate = staticmethod(aggregate)
    render = staticmethod(render_table)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="online")
def _main(cfg: DictConfig) -> None:
    with run_folder("online", cfg, redirect=lambda folder: continue_unfinished(cfg, folder, "online", online_identity)) as folder:
        report = train_online(cfg, folder)
        print(f"[online] {report['task']} | {report['algo']} | reward {report['reward']} | seed {report['seed']}: "
              f"success {report['eval'].get('success_rate', float('nan')):.2f} after {report['env_steps']} env steps")
        print(f"report: {folder / 'report.md'}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected; ``aggregate <folder>`` redoes the
    tables of a sweep (or of any folder holding online runs)."""
    if aggregate_command("online", aggregate, render_table):
        return
    require_task("online")
    _main()


if __name__ == "__main__":
    main()
