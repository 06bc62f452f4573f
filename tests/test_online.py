"""The online loop: vector-env transitions, the buffer in checkpoints, resume after a kill."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from embodied.checkpoint import latest_checkpoint, load_checkpoint
from embodied.online import OnlineConfig, OnlineSampler, make_vector_env, train_online
from embodied.tasks import make_env
from policies.sac import SACConfig, SACLearner
from tests.conftest import compose_online


def test_vector_env_transitions_keep_the_last_observation_and_bootstrap_through_time_limits(compose_config):
    """Two PointMass copies (100-step time limit) for 130 random steps: inside an episode each
    transition's next observation is the next one's observation; at the time limit it is the
    episode's real last observation (replayed in a single env with the same seed and actions), not
    the reset observation, and the transition is not terminal."""
    task = compose_config(["+task=pointmass"]).task
    envs = make_vector_env(task, 2)
    learner = SACLearner(SACConfig(hidden_dims=[8]), 6, 2)
    sampler = OnlineSampler(envs, learner, OnlineConfig(env_steps=2000, learning_starts=1000, num_envs=2), seed=3)
    try:
        for _ in range(130):
            sampler.step()
    finally:
        envs.close()
    store = {k: v[: len(sampler.buffer)].numpy() for k, v in sampler.buffer.storage.items()}
    assert len(sampler.buffer) == 260 and sampler.env_steps == 260 and sampler.episodes == 2
    obs, nxt = store["observation"].reshape(130, 2, 6), store["next_observation"].reshape(130, 2, 6)
    actions = store["action"].reshape(130, 2, 2)
    assert np.array_equal(nxt[:98], obs[1:99])  # inside the first episodes
    assert not np.allclose(nxt[99], obs[100])  # the episode ended: the next row starts a new one
    assert np.all(store["terminal"] == 0.0)  # time limits are truncations: the critic bootstraps
    env = gym.make("embodied/PointMass-v0")
    for i in range(2):
        first, _ = env.reset(seed=3 + 10_007 + i)  # the vector env seeds copy i with seed + i
        assert np.allclose(first, obs[0, i])
        for t in range(100):
            last, *_ = env.step(actions[t, i])
        assert np.allclose(last, nxt[99, i], atol=1e-6)
    env.close()
    assert sampler.training_stats()["train_episodes"] == 2.0 and "train_return" in sampler.training_stats()


def test_online_config_checks_its_values():
    with pytest.raises(ValueError, match="learning_starts"):
        OnlineConfig(env_steps=100, learning_starts=100)
    with pytest.raises(ValueError, match="vectorization"):
        OnlineConfig(vectorization="threads")
    with pytest.raises(ValueError, match="updates_per_step"):
        OnlineConfig(updates_per_step=0)
    config = OnlineConfig(env_steps=1000, learning_starts=200, updates_per_step=0.5)
    assert config.total_updates == 400 and config.env_steps_before(1) == 202 and config.env_steps_before(400) == 1000


def _small(root, extra=()):
    return compose_online(["+task=pointmass", "online.env_steps=360", "online.learning_starts=120", "online.num_envs=2",
                           "online.eval_every=120", "online.checkpoint_every=80", "algo.learner.hidden_dims=[16,16]",
                           "trainer.batch_size=32", "trainer.log_every=20", "trainer.progress=false", "eval.episodes=1",
                           "eval.episodes_during_training=1", "eval.videos=0", "device=cpu", f"output_root={root}", *extra])


def test_online_run_killed_mid_way_resumes_with_its_buffer(tmp_path, monkeypatch):
    cfg = _small(tmp_path)
    folder = tmp_path / "run"
    original = OnlineSampler.step
    calls = {"n": 0}

    def killed(self):
        calls["n"] += 1
        if calls["n"] > 100:  # 200 env steps: after the checkpoint at update 80 (env step 200 is due at update 80)
            raise KeyboardInterrupt("killed")
        original(self)

    monkeypatch.setattr(OnlineSampler, "step", killed)
    with pytest.raises(KeyboardInterrupt):
        train_online(cfg, folder, progress=False)
    saved = load_checkpoint(latest_checkpoint(folder / "checkpoints"))
    assert saved.step == 80
    sampler_state = saved.state["sampler"]
    assert sampler_state["env_steps"] == 200 and sampler_state["updates"] == 80
    assert sampler_state["buffer"]["size"] == 200  # every transition so far is in the checkpoint
    stored = sampler_state["buffer"]["storage"]["observation"]

    monkeypatch.setattr(OnlineSampler, "step", original)
    resumed: dict = {}
    original_load = OnlineSampler.load_state_dict

    def load(self, state):
        original_load(self, state)
        resumed["size"], resumed["rows"] = len(self.buffer), self.buffer.storage["observation"][:200].clone()

    monkeypatch.setattr(OnlineSampler, "load_state_dict", load)
    report = train_online(cfg, folder, progress=False)
    assert resumed["size"] == 200 and torch.equal(resumed["rows"], torch.as_tensor(stored))
    assert report["resumed"] and report["updates"] == 240 and report["env_steps"] == 360
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/env_steps" in r]
    assert [r["step"] for r in evals] == [120, 240]  # no row twice, none lost
    assert [r["eval/env_steps"] for r in evals] == [240, 360]
    assert (folder / "plots" / "learning_curve.png").exists() and (folder / "metrics.json").exists()
    # finished: a rerun returns the stored result without acting
    again = train_online(cfg, folder, progress=False)
    assert again["env_steps"] == 360 and again["eval"] == report["eval"]


def test_clip_rewards_are_scored_in_chunks_on_the_frame_after_each_step(compose_config, tiny_checkpoint):
    """Two PointMass copies rendering 32-pixel frames, CLIP scores every 8 frames together: each
    stored reward is the CLIP reward of the frame after its step (replayed in a single env), the
    last step of an episode included (not the reset frame); a checkpoint holds every step."""
    from envs.rendering import FrameInInfo
    from reward_models.clip import CLIPReward
    from tests.conftest import TINY

    clip = CLIPReward(TINY, pretrained=None, checkpoint=str(tiny_checkpoint[0]), goal_prompts=["a dot on a target"],
                      baseline_prompts=["a dot"], batch_size=16, device="cpu")
    task = compose_config(["+task=pointmass"]).task
    envs = make_vector_env(task, 2, frame_size=32)
    config = OnlineConfig(env_steps=2000, learning_starts=1000, num_envs=2, reward="clip", clip_chunk=8)
    sampler = OnlineSampler(envs, SACLearner(SACConfig(hidden_dims=[8]), 6, 2), config, seed=5, frame_reward=clip)
    try:
        for _ in range(101):
            sampler.step()
        assert sampler.env_steps == 202 and len(sampler.buffer) == 200  # 2 steps wait for the next chunk
        state = sampler.state_dict()
        assert state["buffer"]["size"] == 202 and len(sampler.buffer) == 202
    finally:
        envs.close()
    store = {k: v[:202].numpy() for k, v in sampler.buffer.storage.items()}
    actions, rewards = store["action"].reshape(101, 2, 2), store["reward"].reshape(101, 2)
    env = FrameInInfo(make_env(task, render_mode="rgb_array", width=32, height=32))
    frames = []
    env.reset(seed=5 + 10_007)
    for t in range(100):
        frames.append(env.step(actions[t, 0])[-1]["frame"])
    env.close()
    expected = clip(np.stack(frames))
    np.testing.assert_allclose(rewards[:100, 0], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(rewards[:, 0], rewards[0, 0])  # the reward follows the frames


def test_aggregate_groups_runs_by_task_and_row_and_compares_with_sac(tmp_path):
    from embodied.online import aggregate, render_table

    def run(name, reward, seed, finals, labeler=None, task="drawer-open-v3"):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"step": i, "eval/env_steps": 1000.0 * (i + 1), "eval/success_rate": v, "eval/return_mean": 1000 * v + 100}
                for i, v in enumerate(finals)]
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (folder / "metrics.json").write_text(json.dumps({
            "task": "metaworld", "env_task": task, "algo": "sac", "seed": seed, "reward": reward, "labeler": labeler,
            "online": {}, "eval": {"success_rate": finals[-1], "return_mean": 1000 * finals[-1] + 100,
                                   "queries": 100.0 if labeler else 0.0}}))

    run("a", "gt", 0, [0.0, 0.6, 0.8])
    run("b", "gt", 1, [0.2, 0.4, 1.0])
    run("c", "pebble", 0, [0.0, 0.2, 0.6], "oracle")
    run("d", "pebble", 1, [0.0, 0.4, 0.8], "oracle")
    run("e", "pebble", 0, [0.0, 0.0, 0.2], "mistake", task="button-press-topdown-v3")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text(json.dumps({"step": 5}))  # a main-job run: not counted
    summary = aggregate(tmp_path)
    drawer = summary["tasks"]["drawer-open-v3"]
    assert summary["runs"] == 5 and set(drawer) == {"SAC, true reward", "PEBBLE, oracle"}
    assert drawer["SAC, true reward"]["final_mean"] == pytest.approx(0.9)
    assert drawer["PEBBLE, oracle"]["share_of_sac"] == pytest.approx(0.7 / 0.9)
    assert drawer["PEBBLE, oracle"]["curve"][1] == pytest.approx([2000.0, 0.3, 0.2, 0.4])
    # final returns 700 and 900 against SAC's 900 and 1100
    assert drawer["PEBBLE, oracle"]["return_share_of_sac"] == pytest.approx(800 / 1000)
    assert drawer["PEBBLE, oracle"]["return_curve"][1] == pytest.approx([2000.0, 400.0, 300.0, 500.0])
    # late success, the last 3 evaluations: SAC (0.0+0.6+0.8)/3 and (0.2+0.4+1.0)/3, mean 0.5;
    # PEBBLE-oracle 0.8/3 and 1.2/3, mean 1/3
    assert drawer["SAC, true reward"]["late_mean"] == pytest.approx(0.5)
    assert drawer["PEBBLE, oracle"]["late_share_of_sac"] == pytest.approx((1 / 3) / 0.5)
    table = render_table(summary)
    assert "| drawer-open-v3 | PEBBLE, oracle | 0.70 ± 0.10 | 78 % | 0.33 | 67 % | 800 ± 100 | 80 % | 100 | 2 |" in table
    assert "| button-press-topdown-v3 | PEBBLE, mistake | 0.20 ± 0.00 | – | 0.07 | – | 300 ± 0 | – |" in table
    assert aggregate(tmp_path, late=1)["tasks"]["drawer-open-v3"]["PEBBLE, oracle"]["late_mean"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="late=0"):
        aggregate(tmp_path, late=0)
    assert (tmp_path / "results_curves.png").exists() and (tmp_path / "results.md").exists()


def test_runs_with_other_labelers_or_prompts_have_other_identities():
    from embodied.online import online_identity

    base = ["+task=pointmass", "online.reward=pebble"]
    oracle, mistake = compose_online([*base, "labeler=oracle"]), compose_online([*base, "labeler=mistake"])
    assert online_identity(oracle) != online_identity(mistake)
    gt_a, gt_b = compose_online(["+task=pointmass", "labeler=oracle"]), compose_online(["+task=pointmass", "labeler=mistake"])
    assert online_identity(gt_a) == online_identity(gt_b)  # the true reward reads no labeler
    assert online_identity(compose_online(["+task=pointmass", "online.reward=clip", "clip.alpha=0.0"])) != \
        online_identity(compose_online(["+task=pointmass", "online.reward=clip", "clip.alpha=1.0"]))


def test_async_copies_step_in_their_own_processes(compose_config):
    task = compose_config(["+task=pointmass"]).task
    envs = make_vector_env(task, 2, "async")
    try:
        assert isinstance(envs, gym.vector.AsyncVectorEnv)
        sampler = OnlineSampler(envs, SACLearner(SACConfig(hidden_dims=[8]), 6, 2),
                                OnlineConfig(env_steps=100, learning_starts=4, num_envs=2), seed=0)
        batch = sampler.sample(8, torch.Generator().manual_seed(0))
        assert sampler.env_steps == 6 and batch["observation"].shape == (8, 6)  # 3 vector steps before update 1
    finally:
        envs.close()


def test_the_bpref_preset_has_bpref_metaworld_scale():
    """``+experiment=bpref_metaworld``: B-Pref's button-press run_PEBBLE.sh (1M env steps, SAC
    3x256 at batch 512, 50 queries every 5,000 steps after 9,000 unsupervised ones, 10,000 in
    all), and the CPU preset it is compared with stays at a tenth of it."""
    from hydra.utils import instantiate

    from embodied.online import read_online

    overrides = ["+task=metaworld", "online.reward=pebble", "labeler=oracle"]
    cfg = compose_online([*overrides, "+experiment=bpref_metaworld"])
    settings = read_online(cfg)
    assert (settings.env_steps, settings.learning_starts) == (1_000_000, 1000)
    feedback = settings.feedback
    assert (feedback.unsupervised_steps, feedback.interval, feedback.queries, feedback.max_feedback) == (9000, 5000, 50, 10_000)
    rounds = (settings.env_steps - settings.learning_starts - feedback.unsupervised_steps) // feedback.interval
    assert 9_900 <= min(feedback.max_feedback, rounds * feedback.queries) <= 10_000  # the budget is reached
    assert cfg.trainer.batch_size == 512 and cfg.device == "cuda"
    assert instantiate(cfg.algo.learner).hidden_dims == [256, 256, 256]
    assert list(cfg.reward_model.hidden_dims) == [256, 256, 256]
    cpu = read_online(compose_online(overrides))
    assert (cpu.env_steps, cpu.feedback.max_feedback) == (100_000, 10_000)
