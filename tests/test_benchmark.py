"""The Meta-World benchmark: official evaluation, suites, the sweep and its tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from embodied.benchmark import aggregate, apply_learner_overrides, bootstrap_interval, render_table
from embodied.evaluation import evaluate_metaworld
from envs.metaworld_adapter import MetaWorldExpert, official_evaluation, suite_tasks, task_names
from tests.conftest import run_module


def _compose_benchmark(overrides: list[str]):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="conf", version_base="1.3"):
            return compose(config_name="benchmark", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def test_official_evaluation_scores_the_expert_and_a_still_arm():
    ended = []
    expert = official_evaluation(MetaWorldExpert(task="reach-v3").act, "reach-v3", episodes=4, seed=3,
                                 on_episode_end=ended.append)
    assert expert["success_rate"] == 1.0 and expert["episodes"] == 4 and sum(ended) >= 4
    still = official_evaluation(lambda observation: np.zeros(4, np.float32), "reach-v3", episodes=2, seed=3)
    assert still["success_rate"] == 0.0  # a 500-step episode that never reaches: the protocol can fail


def test_metaworld_protocol_refuses_other_tasks():
    task = OmegaConf.create({"name": "pointmass", "env": {"_target_": "envs.make", "id": "embodied/PointMass-v0"}})
    with pytest.raises(ValueError, match="eval.protocol=metaworld needs a Meta-World task"):
        evaluate_metaworld(task, MetaWorldExpert(task="reach-v3"), 1, 0, progress=False)


def test_suites_name_metaworld_tasks():
    from metaworld import env_dict

    assert suite_tasks("mt10") == list(env_dict.MT10_V3) and len(suite_tasks("mt50")) == 50
    assert suite_tasks("mt1:reach-v3") == ["reach-v3"]
    with pytest.raises(ValueError, match="unknown Meta-World suite"):
        suite_tasks("mt11")
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        suite_tasks("mt1:reach-v9")


@pytest.mark.parametrize("suite", ["mt10", "mt50", "mt50_minus_mt10", "quick"])
def test_suite_configs_sweep_their_tasks_rows_and_seeds(suite):
    cfg = _compose_benchmark([f"suite={suite}"])
    params = cfg.hydra.sweeper.params
    tasks = params["task.env.task"].split(",")
    assert tasks == list(cfg.suite.tasks) and set(tasks) <= set(task_names())
    if suite != "quick":
        seeds = [0, 1] if suite == "mt50_minus_mt10" else [0, 1, 2]
        assert tasks == suite_tasks(suite) and cfg.eval.episodes == 50 and cfg.suite.seeds == seeds
        # the CPU preset's update budget, chosen on MT10 (docs/RESULTS.md, selection round 2)
        assert cfg.trainer.steps == 20_000
    else:
        assert cfg.trainer.steps == 200
    if suite == "mt50_minus_mt10":  # the report suite shares no task with the selection suite
        assert len(tasks) == 40 and not set(tasks) & set(suite_tasks("mt10"))
    assert params["algo"].split(",") == ["iql", "bc", "iql_gt", "expert"]
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.eval.protocol == "metaworld"
    assert "JoblibLauncher" in cfg.hydra.launcher._target_


def test_task_list_suite_needs_tasks():
    cfg = _compose_benchmark(["suite=tasks", "suite.tasks=[drawer-open-v3]", "suite.seeds=[4,5]"])
    assert cfg.hydra.sweeper.params["task.env.task"] == "drawer-open-v3"
    assert cfg.hydra.sweeper.params.seed == "4,5"
    with pytest.raises(Exception, match="suite.tasks"):
        OmegaConf.to_container(_compose_benchmark(["suite=tasks"]).suite, throw_on_missing=True)


def _learner(cfg):
    from hydra.utils import instantiate

    return instantiate(apply_learner_overrides(cfg).algo.learner)


def test_a_preset_and_an_explicit_temperature_together_are_refused_not_silently_resolved():
    # The suite's default {preset: kitchen} merges with a command-line temperature: the preset
    # used to overwrite it, so a "beta 3" arm silently ran beta 0.5.
    kitchen = _learner(_compose_benchmark(["algo=iql"]))
    # the setting chosen on MT10 (docs/RESULTS.md): the kitchen preset, constant actor learning rate
    assert (kitchen.expectile, kitchen.temperature, kitchen.actor_cosine_decay) == (0.7, 0.5, False)
    kitchen_gt = _learner(_compose_benchmark(["algo=iql_gt"]))
    assert (kitchen_gt.expectile, kitchen_gt.temperature, kitchen_gt.actor_cosine_decay) == (0.7, 0.5, False)
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="preset='kitchen'.*temperature"):
        _learner(_compose_benchmark(["algo=iql", "++suite.learner_overrides.iql={temperature: 3.0}"]))
    beta3 = _learner(_compose_benchmark(["algo=iql", "++suite.learner_overrides.iql={preset: null, temperature: 3.0, "
                                         "actor_cosine_decay: false}"]))
    assert (beta3.preset, beta3.expectile, beta3.temperature, beta3.actor_cosine_decay) == (None, 0.7, 3.0, False)
    plain = _learner(_compose_benchmark(["algo=iql", "++suite.learner_overrides.iql={preset: null}"]))
    assert (plain.expectile, plain.temperature) == (0.7, 3.0)  # the paper's locomotion setting


def test_submitit_slurm_launcher_config_composes():
    cfg = _compose_benchmark(["suite=mt10", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                              "hydra.launcher.timeout_min=120", "hydra.launcher.cpus_per_task=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task) == ("gpu", 120, 4)
    # the sweep (and the tables at its end) is the same whichever launcher runs it
    assert cfg.hydra.callbacks.aggregate._target_ == "embodied.benchmark.AggregateResults"


def _write_result(folder: Path, task: str, algo: str, reward: str, seed: int, success: float, **extra) -> None:
    from embodied.benchmark import row_label

    job = folder / f"mw-{task}_{algo}_seed{seed}"
    job.mkdir(parents=True)
    (job / "result.json").write_text(json.dumps({
        "task": task, "algo": algo, "reward": reward, "row": row_label(algo, reward, "oracle"), "seed": seed,
        "labeler": "oracle", "protocol": "metaworld", "wall_time_s": 10.0,
        "eval": {"success_rate": success, "episodes": 50.0}, "reward_model": {}, **extra,
    }))


def test_bootstrap_interval_over_tasks():
    assert bootstrap_interval(np.full(10, 0.2)) == (0.2, 0.2)
    rng = np.random.default_rng(0)
    better = 0.1 + rng.normal(0, 0.05, 40)  # every task a little better
    low, high = bootstrap_interval(better)
    assert 0 < low < better.mean() < high
    # the interval's half-width is about 1.96 standard errors of the mean over tasks
    assert (high - low) / 2 == pytest.approx(1.96 * better.std(ddof=1) / np.sqrt(40), rel=0.15)
    low, high = bootstrap_interval(np.r_[np.full(20, 0.1), np.full(20, -0.1)])
    assert low < 0 < high
    with pytest.raises(ValueError, match=">= 2 finite"):
        bootstrap_interval(np.array([0.1]))


def test_aggregate_pairs_rows_by_task_and_diagnoses_where_iql_loses_to_bc(tmp_path):
    tasks = [f"task{i}-v3" for i in range(6)]
    for i, task in enumerate(tasks):
        for seed in (0, 1):
            iql = 0.3 if i == 0 else 0.8  # below BC on task0 only
            diagnosis = {"effective_sample_share": 0.9 + 0.02 * seed, "td_explained_variance": 0.5,
                         "expectile_balance": 0.1 * seed,
                         "by_behaviour": {"expert": {"transition_share": 0.3, "weight_share": 0.4}}}
            _write_result(tmp_path, task, "iql", "learned", seed, iql, diagnosis=diagnosis,
                          reward_model={"heldout_accuracy": 0.7, "spearman_true_reward": 0.2 + 0.2 * seed})
            _write_result(tmp_path, task, "bc", "none", seed, 0.6)
    summary = aggregate(tmp_path, tasks=tasks)
    (comparison,) = summary["comparisons"]
    assert (comparison["row"], comparison["against"], comparison["tasks"]) == ("IQL, learned reward (oracle)", "BC", 6)
    assert comparison["difference"] == pytest.approx((-0.3 + 5 * 0.2) / 6)
    assert comparison["low"] < comparison["difference"] < comparison["high"] and comparison["tasks_worse"] == ["task0-v3"]
    (row,) = summary["diagnosis"]
    assert row["task"] == "task0-v3" and row["seeds"] == 2
    assert row["spearman_true_reward"] == pytest.approx(0.3) and row["effective_sample_share"] == pytest.approx(0.91)
    assert row["expert_weight_share"] == pytest.approx(0.4) and row["heldout_accuracy"] == pytest.approx(0.7)
    assert row["expectile_balance"] == pytest.approx(0.05)
    table = (tmp_path / "results.md").read_text()
    assert "| IQL, learned reward (oracle) | BC | 6 | +0.117 |" in table and "| task0-v3 |" in table.split("Diagnosis")[1]


def test_aggregate_means_and_stds_over_seeds(tmp_path):
    values = {("reach-v3", 0): 1.0, ("reach-v3", 1): 0.6, ("push-v3", 0): 0.2, ("push-v3", 1): 0.4}
    for (task, seed), success in values.items():
        _write_result(tmp_path, task, "iql", "learned", seed, success)
        _write_result(tmp_path, task, "bc", "none", seed, success / 2)
    summary = aggregate(tmp_path, wall_time_s=42.0, tasks=["reach-v3", "push-v3"])
    iql = summary["rows"]["IQL, learned reward (oracle)"]
    assert iql["tasks"]["reach-v3"]["mean"] == pytest.approx(0.8) and iql["tasks"]["reach-v3"]["std"] == pytest.approx(0.2)
    # per seed: mean over tasks (0.6, 0.5); then mean and std over seeds
    assert iql["mean"] == pytest.approx(0.55) and iql["std"] == pytest.approx(0.05) and iql["seeds"] == 2
    assert list(summary["rows"]) == ["IQL, learned reward (oracle)", "BC"] and summary["tasks"] == ["reach-v3", "push-v3"]
    table = (tmp_path / "results.md").read_text()
    assert "| reach-v3 | 0.80 ± 0.20 | 0.40 ± 0.10 |" in table and "42 s wall time" in table
    assert json.loads((tmp_path / "results.json").read_text())["jobs"] == 8
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert render_table(summary) == table


def test_the_plot_of_a_40_task_report_runs_tasks_down_the_page(tmp_path):
    # MT50 minus MT10: 40 tasks x 4 rows along x made a 7,380-pixel-wide strip nobody could read
    tasks = [f"task{i}-v3" for i in range(40)]
    for task in tasks:
        for algo, reward in (("iql", "learned"), ("iql_gt", "gt"), ("bc", "none"), ("expert", "none")):
            _write_result(tmp_path, task, algo, reward, 0, 0.5)
    aggregate(tmp_path, tasks=tasks)
    from PIL import Image

    width, height = Image.open(tmp_path / "results.png").size
    assert width <= 1000 and height > width


def test_aggregate_refuses_an_empty_sweep(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished benchmark job"):
        aggregate(tmp_path)


@pytest.mark.slow
def test_quick_suite_end_to_end_and_rerun_skips_finished_jobs(tmp_path):
    """``python -m embodied.benchmark suite=quick``: 2 tasks x 4 rows, in parallel processes, then
    the tables; the scripted-expert row checks the evaluation path (experts succeed >= 0.9)."""
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "datasets")
    try:
        sweep = tmp_path / "sweep"
        args = ["suite=quick", f"output_root={tmp_path}", f"hydra.sweep.dir={sweep}", "hydra.launcher.n_jobs=2"]
        result = run_module("embodied.benchmark", *args, cwd=tmp_path, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((sweep / "results.json").read_text())
        assert summary["jobs"] == 8 and summary["tasks"] == ["reach-v3", "drawer-close-v3"]
        assert set(summary["rows"]) == {"IQL, learned reward (oracle)", "IQL, true reward", "BC", "scripted expert"}
        assert summary["rows"]["scripted expert"]["mean"] >= 0.9
        assert summary["protocol"] == "metaworld" and summary["episodes_per_task"] == 3
        assert "results:" in result.stdout and (sweep / "results.png").exists()
        job = json.loads((sweep / "mw-reach-v3_iql_seed0" / "result.json").read_text())
        assert 0.0 <= job["reward_model"]["heldout_accuracy"] <= 1.0 and job["checkpoint"]
        stamp = (sweep / "mw-reach-v3_iql_seed0" / "result.json").stat().st_mtime_ns
        again = run_module("embodied.benchmark", *args, cwd=tmp_path, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (sweep / "mw-reach-v3_iql_seed0" / "result.json").stat().st_mtime_ns == stamp
    finally:
        os.environ.pop("MINARI_DATASETS_PATH", None)


def test_one_seed_is_written_in_the_singular(tmp_path):
    _write_result(tmp_path, "reach-v3", "iql", "learned", 0, 1.0)
    table = render_table(aggregate(tmp_path, tasks=["reach-v3"]))
    assert "(1 seed)" in table and "(1 seeds)" not in table


def test_the_gpu_preset_trains_iql_at_the_paper_scale_with_its_cosine_schedule():
    # docs/benchmark.md's paper-scale command: 1M updates on cuda, the kitchen preset with the
    # paper's cosine decay of the actor's learning rate, compiled losses; BC keeps its own learner.
    cfg = _compose_benchmark(["algo=iql", "suite=mt50_minus_mt10", "+experiment=benchmark_gpu"])
    iql = _learner(cfg)
    assert (cfg.device, cfg.trainer.steps, cfg.trainer.batch_size) == ("cuda", 1_000_000, 256)
    assert (iql.expectile, iql.temperature, iql.actor_cosine_decay, iql.compile) == (0.7, 0.5, True, True)
    assert len(cfg.suite.tasks) == 40
    bc = _learner(_compose_benchmark(["algo=bc", "suite=mt50_minus_mt10", "+experiment=benchmark_gpu"]))
    assert bc.learning_rate == 3.0e-4
