"""Continual offline RL over a Meta-World task sequence: ``python -m embodied.continual suite=cw10``.

One learner is carried through the suite's tasks (the Continual World order for ``cw10``,
Wolczyk et al. 2021), each learned from its own offline dataset (the mixed recipe of the main
job, collected once and shared) and its rewards (``algo.reward``: learned from ``labeler``
preferences, cached per task and seed so every strategy trains on the same rewards, or the true
reward). The task is given as a one-hot appended to the observation (Meta-World's MT
convention). A strategy (``conf/strategy/``) decides what is replayed and how:

- ``finetune``: no replay (the lower reference);
- ``er``: experience replay, a buffer filled at random, old and new transitions in one IQL batch;
- ``oer``: OER (Gai et al. 2023): model-based experience selection (:mod:`policies.oer.mbes`)
  fills the buffer, dual behaviour cloning (:mod:`policies.oer.model`) keeps cloning of old tasks
  away from the new task's Q-learning; ``mbes`` and ``dbc`` are its two halves alone;
- ``multitask``: every dataset at once (the upper reference);
- ``single``: a fresh learner per task (the reference of forward transfer).

After each task the learner is evaluated on every task of the suite (Meta-World's protocol,
``continual.eval_episodes`` episodes a task): the success matrix ``(stage, task)``. The current
task is also evaluated ``continual.curve_points`` times during its training (its curve, for
forward transfer). A run writes ``result.json`` with the matrix, average success at the end,
forgetting (Continual World: success at the end of a task's own training minus at the end of the
sequence, averaged over all tasks), the curves, wall time per stage and the buffer's memory.

Every stage resumes: training from its checkpoints (the buffer is part of them), the stage's
evaluation from ``evaluation.json``, the buffer after it from ``replay/``. A sweep over
strategies and seeds is a Hydra multirun (joblib here, SLURM through submitit); when it ends,
:func:`aggregate` writes ``results.json``, ``results.md`` (average success, forgetting and forward
transfer with bootstrap 95 % intervals over seeds), ``results_heatmap.png`` and
``results_curves.png``. ``python -m embodied.continual aggregate <sweep folder>`` redoes them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import numpy as np
import torch
from filelock import FileLock
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf

from embodied.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from embodied.cli import TablesCallback, aggregate_command, run_folder
from embodied.data import Episode
from embodied.fit import fit
from embodied.io import save_figure, write_json_atomic, write_text_atomic
from embodied.loggers import build_logger
from embodied.pipeline import dataset_stage, reward_function, run_identity
from embodied.runtime import resolve_device, seed_everything
from policies import make_learner
from policies.base import Learner
from policies.data import TRANSITION_FIELDS, EpisodeData, MixedSampler, TaskReplayBuffer, TransitionSampler
from policies.oer.mbes import fit_dynamics, mbes_select
from reward_models.functions import TrueReward, normalize_rewards, relabel

RESULT_FILE = "result.json"
SELECTIONS = ("none", "random", "mbes")
TRAININGS = ("joint", "dbc", "multitask", "single")


@dataclass
class MBESConfig:
    """Model-based experience selection (:mod:`policies.oer.mbes`)."""

    members: int = 5
    """K, dynamics models in the ensemble. Default 5."""
    hidden_dims: list[int] = field(default_factory=lambda: [200, 200])
    """Widths of each dynamics MLP. Default [200, 200]."""
    steps: int = 2000
    """Adam steps fitting the ensemble (each member a batch per step). Default 2000."""
    batch_size: int = 256
    """Transitions per member per step. Default 256."""
    learning_rate: float = 1e-3
    """Adam learning rate. Default 1e-3."""
    rollout_length: int = 50
    """L, model steps per rollout of the learned policy. Default 50."""

    def __post_init__(self) -> None:
        if min(self.members, self.steps, self.batch_size, self.rollout_length) < 1 or self.learning_rate <= 0:
            raise ValueError(f"strategy.mbes: members, steps, batch_size, rollout_length >= 1 and learning_rate > 0 "
                             f"expected, got {self}")


@dataclass
class StrategyConfig:
    """How a continual run replays past tasks (``conf/strategy/``)."""

    name: str = MISSING
    """Strategy name (``oer``, ``er``, ``finetune``, ``multitask``, ``single``, ``mbes``, ``dbc``)."""
    label: str = ""
    """Its row in the results table (default: the name)."""
    selection: str = "none"
    """What of a finished task goes into the buffer: ``none``, ``random``, ``mbes``."""
    training: str = "joint"
    """``joint`` (replayed and new transitions in one IQL batch), ``dbc`` (dual behaviour
    cloning), ``multitask`` (all datasets at once), ``single`` (a fresh learner per task)."""
    budget: int = 10000
    """Transitions the buffer holds at most, over all tasks. Default 10,000."""
    per_task: Optional[int] = None
    """Transitions per task (None: an equal share of ``budget`` among the tasks so far)."""
    replay_fraction: float = 0.5
    """Share of each ``joint`` batch drawn from the buffer. Default 0.5."""
    evaluate_all: bool = True
    """Evaluate every task after each stage (``single`` evaluates only its own)."""
    mbes: MBESConfig = field(default_factory=MBESConfig)
    dbc: dict[str, Any] = field(default_factory=dict)
    """Fields of :class:`policies.oer.OERConfig` for ``training=dbc`` (distill_weight,
    replay_weight, policy_hidden_dims, policy_learning_rate)."""

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS or self.training not in TRAININGS:
            raise ValueError(f"strategy {self.name!r}: selection={self.selection!r} (one of {SELECTIONS}) and "
                             f"training={self.training!r} (one of {TRAININGS}) expected")
        if self.budget < 0 or not 0.0 <= self.replay_fraction <= 1.0:
            raise ValueError(f"strategy {self.name!r}: budget={self.budget} (>= 0) and replay_fraction="
                             f"{self.replay_fraction} (in [0, 1]) expected")
        if self.selection != "none" and self.budget == 0:
            raise ValueError(f"strategy {self.name!r} selects transitions to replay but strategy.budget=0")
        self.label = self.label or self.name


@dataclass
class ContinualConfig:
    """The continual loop's own settings (``continual.*``)."""

    steps_per_task: int = 5000
    """IQL updates per task (``multitask``: this times the number of tasks). Default 5000."""
    eval_episodes: int = 10
    """Meta-World protocol episodes per task and evaluation. Default 10."""
    curve_points: int = 5
    """Evaluations of the current task during its training (its curve; forward transfer). Default 5."""
    task_encoding: str = "onehot"
    """How the learner knows the task: ``onehot`` appended to the observation (Meta-World's MT
    convention), or ``heads``: the one-hot too, and every network with a separate output head per
    task (Continual World's multi-head setting, ``algo.learner.task_heads``)."""
    threads: int = 1
    """torch threads of the job (parallel jobs: one per core). Default 1."""
    reward_cache: str = "outputs/continual/rewards"
    """Where each task's labels and reward model are cached, shared by strategies and runs."""
    strategies: list[str] = field(default_factory=lambda: ["oer", "er", "finetune", "multitask", "single"])
    """The strategies a sweep runs (``conf/strategy/``)."""

    def __post_init__(self) -> None:
        if min(self.steps_per_task, self.eval_episodes, self.threads) < 1 or self.curve_points < 0:
            raise ValueError(f"continual: steps_per_task, eval_episodes, threads >= 1 and curve_points >= 0 expected, "
                             f"got {self}")
        if self.task_encoding not in ("onehot", "heads"):
            raise ValueError(f"continual.task_encoding={self.task_encoding!r}; expected 'onehot' or 'heads'")
        if self.curve_points > self.steps_per_task:
            raise ValueError(f"continual.curve_points={self.curve_points} exceeds steps_per_task={self.steps_per_task}")


def read_settings(cfg: DictConfig) -> tuple[ContinualConfig, StrategyConfig]:
    """``continual`` and ``strategy`` as validated dataclasses.

    Raises:
        ValueError: a missing section, an unknown field (named) or a bad value.
    """
    if OmegaConf.select(cfg, "continual") is None or OmegaConf.select(cfg, "strategy") is None:
        raise ValueError("continual runs need the continual and strategy sections (python -m embodied.continual)")
    try:
        settings = ContinualConfig(**OmegaConf.to_container(cfg.continual, resolve=True))
        values = OmegaConf.to_container(cfg.strategy, resolve=True)
        strategy = StrategyConfig(**{**values, "mbes": MBESConfig(**values.get("mbes", {}))})
    except TypeError as error:
        raise ValueError(f"continual / strategy settings: {error}") from None
    return settings, strategy


# -- tasks, data and rewards ----------------------------------------------------------------------

def task_config(cfg: DictConfig, name: str) -> DictConfig:
    """The root config with ``task.env.task`` set to Meta-World task ``name``."""
    out = copy.deepcopy(cfg)
    OmegaConf.update(out, "task.env.task", name, merge=False)
    return out


def with_task(episode: Episode, task: int, tasks: int) -> Episode:
    """``episode`` with the one-hot of ``task`` among ``tasks`` appended to every observation."""
    onehot = np.zeros((len(episode.observations), tasks), dtype=np.float32)
    onehot[:, task] = 1.0
    return dataclasses.replace(episode, observations=np.concatenate([episode.observations.astype(np.float32), onehot], 1),
                               frames=None)


def _reward_folder(cfg: DictConfig) -> Path:
    """The cache folder of one task's labels and reward model: named by the task and a hash of
    every setting they depend on (task, dataset, labeler, reward model, seed)."""
    identity = {k: v for k, v in run_identity(cfg).items()
                if k.split(".")[0] in ("task", "dataset", "labeler", "reward_model", "clip", "judges", "seed")}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cfg.continual.reward_cache) / f"{cfg.task.name}_{cfg.labeler.name}_seed{int(cfg.seed)}_{digest}"


@dataclass
class TaskData:
    """One task of the sequence: its episodes (one-hot included), tensors and rewards."""

    name: str
    index: int
    episodes: list[Episode]
    data: EpisodeData
    rewards: torch.Tensor
    report: dict[str, Any]


def load_task(cfg: DictConfig, name: str, index: int, tasks: int, device: torch.device) -> TaskData:
    """Dataset (collected when missing), rewards (``algo.reward``: learned from the cached labels and
    reward model, or true) normalised with ``algo.reward_normalization``, and the one-hot task id.

    Raises:
        ValueError: ``algo.reward`` is neither ``learned`` nor ``gt``.
    """
    cfg_t = task_config(cfg, name)
    episodes = dataset_stage(cfg_t).episodes
    if cfg.algo.reward == "gt":
        reward, report = TrueReward(), {}
    elif cfg.algo.reward == "learned":
        folder = _reward_folder(cfg_t)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):  # parallel strategies share the labels and the model
            reward, report = reward_function(cfg_t, episodes, folder, device)
    else:
        raise ValueError(f"continual runs train IQL on algo.reward=learned or gt, not {cfg.algo.reward!r}")
    tagged = [with_task(ep, index, tasks) for ep in episodes]
    data = EpisodeData(tagged, device)
    rewards, _ = normalize_rewards(relabel(reward, episodes, device), str(cfg.algo.reward_normalization), data.episode)
    numbers = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    return TaskData(name, index, tagged, data, rewards, numbers)


def all_transitions(task: TaskData) -> dict[str, torch.Tensor]:
    """Every transition of the task with its reward, fields as a sampler's."""
    rows = torch.arange(task.data.size, device=task.data.device)
    return task.data.gather(rows, (*TRANSITION_FIELDS, "reward"), task.rewards)


class TaskPolicy:
    """A continual learner acting on one task: the task's one-hot appended to each observation."""

    def __init__(self, learner: Learner, task: int, tasks: int, device: torch.device):
        self.learner, self.device = learner, device
        self.onehot = torch.zeros(1, tasks, device=device)
        self.onehot[0, task] = 1.0

    def reset(self, seed: int | None = None) -> None:
        self.learner.reset()

    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=self.device)[None]
        return self.learner.act(torch.cat([obs, self.onehot], 1))[0].cpu().numpy()


def evaluate_task(learner: Learner, name: str, index: int, tasks: int, episodes: int, seed: int,
                  device: torch.device) -> float:
    """Success rate on task ``name`` with Meta-World's protocol (``episodes`` episodes)."""
    from envs.metaworld_adapter import official_evaluation

    was_training = learner.training
    learner.eval()
    try:
        return float(official_evaluation(TaskPolicy(learner, index, tasks, device).act, name, episodes, seed)["success_rate"])
    finally:
        learner.train(was_training)


# -- the learner ----------------------------------------------------------------------------------

def build_learner(cfg: DictConfig, strategy: StrategyConfig, observation_dim: int, action_dim: int,
                  device: torch.device, tasks: int = 0) -> Learner:
    """IQL from ``algo.learner``, or OER's dual behaviour cloning on top of it (``training=dbc``);
    ``tasks`` > 0: a head per task in every network."""
    values = OmegaConf.to_container(cfg.algo.learner, resolve=True)
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    if tasks:
        values["task_heads"] = tasks
    if strategy.training == "dbc":
        from policies.oer import OERConfig

        config = OERConfig(**values, **dict(strategy.dbc))
    else:
        config = get_class(cfg.algo.learner._target_)(**values)
    return make_learner(config, observation_dim, action_dim, device=str(device))


def prepare_learner(learner: Learner, observations: torch.Tensor, task_dims: int, total_steps: int) -> None:
    """Fit observation statistics (when the learner normalises), leaving the one-hot task entries
    (the last ``task_dims``) as they are (mean 0, std 1): statistics of a task id seen once would
    blow up the others. Continual runs turn normalisation off by default (``conf/continual.yaml``):
    the first task's statistics blow up the entries that are constant in it."""
    learner.prepare(observations, total_steps=total_steps)
    normalizer = getattr(learner, "normalizer", None)
    if normalizer is not None and task_dims:
        with torch.no_grad():
            normalizer.mean[-task_dims:] = 0.0
            normalizer.std[-task_dims:] = 1.0 - normalizer.eps


# -- replay ---------------------------------------------------------------------------------------

def rank_transitions(cfg: DictConfig, strategy: StrategyConfig, learner: Learner, task: TaskData, tasks: int,
                     count: int, seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    """``(count,)`` rows of ``task`` to replay, the first kept longest: a random permutation
    (``selection=random``) or model-based experience selection (``mbes``); and a report."""
    generator = torch.Generator().manual_seed(seed)
    n = task.data.size
    if strategy.selection == "random":
        return torch.randperm(n, generator=generator)[:count], {}
    torch.manual_seed(seed)  # the dynamics ensemble's initial weights
    d = task.data.observation_dim - tasks
    rows = torch.arange(n, device=task.data.device)
    batch = task.data.gather(rows, ("observation", "action", "next_observation"))
    obs, act, nxt = batch["observation"][:, :d], batch["action"], batch["next_observation"][:, :d]
    m = strategy.mbes
    started = time.time()
    model, report = fit_dynamics(obs, act, nxt, list(m.hidden_dims), m.members, m.steps, m.batch_size,
                                 m.learning_rate, generator)
    policy = TaskPolicy(learner, task.index, tasks, task.data.device)
    was_training = learner.training
    learner.eval()
    try:
        act_fn = lambda s: learner.act(torch.cat([s, policy.onehot.expand(len(s), -1)], 1))  # noqa: E731
        starts = torch.nonzero(task.data.time == 0).squeeze(1).cpu()
        found: dict[str, float] = {}
        ranking = mbes_select(obs, act, starts, act_fn, model, count, m.rollout_length, generator, stats=found)
    finally:
        learner.train(was_training)
    return ranking, {**report, **found, "mbes_time_s": round(time.time() - started, 1)}


def save_replay(folder: Path, buffer: TaskReplayBuffer, report: dict[str, Any]) -> None:
    """The buffer after a stage, as a checkpoint folder (safetensors + json, written atomically)."""
    save_checkpoint(folder, 0, {}, {"replay": buffer.state_dict(), "report": report})


def load_replay(folder: Path, buffer: TaskReplayBuffer) -> dict[str, Any] | None:
    """Restore a buffer saved by :func:`save_replay`; returns its report, or None when absent."""
    found = latest_checkpoint(folder)
    if found is None:
        return None
    state = load_checkpoint(found).state
    buffer.load_state_dict(state["replay"])
    return dict(state.get("report", {}))


def buffer_bytes(buffer: TaskReplayBuffer) -> int:
    """Bytes the buffer's tensors take."""
    return int(sum(v.numel() * v.element_size() for items in buffer.tasks.values() for v in items.values()))


# -- the run --------------------------------------------------------------------------------------

def _stage_name(index: int, name: str) -> str:
    return f"stage{index:02d}_{name}"


def _curve(folder: Path) -> list[list[float]]:
    """``[[step, success], ...]`` of a stage's evaluations during training (its metrics.jsonl)."""
    path = folder / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [[int(r["step"]), float(r["eval/success_rate"])] for r in rows if "eval/success_rate" in r]


def _make_logger(cfg: DictConfig, folder: Path):
    backends = list(dict.fromkeys(["jsonl", *(OmegaConf.select(cfg, "logger.backends", default=None) or [])]))
    return lambda step: build_logger(folder, backends=backends, resume_step=step)


def run_sequence(cfg: DictConfig, folder: str | Path) -> dict[str, Any]:
    """Train one strategy through the suite's tasks into ``folder`` and write ``result.json``.

    A finished run (its ``result.json`` exists) is returned as it is; an unfinished one resumes
    where it stopped (module docstring).

    Raises:
        ValueError: a bad ``continual`` or ``strategy`` setting, a suite with fewer than 2 tasks,
            or a learner setting the loop cannot train.
    """
    folder = Path(folder)
    path = folder / RESULT_FILE
    if path.exists():
        return json.loads(path.read_text())
    settings, strategy = read_settings(cfg)
    names = [str(t) for t in cfg.suite.tasks]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"suite.tasks={names}: a continual run needs at least 2 distinct tasks")
    torch.set_num_threads(settings.threads)
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")  # Meta-World's experts
    started = time.time()
    seed = int(cfg.seed)
    generator = seed_everything(seed)
    device = resolve_device(cfg.device)
    n = len(names)
    batch_size = int(cfg.trainer.batch_size)
    tasks = [load_task(cfg, name, i, n, device) for i, name in enumerate(names)]
    observation_dim, action_dim = tasks[0].data.observation_dim, tasks[0].data.action_dim
    heads = n if settings.task_encoding == "heads" else 0
    learner = build_learner(cfg, strategy, observation_dim, action_dim, device, heads)
    buffer = TaskReplayBuffer(strategy.budget if strategy.selection != "none" else 0, strategy.per_task, device)
    matrix = [[None] * n for _ in range(n if strategy.training != "multitask" else 1)]
    curves: dict[str, list[list[float]]] = {}
    stage_times: list[float] = []
    replay_reports: dict[str, Any] = {}
    steps = settings.steps_per_task
    mode = "separate" if strategy.training == "dbc" else "joint"

    def train_stage(index: int, stage: Path, data: EpisodeData, rewards: torch.Tensor, stage_steps: int,
                    current: int | None) -> None:
        sampler = MixedSampler(TransitionSampler(data, rewards), buffer, mode, strategy.replay_fraction)
        fresh = index == 0 or strategy.training == "single"
        prepare = (lambda: prepare_learner(learner, data.transition_observations(), n, stage_steps)) if fresh else (
            lambda: learner.set_total_steps(stage_steps) if hasattr(learner, "set_total_steps") else None)
        evaluate = None
        if current is not None:
            evaluate = lambda final: {"success_rate": evaluate_task(  # noqa: E731
                learner, names[current], current, n, settings.eval_episodes, int(cfg.eval.seed), device)}
        fit(learner, sampler, steps=stage_steps, batch_size=batch_size, checkpoints=stage / "checkpoints",
            generator=generator, make_logger=_make_logger(cfg, stage), prepare=prepare, evaluate=evaluate,
            eval_every=stage_steps // settings.curve_points if settings.curve_points and current is not None else 0,
            log_every=int(cfg.trainer.log_every), checkpoint_every=int(cfg.trainer.checkpoint_every),
            keep_checkpoints=int(cfg.trainer.keep_checkpoints), progress=bool(cfg.trainer.progress),
            extra={"suite": str(cfg.suite.name), "strategy": strategy.name, "stage": index})

    def evaluate_stage(index: int, stage: Path, current: int | None, t0: float) -> list[float | None]:
        saved = stage / "evaluation.json"
        if saved.exists():
            done = json.loads(saved.read_text())
            stage_times.append(done.get("wall_time_s"))
            return done["success"]
        final = latest_checkpoint(stage / "checkpoints")
        own = load_checkpoint(final).state.get("final_metrics", {}) if final is not None else {}
        row: list[float | None] = []
        for j, name in enumerate(names):
            if j == current and "success_rate" in own:
                row.append(float(own["success_rate"]))
            elif strategy.evaluate_all or j == current:
                row.append(evaluate_task(learner, name, j, n, settings.eval_episodes, int(cfg.eval.seed), device))
            else:
                row.append(None)
        # Training and evaluation time of the stage, in the process that finished it (a stage that
        # resumed counts only its resumed part).
        stage_times.append(round(time.time() - t0, 1))
        write_json_atomic(saved, {"success": row, "tasks": names, "wall_time_s": stage_times[-1]})
        return row

    if strategy.training == "multitask":
        stage = folder / "stage00_all"
        t0 = time.time()
        data = EpisodeData([ep for t in tasks for ep in t.episodes], device)
        rewards = torch.cat([t.rewards for t in tasks])
        if strategy.selection != "none":
            raise ValueError("strategy training=multitask replays nothing (selection=none expected)")
        train_stage(0, stage, data, rewards, steps * n, None)
        matrix[0] = evaluate_stage(0, stage, None, t0)
    else:
        for i, task in enumerate(tasks):
            stage = folder / _stage_name(i, task.name)
            t0 = time.time()
            if strategy.training == "single" and i > 0:  # a fresh learner per task, seeded per stage
                torch.manual_seed(seed * 1000 + i)
                learner = build_learner(cfg, strategy, observation_dim, action_dim, device, heads)
            train_stage(i, stage, task.data, task.rewards, steps, i)
            matrix[i] = evaluate_stage(i, stage, i, t0)
            curves[task.name] = _curve(stage)
            if strategy.selection != "none" and i < n - 1:
                report = load_replay(stage / "replay", buffer)
                if report is None:
                    count = min(task.data.size, buffer.share(len(buffer.tasks) + 1))
                    ranking, report = rank_transitions(cfg, strategy, learner, task, n, count, seed * 1000 + i)
                    items = {k: v[ranking.to(v.device)] for k, v in all_transitions(task).items()}
                    buffer.add_task(i, items)
                    report = {**report, "kept": count, "buffer_transitions": len(buffer), "buffer_bytes": buffer_bytes(buffer)}
                    save_replay(stage / "replay", buffer, report)
                replay_reports[task.name] = report
    result = summarize_run(names, matrix, curves, strategy.training)
    result.update({
        "suite": str(cfg.suite.name), "strategy": strategy.name, "label": strategy.label, "training": strategy.training,
        "seed": seed,
        "steps_per_task": steps, "task_encoding": settings.task_encoding, "eval_episodes": settings.eval_episodes, "reward": str(cfg.algo.reward),
        "labeler": str(cfg.labeler.name) if cfg.algo.reward == "learned" else None,
        "reward_reports": {t.name: t.report for t in tasks},
        "buffer": {"budget": buffer.budget, "per_task": strategy.per_task, "transitions": len(buffer),
                   "bytes": buffer_bytes(buffer), "per_task_kept": {names[k]: v for k, v in buffer.task_sizes().items()}},
        # per stage: training and evaluation (the replay selection is in "replay")
        "replay": replay_reports, "stage_wall_time_s": stage_times, "wall_time_s": round(time.time() - started, 1),
    })
    write_json_atomic(path, result)
    return result


def summarize_run(names: list[str], matrix: list[list[float | None]], curves: dict[str, list[list[float]]],
                  training: str) -> dict[str, Any]:
    """Average success at the end (single-task runs: of each task's own learner), forgetting (per
    task and the mean over all tasks, Continual World's F; the last task's is 0), and each task's
    area under its training curve (mean of the curve's points: the AUC of forward transfer)."""
    # single-task runs: each task's own learner at the end of its training (the diagonal)
    final = [matrix[i][i] for i in range(len(names))] if training == "single" else matrix[-1]
    average = float(np.mean([v for v in final if v is not None])) if any(v is not None for v in final) else float("nan")
    forgetting, per_task = float("nan"), {}
    if training not in ("multitask", "single"):
        per_task = {name: float(matrix[i][i] - final[i]) for i, name in enumerate(names)}
        forgetting = float(np.mean(list(per_task.values())))
    auc = {name: float(np.mean([s for _, s in curve])) for name, curve in curves.items() if curve}
    return {"tasks": names, "matrix": matrix, "average_success": average, "forgetting": forgetting,
            "forgetting_per_task": per_task, "curves": curves, "auc": auc,
            "final_success": {name: final[i] for i, name in enumerate(names)}}


# -- aggregation ----------------------------------------------------------------------------------

def bootstrap_interval(values: list[float], resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of ``values`` (NaN with fewer than 2)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=np.float64)
    means = x[rng.integers(len(x), size=(resamples, len(x)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def forward_transfer(auc: dict[str, float], reference: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Continual World's forward transfer FT_i = (AUC_i - AUC_ref_i) / (1 - AUC_ref_i) against
    single-task training, averaged over the tasks whose reference is below 1 (FT is undefined
    where the reference's curve is all successes)."""
    per_task = {t: (auc[t] - reference[t]) / (1.0 - reference[t]) for t in auc if t in reference and reference[t] < 1.0}
    return (float(np.mean(list(per_task.values()))) if per_task else float("nan")), per_task


def aggregate(sweep_dir: str | Path, wall_time_s: float | None = None) -> dict[str, Any]:
    """Gather the runs' ``result.json`` under ``sweep_dir`` into ``results.json``, ``results.md``,
    ``results_heatmap.png`` and ``results_curves.png`` there.

    Raises:
        FileNotFoundError: no finished run under ``sweep_dir``.
    """
    sweep_dir = Path(sweep_dir)
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"))]
    if not results:
        raise FileNotFoundError(f"no finished continual run (*/{RESULT_FILE}) under {sweep_dir}")
    for r in results:  # the metrics again from the stored matrix and curves, as defined now
        training = r.get("training", {"single": "single", "multitask": "multitask"}.get(r["strategy"], "joint"))
        r.update(summarize_run(r["tasks"], r["matrix"], r["curves"], training))
    references = {r["seed"]: r["auc"] for r in results if r["strategy"] == "single"}
    rows: dict[str, dict[str, Any]] = {}
    order = {"oer": 0, "er": 1, "mbes": 2, "dbc": 3, "finetune": 4, "multitask": 5, "single": 6}
    for r in sorted(results, key=lambda r: (order.get(r["strategy"], 9), r["strategy"], r["seed"])):
        row = rows.setdefault(r["strategy"], {"label": r["label"], "seeds": [], "average_success": [], "forgetting": [],
                                             "forward_transfer": [], "wall_time_s": [], "matrices": [],
                                             "buffer_bytes": r["buffer"]["bytes"]})
        row["seeds"].append(r["seed"])
        row["average_success"].append(r["average_success"])
        row["forgetting"].append(r["forgetting"])
        ft = forward_transfer(r["auc"], references[r["seed"]])[0] if r["seed"] in references and r["strategy"] != "single" else float("nan")
        row["forward_transfer"].append(ft)
        row["wall_time_s"].append(r["wall_time_s"])
        row["matrices"].append(r["matrix"])
    for row in rows.values():
        for key in ("average_success", "forgetting", "forward_transfer"):
            values = [v for v in row[key] if v is not None and not math.isnan(v)]
            row[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
            row[f"{key}_ci"] = bootstrap_interval(values)
    first = results[0]
    summary = {"sweep_dir": str(sweep_dir), "suite": first["suite"], "tasks": first["tasks"],
               "steps_per_task": first["steps_per_task"], "eval_episodes": first["eval_episodes"],
               "reward": first["reward"], "labeler": first.get("labeler"), "rows": rows, "runs": len(results),
               "job_time_s": round(float(sum(r["wall_time_s"] for r in results)), 1),
               "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1)}
    write_json_atomic(sweep_dir / "results.json", summary)
    write_text_atomic(sweep_dir / "results.md", render_table(summary))
    plot_heatmaps(summary, sweep_dir / "results_heatmap.png")
    plot_curves(summary, sweep_dir / "results_curves.png")
    return summary


def _cell(mean: float, ci: tuple[float, float]) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(ci[0]):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def render_table(summary: dict[str, Any]) -> str:
    """Markdown: a row per strategy with average success, forgetting and forward transfer (mean
    over seeds and the bootstrap 95 % interval), seeds, buffer memory and wall time."""
    reward = "true reward" if summary["reward"] == "gt" else f"reward learned from {summary['labeler']} preferences"
    lines = [f"Continual offline RL on {summary['suite']} ({len(summary['tasks'])} tasks: {', '.join(summary['tasks'])}); "
             f"IQL on the {reward}, {summary['steps_per_task']} updates a task, Meta-World protocol with "
             f"{summary['eval_episodes']} episodes a task. Mean over seeds [bootstrap 95 % interval].", "",
             "| strategy | average success | forgetting | forward transfer | seeds | buffer (MB) | wall time a run (min) |",
             "|---|---|---|---|---|---|---|"]
    for row in summary["rows"].values():
        lines.append(f"| {row['label']} | {_cell(row['average_success_mean'], row['average_success_ci'])} | "
                     f"{_cell(row['forgetting_mean'], row['forgetting_ci'])} | "
                     f"{_cell(row['forward_transfer_mean'], row['forward_transfer_ci'])} | {len(row['seeds'])} | "
                     f"{row['buffer_bytes'] / 1e6:.1f} | {np.mean(row['wall_time_s']) / 60:.1f} |")
    timing = f"{summary['runs']} runs, {summary['job_time_s'] / 60:.0f} min of job time"
    if summary.get("wall_time_s") is not None:
        timing += f", {summary['wall_time_s'] / 60:.0f} min wall time"
    return "\n".join([*lines, "", timing + ".", ""])


def _mean_matrix(matrices: list[list[list[float | None]]]) -> np.ndarray:
    """The success matrices' mean over seeds; NaN where no seed evaluated (single-task runs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray([[[np.nan if v is None else v for v in row] for row in m] for m in matrices],
                                     dtype=np.float64), axis=0)


def plot_heatmaps(summary: dict[str, Any], path: Path) -> Path:
    """One heatmap per strategy: success (mean over seeds) of each task (columns) after each stage (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"].values() if len(r["matrices"][0]) > 1]
    tasks = [t.removesuffix("-v3") for t in summary["tasks"]]
    figure, axes = plt.subplots(1, max(1, len(rows)), figsize=(3.2 * max(1, len(rows)) + 1, 3.4), dpi=100, squeeze=False)
    for index, (axis, row) in enumerate(zip(axes[0], rows)):
        image = axis.imshow(_mean_matrix(row["matrices"]), vmin=0, vmax=1, cmap="viridis")
        axis.set_title(row["label"], fontsize=9)
        axis.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=6)
        # the stage names once, on the left panel (they would run into the panel before)
        axis.set_yticks(range(len(tasks)), [f"after {t}" for t in tasks] if index == 0 else [], fontsize=6)
    if rows:
        figure.colorbar(image, ax=axes[0].tolist(), fraction=0.02, label="success rate")
    figure.suptitle(f"{summary['suite']}: success of each task after each stage", fontsize=10)
    return save_figure(figure, path)


def plot_curves(summary: dict[str, Any], path: Path) -> Path:
    """Average success over the tasks learned so far, after each stage, one line per strategy
    (mean over seeds); multitask and single-task as horizontal references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    n = len(summary["tasks"])
    for row in summary["rows"].values():
        m = _mean_matrix(row["matrices"])
        if np.isnan(m).any():  # single-task runs evaluate only their own task: no curve over tasks so far
            continue
        if len(m) == 1:
            axis.axhline(np.nanmean(m[0]), ls="--", lw=1, color="gray", label=row["label"])
            continue
        seen = [np.nanmean(m[i, : i + 1]) for i in range(n)]
        axis.plot(range(1, n + 1), seen, marker="o", label=row["label"])
    axis.set_xticks(range(1, n + 1))
    axis.set_xlabel("tasks learned")
    axis.set_ylabel("mean success on tasks so far")
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7)
    axis.set_title(f"{summary['suite']}: continual offline RL", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


class AggregateResults(TablesCallback):
    """Hydra callback of the continual sweeps: times the sweep and, when every run has finished, writes
    the tables (:func:`aggregate`, :func:`render_table`)."""

    aggregate = staticmethod(aggregate)
    render = staticmethod(render_table)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="continual")
def _main(cfg: DictConfig) -> None:
    with run_folder("continual", cfg) as folder:
        result = run_sequence(cfg, folder)
        print(f"[continual] {result['suite']} | {result['label']} | seed {result['seed']}: average success "
              f"{result['average_success']:.2f}, forgetting {result['forgetting']:.2f} ({result['wall_time_s'] / 60:.1f} min)",
              flush=True)


def main() -> None:
    """Console entry point; ``aggregate <sweep folder>`` redoes the tables of a sweep."""
    if not aggregate_command("continual", aggregate, render_table):
        _main()


if __name__ == "__main__":
    main()
