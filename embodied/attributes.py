"""Attribute-conditioned learners in the main job (AlignDiff, Dong et al., ICLR 2024; its BC
baseline): ``python -m embodied.train +task=dressing algo=aligndiff dataset.recipe=attributes``.

Stages around the learner's training, for a learner that keeps an ``attribute_model``:

1. :func:`attribute_stage`: segment pairs of the dataset, labelled for every attribute of the
   task (``task.attributes``) by the scripted attribute teacher (measured in simulation; B-Pref
   rules), cached in the run folder as ``attributes/labels.npz``; the attribute strength model
   fitted on them (held-out accuracy per attribute), scaled to [0, 1] over the dataset's windows,
   and copied into the learner (frozen) before training;
2. :func:`alignment_evaluation`: AlignDiff's protocol: ``attributes.targets`` episodes, each
   asking random targets ``v ~ U[0, 1]^k`` for a random subset of the attributes; the realised
   strengths of the episode (the attribute model over its observations) give a masked MAE per
   episode and the MAE-area; the same with the simulator's measurements, scaled by their range
   over the labelled segments (a check that does not trust the learned model);
3. :func:`plot_attribute_following`: one episode whose targets change twice
   (``attributes.switch_steps``), each attribute's strength over the last H steps against its
   target: ``plots/attribute_following.png``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, OmegaConf

from embodied.io import write_json_atomic
from embodied.tasks import make_env
from policies.attributes import AttributeStrengthModel
from reward_models.attributes import (
    AttributeTeacher,
    fit_attribute_model,
    mae_area,
    masked_mae,
    segment_observations,
)
from reward_models.preferences import sample_pairs


@dataclass
class AttributeSettings:
    """The root ``attributes`` node (``conf/config.yaml``)."""

    pairs: int = 2000
    segment_length: int = 16
    eps_equal: float = 0.0
    eps_mistake: float = 0.0
    steps: int = 1000
    heldout: float = 0.1
    targets: int = 20
    mask_probability: float = 0.5
    switch_steps: list[int] = field(default_factory=lambda: [15, 30])
    labeler: dict[str, Any] | None = None

    @property
    def labeler_name(self) -> str:
        """``scripted attribute teacher`` or the labeler's import path."""
        return "scripted attribute teacher" if self.labeler is None else str(self.labeler.get("_target_", "?"))

    def __post_init__(self) -> None:
        if self.pairs < 2 or self.segment_length < 2 or self.steps < 1 or self.targets < 1:
            raise ValueError("attributes.pairs >= 2, segment_length >= 2, steps >= 1 and targets >= 1 expected")
        if not 0.0 < self.mask_probability <= 1.0 or not 0.0 <= self.heldout < 1.0:
            raise ValueError("attributes.mask_probability in (0, 1] and heldout in [0, 1) expected")
        if len(self.switch_steps) != 2 or not 0 < self.switch_steps[0] < self.switch_steps[1]:
            raise ValueError(f"attributes.switch_steps={self.switch_steps}; expected two increasing steps > 0")
        if self.labeler is not None and "_target_" not in self.labeler:
            raise ValueError(f"attributes.labeler={self.labeler}; expected null (the scripted attribute teacher) or a "
                             "labeler node with a _target_ (+attribute_labeler=vlm)")


def read_settings(cfg: DictConfig) -> AttributeSettings:
    """The ``attributes`` node as :class:`AttributeSettings` (defaults when absent).

    Raises:
        ValueError: an unknown or bad setting.
    """
    values = OmegaConf.to_container(cfg.attributes, resolve=True) if cfg.get("attributes") is not None else {}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(AttributeSettings)})
    if unknown:
        raise ValueError(f"attributes.{unknown[0]} is not a setting")
    return AttributeSettings(**values)


def task_attributes(task: Any) -> tuple[list[str], list[Any], list[str]]:
    """Names, measure functions and units of ``task.attributes``.

    Raises:
        ValueError: a task without attributes, or an attribute without ``measure``.
    """
    attributes = dict(task.get("attributes") or {})
    if not attributes:
        raise ValueError(f"task {task.name!r} declares no attributes (task.attributes: {{name: {{measure: ..., unit: ...}}}}); "
                         "attribute-conditioned learners need them (see conf/task/dressing.yaml)")
    names, measures, units = [], [], []
    for name, spec in attributes.items():
        if "measure" not in spec:
            raise ValueError(f"task.attributes.{name} has no measure (an import path of observations -> float)")
        names.append(str(name))
        measures.append(get_method(str(spec["measure"])))
        units.append(str(spec.get("unit", "")))
    return names, measures, units


def task_attribute_questions(task: Any) -> list[str]:
    """The question a VLM is asked about each of ``task.attributes`` (``question``), in order.

    Raises:
        ValueError: an attribute without a question.
    """
    attributes = dict(task.get("attributes") or {})
    missing = [name for name, spec in attributes.items() if not str(spec.get("question") or "").strip()]
    if missing:
        raise ValueError(f"task.attributes.{missing[0]} has no question; a VLM attribute labeler asks it (e.g. 'In which "
                         "clip does the gripper move faster?', answered by the clip in which the attribute is stronger)")
    return [str(spec["question"]).strip() for spec in attributes.values()]


def _labeler_labels(cfg: DictConfig, settings: AttributeSettings, episodes: list, pairs: np.ndarray, folder: Path
                    ) -> np.ndarray:
    """Labels ``(N, k)`` float32 (NaN: abstain) from ``attributes.labeler``, one labeler per
    attribute (asked its question), every answer saved as it arrives in
    ``attributes/labels.sqlite`` (a rerun asks only for what is missing)."""
    from hydra.utils import instantiate

    from reward_models.labeling import LabelStore, label_pairs

    questions = task_attribute_questions(cfg.task)
    if any(ep.frames is None for ep in episodes) and getattr(get_class(str(settings.labeler["_target_"])), "needs_frames", False):
        raise ValueError(f"attributes.labeler={settings.labeler_name} looks at frames, but dataset "
                         f"{cfg.dataset.id or cfg.dataset.recipe!r} has none; collect one with dataset.frames=true and a "
                         "recipe name of its own (+attribute_labeler=vlm sets both)")
    store = LabelStore(folder / "labels.sqlite")
    labels = np.full((len(pairs), len(questions)), np.nan, dtype=np.float32)
    try:
        for i, question in enumerate(questions):
            labeler = instantiate(settings.labeler, task=str(cfg.task.description), question=question)
            result = label_pairs(labeler, episodes, pairs, settings.segment_length, seed=int(cfg.seed), store=store,
                                 workdir=folder)
            labels[:, i] = result.labels
    finally:
        store.close()
    return labels


def attribute_stage(cfg: DictConfig, episodes: list, run_root: Path, learner: Any, device: torch.device) -> dict[str, Any]:
    """Label segment pairs for every attribute (the scripted attribute teacher, or
    ``attributes.labeler``, e.g. a VLM asked each attribute's question), fit the attribute
    strength model and copy it into ``learner.attribute_model``; returns the report (accuracies,
    label counts, and for a labeler other than the teacher its agreement with the teacher).

    Raises:
        ValueError: the task's attribute count differs from the learner's, or see :func:`task_attributes`.
    """
    settings = read_settings(cfg)
    names, measures, units = task_attributes(cfg.task)
    target: AttributeStrengthModel = learner.attribute_model
    if target.attributes != len(names):
        raise ValueError(f"the learner has {target.attributes} attributes; task {cfg.task.name!r} declares {len(names)} "
                         f"({names}): set algo.learner.attributes={len(names)}")
    folder = Path(run_root) / "attributes"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(cfg.seed))
    pairs = sample_pairs([len(ep.actions) for ep in episodes], settings.segment_length, settings.pairs, rng)
    segments = segment_observations(episodes, pairs, settings.segment_length)
    teacher = AttributeTeacher(measures, names, settings.eps_equal, settings.eps_mistake)
    cache = folder / "labels.npz"
    source = json.dumps({"labeler": settings.labeler, "eps_equal": settings.eps_equal,
                         "eps_mistake": settings.eps_mistake}, sort_keys=True, default=str)
    cached = None
    if cache.exists():
        with np.load(cache) as stored:
            if "source" in stored.files and np.array_equal(stored["pairs"], pairs) and str(stored["source"]) == source:
                cached = stored["labels"], stored["measured"], stored["teacher_labels"]
    if cached is not None:
        labels, measured, teacher_labels = cached
    else:
        measured = teacher.measure(segments)
        teacher_labels = teacher.label(segments, rng, measured)
        labels = teacher_labels if settings.labeler is None else _labeler_labels(cfg, settings, episodes, pairs, folder)
        tmp = folder / "labels.tmp.npz"
        np.savez(tmp, pairs=pairs, labels=labels, measured=measured, teacher_labels=teacher_labels, source=np.array(source))
        tmp.replace(cache)
    model = AttributeStrengthModel(target.observation_dim, target.attributes, target.hidden,
                                   target.members)
    fit = fit_attribute_model(model, segments, labels, steps=settings.steps, heldout=settings.heldout,
                              generator=torch.Generator().manual_seed(int(cfg.seed)))
    windows = torch.as_tensor(segments.reshape(-1, *segments.shape[2:]))
    model.fit_range(windows)
    target.load_state_dict(model.state_dict())
    target.to(device)
    decided = (labels == 0.0) | (labels == 1.0)
    agreement = [float((labels[decided[:, i], i] == teacher_labels[decided[:, i], i]).mean()) if decided[:, i].any()
                 else float("nan") for i in range(len(names))]
    report = {"names": names, "units": units, "pairs": int(len(pairs)), "segment_length": settings.segment_length,
              "labeler": settings.labeler_name, "eps_equal": settings.eps_equal, "eps_mistake": settings.eps_mistake,
              "abstain": dict(zip(names, np.isnan(labels).mean(0).tolist())),
              "tie": dict(zip(names, (labels == 0.5).mean(0).tolist())),
              "agreement_with_teacher": dict(zip(names, agreement)),
              "train_accuracy": dict(zip(names, fit["train_accuracy"])),
              "heldout_accuracy": dict(zip(names, fit["heldout_accuracy"])),
              "measured_low": dict(zip(names, measured.reshape(-1, len(names)).min(0).tolist())),
              "measured_high": dict(zip(names, measured.reshape(-1, len(names)).max(0).tolist()))}
    write_json_atomic(folder / "report.json", report)
    return report


def _episode(cfg: DictConfig, learner: Any, env, seed: int, conditions: list[tuple[int, np.ndarray]], device: torch.device
             ) -> np.ndarray:
    """Observations ``(T + 1, D)`` of one episode acting with ``act(o, condition)``; ``conditions``
    lists ``(first step, condition (2k,))``, the last one whose step has come applies."""
    observation, _ = env.reset(seed=int(seed))
    learner.reset()
    observations = [observation]
    for t in range(100_000):
        condition = [c for start, c in conditions if start <= t][-1]
        action = learner.act(torch.as_tensor(observation, dtype=torch.float32, device=device)[None],
                             torch.as_tensor(condition, dtype=torch.float32, device=device)[None])[0].cpu().numpy()
        observation, _, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        if terminated or truncated:
            break
    return np.asarray(observations, dtype=np.float32)


def alignment_evaluation(cfg: DictConfig, learner: Any, device: torch.device, run_root: Path) -> dict[str, Any]:
    """AlignDiff's evaluation (module docstring, stage 2): masked MAE per episode and the MAE-area,
    from the attribute model and from the simulator's measurements; per-episode rows are
    written to ``attributes/alignment.json``."""
    settings = read_settings(cfg)
    names, measures, _ = task_attributes(cfg.task)
    k = len(names)
    stored = json_report(run_root)
    low = np.array([stored["measured_low"][n] for n in names])
    high = np.array([stored["measured_high"][n] for n in names])
    rng = np.random.default_rng([int(cfg.eval.seed), 17])
    env = make_env(cfg.task)
    rows = []
    try:
        for i in range(settings.targets):
            targets = rng.uniform(0.0, 1.0, k)
            mask = (rng.random(k) < settings.mask_probability).astype(np.float32)
            if not mask.any():
                mask[rng.integers(k)] = 1.0
            observations = _episode(cfg, learner, env, int(cfg.eval.seed) + i, [(0, np.concatenate([targets, mask]))], device)
            with torch.no_grad():
                realized = learner.attribute_model(torch.as_tensor(observations, device=device)[None])[0].cpu().numpy()
            measured = np.array([m(observations) for m in measures])
            rows.append({"targets": targets.tolist(), "mask": mask.tolist(), "realized": realized.tolist(),
                         "measured": measured.tolist(), "measured_scaled": ((measured - low) / np.maximum(high - low, 1e-9)).tolist(),
                         "steps": int(len(observations) - 1)})
    finally:
        env.close()
    target, mask = np.array([r["targets"] for r in rows]), np.array([r["mask"] for r in rows])
    errors = masked_mae(np.array([r["realized"] for r in rows]), target, mask)
    measured_errors = masked_mae(np.array([r["measured_scaled"] for r in rows]), target, mask)
    result = {"targets": settings.targets, "mae_area": mae_area(errors), "mae_mean": float(errors.mean()),
              "mae_area_measured": mae_area(measured_errors), "mae_mean_measured": float(measured_errors.mean())}
    write_json_atomic(Path(run_root) / "attributes" / "alignment.json", {**result, "episodes": rows})
    return result


def json_report(run_root: Path) -> dict[str, Any]:
    """The attribute stage's ``attributes/report.json``."""
    return json.loads((Path(run_root) / "attributes" / "report.json").read_text())


def plot_attribute_following(cfg: DictConfig, learner: Any, device: torch.device, path: Path) -> Path:
    """One episode whose targets (every attribute asked) change at ``attributes.switch_steps``:
    low, then high, then middle strengths; each attribute's strength over the last H steps (the
    attribute model) against its target. Writes ``path`` (png) and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = read_settings(cfg)
    names, _, _ = task_attributes(cfg.task)
    k = len(names)
    levels = [np.full(k, 0.2), np.full(k, 0.8), np.full(k, 0.5)]
    starts = [0, *settings.switch_steps]
    env = make_env(cfg.task)
    try:
        observations = _episode(cfg, learner, env, int(cfg.eval.seed), [(s, np.concatenate([v, np.ones(k)]))
                                                                        for s, v in zip(starts, levels)], device)
    finally:
        env.close()
    window = settings.segment_length
    steps = np.arange(1, len(observations))
    with torch.no_grad():
        strengths = np.stack([learner.attribute_model(torch.as_tensor(observations[max(0, t - window):t + 1], device=device)[None])[0]
                              .cpu().numpy() for t in steps])
    fig, axes = plt.subplots(k, 1, figsize=(7, 2.2 * k), sharex=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        target = np.select([steps >= starts[2], steps >= starts[1]], [levels[2][i], levels[1][i]], levels[0][i])
        ax.plot(steps, target, "k--", label="target")
        ax.plot(steps, strengths[:, i], label=f"strength over the last {window} steps")
        ax.set_ylabel(names[i])
        ax.set_ylim(-0.1, 1.1)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("step")
    fig.suptitle(f"{cfg.task.name} / {cfg.algo.name}: targets changed at steps {settings.switch_steps}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["AttributeSettings", "alignment_evaluation", "attribute_stage", "plot_attribute_following", "read_settings",
           "task_attribute_questions", "task_attributes"]
