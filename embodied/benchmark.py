"""Benchmark feedback-driven offline RL on Meta-World: ``python -m embodied.benchmark suite=mt10``.

Each task x row x seed of the suite (``conf/suite/``) is one job of a Hydra multirun; the joblib
launcher runs them in parallel processes here, the submitit launcher on a SLURM cluster
(``hydra/launcher=submitit_slurm``, docs/benchmark.md). A job:

1. collects or reuses the task's mixed-quality dataset (scripted expert, expert plus noise,
   random), shared by the task's jobs (one collects, the others wait on a file lock);
2. for a learner row, runs the main job's stages (:func:`embodied.pipeline.train`): labels from
   ``labeler``, Bradley-Terry reward model, training; ``algo=expert`` trains nothing;
3. evaluates with Meta-World's official protocol (``metaworld.evaluation``, ``eval.episodes``
   episodes, 50 in the MT suites) and writes ``result.json`` in its folder.

When every job has finished, :class:`AggregateResults` writes ``results.json``, ``results.md``
(per-task success, mean and std over seeds, a row per algo) and ``results.png`` in the sweep
folder. Rerunning with ``hydra.sweep.dir=<that folder>`` skips finished jobs and resumes the
others from their checkpoints. ``python -m embodied.benchmark aggregate <sweep folder>`` redoes
the tables from whatever jobs have finished.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from embodied.cli import SweepCallback, aggregate_command, run_folder
from embodied.io import save_figure, write_json_atomic, write_text_atomic
from embodied.pipeline import evaluate_stage, train
from embodied.runtime import seed_everything
from embodied.tasks import make_policy

RESULT_FILE = "result.json"


def row_label(algo: str, reward: str, labeler: str | None) -> str:
    """A row's name in the table, e.g. ``IQL, learned reward (oracle)``."""
    if algo == "expert":
        return "scripted expert"
    name = {"iql_gt": "IQL", "iql": "IQL", "bc": "BC"}.get(algo, algo)
    if reward == "learned":
        return f"{name}, learned reward ({labeler})"
    if reward == "gt":
        return f"{name}, true reward"
    return name


def apply_learner_overrides(cfg: DictConfig) -> DictConfig:
    """Write ``suite.learner_overrides.<algo.name>`` into ``algo.learner`` (in place; returns ``cfg``).

    The suite's overrides are a dict that command-line ``++suite.learner_overrides.iql={...}``
    merges into, not replaces: ``{preset: kitchen}`` plus ``{temperature: 3.0}`` gives both, and
    :class:`policies.iql.IQLConfig` then refuses the pair (pass ``preset: null`` with explicit
    values) instead of letting the preset win silently.
    """
    overrides = OmegaConf.select(cfg, f"suite.learner_overrides.{cfg.algo.name}", default=None) or {}
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"algo.learner.{key}", value, merge=False)
    return cfg


def run_job(cfg: DictConfig, folder: Path) -> dict[str, Any]:
    """One benchmark job: train (unless ``algo=expert``), evaluate, write ``folder/result.json``.

    A finished job (its ``result.json`` exists) is returned as it is.

    Returns:
        ``task``, ``algo``, ``row``, ``reward``, ``labeler``, ``seed``, ``eval`` (success rate,
        return mean and std, episodes), ``reward_model`` (held-out accuracy etc. for learned
        rewards), ``wall_time_s``, ``checkpoint`` and ``diagnosis`` (IQL: :mod:`embodied.diagnosis`).
    """
    path = folder / RESULT_FILE
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(int(cfg.suite.threads_per_job) if cfg.suite else 1)
    warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")  # Meta-World's experts
    started = time.time()
    task = str(OmegaConf.select(cfg, "task.env.task", default=cfg.task.name))
    reward_report: dict[str, Any] = {}
    checkpoint, diagnosis = None, None
    if cfg.algo.learner is None:
        seed_everything(int(cfg.seed))
        policy, _ = make_policy(cfg.task, str(cfg.algo.name))
        metrics = evaluate_stage(cfg, policy)
    else:
        apply_learner_overrides(cfg)
        report = train(cfg, folder)
        metrics, checkpoint = report["eval"], report["checkpoint"]
        reward_report = {k: v for k, v in report["reward"].items() if k not in ("source", "labeler")}
        diagnosis = report.get("diagnosis")
    labeler = str(cfg.labeler.name) if cfg.algo.reward == "learned" else None
    result = {
        "task": task,
        "algo": str(cfg.algo.name),
        "row": row_label(str(cfg.algo.name), str(cfg.algo.reward), labeler),
        "reward": str(cfg.algo.reward),
        "labeler": labeler,
        "seed": int(cfg.seed),
        "eval": metrics,
        "reward_model": reward_report,
        "protocol": str(cfg.eval.protocol),
        "wall_time_s": round(time.time() - started, 1),
        "checkpoint": checkpoint,
        "diagnosis": diagnosis,
    }
    write_json_atomic(path, result)
    return result


def _row_order(result: dict[str, Any]) -> tuple[int, str]:
    """Feedback-trained rows first, then true reward, other learners, the scripted expert."""
    rank = 3 if result["algo"] == "expert" else {"learned": 0, "gt": 1}.get(result["reward"], 2)
    return rank, result["row"]


def bootstrap_interval(differences: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``differences (n,)`` (one per task: tasks are
    resampled with replacement; scipy.stats.bootstrap). All equal: the interval is that value.

    Raises:
        ValueError: fewer than 2 differences, or non-finite ones.
    """
    from scipy.stats import bootstrap

    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2 or not np.isfinite(differences).all():
        raise ValueError(f"a bootstrap interval needs >= 2 finite per-task differences, got {differences.tolist()}")
    if np.all(differences == differences[0]):
        return float(differences[0]), float(differences[0])
    result = bootstrap((differences,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                       random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare_rows(rows: dict[str, Any], tasks: list[str]) -> list[dict[str, Any]]:
    """Each feedback-trained row (a learned reward) against every other row, paired by task: the
    mean over tasks of the per-task difference in success (each task's mean over seeds) and its
    95 % bootstrap interval over tasks (tasks both rows have)."""
    learned = [name for name in rows if "learned reward" in name]
    out = []
    for name in learned:
        for other in rows:
            if other == name:
                continue
            shared = [t for t in tasks if t in rows[name]["tasks"] and t in rows[other]["tasks"]]
            if len(shared) < 2:
                continue
            diff = np.array([rows[name]["tasks"][t]["mean"] - rows[other]["tasks"][t]["mean"] for t in shared])
            low, high = bootstrap_interval(diff)
            out.append({"row": name, "against": other, "tasks": len(shared), "difference": float(diff.mean()),
                        "low": low, "high": high, "excludes_zero": bool(low > 0 or high < 0),
                        "tasks_worse": [t for t, d in zip(shared, diff) if d < 0]})
    return out


def diagnosis_table(results: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each task where a feedback-trained IQL row is below BC, the diagnosis (averaged over
    seeds): the learned reward's held-out accuracy and Spearman correlation with the true reward,
    the effective sample share of the advantage weights, the expert's share of the transitions
    and of the actor's weight, and the critic's explained variance."""
    out = []
    for comparison in comparisons:
        if not comparison["against"].startswith("BC"):
            continue
        for task in comparison["tasks_worse"]:
            jobs = [r for r in results if r["row"] == comparison["row"] and r["task"] == task and r.get("diagnosis")]
            if not jobs:
                continue
            mean = lambda values: float(np.mean(values)) if values else float("nan")  # noqa: E731
            expert = [r["diagnosis"]["by_behaviour"].get("expert", {}) for r in jobs]
            out.append({
                "task": task, "row": comparison["row"], "seeds": len(jobs),
                "heldout_accuracy": mean([r["reward_model"]["heldout_accuracy"] for r in jobs
                                          if "heldout_accuracy" in r["reward_model"]]),
                "spearman_true_reward": mean([r["reward_model"]["spearman_true_reward"] for r in jobs
                                              if "spearman_true_reward" in r["reward_model"]]),
                "effective_sample_share": mean([r["diagnosis"]["effective_sample_share"] for r in jobs]),
                "expert_transition_share": mean([e["transition_share"] for e in expert if e]),
                "expert_weight_share": mean([e["weight_share"] for e in expert if e]),
                "expectile_balance": mean([r["diagnosis"]["expectile_balance"] for r in jobs
                                           if "expectile_balance" in r["diagnosis"]]),
                "td_explained_variance": mean([r["diagnosis"]["td_explained_variance"] for r in jobs]),
            })
    return out


def aggregate(sweep_dir: str | Path, wall_time_s: float | None = None, tasks: list[str] | None = None) -> dict[str, Any]:
    """Gather the jobs' ``result.json`` under ``sweep_dir`` into ``results.json``, ``results.md``
    and ``results.png`` there. ``tasks``: the table's task order (default: as found).

    Per row and task: success rate mean and std over seeds. Per row: the mean over tasks, its
    std over seeds (the mean over tasks of each seed), and the number of seeds. Each
    feedback-trained row against the others: the mean per-task difference with a 95 % bootstrap
    interval over tasks (:func:`compare_rows`), and the diagnosis of the tasks where it is below
    BC (:func:`diagnosis_table`).

    Raises:
        FileNotFoundError: no finished job under ``sweep_dir``.
    """
    sweep_dir = Path(sweep_dir)
    results = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"))]
    if not results:
        raise FileNotFoundError(f"no finished benchmark job (*/{RESULT_FILE}) under {sweep_dir}")
    found = list(dict.fromkeys(r["task"] for r in results))
    tasks = [t for t in tasks if t in found] + [t for t in found if t not in tasks] if tasks else found
    results.sort(key=_row_order)
    success: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        success[r["row"]][r["task"]][int(r["seed"])] = float(r["eval"]["success_rate"])
    rows = {}
    for row, per_task in success.items():
        seeds = sorted({s for values in per_task.values() for s in values})
        complete = [s for s in seeds if all(s in per_task.get(t, {}) for t in tasks)]
        per_seed = [float(np.mean([per_task[t][s] for t in tasks])) for s in complete]
        rows[row] = {
            "tasks": {t: {"mean": float(np.mean(list(per_task[t].values()))), "std": float(np.std(list(per_task[t].values()))),
                          "seeds": {str(s): v for s, v in sorted(per_task[t].items())}} for t in tasks if t in per_task},
            "mean": float(np.mean(per_seed)) if per_seed else float("nan"),
            "std": float(np.std(per_seed)) if per_seed else float("nan"),
            "seeds": len(complete),
        }
    first = results[0]
    comparisons = compare_rows(rows, tasks)
    summary = {
        "sweep_dir": str(sweep_dir),
        "protocol": first.get("protocol"),
        "episodes_per_task": first["eval"].get("episodes"),
        "tasks": tasks,
        "rows": rows,
        "comparisons": comparisons,
        "diagnosis": diagnosis_table(results, comparisons),
        "jobs": len(results),
        "job_time_s": round(float(sum(r["wall_time_s"] for r in results)), 1),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1),
    }
    write_json_atomic(sweep_dir / "results.json", summary)
    write_text_atomic(sweep_dir / "results.md", render_table(summary))
    plot_results(summary, sweep_dir / "results.png")
    return summary


def render_table(summary: dict[str, Any]) -> str:
    """Markdown: a row per task and a column per row of the benchmark (success rate mean +- std
    over seeds), then the mean over tasks."""
    names = list(summary["rows"])
    cell = lambda d: f"{d['mean']:.2f} ± {d['std']:.2f}" if d else "–"  # noqa: E731
    lines = [
        f"Success rate ({summary['protocol']} protocol, {summary['episodes_per_task']:.0f} episodes a task; "
        "mean ± std over seeds)",
        "",
        "| task | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for task in summary["tasks"]:
        lines.append(f"| {task} | " + " | ".join(cell(summary["rows"][n]["tasks"].get(task)) for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{cell(summary['rows'][n])}** ({summary['rows'][n]['seeds']} seed{'s' if summary['rows'][n]['seeds'] != 1 else ''})"
                                            for n in names) + " |")
    if summary.get("comparisons"):
        lines += ["", "Paired by task: mean over tasks of the difference in success (each task's mean over seeds), "
                  "95 % bootstrap interval over tasks (10,000 resamples, percentile).", "",
                  "| row | against | tasks | difference | 95 % interval | excludes 0 | tasks worse |", "|---|---|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            lines.append(f"| {c['row']} | {c['against']} | {c['tasks']} | {c['difference']:+.3f} | "
                         f"[{c['low']:+.3f}, {c['high']:+.3f}] | {'yes' if c['excludes_zero'] else 'no'} | "
                         f"{len(c['tasks_worse'])} |")
    if summary.get("diagnosis"):
        lines += ["", "Diagnosis of the tasks where the feedback-trained row is below BC (means over seeds): the "
                  "learned reward's quality, the effective sample share of IQL's advantage weights (1 = BC), the "
                  "expert's share of the transitions and of the actor's weight, the value's expectile balance (0: V is "
                  "the expectile of Q over the data; positive: below it) and the critic's explained variance.", "",
                  "| task | row | held-out accuracy | Spearman with true reward | effective sample share | "
                  "expert transitions | expert weight | expectile balance | critic explained variance |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for d in summary["diagnosis"]:
            lines.append(f"| {d['task']} | {d['row']} | {d['heldout_accuracy']:.3f} | {d['spearman_true_reward']:.3f} | "
                         f"{d['effective_sample_share']:.3f} | {d['expert_transition_share']:.3f} | "
                         f"{d['expert_weight_share']:.3f} | {d['expectile_balance']:+.3f} | {d['td_explained_variance']:.3f} |")
    timing = f"{summary['jobs']} jobs, {summary['job_time_s']:.0f} s of job time"
    if summary.get("wall_time_s") is not None:
        timing += f", {summary['wall_time_s']:.0f} s wall time"
    return "\n".join([*lines, "", timing + ".", ""])


def plot_results(summary: dict[str, Any], path: Path) -> Path:
    """``results.png``: success rate per task, a bar per row with the std over seeds. Up to 12
    tasks the tasks run along x; more (MT50, the 40 tasks of the report) run down y, so the
    figure stays readable instead of growing thousands of pixels wide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, names = [*summary["tasks"], "mean"], list(summary["rows"])
    width = 0.8 / len(names)
    labels = [t.removesuffix("-v3") for t in tasks]
    x = np.arange(len(tasks))
    vertical = len(summary["tasks"]) <= 12  # tasks along x; more run down y
    size = (max(6.0, 0.9 * len(tasks) * max(1, len(names)) / 2), 3.6) if vertical else (7.5, 1.0 + 0.1 * len(tasks) * len(names))
    figure, axis = plt.subplots(figsize=size, dpi=100)
    for i, name in enumerate(names):
        row = summary["rows"][name]
        stats = [row["tasks"].get(t) for t in summary["tasks"]] + [row]
        means = [s["mean"] if s else np.nan for s in stats]
        stds = [s["std"] if s else 0.0 for s in stats]
        offset = x + (i - (len(names) - 1) / 2) * width
        if vertical:
            axis.bar(offset, means, width, yerr=stds, label=name, capsize=2)
        else:
            axis.barh(offset, means, width, xerr=stds, label=name, capsize=1.5)
    if vertical:
        axis.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        axis.set_ylabel("success rate")
        axis.set_ylim(0, 1.05)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        axis.set_yticks(x, labels, fontsize=7)
        axis.set_ylim(len(tasks) - 0.5, -0.5)  # the first task at the top, the mean at the bottom
        axis.set_xlabel("success rate")
        axis.set_xlim(0, 1.05)
        axis.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    axis.set_title(f"Meta-World, {summary['protocol']} protocol", fontsize=10, pad=30 if not vertical else 6)
    figure.tight_layout()
    return save_figure(figure, path)


class AggregateResults(SweepCallback):
    """Hydra callback (``hydra.callbacks.aggregate``): times the sweep and, when every job has
    finished, writes the tables with :func:`aggregate`."""

    def finish(self, config: DictConfig, wall_time_s: float) -> None:
        tasks = list(OmegaConf.select(config, "suite.tasks", default=None) or [])
        summary = aggregate(config.hydra.sweep.dir, wall_time_s, tasks)
        print(render_table(summary))
        print(f"results: {Path(config.hydra.sweep.dir) / 'results.md'}")


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="benchmark")
def _main(cfg: DictConfig) -> None:
    with run_folder("benchmark", cfg) as folder:
        result = run_job(cfg, folder)
        print(f"[benchmark] {result['task']} | {result['row']} | seed {result['seed']}: success "
              f"{result['eval']['success_rate']:.2f} ({result['wall_time_s']:.0f} s)", flush=True)


def main() -> None:
    """Console entry point; ``aggregate <sweep folder>`` redoes the tables of a sweep."""
    if not aggregate_command("benchmark", aggregate, render_table):
        _main()


if __name__ == "__main__":
    main()
