"""The stages of the main job, each resuming from what its run folder already holds.

``dataset`` -> ``label`` -> ``reward`` -> ``policy`` -> ``report`` (../shared/DESIGN.md). The
label and reward stages run when the learner trains on a learned reward
(``algo.reward=learned``). Every stage takes the resolved config and the run folder; finished
stages are skipped on a rerun into the same folder (the dataset is shared across runs under the
datasets root, labels and reward model are cached in the run folder, training resumes from its
last checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from embodied.attributes import alignment_evaluation, attribute_stage, plot_attribute_following
from embodied.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from embodied.config import EvalConfig, LabelerConfig, TrainerConfig, normalize_resume, run_label, validate_config
from embodied.data import Episode, rollout
from embodied.datasets import (
    DatasetConfig,
    DatasetError,
    OfflineDataset,
    collect_dataset,
    datasets_root,
    is_complete,
    load_dataset,
    make_dataset_id,
)
from embodied.diagnosis import diagnose, diagnosis_lines
from embodied.evaluation import evaluate_metaworld, evaluate_policy
from embodied.fit import fit
from embodied.io import save_figure, write_json_atomic, write_text_atomic
from embodied.learners import LearnerPolicy
from embodied.loggers import Logger
from embodied.paths import RunPaths
from embodied.runtime import resolve_device, seed_everything
from embodied.tasks import make_env, make_policies, task_sizes, task_spaces
from policies import make_learner
from policies.data import EpisodeData, make_sampler
from reward_models.bradley_terry import RewardEnsemble, RewardModelConfig, ensemble_segment_returns, fit_reward_model
from reward_models.clip import CLIPReward
from reward_models.functions import BradleyTerryReward, CLIPFrameReward, RewardFunction, TrueReward, normalize_rewards, relabel
from reward_models.judges import Judge, Verdicts, VerdictStore, apply_judges, episode_costs
from reward_models.labeling import LabelStore, compare_labels, label_pairs
from reward_models.preferences import PreferenceLabels, sample_pairs, segment_sums, select_by_disagreement

#: Answered pairs a reward model needs at the least.
MIN_ANSWERED = 10


class LabelingError(RuntimeError):
    """Too few pairs were answered to fit a reward model (names the outcomes and the failures)."""


class RunFolderError(RuntimeError):
    """The run folder's contents conflict with what was asked (e.g. resume=false on checkpoints)."""


def dataset_summary(episodes: list[Episode]) -> dict[str, float]:
    """``dataset/`` metrics: episode and transition counts, success rate overall and per policy."""
    out = {
        "dataset/episodes": float(len(episodes)),
        "dataset/transitions": float(sum(len(ep) for ep in episodes)),
        "dataset/success_rate": float(np.mean([ep.success for ep in episodes])),
    }
    for name in sorted({ep.policy for ep in episodes if ep.policy}):
        mine = [ep.success for ep in episodes if ep.policy == name]
        out[f"dataset/success_rate_{name}"] = float(np.mean(mine))
    return out


def dataset_stage(cfg: DictConfig, keep_frames: bool = False) -> OfflineDataset:
    """Load the run's Minari dataset, collecting it first when it is ours and missing.

    ``dataset.id`` unset: ``embodied/<task>/<recipe>-v0`` under the datasets root, collected
    with the task's behaviour policies (resumable). Set: that id or folder, loaded as it is.

    Raises:
        DatasetError: the dataset is missing (and not ours to collect), malformed, or exists
            with a different recipe.
    """
    config: DatasetConfig = OmegaConf.to_object(cfg.dataset)
    root = Path(config.root) if config.root else datasets_root()
    dataset_id = config.id or make_dataset_id(cfg.task.name, config.recipe)
    if config.id is None:
        render = {"render_mode": "rgb_array", "width": config.width, "height": config.height} if config.frames else {}
        policies = {}
        lock_path = root / f"{dataset_id}.lock"
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatasetError(f"cannot write dataset {dataset_id} under the datasets root {root} ({error.strerror}); "
                               "set dataset.root=<a writable folder> (or MINARI_DATASETS_PATH)") from None
        # Parallel jobs of a sweep share the dataset: one collects it, the others wait, then load.
        with FileLock(str(lock_path)):
            if not is_complete(root / dataset_id):  # a finished dataset needs no env to be built
                policies = make_policies(cfg.task, task_spaces(cfg.task)[1], names=list(config.mixture))
            collect_dataset(
                dataset_id, lambda: make_env(cfg.task, **render), policies, config,
                info_keys=list(dict.fromkeys([*cfg.task.info_keys, *cfg.task.metrics])),
                provenance={"task": cfg.task.name, "task_config": OmegaConf.to_container(cfg.task, resolve=True)},
                root=root, progress=bool(cfg.trainer.progress),
            )
    return load_dataset(dataset_id, root, keep_frames=keep_frames, progress=bool(cfg.trainer.progress))


def needs_frames(cfg: DictConfig, labeling: bool | None = None) -> bool:
    """Whether the run reads rendered frames: ``algo.reward=clip``, an image labeler (clip, vlm),
    an image reward model (``reward_model.inputs=image``), an image judge (vlm_safety) in a run
    that reads the judges, or an image attribute labeler for an attribute-conditioned learner. ``labeling``: whether the run labels
    (default: when ``algo.reward=learned``)."""
    if OmegaConf.select(cfg, "algo.reward") == "clip":
        return True
    labeling = cfg.algo.reward == "learned" if labeling is None else labeling
    target = OmegaConf.select(cfg, "labeler.teacher._target_", default=None)
    image_labeler = bool(target) and bool(getattr(get_class(str(target)), "needs_frames", False))
    image_model = OmegaConf.select(cfg, "reward_model.inputs") == "image"
    judges = OmegaConf.select(cfg, "judges", default=None) or {}
    image_judge = any(getattr(get_class(str(node["_target_"])), "needs_frames", False)
                      for node in judges.values() if "_target_" in node)
    reads_judges = labeling or OmegaConf.select(cfg, "algo.name", default=None) in COST_LEARNERS
    attribute_target = OmegaConf.select(cfg, "attributes.labeler._target_", default=None)
    attribute_labeler = (bool(OmegaConf.select(cfg, "algo.learner.attributes", default=0)) and bool(attribute_target)
                         and bool(getattr(get_class(str(attribute_target)), "needs_frames", False)))
    return bool((labeling and (image_labeler or image_model)) or (reads_judges and image_judge) or attribute_labeler)


def _require_frames(cfg: DictConfig, episodes: list[Episode], what: str) -> None:
    if any(ep.frames is None for ep in episodes):
        raise ValueError(
            f"{what} needs rendered frames, but dataset {cfg.dataset.id or cfg.dataset.recipe!r} has none; collect one "
            "with frames: dataset.frames=true dataset.recipe=mixed-frames (a recipe name of its own)"
        )


def label_stage(cfg: DictConfig, episodes: list[Episode], run_dir: Path) -> PreferenceLabels:
    """Label segment pairs with ``labeler`` into the run's label store (``labels/labels.sqlite``).

    Pairs are drawn with the run's seed (``labeler.sampling``), so a rerun draws the same pairs;
    each answer is saved as it arrives, and a rerun after a kill asks the labeler only for the
    pairs the store does not hold (:func:`reward_models.labeling.label_pairs`). Scripted teachers
    read the dataset's ground-truth reward, as a simulated person; the CLIP and VLM labelers look
    at the frames (the VLM labeler's request cache lives in ``labels/`` unless configured).

    Raises:
        LabelingError: fewer than :data:`MIN_ANSWERED` pairs answered (e.g. the VLM server is
            down): says how many, the outcomes and why pairs failed.
    """
    paths = RunPaths(run_dir)
    labeler: LabelerConfig = OmegaConf.to_object(cfg.labeler)
    teacher = instantiate(cfg.labeler.teacher)
    if teacher.needs_frames:
        _require_frames(cfg, episodes, f"labeler={labeler.name}")
    rng = np.random.default_rng(int(cfg.seed))
    lengths, H = [len(ep) for ep in episodes], labeler.segment_length
    terminated = [bool(labeler.pad_terminal and len(ep.terminations) and ep.terminations[-1]) for ep in episodes]
    store = LabelStore(paths.label_store)
    try:
        def ask(pairs: np.ndarray) -> PreferenceLabels:
            labels = label_pairs(teacher, episodes, pairs, H, seed=int(cfg.seed), store=store, workdir=paths.labels)
            answered = int(labels.answered.sum())
            if answered < MIN_ANSWERED:
                failures = "; ".join(labels.provenance.get("failures", [])) or "none failed"
                raise LabelingError(
                    f"labeler={labeler.name} answered {answered} of {len(pairs)} pairs (outcomes "
                    f"{labels.provenance['counts']}); a reward model needs at least {MIN_ANSWERED}. Failures: "
                    f"{failures}. The answers given so far are kept in {paths.label_store}; once the labeler "
                    f"answers, rerun with hydra.run.dir={paths.root} and only the missing pairs are asked"
                )
            return labels

        if labeler.sampling == "uniform":
            labels = ask(sample_pairs(lengths, H, labeler.pairs, rng, terminated))
        else:
            first = ask(sample_pairs(lengths, H, labeler.pairs // 2, rng, terminated))
            model, _ = fit_reward_model(episodes, first, instantiate(cfg.reward_model), seed=int(cfg.seed))
            rest = labeler.pairs - labeler.pairs // 2
            candidates = sample_pairs(lengths, H, 10 * rest, rng, terminated)
            second = ask(candidates[select_by_disagreement(ensemble_segment_returns(model, episodes, candidates, H), rest)])
            labels = PreferenceLabels(np.concatenate([first.pairs, second.pairs]),
                                      np.concatenate([first.labels, second.labels]), H,
                                      {**first.provenance, "sampling": "disagreement", "second": second.provenance})
    finally:
        store.close()
    return apply_judges(labels, judge_stage(cfg, episodes, run_dir))


def make_judges(cfg: DictConfig) -> dict[str, Judge]:
    """The run's judges (``judges=[...]``), by name.

    Raises:
        ValueError: a judge node that does not build a :class:`reward_models.judges.Judge`.
    """
    judges = {}
    for name, node in (OmegaConf.select(cfg, "judges", default=None) or {}).items():
        judge = instantiate(node)
        if not isinstance(judge, Judge):
            raise ValueError(f"judges.{name} builds {type(judge).__name__}; expected a reward_models.judges.Judge")
        judges[str(name)] = judge
    return judges


def judge_stage(cfg: DictConfig, episodes: list[Episode], run_dir: Path) -> dict[str, list[Verdicts]]:
    """Every judge's verdicts on every episode, kept with their settings in the run's label
    store (``labels/labels.sqlite``, table ``verdicts``); a rerun reads them back."""
    judges = make_judges(cfg)
    if not judges:
        return {}
    for judge in judges.values():
        if hasattr(judge, "cache_dir") and judge.cache_dir is None:  # a VLM judge's answer cache: labels/
            judge.cache_dir = RunPaths(run_dir).labels
    store = VerdictStore(RunPaths(run_dir).label_store)
    try:
        judged = {name: store.verdicts(judge, episodes) for name, judge in judges.items()}
    finally:
        store.close()
    for name, verdicts in judged.items():
        if not any(v.violation.any() for v in verdicts):
            warnings.warn(f"judge {name} ({judges[name].settings()}) finds no violation in any of the {len(episodes)} "
                          "episodes: it decides no label and gives no cost, so the run is the same as without it. "
                          "A limit the dataset never reaches teaches nothing; lower it or collect data that reaches it",
                          stacklevel=2)
    return judged


def label_quality(labels: PreferenceLabels, episodes: list[Episode]) -> dict[str, float]:
    """Label-quality numbers: abstain and tie rates, agreement with the ground-truth oracle on the
    pairs both decided (in simulation, where the dataset holds the true reward), and swap
    consistency when the labeler checked it."""
    out = dict(labels.rates())
    truth = _true_reward_labels(labels, episodes)
    if truth is not None:
        decided = labels.answered & (labels.labels != 0.5)
        out["agreement_with_true_reward"] = float((labels.labels[decided] == truth[decided]).mean()) if decided.any() else float("nan")
        returns = segment_sums([ep.rewards for ep in episodes], labels.pairs, labels.segment_length)
        equal = float(np.mean(np.abs(returns[:, 1] - returns[:, 0]) < 1e-9)) if len(returns) else 0.0
        out["pairs_with_equal_true_return"] = equal
        if equal > 0.5:  # a sparse reward: scripted teachers then answer "first" (B-Pref's rule), which is noise
            warnings.warn(f"{equal:.0%} of the {len(returns)} labelled pairs have equal true returns (a sparse reward, "
                          f"e.g. no segment reaches the goal): a scripted teacher answers 'first' for them, so the labels "
                          f"carry little; use longer segments (labeler.segment_length), labeler=equal (ties), or a denser reward",
                          stacklevel=2)
    for key in ("judge_overrides", "judge_agreed", "judge_decided_abstains", "judge_both_violate"):
        if key in labels.provenance:
            out[key] = float(labels.provenance[key])
    counts = labels.provenance.get("counts", {})
    if labels.provenance.get("swap_check"):
        checked = counts.get("answered", 0) + counts.get("unsure", 0) + counts.get("swap_inconsistent", 0)
        out["swap_consistency"] = float(1 - counts.get("swap_inconsistent", 0) / checked) if checked else float("nan")
    for key in ("unparseable", "failed"):
        if key in counts:
            out[f"{key}_rate"] = float(counts[key] / max(len(labels.labels), 1))
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def reward_stage(cfg: DictConfig, episodes: list[Episode], labels: PreferenceLabels, run_dir: Path,
                 device: torch.device) -> tuple[RewardEnsemble, dict[str, float]]:
    """Fit the Bradley-Terry reward model (cached as a checkpoint in ``run_dir/reward_model``).

    Returns the model and its report: held-out preference accuracy, label rates, and in
    simulation the Pearson and Spearman correlation of learned with true reward.
    """
    folder = RunPaths(run_dir).reward_model
    found = latest_checkpoint(folder)
    if found is not None:
        checkpoint = load_checkpoint(found)
        state = checkpoint.state
        model = RewardEnsemble(RewardModelConfig(**state["config"]), state["observation_dim"], state["action_dim"])
        model.load_state_dict(checkpoint.weights)
        return model.to(device).eval(), {**state["report"], **_compare_with(cfg, labels, episodes)}
    config: RewardModelConfig = instantiate(cfg.reward_model)
    model, report = fit_reward_model(episodes, labels, config, seed=int(cfg.seed), device=device,
                                     progress=bool(cfg.trainer.progress))
    learned = relabel(BradleyTerryReward(model), episodes, device).cpu().numpy()
    true = np.concatenate([ep.rewards for ep in episodes])
    report = {**report, **label_quality(labels, episodes), "pearson_true_reward": float(np.corrcoef(learned, true)[0, 1]),
              "spearman_true_reward": _spearman(learned, true)}
    save_checkpoint(folder, 0, model.state_dict(), {
        "config": dataclasses.asdict(config), "observation_dim": int(episodes[0].observations.shape[1]),
        "action_dim": int(episodes[0].actions.shape[1]), "report": report, "labels": labels.provenance,
    })
    return model.eval(), {**report, **_compare_with(cfg, labels, episodes)}


def _compare_with(cfg: DictConfig, labels: PreferenceLabels, episodes: list[Episode]) -> dict[str, float]:
    """Agreement with the labelers of the runs in ``labeler.compare_with`` (another annotator,
    a VLM) on this run's pairs, and theirs with the true reward in simulation
    (:func:`reward_models.labeling.compare_labels`); read afresh on every run, never cached."""
    sources = list(OmegaConf.select(cfg, "labeler.compare_with", default=None) or [])
    return compare_labels(labels, sources, _true_reward_labels(labels, episodes)) if sources else {}


def _true_reward_labels(labels: PreferenceLabels, episodes: list[Episode]) -> np.ndarray | None:
    """``(N,)`` the B-Pref oracle's labels of ``labels.pairs`` from the true reward, or None when the
    dataset holds no true reward (a real robot's data)."""
    from reward_models.teachers import TEACHERS

    if not all(ep.rewards is not None and len(ep.rewards) == len(ep.actions) for ep in episodes):
        return None
    return TEACHERS["oracle"].label([ep.rewards for ep in episodes], labels.pairs, labels.segment_length,
                                    np.random.default_rng(0)).labels


def evaluate_stage(cfg: DictConfig, policy: Any, episodes: int | None = None, progress: bool | None = None,
                   desc: str = "evaluate", record: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Evaluate a policy on the task with ``eval.*`` settings (``episodes`` overrides
    ``eval.episodes``); returns ``summarize`` metrics, or with ``eval.protocol=metaworld`` those
    of :func:`embodied.evaluation.evaluate_metaworld`. ``progress`` (default
    ``trainer.progress``) shows a progress bar; evaluations during training show none of their
    own (one bar per stage: the training bar says it is evaluating); ``desc`` names the bar;
    ``record`` receives per-episode values (:func:`embodied.evaluation.evaluate_policy`)."""
    evaluation: EvalConfig = OmegaConf.to_object(cfg.eval)
    progress = bool(cfg.trainer.progress) if progress is None else progress
    if evaluation.protocol == "metaworld":
        return evaluate_metaworld(cfg.task, policy, episodes or evaluation.episodes, evaluation.seed,
                                  progress=progress, desc=desc)
    env = make_env(cfg.task)
    try:
        return evaluate_policy(
            env, policy, episodes or evaluation.episodes, evaluation.seed,
            info_keys=list(cfg.task.info_keys), metric_keys=list(cfg.task.metrics),
            progress=progress, desc=desc, record=record,
        )
    finally:
        env.close()


def record_videos(cfg: DictConfig, policy: Any, folder: Path) -> list[Path]:
    """Roll out the first ``eval.videos`` evaluation episodes again with rendering and write each
    as ``folder/eval_<seed>_<success|failure>.mp4`` (H.264, the env's render fps), atomically.

    The policy is deterministic, so these are the same episodes the evaluation scored.
    """
    import imageio.v2 as imageio

    evaluation: EvalConfig = OmegaConf.to_object(cfg.eval)
    if evaluation.videos == 0:
        return []
    env = make_env(cfg.task, render_mode="rgb_array", width=evaluation.video_size, height=evaluation.video_size)
    fps = float(env.metadata.get("render_fps") or 10)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for i in range(evaluation.videos):
            seed = evaluation.seed + i
            episode = rollout(env, policy, seed, list(cfg.task.info_keys), render=True)
            path = folder / f"eval_{seed}_{'success' if episode.success else 'failure'}.mp4"
            tmp = folder / f".{path.stem}.tmp.mp4"
            imageio.mimwrite(tmp, list(episode.frames), fps=fps, codec="libx264", macro_block_size=1,
                             ffmpeg_log_level="error")
            tmp.replace(path)
            written.append(path)
    finally:
        env.close()
    return written


def learning_curve_series(metrics_jsonl: Path) -> dict[str, dict[int | None, list[tuple[int, float]]]]:
    """The curves of ``metrics.jsonl``: key -> evaluation size (episodes; None for ``train/``
    keys) -> ``[(step, value), ...]``, for every ``train/`` loss and ``eval/success_rate``,
    ``eval/return_mean``."""
    series: dict[str, dict[int | None, list[tuple[int, float]]]] = {}
    for line in metrics_jsonl.read_text().splitlines() if metrics_jsonl.exists() else []:
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith("train/") or key in ("eval/success_rate", "eval/return_mean"):
                size = int(row["eval/episodes"]) if key.startswith("eval/") and "eval/episodes" in row else None
                series.setdefault(key, {}).setdefault(size, []).append((int(row["step"]), float(value)))
    return series


def plot_learning_curves(metrics_jsonl: Path, path: Path, title: str) -> Path | None:
    """``plots/learning_curves.png``: every ``train/`` loss and the ``eval/`` success rate and
    return against the update step, from ``metrics.jsonl``. Evaluations of different sizes
    (``eval.episodes_during_training`` during training, ``eval.episodes`` at the end) are drawn as
    separate series, labelled with their episode count, never joined into one line. None when
    nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = learning_curve_series(metrics_jsonl)
    if not series:
        return None
    keys = sorted(series, key=lambda k: (not k.startswith("eval/"), k))
    figure, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), dpi=100, squeeze=False)
    for axis, key in zip(axes[0], keys):
        for size, points in sorted(series[key].items(), key=lambda item: item[0] or 0):
            steps, values = zip(*points)
            label = None if size is None else f"{size} episodes"
            axis.plot(steps, values, marker="o" if key.startswith("eval/") else None, markersize=3, label=label)
        if any(size is not None for size in series[key]):
            axis.legend(fontsize=7)
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("update step", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_histogram(values: np.ndarray, limit: float | None, path: Path, title: str, metric: str, unit: str) -> Path:
    """A histogram of per-episode ``values`` with the ``limit`` as a vertical line and the share
    of episodes over it in the legend (dressing: the largest force on the person, N)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    values = np.asarray(values, dtype=float)
    # the axis ends past the limit and the 95th percentile; rarer outliers are counted in its last bin
    top = max(float(np.quantile(values, 0.95)) if values.size else 1.0, limit or 0.0) * 1.25 or 1.0
    low = min(0.0, float(values.min())) if values.size else 0.0
    outliers = int((values > top).sum())
    axis.hist(np.minimum(values, top), bins=np.linspace(low, top, 30), color="tab:blue",
              label=f"{outliers} above {top:.3g}, in the last bin" if outliers else None)
    if limit is not None:
        over = float(np.mean(values > limit)) if values.size else float("nan")
        axis.axvline(limit, color="tab:red", linestyle="--", label=f"limit {limit:g} {unit}: {over:.0%} of episodes over")
    if limit is not None or outliers:
        axis.legend(fontsize=8)
    axis.set_xlabel(f"{metric} ({unit})" if unit else metric)
    axis.set_ylabel("episodes")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def check_dataset_fits(cfg: DictConfig, dataset: OfflineDataset, batch_size: int) -> None:
    """Refuse a dataset that does not fit the task or the batch, before any stage spends time on it.

    Raises:
        ValueError: observation or action sizes differ from the task env's (names both), or
            ``batch_size`` exceeds the dataset's transitions.
    """
    episodes = dataset.episodes
    observation_dim, action_dim = int(episodes[0].observations.shape[1]), int(episodes[0].actions.shape[1])
    transitions = sum(len(ep) for ep in episodes)
    sizes = task_sizes(cfg.task)
    if sizes != (observation_dim, action_dim):
        raise ValueError(
            f"dataset {dataset.source} has observations of size {observation_dim} and actions of size "
            f"{action_dim}; task {cfg.task.name!r} has {sizes[0]} and {sizes[1]}: choose the task's dataset "
            "(dataset.id=...) or the dataset's task (+task=...)"
        )
    if batch_size > transitions:
        raise ValueError(
            f"trainer.batch_size={batch_size} is larger than the dataset's {transitions} transitions; expected at "
            f"most {transitions} (collect more with dataset.episodes=..., or lower trainer.batch_size)"
        )


def reward_function(cfg: DictConfig, episodes: list[Episode], run_dir: Path,
                    device: torch.device) -> tuple[RewardFunction | None, dict[str, float]]:
    """The reward the learner trains on (``algo.reward``), and its report: ``none`` (imitation),
    ``gt`` (:class:`TrueReward`, the dataset's ground truth: oracle baselines), ``clip``
    (:class:`CLIPFrameReward` of the root ``clip`` node, zero-shot) or ``learned`` (the label and
    reward stages, then :class:`BradleyTerryReward`).

    Raises:
        ValueError: ``clip`` on a dataset without frames.
    """
    if cfg.algo.reward == "gt":
        return TrueReward(), {}
    if cfg.algo.reward == "clip":
        _require_frames(cfg, episodes, "algo.reward=clip")
        try:
            clip = CLIPReward(**OmegaConf.to_container(cfg.clip, resolve=True))
        except (TypeError, ValueError) as error:
            raise ValueError(f"clip: {error}") from None
        return CLIPFrameReward(clip), {f"clip_{k}": v for k, v in clip.provenance().items() if isinstance(v, (int, float, str))}
    if cfg.algo.reward == "learned":
        labels = label_stage(cfg, episodes, run_dir)
        model, report = reward_stage(cfg, episodes, labels, run_dir, device)
        return BradleyTerryReward(model), report
    return None, {}


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """The main job: dataset -> [labels -> reward model] -> rewards -> :func:`embodied.fit.fit`
    (checkpointed, resumable, evaluated as it goes) -> videos, plots, report.

    Returns:
        The report's metrics (also written to ``run_dir/metrics.json``).

    Raises:
        RunFolderError: ``resume=false`` but the run folder already has checkpoints; another job
            is writing the folder (each run folder is locked while a job trains into it).
        ValueError: ``algo`` has no learner, or a learner that needs rewards got ``algo.reward=none``.
    """
    paths = RunPaths(run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(paths.lock), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(f"another job is writing {paths.root} (it holds {paths.lock}); wait for it to finish, "
                             "or run this one into another folder") from None
    try:
        return _train(cfg, paths)
    finally:
        lock.release()


#: Settings that do not change what a run computes (how it shows, where it runs, how a labeler's
#: requests travel); everything else in these sections is the run's identity.
IDENTITY_SECTIONS = ("task", "dataset", "algo", "labeler", "judges", "reward_model", "clip", "seed", "trainer.batch_size")
IDENTITY_IGNORED = ("labeler.teacher.progress", "labeler.teacher.concurrency", "labeler.teacher.requests_per_minute",
                    "labeler.teacher.timeout_s", "labeler.teacher.max_retries", "labeler.teacher.backoff_s",
                    "labeler.teacher.backoff_max_s", "labeler.teacher.cache_path", "labeler.teacher.api_key_env",
                    "labeler.teacher.reward.batch_size", "labeler.teacher.reward.device", "labeler.teacher.reward.progress",
                    "labeler.teacher.host", "labeler.teacher.port", "labeler.teacher.token", "labeler.teacher.open_browser",
                    "labeler.compare_with", *(f"judges.vlm_safety.{key}" for key in (
                        "concurrency", "requests_per_minute", "timeout_s", "max_retries", "backoff_s", "backoff_max_s",
                        "cache_path", "api_key_env")),
                    "clip.batch_size", "clip.device", "clip.progress",
                    "dataset.root", "algo.learner.compile")


#: Learners that train on the judges' costs (their runs read ``judges`` whatever the reward).
COST_LEARNERS = ("iql_safe",)


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """The settings that decide what a run computes, flattened to dotted keys (``labeler.name``,
    ``algo.learner.expectile``, ...): :data:`IDENTITY_SECTIONS` minus :data:`IDENTITY_IGNORED`,
    and minus the sections the run does not read: ``labeler`` and ``reward_model`` unless
    ``algo.reward=learned``, ``judges`` unless the reward is learned or the learner trains on
    costs (:data:`COST_LEARNERS`), ``clip`` unless the reward or the labeler is CLIP."""
    reward = str(OmegaConf.select(cfg, "algo.reward", default="none"))
    unused = set()
    if reward != "learned":
        unused |= {"labeler", "reward_model"}
        if OmegaConf.select(cfg, "algo.name", default=None) not in COST_LEARNERS:
            unused.add("judges")
    if not (reward == "clip" or (reward == "learned" and OmegaConf.select(cfg, "labeler.name", default=None) == "clip")):
        unused.add("clip")
    def flatten(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                out.update(flatten(item, f"{prefix}.{key}"))
            return out
        return {} if prefix in IDENTITY_IGNORED else {prefix: value}

    identity: dict[str, Any] = {}
    for section in IDENTITY_SECTIONS:
        if section in unused:
            continue
        node = OmegaConf.select(cfg, section, default=None)
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        identity.update(flatten(value, section))
    return identity


def check_run_identity(cfg: DictConfig, paths: RunPaths) -> None:
    """Record the run's identity in a new run folder (``run_identity.json``); refuse a rerun into
    it with settings that change what it computes (a changed ``trainer.steps`` continues it).

    Raises:
        RunFolderError: the settings differ; names each key with its old and new value.
    """
    identity = _identity_as_stored(cfg)
    if not paths.identity.exists():
        write_json_atomic(paths.identity, identity)
        return
    try:
        before = json.loads(paths.identity.read_text())
        if not isinstance(before, dict):
            raise ValueError(f"a JSON {type(before).__name__}, not an object")
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{paths.identity} cannot be read ({error}); it records the settings the run was made "
                             "with: restore it, or delete it to continue the run with this command's settings") from None
    changed = [f"{key}: {before.get(key, '(unset)')!r} -> {identity.get(key, '(unset)')!r}"
               for key in sorted(set(before) | set(identity)) if before.get(key) != identity.get(key)]
    if changed:
        raise RunFolderError(
            f"{paths.root} was run with other settings; {'; '.join(changed[:8])}"
            f"{f' (and {len(changed) - 8} more)' if len(changed) > 8 else ''}. Rerun with its settings to continue "
            "it, or start a new run (without hydra.run.dir / resume=true)"
        )


def _identity_as_stored(cfg: DictConfig) -> dict[str, Any]:
    """:func:`run_identity` as ``run_identity.json`` holds it (values through JSON)."""
    return json.loads(json.dumps(run_identity(cfg), default=str))


def find_unfinished_run(cfg: DictConfig, exclude: Path | None = None, job: str = "train",
                        identity: dict[str, Any] | None = None) -> Path | None:
    """The run folder that ``resume=auto`` continues: the newest run of the same job, task and
    algo under ``output_root`` that is unfinished (no ``metrics.json``: killed, or stopped by an
    error), not locked by a running job, and has this config's identity (``identity`` as stored
    in ``run_identity.json``, default :func:`run_identity`); None when there is none."""
    identity = _identity_as_stored(cfg) if identity is None else identity
    label = run_label(job, str(cfg.task.name), str(cfg.algo.name))
    found = []
    for folder in Path(str(cfg.output_root)).glob(f"*/*_{label}"):
        paths = RunPaths(folder)
        if (exclude is not None and folder.resolve() == exclude.resolve()) or paths.metrics.exists():
            continue
        try:
            if json.loads(paths.identity.read_text()) != identity:
                continue
        except (OSError, ValueError):
            continue
        lock = FileLock(str(paths.lock), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue  # a job is writing it now
        lock.release()
        found.append(folder)
    return max(found, key=lambda p: (p.parent.name, p.name)) if found else None


def continue_unfinished(cfg: DictConfig, folder: Path, job: str = "train",
                        identity: Callable[[DictConfig], dict[str, Any]] | None = None) -> Path | None:
    """``resume=auto``: the unfinished run of ``job`` with this config's identity (``identity(cfg)``,
    default the main job's) to continue instead of the new ``folder`` (see
    :func:`embodied.pipeline.find_unfinished_run`); None with another ``resume`` or none found."""
    if normalize_resume(cfg.resume) != "auto":
        return None
    try:
        return find_unfinished_run(cfg, exclude=folder, job=job, identity=None if identity is None else identity(cfg))
    except Exception:  # an invalid config: the job itself names what is wrong
        return None


def baseline_runs(cfg: DictConfig, dataset_id: str, exclude: Path | None = None, algos: tuple[str, ...] = ("bc",),
                  limit: int = 3) -> dict[str, dict[str, float]]:
    """Evaluations of finished runs under ``output_root`` that a report can set beside this one:
    ``algos`` runs of the same task on the same dataset, evaluated with the same episodes and
    seeds; the ``limit`` newest per algo, keyed ``"<algo> (seed S, <run folder>)"``."""
    found: dict[str, dict[str, float]] = {}
    for algo in algos:
        if algo == cfg.algo.name:
            continue
        runs = []
        for folder in Path(str(cfg.output_root)).glob(f"*/*_{run_label('train', str(cfg.task.name), algo)}"):
            if exclude is not None and folder.resolve() == exclude.resolve():
                continue
            try:
                done = json.loads(RunPaths(folder).metrics.read_text())
            except (OSError, ValueError):
                continue
            same = (done.get("dataset_id") == dataset_id and done.get("eval_seed") == int(cfg.eval.seed)
                    and done.get("eval", {}).get("episodes") == float(cfg.eval.episodes))
            if same:
                runs.append((folder.parent.name, folder.name, done))
        for date, name, done in sorted(runs, key=lambda r: r[:2], reverse=True)[:limit]:
            found[f"{algo} (seed {done.get('seed')}, {date}/{name})"] = done["eval"]
    return found


def _train(cfg: DictConfig, paths: RunPaths) -> dict[str, Any]:
    validate_config(cfg)
    unknown = [name for name in cfg.eval.baselines if name not in cfg.task.policies]
    if unknown:
        raise ValueError(f"eval.baselines={list(cfg.eval.baselines)}: task {cfg.task.name!r} has no behaviour policy "
                         f"{unknown}; it has {list(cfg.task.policies)} (eval.baselines=[] for none)")
    check_run_identity(cfg, paths)
    if cfg.algo.learner is None:
        raise ValueError(f"algo={cfg.algo.name} has no learner to train; it is evaluated as it is by "
                         "python -m embodied.benchmark (or python -m embodied.evaluate policy=expert)")
    resume = normalize_resume(cfg.resume)
    trainer: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    generator = seed_everything(int(cfg.seed))
    device = resolve_device(cfg.device)
    latest = latest_checkpoint(paths.checkpoints)
    if latest is not None and resume == "false":
        raise RunFolderError(
            f"{paths.root} already holds checkpoint {latest.name} and resume=false; choose a new "
            "folder, or drop resume=false to continue it"
        )
    done = None
    if latest is not None and paths.metrics.exists():
        try:
            done = json.loads(paths.metrics.read_text())
        except (OSError, ValueError) as error:
            print(f"warning: {paths.metrics} cannot be read ({error}); writing it again from the checkpoint",
                  file=sys.stderr)
    if latest is not None and int(latest.name) > trainer.steps:
        raise RunFolderError(
            f"{paths.root} is already trained to step {int(latest.name)}, beyond trainer.steps={trainer.steps}; "
            f"evaluate an earlier checkpoint (python -m embodied.evaluate checkpoint={paths.checkpoints}/<step>), "
            f"rerun with trainer.steps>={int(latest.name)}, or start a new run"
        )
    if isinstance(done, dict):
        if done.get("step") == trainer.steps and Path(done.get("checkpoint", "")) == latest:
            print(f"{paths.root} is finished (step {trainer.steps}); nothing to do")
            return done

    started = time.time()
    timings: dict[str, float] = {}
    dataset = dataset_stage(cfg, keep_frames=needs_frames(cfg))
    episodes = dataset.episodes
    check_dataset_fits(cfg, dataset, trainer.batch_size)
    timings["dataset"] = time.time() - started
    reward, reward_report = reward_function(cfg, episodes, paths.root, device)
    learner = make_learner(instantiate(cfg.algo.learner), episodes[0].observations.shape[1],
                           episodes[0].actions.shape[1], device=str(device))
    condition = None if cfg.condition is None else np.asarray(list(cfg.condition), np.float32)
    attribute_report = None
    if getattr(learner, "attribute_model", None) is not None:  # AlignDiff, attribute BC: labels and the attribute model
        attribute_report = attribute_stage(cfg, episodes, paths.root, learner, device)
        if condition is None:  # evaluated asking for no attribute unless condition=[targets..., mask...]
            condition = np.zeros(learner.condition_dim, np.float32)
    if learner.condition_dim and (condition is None or condition.shape != (learner.condition_dim,)):
        raise ValueError(
            f"algo={cfg.algo.name} acts towards a condition of size {learner.condition_dim} (a goal, a latent z); "
            f"the main job evaluates it towards 'condition=[...]' ({'none given' if condition is None else f'{condition.size} values given'}). "
            "Give one, or train it with algo.learner settings that need none"
        )
    if learner.needs_reward and reward is None:
        raise ValueError(
            f"algo={cfg.algo.name} learns from rewards but algo.reward=none; train with "
            "algo.reward=learned (labels from labeler=..., a Bradley-Terry reward model) or "
            "algo.reward=gt (the ground-truth reward: an oracle baseline)"
        )
    data = EpisodeData(episodes, device)
    rewards, reward_stats = None, {}
    if reward is not None:
        rewards, reward_stats = normalize_rewards(relabel(reward, episodes, device), cfg.algo.reward_normalization,
                                                  data.episode)
    spec, costs = learner.batch_spec(), None
    if spec.cost:
        judged = judge_stage(cfg, episodes, paths.root)
        if not judged:
            raise ValueError(f"algo={cfg.algo.name} trains a cost critic on the judges' per-step costs, but no judge is "
                             "configured; add judges=[force] (conf/judges/)")
        per_episode = episode_costs(judged, episodes)
        costs = torch.as_tensor(np.concatenate(per_episode), device=device)
        reward_report = {**reward_report, "judges": sorted(judged),
                         "cost_per_episode_mean": float(np.mean([c.sum() for c in per_episode])),
                         "episodes_with_cost": float(np.mean([c.sum() > 0 for c in per_episode]))}
    sampler = make_sampler(spec, data, rewards, costs)
    timings["labels, reward model and relabeling"] = time.time() - started - sum(timings.values())

    final_episodes: dict[str, np.ndarray] = {}

    def evaluate(final: bool) -> dict[str, float]:
        return evaluate_stage(cfg, LearnerPolicy(learner, device, condition), None if final else cfg.eval.episodes_during_training,
                              progress=bool(cfg.trainer.progress) and final, record=final_episodes if final else None)

    def on_start(logger: Logger) -> None:
        logger.log(dataset_summary(episodes), step=0)
        numbers = {f"reward/{k}": v for k, v in reward_report.items() if isinstance(v, (int, float))}
        if numbers:
            logger.log(numbers, step=0)

    result = fit(
        learner, sampler, steps=trainer.steps, batch_size=trainer.batch_size, checkpoints=paths.checkpoints,
        generator=generator, make_logger=lambda step: instantiate(cfg.logger)(run_dir=paths.root, resume_step=step),
        prepare=lambda: learner.prepare(data.transition_observations(), total_steps=trainer.steps),
        on_start=on_start, evaluate=evaluate, eval_every=trainer.eval_every, log_every=trainer.log_every,
        checkpoint_every=trainer.checkpoint_every, keep_checkpoints=trainer.keep_checkpoints,
        progress=trainer.progress, extra={"task": cfg.task.name},
    )
    metrics = result.final_metrics
    timings["training and evaluation"] = time.time() - started - sum(timings.values())
    baselines = {f"{name} (behaviour policy)": evaluate_stage(cfg, policy, desc=f"evaluate {name}")
                 for name, policy in make_policies(cfg.task, task_spaces(cfg.task)[1], list(cfg.eval.baselines)).items()}
    baselines.update(baseline_runs(cfg, dataset.source, exclude=paths.root))
    if cfg.eval.baselines:
        timings["baseline evaluations"] = time.time() - started - sum(timings.values())
    videos = record_videos(cfg, LearnerPolicy(learner, device, condition), paths.videos)
    curves = plot_learning_curves(paths.metrics_jsonl, paths.plots / "learning_curves.png",
                                  f"{cfg.task.name} / {cfg.algo.name} (reward {cfg.algo.reward}, seed {cfg.seed})")
    histograms = [plot_histogram(final_episodes[metric], limit, paths.plots / f"{metric}_histogram.png",
                                 f"{cfg.task.name} / {cfg.algo.name}, seed {cfg.seed}: {metric} of "
                                 f"{len(final_episodes[metric])} evaluation episodes", metric, unit_of(metric, cfg.task))
                  for metric, limit in dict(cfg.task.get("histograms") or {}).items() if metric in final_episodes]
    attributes = None
    if attribute_report is not None:
        alignment = alignment_evaluation(cfg, learner, device, paths.root)
        histograms.append(plot_attribute_following(cfg, learner, device, paths.plots / "attribute_following.png"))
        attributes = {**attribute_report, "alignment": alignment}
    timings["videos and plots"] = time.time() - started - sum(timings.values())
    diagnosis = diagnose(learner, data, rewards, episodes) if rewards is not None and hasattr(
        learner, "transition_diagnostics") else None
    report = {
        "task": cfg.task.name,
        "algo": cfg.algo.name,
        "seed": int(cfg.seed),
        "step": trainer.steps,
        "checkpoint": str(result.checkpoint),
        "wall_time_s": round(time.time() - started, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "eval": metrics,
        "eval_seed": int(cfg.eval.seed),
        "baselines": baselines,
        "units": {k: unit_of(k, cfg.task) for k in metrics},
        "dataset": dataset_summary(episodes),
        "reward": {"source": cfg.algo.reward, **({"labeler": cfg.labeler.name} if cfg.algo.reward == "learned" else {}),
                   **({"normalization": cfg.algo.reward_normalization} if reward is not None else {}),
                   **reward_report, **{f"relabeled_{k}": v for k, v in reward_stats.items()}},
        "dataset_id": dataset.source,
        "dataset_path": str(dataset.path),
        "videos": [str(v) for v in videos],
        "plots": ([str(curves)] if curves else []) + [str(h) for h in histograms],
    }
    if attributes is not None:
        report["attributes"] = attributes
    if diagnosis is not None:
        report["diagnosis"] = diagnosis
    write_json_atomic(paths.metrics, report)
    write_text_atomic(paths.report, render_report(report))
    return report


def unit_of(metric: str, task: Any) -> str:
    """The unit of an evaluation metric: the task's ``units`` for its metrics (``max_force_final``
    -> ``max_force``), a share for success rates and episode counts for ``episodes``."""
    units = dict(OmegaConf.select(task, "units", default={}) or {})
    base = metric.removesuffix("_final").removesuffix("_mean").removesuffix("_std")
    if base in units:
        return str(units[base])
    return {"success_rate": "share of episodes", "episodes": "episodes", "length": "steps"}.get(base, "")


def _evaluation_table(report: dict[str, Any]) -> list[str]:
    """The learner's evaluation and, as further columns, its baselines' (same episodes and seeds)."""
    baselines = report.get("baselines", {})
    header = ["metric", f"this run ({report['algo']})", *baselines, "unit"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, value in report["eval"].items():
        others = [f"{b[key]:.4g}" if isinstance(b.get(key), (int, float)) else "–" for b in baselines.values()]
        rows.append("| " + " | ".join([key, f"{value:.4g}", *others, report.get("units", {}).get(key, "")]) + " |")
    if baselines:
        rows += ["", f"Same {int(report['eval'].get('episodes', 0))} evaluation episodes (seeds from "
                 f"{report.get('eval_seed', '?')}) for every column; behaviour policies are the task's scripted ones "
                 "(`eval.baselines`), runs are finished runs of the same dataset under `output_root`."]
    return rows


def render_report(report: dict[str, Any]) -> str:
    """``report.md``: what ran, the evaluation table and where the checkpoint is."""
    lines = [
        f"# {report['task']} / {report['algo']} (seed {report['seed']})",
        "",
        f"Trained {report['step']} steps; this invocation took {report['wall_time_s']} s.",
        "",
        "## Evaluation",
        "",
        *_evaluation_table(report),
        "",
        "## Time",
        "",
        "| stage | s |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in report.get("timings_s", {}).items()],
        "",
        "## Reward",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in report["reward"].items()],
        "",
        *_attribute_lines(report.get("attributes")),
        *diagnosis_lines(report.get("diagnosis")),
        "## Dataset",
        "",
        f"`{report['dataset_id']}` at `{report['dataset_path']}`",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k.split('/', 1)[1]} | {v:.4g} |" for k, v in report["dataset"].items()],
        "",
        f"Checkpoint to deploy from: `{report['checkpoint']}`",
        "",
        *[f"![{Path(p).stem.replace('_', ' ')}]({Path(p).relative_to(Path(p).parents[1])})" for p in report.get("plots", [])],
        "",
        *[f"- video: `{Path(v).relative_to(Path(v).parents[1])}`" for v in report.get("videos", [])],
        "",
        "Raw numbers: `metrics.json`; curves: `metrics.jsonl` and `tensorboard/`.",
        "",
    ]
    return "\n".join(lines)


def _attribute_lines(attributes: dict[str, Any] | None) -> list[str]:
    """The report's attribute section (attribute-conditioned learners), or nothing."""
    if not attributes:
        return []
    alignment = attributes["alignment"]
    return ["## Attributes (AlignDiff's evaluation)", "",
            f"{attributes['pairs']} segment pairs of {attributes['segment_length']} steps labelled by the "
            f"{attributes['labeler']}; {alignment['targets']} episodes, each asking random targets for a random subset.", "",
            "| attribute | unit | held-out accuracy of the attribute model |", "|---|---|---|",
            *[f"| {n} | {u} | {attributes['heldout_accuracy'].get(n, float('nan')):.3f} |"
              for n, u in zip(attributes["names"], attributes["units"])], "",
            "| alignment | by the attribute model | by the simulator's measurements |", "|---|---|---|",
            f"| MAE-area (1: perfect) | {alignment['mae_area']:.3f} | {alignment['mae_area_measured']:.3f} |",
            f"| mean masked MAE | {alignment['mae_mean']:.3f} | {alignment['mae_mean_measured']:.3f} |", ""]


def print_json(title: str, data: dict[str, Any]) -> None:
    """Print a titled, indented JSON block (the entry points' final output)."""
    print(f"{title}\n{json.dumps(data, indent=2, sort_keys=True)}")
