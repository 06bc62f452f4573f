"""PEBBLE while acting: the state-entropy reward, query rounds, relabelling, asynchronous labeling
that never stalls the learner, and resume without asking again."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from embodied.online import FeedbackSettings, OnlineConfig, OnlineSampler, make_vector_env, train_online
from policies.sac import SACConfig, SACLearner
from reward_models.bradley_terry import RewardModelConfig
from reward_models.functions import BradleyTerryReward
from reward_models.online import EpisodePool, FeedbackWorker, RunningStd, query_segments, state_entropy_reward
from reward_models.teachers import ScriptedTeacher
from tests.conftest import compose_online


def test_state_entropy_reward_is_the_distance_to_the_kth_neighbour():
    g = torch.Generator().manual_seed(0)
    states, reference = torch.randn(7, 3, generator=g), torch.randn(50, 3, generator=g)
    for k in (1, 3, 5):
        brute = torch.stack([((reference - s) ** 2).sum(-1).sqrt().sort().values[k - 1] for s in states])
        assert torch.allclose(state_entropy_reward(states, reference, k, chunk=8), brute, atol=1e-5)
    # a state inside the reference is its own nearest neighbour: k + 1 skips it
    assert torch.allclose(state_entropy_reward(reference[:4], reference, 1), torch.zeros(4), atol=1e-3)
    with pytest.raises(ValueError, match="nearest neighbours"):
        state_entropy_reward(states, reference[:2], 3)
    stats = RunningStd()
    values = torch.randn(1000, generator=g) * 3
    for part in values.split(100):
        stats.update(part)
    assert stats.std == pytest.approx(float(values.std(unbiased=False)), rel=1e-3)


def _pebble_config(**feedback) -> OnlineConfig:
    settings = dict(unsupervised_steps=100, interval=100, queries=20, max_feedback=40, segment_length=10,
                    sampling="disagreement", pool_episodes=10, asynchronous=False)
    settings.update(feedback)
    return OnlineConfig(env_steps=5000, learning_starts=50, reward="pebble", feedback=FeedbackSettings(**settings))


def _sampler(compose_config, tmp_path, teacher=None, **feedback):
    task = compose_config(["+task=pointmass"]).task
    config = _pebble_config(**feedback)
    worker = FeedbackWorker(teacher or ScriptedTeacher("oracle"), RewardModelConfig(hidden_dims=[16], max_epochs=5),
                            tmp_path / "feedback", seed=0, asynchronous=config.feedback.asynchronous)
    torch.manual_seed(0)
    learner = SACLearner(SACConfig(hidden_dims=[16]), 6, 2)
    return OnlineSampler(make_vector_env(task, 1), learner, config, seed=0, feedback=worker)


def test_the_buffer_is_relabeled_after_each_refit_and_the_first_model_resets_the_critics(compose_config, tmp_path):
    sampler = _sampler(compose_config, tmp_path)
    g = torch.Generator().manual_seed(0)
    try:
        batch = sampler.sample(32, g)  # pre-training: the state-entropy reward, not the stored one
        assert sampler.reward_model is None and torch.all(batch["reward"] > 0)
        assert torch.all(sampler.buffer.storage["reward"][: len(sampler.buffer)] == 0)
        critic = {k: v.clone() for k, v in sampler.learner.critic.state_dict().items()}
        while sampler.reward_model is None:
            sampler.sample(32, g)
        assert sampler.rounds_submitted == 1 and sampler.queries_asked == 20 and sampler.relabels == 1
        assert all(not torch.equal(v, sampler.learner.critic.state_dict()[k]) for k, v in critic.items())
        assert torch.equal(sampler.learner.target_critic.state_dict()["q1.0.weight"],
                           sampler.learner.critic.state_dict()["q1.0.weight"])

        def stored_matches_model() -> bool:
            size, s = len(sampler.buffer), sampler.buffer.storage
            expected = BradleyTerryReward(sampler.reward_model)({k: s[k][:size] for k in ("observation", "action",
                                                                                          "next_observation")})
            return torch.allclose(s["reward"][:size], expected, atol=1e-5)

        assert stored_matches_model()
        first = sampler.reward_model
        while sampler.reward_round < 1:  # the second round: disagreement sampling, a new model, a relabel
            sampler.sample(32, g)
        assert sampler.reward_model is not first and sampler.relabels == 2 and stored_matches_model()
        for _ in range(30):  # new transitions get the current model's reward when stored
            sampler.sample(32, g)
        assert stored_matches_model() and sampler.queries_asked == 40  # the budget: no third round
        stats = sampler.training_stats()
        assert stats["queries"] == 40 and stats["answered"] == 40 and -1 <= stats["reward_correlation"] <= 1
    finally:
        sampler.envs.close()
        sampler.feedback.close()


@dataclass
class SlowTeacher(ScriptedTeacher):
    """The oracle teacher answering one pair every ``delay`` seconds (a slow person or VLM)."""

    delay: float = 0.05

    def answers(self, episodes, pairs, segment_length, seed=0, workdir=None):
        for answer in super().answers(episodes, pairs, segment_length, seed, workdir):
            time.sleep(self.delay)
            yield answer


def test_a_slow_labeler_never_stalls_the_learner(compose_config, tmp_path):
    """With asynchronous labeling the learner keeps sampling (acting and updating) while a round
    of 20 answers at 0.05 s each is labelled; the model is taken up when it lands."""
    sampler = _sampler(compose_config, tmp_path, SlowTeacher("oracle", delay=0.05), asynchronous=True, max_feedback=20)
    g = torch.Generator().manual_seed(0)
    try:
        while sampler.rounds_submitted == 0:
            sampler.sample(32, g)
        updates_while_labeling = 0
        while sampler.reward_model is None:  # the learner goes on without the model
            sampler.sample(32, g)
            updates_while_labeling += 1
            if updates_while_labeling == 5:
                assert sampler.feedback.pending == 1
            assert updates_while_labeling < 100_000
        assert updates_while_labeling >= 5 and sampler.relabels == 1 and sampler.feedback.pending == 0
    finally:
        sampler.envs.close()
        sampler.feedback.close()


def test_closing_the_worker_lets_the_round_in_flight_finish(compose_config, tmp_path):
    """At a run's end the labeling thread must not outlive close(): a thread still fitting with
    torch at interpreter exit aborted finished Meta-World runs with exit code 134. The round here
    takes about 6 s, longer than the 5 s close() used to wait."""
    sampler = _sampler(compose_config, tmp_path, SlowTeacher("oracle", delay=0.3), asynchronous=True, max_feedback=20)
    g = torch.Generator().manual_seed(0)
    try:
        while sampler.rounds_submitted == 0:
            sampler.sample(32, g)
        assert sampler.feedback.pending == 1
    finally:
        sampler.envs.close()
        sampler.feedback.close()
    assert sampler.feedback._thread is None  # stopped
    assert sampler.feedback.rounds_done == [0] and sampler.feedback.pending == 0
    assert len(sampler.feedback.labels) == 20


def test_a_failing_labeler_surfaces_in_the_learner(compose_config, tmp_path):
    class Broken(ScriptedTeacher):
        def answers(self, *args, **kwargs):
            raise ConnectionError("labeler unreachable")
            yield  # a generator

    sampler = _sampler(compose_config, tmp_path, Broken("oracle"), asynchronous=True)
    g = torch.Generator().manual_seed(0)
    try:
        with pytest.raises(ConnectionError, match="unreachable"):
            for _ in range(400):
                sampler.sample(32, g)
                sampler.feedback.wait(timeout=10) if sampler.rounds_submitted else None
    finally:
        sampler.envs.close()
        sampler.feedback.close()


def test_queries_come_from_the_pool_as_short_episodes(compose_config):
    rng = np.random.default_rng(0)
    pool = EpisodePool(2)
    for e in range(3):
        n = 30
        pool.add(type("Ep", (), {"observations": np.full((n + 1, 2), e, np.float32), "actions": np.zeros((n, 1), np.float32),
                                 "rewards": np.arange(n, dtype=np.float32) + 100 * e, "terminations": np.zeros(n, bool),
                                 "truncations": np.r_[np.zeros(n - 1, bool), True]})())
    segments, pairs = query_segments(pool, 8, 5, rng)
    assert len(pool) == 2 and len(segments) == 16 and pairs.shape == (8, 2, 2)
    assert {int(s.observations[0, 0]) for s in segments} <= {1, 2}  # the oldest episode left the pool
    for s in segments:
        assert len(s) == 5 and s.observations.shape == (6, 2)
        assert np.array_equal(np.diff(s.rewards), np.ones(4))  # consecutive steps of one episode
    assert pairs[:, :, 1].max() == 0 and np.array_equal(pairs[:, :, 0].ravel(), np.arange(16))


def _pebble_run(tmp_path, checkpoint_every: int):
    """A small PEBBLE run on PointMass: rounds of 20 queries at env steps 150, 250 and 350."""
    return compose_online(["+task=pointmass", "online.reward=pebble", "labeler=oracle", "online.env_steps=500",
                           "online.learning_starts=50", "online.feedback.unsupervised_steps=100", "online.feedback.interval=100",
                           "online.feedback.queries=20", "online.feedback.max_feedback=60", "online.feedback.segment_length=10",
                           "online.feedback.asynchronous=false", "online.eval_every=0",
                           f"online.checkpoint_every={checkpoint_every}", "reward_model.hidden_dims=[16]",
                           "reward_model.max_epochs=5", "algo.learner.hidden_dims=[16]", "trainer.batch_size=16",
                           "trainer.progress=false", "eval.episodes=1", "eval.videos=0", "device=cpu", f"output_root={tmp_path}"])


def _count_questions(monkeypatch) -> list[int]:
    """The oracle teacher, counting how many pairs each call asks."""
    asked: list[int] = []
    original = ScriptedTeacher.answers

    def counting(self, episodes, pairs, segment_length, seed=0, workdir=None):
        asked.append(len(pairs))
        yield from original(self, episodes, pairs, segment_length, seed, workdir)

    monkeypatch.setattr(ScriptedTeacher, "answers", counting)
    return asked


def _killed_at(monkeypatch, env_steps: int):
    """Make the run stop (as if killed) when it reaches ``env_steps``; returns the real step."""
    step = OnlineSampler.step

    def killed(self):
        if self.env_steps >= env_steps:
            raise KeyboardInterrupt("killed")
        step(self)

    monkeypatch.setattr(OnlineSampler, "step", killed)
    return step


def test_a_pebble_run_killed_mid_way_resumes_without_asking_again(tmp_path, monkeypatch):
    cfg, folder = _pebble_run(tmp_path, checkpoint_every=50), tmp_path / "run"
    asked = _count_questions(monkeypatch)
    step = _killed_at(monkeypatch, 330)  # after rounds 0 (env step 150) and 1 (250), before round 2 (350)
    with pytest.raises(KeyboardInterrupt):
        train_online(cfg, folder, progress=False)
    assert asked == [20, 20]
    monkeypatch.setattr(OnlineSampler, "step", step)
    report = train_online(cfg, folder, progress=False)
    assert asked == [20, 20, 20]  # only round 2 asked after the restart
    assert report["resumed"] and report["eval"]["queries"] == 60 and report["eval"]["answered"] == 60
    assert sorted(p.name for p in (folder / "feedback").glob("*.npz")) == [f"round_000{i}.npz" for i in range(3)]


def test_rounds_after_the_last_checkpoint_are_taken_up_not_drawn_again(tmp_path, monkeypatch):
    """Checkpoints at updates 150 and 300 (env steps 200, 350); round 1 is asked at env step 250 and
    the run is killed at 330: the checkpoint knows one round, the folder holds two. The restart
    keeps round 1's segments and answers and asks only round 2."""
    cfg, folder = _pebble_run(tmp_path, checkpoint_every=150), tmp_path / "run"
    step = _killed_at(monkeypatch, 330)
    with pytest.raises(KeyboardInterrupt):
        train_online(cfg, folder, progress=False)
    round_1 = (folder / "feedback" / "round_0001.npz").read_bytes()
    asked = _count_questions(monkeypatch)
    monkeypatch.setattr(OnlineSampler, "step", step)
    report = train_online(cfg, folder, progress=False)
    assert (folder / "feedback" / "round_0001.npz").read_bytes() == round_1
    assert asked == [20] and report["eval"]["queries"] == 60 and report["eval"]["answered"] == 60


def test_rl_vlm_f_queries_show_the_vlm_the_frame_after_each_single_step(compose_config, tmp_path):
    """RL-VLM-F: PEBBLE with the VLM labeler (a real HTTP server on 127.0.0.1 that prefers the
    brighter image) and one-step segments. The pool keeps the frames (the last step's frame, not
    the reset's), the segments carry the frame after their step, and every query is answered."""
    from embodied.tasks import make_env
    from envs.rendering import FrameInInfo
    from reward_models.online import load_round
    from reward_models.vlm import VLMPreferenceLabeler
    from tests.vlm_server import FakeVLM

    task = compose_config(["+task=pointmass"]).task
    config = _pebble_config(segment_length=1, queries=12, max_feedback=12)
    with FakeVLM() as server:
        labeler = VLMPreferenceLabeler(base_url=server.url, model="test-vlm", task="move the dot onto the target",
                                       concurrency=2, requests_per_minute=0, timeout_s=5, max_retries=1, backoff_s=0.01,
                                       progress=False)
        worker = FeedbackWorker(labeler, RewardModelConfig(hidden_dims=[16], max_epochs=3), tmp_path / "feedback",
                                asynchronous=False)
        envs = make_vector_env(task, 2, frame_size=32)
        sampler = OnlineSampler(envs, SACLearner(SACConfig(hidden_dims=[8]), 6, 2), config, seed=1, feedback=worker)
        g = torch.Generator().manual_seed(0)
        try:
            assert sampler.keep_frames
            while sampler.rounds_submitted == 0:
                sampler.sample(16, g)
            episode = sampler.pool.episodes[0]
            assert episode.frames.shape == (101, 32, 32, 3)
            replay = FrameInInfo(make_env(task, render_mode="rgb_array", width=32, height=32))
            _, info = replay.reset(seed=1 + 10_007)
            frames = [info["frame"]] + [replay.step(a)[-1]["frame"] for a in episode.actions]
            replay.close()
            assert np.array_equal(np.stack(frames), episode.frames)
            segments, pairs = load_round(worker.round_path(0))
            assert len(segments) == 24 and all(s.frames.shape == (2, 32, 32, 3) for s in segments)
            assert len(worker.labels) == 12 and pairs.shape == (12, 2, 2)
            assert int((~np.isnan(worker.labels)).sum()) >= 10 and len(server.bodies) >= 12  # two requests per pair
        finally:
            envs.close()
            worker.close()
