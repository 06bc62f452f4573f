"""Typed schemas of the Hydra configuration, and the run-folder resolver.

``conf/config.yaml`` starts from :class:`RootConfig`, so a typo in an override or a value of
the wrong type fails at composition, and fields marked ``???`` must be given. Validation of
values happens when a section is turned into its dataclass (``OmegaConf.to_object``), which
runs ``__post_init__``.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from embodied.datasets import DatasetConfig
from embodied.paths import RunPaths
from reward_models.functions import NORMALIZATIONS


@dataclass
class TaskConfig:
    """A task: how to build its env, its behaviour policies, and what to report."""

    name: str = MISSING
    """Short name, used in run-folder names (``pointmass``, ``dressing``)."""
    env: Any = MISSING
    """Node instantiated to a gymnasium env, e.g. ``{_target_: envs.make, id: ...}``."""
    policies: dict[str, Any] = MISSING
    """Behaviour policies by name, each instantiated with ``action_space=env.action_space``."""
    info_keys: list[str] = field(default_factory=lambda: ["success"])
    """``info`` entries recorded per step; must include ``success``."""
    metrics: list[str] = field(default_factory=list)
    """``info`` entries whose value at the end of the episode is reported (task metrics)."""
    units: dict[str, str] = field(default_factory=dict)
    """Unit of each task metric, for reports (``{max_force: N, dressed_distance: m}``)."""
    description: str = ""
    """The goal in words, for vision-language labelers (VLM prompts, CLIP goal prompts)."""
    goal_prompts: list[str] = field(default_factory=list)
    """CLIP goal prompts (VLM-RM); default: ``[description]``."""
    baseline_prompts: list[str] = field(default_factory=list)
    """CLIP baseline prompts (VLM-RM): the scene without the goal achieved."""
    force_index: Optional[int] = None
    """Observation entry holding the force on the person, N (dressing: 24); the safety layer
    reads it in simulation (``robot=mujoco``, the simulated ROS 2 robot's wrench)."""
    histograms: dict[str, Optional[float]] = field(default_factory=dict)
    """Task metrics drawn as a histogram of the final evaluation's episodes
    (``plots/<metric>_histogram.png``), each with a limit line (or None): dressing
    ``{max_force: 20}``, the force distribution beside success."""
    force_limit: Optional[float] = None
    """N; the force the person must never feel (dressing: 20 N, the task's ``unsafe_force``);
    deploy's safety layer stops before it when ``safety.force_limit`` is unset."""
    force_margin: Optional[float] = None
    """N; how far below ``force_limit`` deploy's safety layer stops when ``safety.force_margin``
    is unset (default 5 N): at least the largest rise of the force in one control step
    (dressing: 8 N, over its gripper's 300 N/m x 0.02 m = 6 N a step)."""
    comfort_force: Optional[float] = None
    """N; force above which pressing on the person is uncomfortable (dressing: 5 N, the env's
    ``comfort_force``, penalised by its reward); the force judge's limit by default."""
    attributes: dict[str, Any] = field(default_factory=dict)
    """Behaviour attributes (AlignDiff), by name: ``{measure: <import path of observations (H + 1,
    D) -> float>, unit: ...}`` (dressing: speed, force, height); the scripted attribute teacher
    compares segments by them. Empty: the task has none."""
    goal_observation: Optional[str] = None
    """Import path of a function ``observation (D,) -> observation (D,)``: the state in which the
    observation's goal is reached (zero-shot goal prompts, ``z = B(g)``); None: the task has no
    goal in its observation."""


@dataclass
class AlgoConfig:
    """A learner: its registered name, its config node (``_target_`` a config dataclass), and
    which reward it trains on."""

    name: str = MISSING
    learner: Any = MISSING
    reward: str = "none"
    """``none``: no reward (imitation); ``learned``: a Bradley-Terry reward model fitted to the
    labeler's preferences relabels the data; ``gt``: the dataset's ground-truth reward (oracle
    baselines only); ``clip``: the CLIP zero-shot reward (VLM-RM, root ``clip`` node) of the frame
    after each step (needs a dataset with frames)."""
    reward_normalization: str = "standardize"
    """Applied to whichever reward the learner trains on, true or learned, so the two rows of a
    table are comparable: ``standardize`` (mean 0, std 1 over the dataset), ``return_range``
    (the IQL paper's ``r * L / (R_max - R_min)``) or ``none``. Default standardize."""

    def __post_init__(self) -> None:
        if self.reward not in REWARD_SOURCES:
            raise ValueError(f"algo.reward={self.reward!r}; expected one of {REWARD_SOURCES}")
        if self.reward_normalization not in NORMALIZATIONS:
            raise ValueError(f"algo.reward_normalization={self.reward_normalization!r}; expected one of {NORMALIZATIONS}")


REWARD_SOURCES = ("none", "learned", "gt", "clip")
EVAL_PROTOCOLS = ("episodes", "metaworld")


@dataclass
class LabelerConfig:
    """Who labels segment pairs, and how many."""

    name: str = MISSING
    teacher: Any = MISSING
    """Node instantiated to a labeler with ``label(rewards, pairs, segment_length, rng)``."""
    pairs: int = 1000
    """Segment pairs to label. Default 1000."""
    segment_length: int = 10
    """Transitions per segment (H). Default 10."""
    pad_terminal: bool = True
    """Let segments run past a termination into the zero-reward absorbing state, so terminal
    events (success, safety stop) are in H segment starts instead of one. Default True."""
    sampling: str = "uniform"
    """``uniform``, or ``disagreement``: half the pairs uniform, a reward ensemble fitted on
    them, the other half the candidates (10x as many, uniform) it disagrees on most."""
    compare_with: list[str] = field(default_factory=list)
    """Other runs (folders) or label stores whose labelers answered the same pairs (another
    annotator, a VLM): the report gives the agreement with each. Default none."""

    def __post_init__(self) -> None:
        if self.pairs < 20 or self.segment_length < 1:
            raise ValueError(f"labeler.pairs={self.pairs} (>= 20) and segment_length={self.segment_length} (>= 1)")
        if self.sampling not in ("uniform", "disagreement"):
            raise ValueError(f"labeler.sampling={self.sampling!r}; expected 'uniform' or 'disagreement'")


@dataclass
class TrainerConfig:
    """The policy-training loop."""

    steps: int = 10000
    """Gradient updates. Default 10000."""
    batch_size: int = 256
    """Transitions per update. Default 256."""
    log_every: int = 100
    """Updates between ``train/`` log lines. Default 100."""
    checkpoint_every: int = 1000
    """Updates between checkpoints (one is always written at the end). Default 1000."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept on disk. Default 3."""
    progress: bool = True
    """Show a progress bar with rate and ETA. Default True."""
    eval_every: int = 1000
    """Updates between evaluations during training (``eval.episodes_during_training`` episodes,
    logged as ``eval/`` and drawn in the learning curves); 0: only the final evaluation."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"trainer.{name}={getattr(self, name)}; expected >= 1")
        if self.eval_every < 0:
            raise ValueError(f"trainer.eval_every={self.eval_every}; expected >= 0 (0 = only at the end)")


@dataclass
class EvalConfig:
    """Evaluation in simulation."""

    episodes: int = 20
    """Episodes per evaluation. Default 20."""
    seed: int = 1_000_000
    """Seed of the first evaluation episode (episode i uses seed + i), apart from training data."""
    episodes_during_training: int = 5
    """Episodes of each evaluation during training (``trainer.eval_every``). Default 5."""
    videos: int = 2
    """Final-evaluation episodes recorded as mp4 in ``videos/`` (the first ones). Default 2."""
    video_size: int = 256
    """Video frame side in pixels. Default 256."""
    baselines: list[str] = field(default_factory=lambda: ["expert"])
    """The main job: behaviour policies of the task (``expert``, ``noisy``, ...) evaluated with the
    same episodes and seeds as the learner, as columns of ``report.md`` (``[]``: none)."""
    protocol: str = "episodes"
    """``episodes``: ours, episode i reset with ``seed + i`` and run to its end; ``metaworld``:
    Meta-World's official protocol (``metaworld.evaluation``: a new goal variant per episode, the
    episode ends on success), for Meta-World tasks only."""

    def __post_init__(self) -> None:
        if self.protocol not in EVAL_PROTOCOLS:
            raise ValueError(f"eval.protocol={self.protocol!r}; expected one of {EVAL_PROTOCOLS}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"eval.seed={self.seed}; expected an integer in [0, 2**31) (episode i resets with seed + i)")
        if self.episodes < 1 or self.episodes_during_training < 1:
            raise ValueError(f"eval.episodes={self.episodes} and eval.episodes_during_training="
                             f"{self.episodes_during_training}; expected >= 1")
        if self.videos < 0 or not 16 <= self.video_size <= 1024:
            raise ValueError(f"eval.videos={self.videos} (>= 0) and eval.video_size={self.video_size} (16..1024 px)")


@dataclass
class SuiteConfig:
    """A benchmark suite (``python -m embodied.benchmark suite=NAME``): a sweep over tasks x rows
    (``algo`` configs) x seeds, one job each."""

    name: str = MISSING
    """Suite name, in the sweep folder's name (``mt10``, ``quick``)."""
    tasks: list[str] = MISSING
    """Meta-World v3 task names (``task.env.task`` of each job)."""
    algos: list[str] = field(default_factory=lambda: ["iql", "bc", "iql_gt", "expert"])
    """Rows of the table, as ``algo`` configs: ``iql`` (learned reward from ``labeler``), ``bc``,
    ``iql_gt`` (true reward), ``expert`` (the scripted expert, evaluated only)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Run seeds (the dataset is shared: ``dataset.seed`` stays fixed)."""
    threads_per_job: int = 1
    """torch threads in each job; jobs run in parallel, one per core by default."""
    learner_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per row, ``algo.learner`` fields to set, e.g. ``{iql: {preset: kitchen}}``."""

    def __post_init__(self) -> None:
        if not self.tasks or not self.algos or not self.seeds:
            raise ValueError(f"suite {self.name!r}: tasks, algos and seeds must not be empty")
        if self.threads_per_job < 1:
            raise ValueError(f"suite.threads_per_job={self.threads_per_job}; expected >= 1")


@dataclass
class RootConfig:
    """Every entry point's configuration (train, collect, evaluate)."""

    task: TaskConfig = MISSING
    algo: AlgoConfig = MISSING
    labeler: LabelerConfig = MISSING
    reward_model: Any = MISSING
    logger: Any = MISSING
    seed: int = 0
    """Seeds python, numpy, torch and the environments. Default 0."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    resume: str = "auto"
    """``auto``: continue when the run folder has a checkpoint; ``true``: continue the newest run
    of the same task and algo under ``output_root``; ``false``: refuse a folder with checkpoints."""
    output_root: str = "outputs"
    """Where run folders are made: ``<output_root>/<date>/<time>_<task>_<algo>``."""
    policy: str = "expert"
    """evaluate: the task's behaviour policy to run, unless ``checkpoint`` is given."""
    checkpoint: Optional[str] = None
    """evaluate: a checkpoint (step, checkpoints or run folder) whose policy to run."""
    judges: Any = None
    """Judges by name (``judges=[force,workspace]``, ``conf/judges/``): rules checked on every
    transition; in the label stage a pair where exactly one segment breaks one is decided by the
    judges (mixture of judges), and their costs train a cost-constrained learner."""
    clip: Any = None
    """The CLIP zero-shot reward (``reward_models.clip.CLIPReward`` arguments) of
    ``algo.reward=clip`` and ``labeler=clip``."""
    condition: Optional[list[float]] = None
    """evaluate, deploy: the condition a conditioned learner acts towards on every step (a goal
    observation, a latent z, attribute targets), e.g. ``'condition=[0.1,0.2,...]'``."""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    suite: Optional[SuiteConfig] = None
    """benchmark, continual: the suite being swept (``conf/suite/``); unset for the other entry points."""
    continual: Any = None
    """continual: the loop's settings (``embodied.continual.ContinualConfig``)."""
    online: Any = None
    """online: the loop's settings (``embodied.online.OnlineConfig``)."""
    attributes: Any = None
    """Attribute-conditioned learners (AlignDiff, attribute BC): labels, the attribute strength
    model and the alignment evaluation (``embodied.attributes.AttributeSettings``)."""
    zeroshot: Any = None
    """zeroshot: the prompt and its settings (``embodied.zeroshot.ZeroShotConfig``)."""
    prompt: Optional[str] = None
    """zeroshot: ``goal``, ``reward``, ``demo`` or ``random`` (short for ``zeroshot.prompt``)."""
    strategy: Any = None
    """continual: what is replayed and how (``conf/strategy/``, ``embodied.continual.StrategyConfig``)."""
    robot: Any = None
    """deploy, sim_robot: the robot backend (``conf/robot/``: mujoco or ros2)."""
    deploy: Any = None
    """deploy: the control loop (``real_robot.deploy.DeployConfig``)."""
    safety: Any = None
    """deploy: the safety layer (``real_robot.safety.SafetyConfig``)."""
    sim: Any = None
    """sim_robot: rate, lockstep, episodes of the simulated robot node."""


RESUME_CHOICES = ("auto", "true", "false")


def _unknown_keys(node: Any, path: str) -> list[str]:
    """Keys of ``node`` (and of its typed children) that its dataclass schema does not have."""
    import dataclasses
    import difflib

    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        fields = {f.name for f in dataclasses.fields(schema)}
    elif isinstance(node, DictConfig) and not node._is_none() and not node._is_missing() and "_target_" in node:
        fields = _target_parameters(node)
        if fields is None:
            return []
        fields |= {str(k) for k in node.keys() if str(k).startswith("_")}  # Hydra's own keys
    else:
        return []
    problems = []
    for key in node.keys():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {path + '.' if path else ''}{close[0]}? " if close else ""
            known = sorted(f for f in fields if not f.startswith("_"))
            problems.append(f"{where} is not a setting ({hint}{path or 'the root'} has {', '.join(known)})")
            continue
        child = node._get_node(key)
        if OmegaConf.is_config(child) and not OmegaConf.is_missing(node, key):
            problems.extend(_unknown_keys(child, where))
    return problems


def _target_parameters(node: DictConfig) -> set[str] | None:
    """The keyword arguments that ``node``'s ``_target_`` accepts (a dataclass's fields, a class's
    or function's parameters); None when it takes ``**kwargs`` or cannot be imported here."""
    import dataclasses
    import inspect

    from hydra.utils import get_object

    try:
        target = get_object(str(node["_target_"]))
    except Exception:
        return None
    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target) if f.init}
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def validate_config(cfg: Any, sections: tuple[str, ...] = ("algo", "labeler", "dataset", "trainer", "eval")) -> None:
    """Check a composed config before a job uses it: no key that its schema lacks (a ``+key=``
    typo is refused, not ignored), and every typed section's values valid (its dataclass
    ``__post_init__``, run by ``OmegaConf.to_object``).

    Raises:
        ValueError: the unknown keys with the nearest known one, or the first invalid value.
    """
    problems = _unknown_keys(cfg, "")
    if problems:
        raise ValueError("; ".join(problems))
    seed = OmegaConf.select(cfg, "seed", default=0)
    if not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"seed={seed!r}; expected an integer in [0, 2**31)")
    for name in sections:
        if OmegaConf.select(cfg, name, default=None) is not None:
            OmegaConf.to_object(cfg[name])


def normalize_resume(value: Any) -> str:
    """``resume`` as one of ``auto``, ``true``, ``false`` (booleans accepted).

    Raises:
        ValueError: any other value.
    """
    text = str(value).strip().lower()
    if text not in RESUME_CHOICES:
        raise ValueError(f"resume={value!r}; expected one of {RESUME_CHOICES}")
    return text


def run_label(job: str, task: str, algo: str) -> str:
    """Suffix of a run-folder name: ``<task>_<algo>`` for train, ``<task>_<job>`` otherwise."""
    return f"{task}_{algo}" if job == "train" else f"{task}_{job}"


def find_latest_run(output_root: str | Path, label: str) -> Path | None:
    """The ``<output_root>/<date>/<time>_<label>`` folder to resume: the newest unfinished one
    (checkpoints but no final ``metrics.json``: a killed run), else the newest with a checkpoint;
    None when there is none."""
    root = Path(output_root)
    candidates = [p for p in root.glob(f"*/*_{label}") if RunPaths(p).checkpoints.is_dir()]
    unfinished = [p for p in candidates if not RunPaths(p).metrics.exists()]
    pool = unfinished or candidates
    return max(pool, key=lambda p: (p.parent.name, p.name)) if pool else None


def _refuse(message: str) -> None:
    """Print ``error: message`` and exit with status 2. Used where Hydra resolves the run folder:
    an exception there reaches the user as "An error occurred during Hydra's exception
    formatting" and a long traceback, a clean exit does not."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _run_dir(job: str, output_root: str, task: str, algo: str, resume: Any) -> str:
    label = run_label(job, task, algo)
    try:
        resume = normalize_resume(resume)
    except ValueError as error:
        _refuse(str(error))
    try:
        Path(output_root).mkdir(parents=True, exist_ok=True)
        probe = Path(output_root) / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        _refuse(f"output_root={output_root}: cannot write run folders there ({error.strerror}); set output_root=<a "
                "writable folder>")
    if resume == "true":
        latest = find_latest_run(output_root, label)
        if latest is None:
            _refuse(f"resume=true but no earlier run folder '*_{label}' with checkpoints under "
                    f"{output_root}/; run without resume=true, or pass hydra.run.dir=<run folder>")
        return str(latest)
    now = _dt.datetime.now()
    return str(Path(output_root) / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}_{label}")


def available_tasks() -> list[str]:
    """Names of the task configs shipped in ``conf/task/``, sorted."""
    folder = resources.files("conf") / "task"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore and the ``embodied_run_dir`` resolver."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RootConfig)
    if not OmegaConf.has_resolver("embodied_csv"):
        # A list as a sweep value: [a, b] -> "a,b" (hydra.sweeper.params of the benchmark suites).
        OmegaConf.register_new_resolver("embodied_csv", lambda values: ",".join(str(v) for v in values))
    if not OmegaConf.has_resolver("embodied_run_dir"):
        # Cached: Hydra resolves hydra.run.dir more than once; the time must not move.
        OmegaConf.register_new_resolver("embodied_run_dir", _run_dir, use_cache=True)


register_configs()
