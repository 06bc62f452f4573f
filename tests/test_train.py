"""The main job end to end on PointMass: run folder contents, resume, evaluate, collect."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from embodied.checkpoint import latest_checkpoint, load_checkpoint
from embodied.learners import LearnerPolicy, load_learner
from embodied.pipeline import RunFolderError, train
from tests.conftest import run_module, small_train_overrides


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints").weights


def test_train_writes_a_complete_run_folder(compose_config, tmp_path, datasets_root):
    import imageio.v2 as imageio

    cfg = compose_config([*small_train_overrides(tmp_path), "trainer.eval_every=20"])
    run_dir = tmp_path / "run"
    report = train(cfg, run_dir)
    assert report["dataset_id"] == "embodied/pointmass/mixed-v0"
    assert (datasets_root / "embodied/pointmass/mixed-v0/data/main_data.hdf5").is_file()
    assert latest_checkpoint(run_dir / "checkpoints").name == "00000040"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval"] == report["eval"] and 0.0 <= metrics["eval"]["success_rate"] <= 1.0
    assert "success_rate" in (run_dir / "report.md").read_text()
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines if "train/actor_loss" in l] == [10, 20, 30, 40]
    assert any("eval/success_rate" in l for l in lines) and any("dataset/episodes" in l for l in lines)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert [l["step"] for l in lines if "eval/success_rate" in l] == [20, 40]  # during training, then final
    videos = sorted((run_dir / "videos").glob("eval_*.mp4"))
    assert [v.name.split("_")[1] for v in videos] == ["1000000", "1000001"] and report["videos"] == [str(v) for v in videos]
    frames = imageio.mimread(videos[0])
    assert frames[0].shape == (64, 64, 3) and len(frames) >= 2
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 5000
    assert "plots/learning_curves.png" in (run_dir / "report.md").read_text()
    learner, ckpt = load_learner(run_dir / "checkpoints")
    assert ckpt.state["extra"]["task"] == "pointmass"
    action = LearnerPolicy(learner).act(torch.zeros(6).numpy())
    assert action.shape == (2,) and abs(action).max() <= 1


def test_resumed_training_matches_an_uninterrupted_run(compose_config, tmp_path):
    straight = tmp_path / "straight"
    train(compose_config(small_train_overrides(tmp_path)), straight)

    split = tmp_path / "split"
    first = train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=20"]), split)
    assert latest_checkpoint(split / "checkpoints").name == "00000020" and first["step"] == 20
    train(compose_config(small_train_overrides(tmp_path)), split)  # rerun into the same folder

    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [json.loads(l)["step"] for l in (split / "metrics.jsonl").read_text().splitlines()
             if "train/actor_loss" in l]
    assert steps == [10, 20, 30, 40], "a resumed run logs each step once"


def test_resume_false_refuses_a_folder_with_checkpoints(compose_config, tmp_path):
    run_dir = tmp_path / "run"
    train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=20"]), run_dir)
    with pytest.raises(RunFolderError, match="resume=false"):
        train(compose_config(small_train_overrides(tmp_path) + ["resume=false"]), run_dir)


def test_cli_train_resume_true_and_evaluate_checkpoint(tmp_path):
    args = small_train_overrides(tmp_path / "outputs")
    first = run_module("embodied.train", *args, "trainer.steps=20", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dirs = list((tmp_path / "outputs").glob("*/*_pointmass_bc"))
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert f"report: {run_dir.resolve()}" in first.stdout or f"report: {run_dir}" in first.stdout

    second = run_module("embodied.train", *args, "resume=true", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stdout and "00000020" in second.stdout
    assert list((tmp_path / "outputs").glob("*/*_pointmass_bc")) == run_dirs
    assert latest_checkpoint(run_dir / "checkpoints").name == "00000040"

    evaluated = run_module("embodied.evaluate", *args, f"checkpoint={run_dir}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    eval_dir = next((tmp_path / "outputs").glob("*/*_pointmass_evaluate"))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert "00000040" in metrics["policy"] and metrics["eval"]["episodes"] == 2


@pytest.mark.parametrize("resume, message", [("true", "error: resume=true but no earlier run"),
                                             ("maybe", "error: resume='maybe'; expected one of")])
def test_cli_resume_true_without_an_earlier_run_or_a_bad_resume_value_fails_clearly(tmp_path, resume, message):
    result = run_module("embodied.train", *small_train_overrides(tmp_path / "outputs"), f"resume={resume}", cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert "exception formatting" not in result.stderr and "Traceback" not in result.stderr


def test_cli_evaluate_expert_and_collect(tmp_path):
    args = small_train_overrides(tmp_path / "outputs")
    expert = run_module("embodied.evaluate", *args, "policy=expert", "eval.episodes=5", cwd=tmp_path)
    assert expert.returncode == 0, expert.stderr
    eval_dir = next((tmp_path / "outputs").glob("*/*_pointmass_evaluate"))
    assert json.loads((eval_dir / "metrics.json").read_text())["eval"]["success_rate"] == 1.0

    collected = run_module("embodied.collect", *args, "dataset.recipe=small", cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    metrics = json.loads(next((tmp_path / "outputs").glob("*/*_pointmass_collect/metrics.json")).read_text())
    assert metrics["dataset_id"] == "embodied/pointmass/small-v0" and metrics["dataset/episodes"] == 6
    assert metrics["dataset/size_mb"] > 0 and metrics["dataset/observations_per_s"] > 0


def test_cli_main_job_on_dressing(tmp_path):
    """The README's main command, shortened: +task=dressing end to end through the CLI, with its
    default stages: dataset -> oracle labels -> reward model -> relabel -> IQL -> evaluation."""
    result = run_module(
        "embodied.train", "+task=dressing", "dataset.episodes=5", "trainer.steps=20", "trainer.batch_size=32",
        "trainer.checkpoint_every=10", "trainer.progress=false", "eval.episodes=2", "eval.video_size=64", "device=cpu",
        "labeler.pairs=60", "reward_model.max_epochs=3", f"output_root={tmp_path / 'outputs'}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "outputs").glob("*/*_dressing_iql"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["reward"]["source"] == "learned" and metrics["reward"]["labeler"] == "oracle"
    assert (run_dir / "labels" / "labels.sqlite").is_file() and list((run_dir / "videos").glob("*.mp4"))
    assert {"dressed_distance_final", "max_force_final", "success_rate"} <= set(metrics["eval"])
    assert metrics["dataset"]["dataset/episodes"] == 5
    assert f"report: {run_dir}" in result.stdout or f"report: {run_dir.resolve()}" in result.stdout
    histogram = run_dir / "plots" / "max_force_histogram.png"  # the force distribution beside success
    assert histogram.stat().st_size > 5000 and str(histogram) in metrics["plots"]
    assert "![max force histogram](plots/max_force_histogram.png)" in (run_dir / "report.md").read_text()


def _stored_answers(run_dir: Path) -> list[tuple]:
    """Every row of the run's label store (pair, label, outcome, time written)."""
    with sqlite3.connect(run_dir / "labels" / "labels.sqlite") as db:
        return db.execute("SELECT e0, s0, e1, s1, label, outcome, created FROM answers ORDER BY e0, s0, e1, s1").fetchall()


def test_main_job_with_labels_and_a_learned_reward_resumes_its_stages(compose_config, tmp_path):
    overrides = small_train_overrides(tmp_path) + [
        "algo=iql", "algo.reward=learned", "labeler=mistake", "labeler.pairs=60", "labeler.segment_length=5",
        "reward_model.hidden_dims=[32,32]", "reward_model.max_epochs=5", "trainer.steps=20",
    ]
    run_dir = tmp_path / "run"
    report = train(compose_config(overrides), run_dir)
    assert report["reward"]["source"] == "learned" and report["reward"]["labeler"] == "mistake"
    assert 0.0 <= report["reward"]["heldout_accuracy"] <= 1.0 and "spearman_true_reward" in report["reward"]
    reward_weights = run_dir / "reward_model" / "00000000" / "weights.safetensors"
    stamps = _stored_answers(run_dir), reward_weights.stat().st_mtime_ns
    assert len(stamps[0]) == 60
    again = train(compose_config(overrides[:-1] + ["trainer.steps=40"]), run_dir)  # resume: stages cached
    assert (_stored_answers(run_dir), reward_weights.stat().st_mtime_ns) == stamps
    assert again["reward"] == report["reward"] and again["step"] == 40
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/heldout_accuracy" in l for l in lines)
    assert "## Reward" in (run_dir / "report.md").read_text()
    # the diagnosis of the trained IQL: the actor's weight per behaviour policy of the data
    shares = {name: row["transition_share"] for name, row in again["diagnosis"]["by_behaviour"].items()}
    assert sum(shares.values()) == pytest.approx(1.0) and set(shares) <= {"expert", "noisy", "random"}
    assert "## Diagnosis" in (run_dir / "report.md").read_text()


def test_iql_without_a_reward_source_is_refused(compose_config, tmp_path):
    with pytest.raises(ValueError, match="algo.reward=gt"):
        train(compose_config(small_train_overrides(tmp_path) + ["algo=iql", "algo.reward=none"]), tmp_path / "run")


def test_cli_label_reports_reward_quality_and_draws_the_scatter(tmp_path):
    result = run_module("embodied.label", *small_train_overrides(tmp_path / "outputs"), "labeler.pairs=80",
                        "labeler.segment_length=5", "reward_model.hidden_dims=[32,32]", "reward_model.max_epochs=10",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "outputs").glob("*/*_pointmass_label"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["labeler"] == "oracle" and 0.5 <= metrics["reward"]["heldout_accuracy"] <= 1.0
    assert -1.0 <= metrics["reward"]["spearman_true_reward"] <= 1.0
    assert (run_dir / "plots" / "reward_vs_true.png").stat().st_size > 1000
    assert (run_dir / "labels" / "labels.sqlite").is_file()


def test_cli_label_with_the_vlm_labeler_over_http_and_an_image_reward_model(tmp_path):
    """labeler=vlm end to end: frames collected, labels from a real 127.0.0.1 server, a CNN reward
    model on the frames, the label-quality report; a rerun into the same folder asks nothing."""
    from tests.vlm_server import FakeVLM

    with FakeVLM() as server:
        args = [*small_train_overrides(tmp_path / "outputs"), "labeler=vlm", f"labeler.teacher.base_url={server.url}",
                "labeler.teacher.model=test-vlm", "labeler.teacher.requests_per_minute=0", "labeler.pairs=30",
                "labeler.teacher.swap_check=true", "dataset.width=32", "dataset.height=32", "reward_model=cnn",
                "reward_model.image_size=32", "reward_model.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}"]
        result = run_module("embodied.label", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        asked = len(server.bodies)
        assert asked >= 30 * 2 * 2 - 10  # two stages, swapped too; identical images come from the cache
        for path in (tmp_path / "run" / "labels").glob("labels.sqlite*"):
            path.unlink()  # forget the labels: the label stage asks again, the VLM's request cache answers
        rerun = run_module("embodied.label", *args, cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert len(server.bodies) == asked, "the rerun asked the VLM again"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labeler"] == "vlm"
    for key in ("heldout_accuracy", "agreement_with_true_reward", "swap_consistency", "abstain", "tie"):
        assert key in metrics["reward"], key
    assert metrics["reward"]["swap_consistency"] == 1.0  # the test server's judge is consistent


def _tiny_clip_folder(tmp_path: Path) -> Path:
    """An open_clip model folder (``open_clip_config.json`` + weights), as ``local-dir:`` reads it."""
    import open_clip

    folder = tmp_path / "tiny-clip"
    folder.mkdir()
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny").state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def test_main_job_trains_on_the_clip_reward_chosen_by_config(compose_config, tmp_path):
    """algo.reward=clip: the VLM-RM reward of each step's next frame relabels the data, with the
    same normalisation as the other sources, and IQL trains on it; no frames gives a clear error."""
    from embodied.datasets import load_dataset, make_dataset_id
    from reward_models.clip import CLIPReward

    folder = _tiny_clip_folder(tmp_path)
    overrides = small_train_overrides(tmp_path) + [
        "algo=iql", "algo.reward=clip", f"clip.model_name=local-dir:{folder}", "clip.pretrained=null", "clip.device=cpu",
        "dataset.frames=true", "dataset.recipe=frames32", "dataset.width=32", "dataset.height=32", "trainer.steps=10"]
    report = train(compose_config(overrides), tmp_path / "run")
    assert report["reward"]["source"] == "clip" and report["reward"]["normalization"] == "standardize"
    episodes = load_dataset(make_dataset_id("pointmass", "frames32"), keep_frames=True).episodes
    clip = CLIPReward(f"local-dir:{folder}", pretrained=None, device="cpu", goal_prompts=["a dot on top of the target"],
                      baseline_prompts=["a dot and a target"])
    expected = np.concatenate([clip(ep.frames[1:]) for ep in episodes])
    assert report["reward"]["relabeled_reward_mean"] == pytest.approx(float(expected.mean()), rel=1e-4)
    with pytest.raises(ValueError, match="algo.reward=clip needs rendered frames"):
        train(compose_config(small_train_overrides(tmp_path) + ["algo=iql", "algo.reward=clip", "dataset.frames=false"]),
              tmp_path / "run2")


def test_cli_label_with_the_clip_labeler_from_a_local_model_folder(tmp_path):
    """labeler=clip end to end with an open_clip model folder (local-dir:), built by the test."""
    folder = _tiny_clip_folder(tmp_path)
    args = [*small_train_overrides(tmp_path / "outputs"), "labeler=clip", f"clip.model_name=local-dir:{folder}",
            "clip.pretrained=null", "labeler.pairs=40", "labeler.segment_length=5",
            "dataset.width=32", "dataset.height=32", "reward_model.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_module("embodied.label", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["labeler"] == "clip" and "agreement_with_true_reward" in metrics["reward"]
    with sqlite3.connect(tmp_path / "run" / "labels" / "labels.sqlite") as db:
        (settings,), = db.execute("SELECT settings FROM labelers WHERE name = 'clip'").fetchall()
    provenance = json.loads(settings)
    assert provenance["model"] == f"local-dir:{folder}" and provenance["goal"] == ["a dot on top of the target"]


@pytest.mark.slow
def test_main_job_killed_during_training_resumes_from_its_last_checkpoint(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "embodied.train", *small_train_overrides(tmp_path / "outputs"),
            "trainer.steps=3000", "trainer.checkpoint_every=100", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while latest_checkpoint(run_dir / "checkpoints") is None or latest_checkpoint(run_dir / "checkpoints").name < "00000300":
        assert time.time() < deadline and proc.poll() is None, "training never reached step 300"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(run_dir / "checkpoints").name)
    assert 300 <= killed_at < 3000 and not (run_dir / "metrics.json").exists()

    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    resumed_at = int(rerun.stdout.split("(step ")[1].split(")")[0])
    assert resumed_at >= killed_at
    assert latest_checkpoint(run_dir / "checkpoints").name == "00003000"
    steps = [json.loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines() if "train/actor_loss" in l]
    assert steps == list(range(10, 3001, 10)), "every step logged once across the kill"


def test_label_stage_with_ensemble_disagreement_sampling(compose_config, tmp_path):
    from embodied.pipeline import dataset_stage, label_stage

    cfg = compose_config(small_train_overrides(tmp_path) + [
        "labeler.pairs=60", "labeler.segment_length=5", "labeler.sampling=disagreement",
        "reward_model.hidden_dims=[16]", "reward_model.max_epochs=3",
    ])
    episodes = dataset_stage(cfg).episodes
    labels = label_stage(cfg, episodes, tmp_path / "run")
    assert len(labels.pairs) == 60 and labels.provenance["sampling"] == "disagreement"
    assert label_stage(cfg, episodes, tmp_path / "run").pairs.tolist() == labels.pairs.tolist()  # cached
    with pytest.raises(ValueError, match="labeler.sampling"):
        OmegaConf.to_object(compose_config(["+task=pointmass", "labeler.sampling=active"]).labeler)


@pytest.mark.parametrize("normalization", ["standardize", "none"])
def test_true_and_learned_rewards_share_one_normalisation(compose_config, tmp_path, normalization):
    """algo.reward=gt goes through the same normalisation as the learned reward (the honest baseline)."""
    from embodied.datasets import load_dataset, make_dataset_id

    overrides = small_train_overrides(tmp_path) + ["algo=iql", "algo.reward=gt", f"algo.reward_normalization={normalization}",
                                                   "trainer.steps=10"]
    report = train(compose_config(overrides), tmp_path / "run")
    rewards = np.concatenate([ep.rewards for ep in load_dataset(make_dataset_id("pointmass", "mixed")).episodes])
    assert report["reward"]["source"] == "gt" and report["reward"]["normalization"] == normalization
    assert report["reward"]["relabeled_reward_mean"] == pytest.approx(rewards.mean(), rel=1e-4)
    expected_scale = 1 / (rewards.std() + 1e-8) if normalization == "standardize" else 1.0
    assert report["reward"]["relabeled_scale"] == pytest.approx(expected_scale, rel=1e-4)
    with pytest.raises(ValueError, match="reward_normalization"):
        OmegaConf.to_object(compose_config(["+task=pointmass", "algo.reward_normalization=minmax"]).algo)


def test_a_dataset_or_checkpoint_of_another_task_and_a_batch_larger_than_the_data_are_refused(compose_config, tmp_path):
    from embodied.checkpoint import CheckpointError
    from embodied.learners import restore_learner, save_learner
    from embodied.tasks import make_policy
    from policies import make_learner
    from policies.bc import BCConfig

    first = train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), tmp_path / "run")
    with pytest.raises(ValueError, match=r"trainer.batch_size=100000 is larger than the dataset's \d+ transitions"):
        train(compose_config(small_train_overrides(tmp_path) + ["trainer.batch_size=100000"]), tmp_path / "run2")
    # the PointMass dataset (obs 6, action 2) for the dressing task (obs 26, action 3)
    dressing_on_pointmass = [o for o in small_train_overrides(tmp_path) if not o.startswith("+task")] + [
        "+task=dressing", f"dataset.id={first['dataset_id']}"]
    with pytest.raises(ValueError, match="has observations of size 6 and actions of size 2; task 'dressing' has 26 and 3"):
        train(compose_config(dressing_on_pointmass), tmp_path / "run3")
    assert not (tmp_path / "run3" / "labels").exists()  # refused before any stage ran
    # a PointMass checkpoint evaluated on dressing, or resumed by a learner of other sizes
    with pytest.raises(ValueError, match="trained on observations of size 6 and actions of size 2; task 'dressing' has 26"):
        make_policy(compose_config(["+task=dressing"]).task, checkpoint=first["checkpoint"], device="cpu")
    save_learner(tmp_path / "ck", 1, make_learner(BCConfig(hidden_dims=[8]), 6, 2), 6, 2)
    with pytest.raises(CheckpointError, match="for observations of size 6 and actions of size 2; this run builds 'bc' for 26"):
        restore_learner(make_learner(BCConfig(hidden_dims=[8]), 26, 2), load_checkpoint(tmp_path / "ck"))
    with pytest.raises(CheckpointError, match="tensor shapes"):
        restore_learner(make_learner(BCConfig(hidden_dims=[16]), 6, 2), load_checkpoint(tmp_path / "ck"))


def test_a_run_folder_is_locked_while_a_job_writes_it(compose_config, tmp_path):
    from filelock import FileLock

    from embodied.pipeline import RunFolderError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with FileLock(str(run_dir / ".lock")):  # another job holds the folder
        with pytest.raises(RunFolderError, match="another job is writing"):
            train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), run_dir)
    assert train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), run_dir)["step"] == 10


def test_learning_curves_keep_the_final_evaluation_apart_from_the_small_ones(compose_config, tmp_path):
    """The 5-episode evaluations during training and the final 20-episode one are two series."""
    from embodied.pipeline import learning_curve_series

    overrides = small_train_overrides(tmp_path) + ["trainer.steps=40", "trainer.eval_every=20", "eval.episodes=3",
                                                   "eval.episodes_during_training=1"]
    train(compose_config(overrides), tmp_path / "run")
    series = learning_curve_series(tmp_path / "run" / "metrics.jsonl")
    assert sorted(series["eval/success_rate"]) == [1, 3]
    assert [step for step, _ in series["eval/success_rate"][1]] == [20]
    assert [step for step, _ in series["eval/success_rate"][3]] == [40]
    assert list(series["train/actor_loss"]) == [None] and (tmp_path / "run" / "plots" / "learning_curves.png").is_file()


def test_report_gives_units_and_stage_times(compose_config, tmp_path):
    report = train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), tmp_path / "run")
    assert report["units"]["distance_final"] == "m" and report["units"]["success_rate"] == "share of episodes"
    assert set(report["timings_s"]) == {"dataset", "labels, reward model and relabeling", "training and evaluation",
                                        "baseline evaluations", "videos and plots"}
    assert sum(report["timings_s"].values()) == pytest.approx(report["wall_time_s"], abs=0.5)
    text = (tmp_path / "run" / "report.md").read_text()
    assert "| distance_final |" in text and "| m |" in text and "## Time" in text


def test_a_rerun_with_other_settings_is_refused_naming_them(compose_config, tmp_path):
    from embodied.pipeline import RunFolderError

    overrides = small_train_overrides(tmp_path) + ["algo=iql", "labeler.pairs=40", "labeler.segment_length=5",
                                                   "reward_model.hidden_dims=[16]", "reward_model.max_epochs=2",
                                                   "trainer.steps=10"]
    train(compose_config(overrides), tmp_path / "run")
    with pytest.raises(RunFolderError, match=r"labeler.name: 'oracle' -> 'mistake'.*labeler.teacher.eps_mistake"):
        train(compose_config(overrides + ["labeler=mistake"]), tmp_path / "run")
    with pytest.raises(RunFolderError, match=r"algo.learner.expectile: None -> 0.9"):
        train(compose_config(overrides + ["algo.learner.expectile=0.9"]), tmp_path / "run")
    # more steps continue the run; how it shows does not matter
    again = train(compose_config(overrides + ["trainer.steps=20", "trainer.progress=true", "trainer.log_every=5"]),
                  tmp_path / "run")
    assert again["step"] == 20
    # fewer steps than the run has: not reported as if it had them
    with pytest.raises(RunFolderError, match=r"already trained to step 20, beyond trainer.steps=10; evaluate an "
                                             r"earlier checkpoint"):
        train(compose_config(overrides), tmp_path / "run")
    # a BC run does not read the labeler or the reward model: their settings are not its identity
    bc = small_train_overrides(tmp_path) + ["trainer.steps=10"]
    train(compose_config(bc), tmp_path / "bc")
    assert train(compose_config(bc + ["labeler=mistake", "reward_model.max_epochs=3", "trainer.steps=20"]),
                 tmp_path / "bc")["step"] == 20


def test_rerunning_the_same_command_continues_the_unfinished_run(tmp_path):
    from filelock import FileLock

    outputs = tmp_path / "outputs"
    args = small_train_overrides(outputs)
    first = run_module("embodied.train", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (run,) = outputs.glob("*/*_pointmass_bc")
    (run / "metrics.json").unlink()  # as if killed after its last checkpoint, before the report

    other_seed = run_module("embodied.train", *args, "seed=1", cwd=tmp_path)  # another identity: a new run
    assert other_seed.returncode == 0 and "continuing" not in other_seed.stdout
    assert len(list(outputs.glob("*/*_pointmass_bc"))) == 2
    for folder in outputs.glob("*/*_pointmass_bc"):
        if folder != run:
            shutil.rmtree(folder)

    with FileLock(str(run / ".lock"), timeout=0):  # a job is writing it: not taken over
        busy = run_module("embodied.train", *args, cwd=tmp_path)
    assert busy.returncode == 0 and "continuing" not in busy.stdout
    for folder in outputs.glob("*/*_pointmass_bc"):
        if folder != run:
            shutil.rmtree(folder)

    again = run_module("embodied.train", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"continuing the unfinished run {run}" in again.stdout
    assert list(outputs.glob("*/*_pointmass_bc")) == [run] and (run / "metrics.json").is_file()
    log = (run / "train.log").read_text()
    assert log.count("# ") >= 2 and "continuing the unfinished run" in log, "the log holds both jobs"

    fresh = run_module("embodied.train", *args, "resume=false", cwd=tmp_path)  # finished: a new run anyway
    assert fresh.returncode == 0 and len(list(outputs.glob("*/*_pointmass_bc"))) == 2


def test_a_failed_command_prints_one_clear_line_and_leaves_no_run_folder(tmp_path):
    outputs = tmp_path / "outputs"
    for job, extra, message in [
        ("embodied.train", ["trainer.steps=-1"], "error: trainer.steps=-1; expected >= 1"),
        ("embodied.train", ["dataset.id=nope/missing-v0"], "error: unknown dataset 'nope/missing-v0'"),
        ("embodied.evaluate", [f"checkpoint={tmp_path / 'none'}"], "error: no complete checkpoint at"),
        ("embodied.evaluate", ["policy=ghost"], "error: task 'pointmass' has no behaviour policies ['ghost']"),
        ("embodied.train", ["output_root=/proc/none"], "error: output_root=/proc/none: cannot write run folders there"),
        ("embodied.train", ["dataset.mixture={}"], "error: dataset.mixture={} changes nothing: Hydra merges"),
    ]:
        result = run_module(job, *small_train_overrides(outputs), *extra, cwd=tmp_path, full_error=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
        assert not [p for p in outputs.rglob("*") if p.is_dir()], f"{job} {extra} left {list(outputs.rglob('*'))}"


def test_the_job_log_holds_what_the_console_showed_with_one_bar_per_stage(tmp_path):
    outputs = tmp_path / "outputs"
    args = [a for a in small_train_overrides(outputs) if a != "trainer.progress=false"]
    result = run_module("embodied.train", *args, "trainer.eval_every=10", "dataset.mixture={expert: 1, noisy: 1}",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run,) = outputs.glob("*/*_pointmass_bc")
    log = (run / "train.log").read_text()
    warning = "warning: dataset.mixture={expert: 1, noisy: 1} also keeps {'random': 0.2} from the config"
    assert warning in result.stderr and warning in log
    assert "\r" not in log and "\x1b" not in log
    assert f"report: {run}" in log and '"success_rate"' in log
    lines = log.splitlines()
    assert sum(line.startswith("train: 100%") for line in lines) == 1
    # three evaluations during training, none with a bar of its own; the final one has one
    assert sum(line.startswith("evaluate: 100%") for line in lines) == 1, log
    assert sum(line.startswith("evaluate expert: 100%") for line in lines) == 1, log  # the baseline
    assert result.stderr.count("evaluate:") >= 1 and "evaluating" in result.stderr


def test_report_sets_the_expert_and_bc_runs_of_the_same_dataset_beside_the_learner(compose_config, tmp_path):
    from embodied.evaluation import evaluate_policy
    from embodied.tasks import make_env, make_policy

    outputs = tmp_path / "outputs"
    base = small_train_overrides(outputs) + ["trainer.steps=10", "eval.episodes=3"]
    bc = train(compose_config(base), outputs / "2026-01-01" / "00-00-00_pointmass_bc")
    train(compose_config(base + ["eval.episodes=2"]), outputs / "2026-01-01" / "00-00-01_pointmass_bc")  # other episodes
    cfg = compose_config(base + ["algo=iql", "algo.reward=gt"])
    report = train(cfg, outputs / "2026-01-01" / "00-00-02_pointmass_iql")
    expert = report["baselines"]["expert (behaviour policy)"]
    env = make_env(cfg.task)
    by_hand = evaluate_policy(env, make_policy(cfg.task, "expert")[0], 3, 1_000_000, list(cfg.task.info_keys),
                              list(cfg.task.metrics), progress=False)
    assert expert == by_hand and expert["success_rate"] == 1.0, "the expert on the learner's own seeds"
    assert list(report["baselines"])[1:] == ["bc (seed 0, 2026-01-01/00-00-00_pointmass_bc)"]
    assert report["baselines"]["bc (seed 0, 2026-01-01/00-00-00_pointmass_bc)"] == bc["eval"]
    text = (outputs / "2026-01-01" / "00-00-02_pointmass_iql" / "report.md").read_text()
    assert "| metric | this run (iql) | expert (behaviour policy) | bc (seed 0, 2026-01-01/00-00-00_pointmass_bc) | unit |" in text
    assert f"| success_rate | {report['eval']['success_rate']:.4g} | 1 | {bc['eval']['success_rate']:.4g} |" in text
    with pytest.raises(ValueError, match=r"eval.baselines=\['oracle'\]: task 'pointmass' has no behaviour policy"):
        train(compose_config(base + ["eval.baselines=[oracle]"]), tmp_path / "bad")


def test_damaged_run_files_are_named_or_rebuilt_and_an_unwritable_datasets_root_is_named(compose_config, tmp_path):
    from embodied.datasets import DatasetError

    run = tmp_path / "run"
    report = train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), run)
    (run / "metrics.json").write_text("nope")  # damaged output: rebuilt from the checkpoint, nothing retrained
    again = train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), run)
    assert again["eval"] == report["eval"] and json.loads((run / "metrics.json").read_text())["eval"] == report["eval"]
    (run / "run_identity.json").write_text("{garbage")
    with pytest.raises(RunFolderError, match=r"run_identity.json cannot be read \(.+\); it records the settings"):
        train(compose_config(small_train_overrides(tmp_path) + ["trainer.steps=10"]), run)
    with pytest.raises(DatasetError, match=r"under the datasets root /proc/nonexistent \(No such file or directory\); "
                                           r"set dataset.root=<a writable folder>"):
        train(compose_config(small_train_overrides(tmp_path) + ["dataset.root=/proc/nonexistent"]), tmp_path / "other")


def test_judges_in_the_label_stage_decide_the_pairs_where_one_segment_breaks_the_rule(compose_config, tmp_path):
    """PointMass with a workspace judge whose box leaves out x > 0.1 m: every labelled pair with
    exactly one segment reaching there prefers the other, and the run's report counts it."""
    from embodied.pipeline import dataset_stage, label_stage
    from reward_models.judges import WorkspaceJudge, segment_violations

    overrides = small_train_overrides(tmp_path) + [
        "algo=iql", "labeler.pairs=60", "labeler.segment_length=5", "reward_model.hidden_dims=[16]",
        "reward_model.max_epochs=2", "trainer.steps=10", "judges=[workspace]", "judges.workspace.low=[-10,-10]",
        "judges.workspace.high=[0.1,10]", "judges.workspace.position_indices=[0,1]"]
    cfg = compose_config(overrides)
    episodes = dataset_stage(cfg).episodes
    labels = label_stage(cfg, episodes, tmp_path / "run")
    judge = WorkspaceJudge([-10, -10], [0.1, 10], position_indices=[0, 1])
    violates = segment_violations([judge.judge(ep) for ep in episodes], labels.pairs, 5)
    one_sided = violates[:, 0] != violates[:, 1]
    assert one_sided.sum() >= 5, "the box must split some pairs for this test to mean anything"
    assert np.array_equal(labels.labels[one_sided], np.where(violates[one_sided, 0], 1.0, 0.0))
    assert labels.provenance["judges"] == ["workspace"]
    assert labels.provenance["judge_overrides"] + labels.provenance["judge_agreed"] + \
        labels.provenance["judge_decided_abstains"] == one_sided.sum()
    with sqlite3.connect(tmp_path / "run" / "labels" / "labels.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == len(episodes)
    report = train(cfg, tmp_path / "run")
    assert report["reward"]["judge_overrides"] == labels.provenance["judge_overrides"]
    # judges are part of what a learned-reward run computes
    with pytest.raises(RunFolderError, match=r"judges.workspace.high"):
        train(compose_config(overrides[:-3] + ["judges.workspace.low=[-10,-10]", "judges.workspace.high=[0.2,10]",
                                               "judges.workspace.position_indices=[0,1]"]), tmp_path / "run")


def test_the_cost_constrained_learner_trains_on_the_judges_costs(compose_config, tmp_path):
    overrides = small_train_overrides(tmp_path) + [
        "algo=iql_safe", "algo.reward=gt", "trainer.steps=20", "algo.learner.hidden_dims=[16]"]
    with pytest.raises(ValueError, match=r"algo=iql_safe trains a cost critic on the judges' per-step costs, but no "
                                         r"judge is configured; add judges=\[force\]"):
        train(compose_config(overrides), tmp_path / "none")
    judged = overrides + ["judges=[workspace]", "judges.workspace.low=[-10,-10]", "judges.workspace.high=[0.1,10]",
                          "judges.workspace.position_indices=[0,1]"]
    report = train(compose_config(judged), tmp_path / "run")
    assert report["reward"]["judges"] == ["workspace"] and report["reward"]["cost_per_episode_mean"] > 0
    assert 0 < report["reward"]["episodes_with_cost"] <= 1 and report["step"] == 20
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/cost_critic_loss" in row and "train/feasible" in row for row in rows)
    # the judges decide what this run computes, even on the true reward
    with pytest.raises(RunFolderError, match=r"judges.workspace.high"):
        train(compose_config(judged[:-2] + ["judges.workspace.high=[0.5,10]", "judges.workspace.position_indices=[0,1]"]),
              tmp_path / "run")
