"""Preference data, B-Pref scripted teachers and Bradley-Terry reward models."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import envs
from embodied.data import rollout
from envs.pointmass import PointMassExpert
from envs.policies import NoisyPolicy, RandomPolicy
from reward_models.bradley_terry import RewardModelConfig, bradley_terry_loss, fit_reward_model
from reward_models.functions import BradleyTerryReward, normalize_rewards
from reward_models.functions import relabel as relabel_flat
from reward_models.preferences import PreferenceLabels, sample_pairs, segment_sums
from reward_models.teachers import TEACHERS, ScriptedTeacher


def relabel(model, episodes, normalize: bool = True) -> list[np.ndarray]:
    """Per-episode learned rewards through the reward-function seam, standardised like the main job."""
    flat = relabel_flat(BradleyTerryReward(model), episodes)
    if normalize:
        flat, _ = normalize_rewards(flat, "standardize")
    return np.split(flat.numpy(), np.cumsum([len(e.actions) for e in episodes])[:-1])


def test_labels_are_validated():
    with pytest.raises(ValueError, match=r"\(N, 2, 2\)"):
        PreferenceLabels(np.zeros((3, 2)), np.zeros(3), 5)
    with pytest.raises(ValueError, match="0, 0.5, 1 or NaN"):
        PreferenceLabels(np.zeros((2, 2, 2)), np.array([0.0, 0.3]), 5)
    labels = PreferenceLabels(np.zeros((4, 2, 2)), np.array([0.0, 1.0, 0.5, np.nan]), 5)
    assert labels.answered.tolist() == [True, True, True, False]
    assert labels.rates() == {"abstain": 0.25, "tie": 0.25}


def test_pairs_fit_in_their_episodes_and_differ():
    rng = np.random.default_rng(0)
    lengths = [12, 3, 30]
    pairs = sample_pairs(lengths, 5, 500, rng)
    assert pairs.shape == (500, 2, 2)
    episodes, starts = pairs[..., 0], pairs[..., 1]
    assert np.all(starts + 5 <= np.asarray(lengths)[episodes])
    assert not np.any(episodes == 1)  # too short for a segment of 5
    assert not np.any(np.all(pairs[:, 0] == pairs[:, 1], axis=-1))
    with pytest.raises(ValueError, match="do not fit"):
        sample_pairs([3], 5, 2, rng)


def test_segment_sums_apply_the_myopic_discount():
    values = [np.array([1.0, 2.0, 3.0, 4.0])]
    pairs = np.array([[[0, 0], [0, 1]]])
    assert segment_sums(values, pairs, 3).tolist() == [[6.0, 9.0]]
    assert np.allclose(segment_sums(values, pairs, 3, gamma=0.5), [[0.25 * 1 + 0.5 * 2 + 3, 0.25 * 2 + 0.5 * 3 + 4]])


def _returns_pairs(r0: list[float], r1: list[float]):
    """Episodes whose single-step segments have the given rewards."""
    rewards = [np.asarray(r0 + r1, dtype=np.float64)]
    n = len(r0)
    pairs = np.array([[[0, i], [0, n + i]] for i in range(n)])
    return rewards, pairs


def test_teachers_follow_the_b_pref_rules():
    rng = np.random.default_rng(0)
    rewards, pairs = _returns_pairs([1.0, 3.0, 2.0, 2.0], [2.0, 1.0, 2.05, 10.0])
    assert TEACHERS["oracle"].label(rewards, pairs, 1, rng).labels.tolist() == [1.0, 0.0, 1.0, 1.0]
    # mean return per step here is 2.88: tie below 0.1 * 2.88 = 0.288 (eps linear, not squared)
    equal = TEACHERS["equal"].label(rewards, pairs, 1, rng).labels.tolist()
    assert equal == [1.0, 0.0, 0.5, 1.0]
    # skip when both returns are below eps * c: make every return small but one
    small, pairs2 = _returns_pairs([0.01, 5.0], [0.02, 6.0])
    skip = ScriptedTeacher("skip", eps_skip=0.1).label(small, pairs2, 1, rng).labels
    assert math.isnan(skip[0]) and skip[1] == 1.0

    many, pairs3 = _returns_pairs(list(np.zeros(4000)), list(np.ones(4000)))
    mistakes = TEACHERS["mistake"].label(many, pairs3, 1, np.random.default_rng(1)).labels
    assert 0.08 < np.mean(mistakes == 0.0) < 0.12
    noisy = TEACHERS["noisy"].label(many, pairs3, 1, np.random.default_rng(1)).labels
    assert abs(np.mean(noisy == 1.0) - 1 / (1 + math.exp(-1.0))) < 0.03  # sigmoid(beta * 1)


def test_myopic_teacher_prefers_what_happens_last():
    rewards = [np.array([10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0])]
    pairs = np.array([[[0, 0], [0, 4]]])  # [10, 0, 0, 0] vs [0, 0, 0, 8]: 10 > 8 but 0.9^3 * 10 = 7.29 < 8
    assert TEACHERS["oracle"].label(rewards, pairs, 4, np.random.default_rng(0)).labels[0] == 0.0
    assert TEACHERS["myopic"].label(rewards, pairs, 4, np.random.default_rng(0)).labels[0] == 1.0


def test_bradley_terry_loss_matches_the_formula():
    returns = torch.tensor([[1.0, 3.0], [2.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([1.0, 0.0, 0.5])
    p = torch.sigmoid(returns[:, 1] - returns[:, 0])
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert torch.isclose(bradley_terry_loss(returns, labels), expected)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_reward_model_recovers_the_true_reward_from_oracle_preferences():
    env = envs.make("embodied/PointMass-v0")
    policies = [PointMassExpert(), NoisyPolicy(PointMassExpert(), env.action_space, 0.8, 0.3), RandomPolicy(env.action_space)]
    episodes = [rollout(env, policies[i % 3], i) for i in range(30)]
    pairs = sample_pairs([len(e) for e in episodes], 10, 400, np.random.default_rng(0))
    labels = TEACHERS["oracle"].label([e.rewards for e in episodes], pairs, 10, np.random.default_rng(1))
    model, report = fit_reward_model(episodes, labels, RewardModelConfig(hidden_dims=[64, 64], max_epochs=60))
    assert report["heldout_accuracy"] >= 0.75 and report["pairs_heldout"] == 80
    learned = relabel(model, episodes)
    flat = np.concatenate(learned)
    assert abs(flat.mean()) < 1e-4 and abs(flat.std() - 1) < 1e-3
    assert _spearman(flat, np.concatenate([e.rewards for e in episodes])) >= 0.75
    with pytest.raises(ValueError, match="at least 10"):
        fit_reward_model(episodes, PreferenceLabels(pairs[:5], np.zeros(5), 10), RewardModelConfig())


@pytest.mark.parametrize("inputs", ["s", "sa", "sas"])
def test_every_state_input_kind_trains_and_relabels(inputs):
    env = envs.make("embodied/PointMass-v0")
    episodes = [rollout(env, RandomPolicy(env.action_space), i) for i in range(6)]
    pairs = sample_pairs([len(e) for e in episodes], 5, 60, np.random.default_rng(0))
    labels = TEACHERS["oracle"].label([e.rewards for e in episodes], pairs, 5, np.random.default_rng(1))
    config = RewardModelConfig(hidden_dims=[16], max_epochs=2, inputs=inputs)
    model, _ = fit_reward_model(episodes, labels, config)
    in_dim = model.members[0][0].in_features
    D, A = episodes[0].observations.shape[1], episodes[0].actions.shape[1]
    assert in_dim == {"s": D, "sa": D + A, "sas": 2 * D + A}[inputs]
    assert [len(r) for r in relabel(model, episodes)] == [len(e.actions) for e in episodes]


def test_sas_model_sees_the_next_observation():
    """r(s, a, s') must change when only s' changes; r(s, a) must not."""
    from reward_models.bradley_terry import RewardEnsemble

    base = {"observation": torch.zeros(1, 4), "action": torch.zeros(1, 2), "next_observation": torch.zeros(1, 4)}
    moved = {**base, "next_observation": torch.ones(1, 4)}
    torch.manual_seed(0)
    sas = RewardEnsemble(RewardModelConfig(hidden_dims=[8], inputs="sas"), 4, 2)
    sa = RewardEnsemble(RewardModelConfig(hidden_dims=[8], inputs="sa"), 4, 2)
    assert not torch.allclose(sas(base), sas(moved))
    assert torch.allclose(sa(base), sa(moved))


def test_image_reward_model_learns_from_frames():
    """The CNN reward model (inputs=image) learns PointMass's distance-to-goal reward from pixels."""
    env = envs.make("embodied/PointMass-v0", render_mode="rgb_array", width=48, height=48)
    policies = [PointMassExpert(), RandomPolicy(env.action_space)]
    episodes = [rollout(env, policies[i % 2], i, render=True) for i in range(16)]
    env.close()
    assert episodes[0].frames.shape[1:] == (48, 48, 3)
    pairs = sample_pairs([len(e) for e in episodes], 5, 300, np.random.default_rng(0))
    labels = TEACHERS["oracle"].label([e.rewards for e in episodes], pairs, 5, np.random.default_rng(1))
    config = RewardModelConfig(hidden_dims=[32], ensemble_size=1, max_epochs=25, patience=6, inputs="image",
                               image_size=32, cnn_channels=[8, 16, 16], learning_rate=1e-3, batch_size=32)
    model, report = fit_reward_model(episodes, labels, config)
    assert report["heldout_accuracy"] >= 0.7, report
    learned = np.concatenate(relabel(model, episodes))
    assert _spearman(learned, np.concatenate([e.rewards for e in episodes])) >= 0.5
    no_frames = [dataclasses.replace(e, frames=None) for e in episodes]
    with pytest.raises(ValueError, match=r"episodes \[0, 1, .*have no frames.*dataset.frames=true"):
        relabel(model, no_frames)


def test_resize_frames_averages_areas():
    from policies.data import resize_frames

    frames = np.zeros((2, 4, 4, 3), np.uint8)
    frames[:, :2, :2] = 200
    out = resize_frames(frames, 2)
    assert out.shape == (2, 2, 2, 3) and out.dtype == torch.uint8
    assert out[0, 0, 0, :].tolist() == [200] * 3 and out[0, 1, 1, :].tolist() == [0] * 3
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        resize_frames(np.zeros((4, 4, 3), np.uint8), 2)


def test_disagreement_sampling_picks_the_pairs_the_ensemble_splits_on():
    from reward_models.preferences import select_by_disagreement

    returns = np.zeros((3, 5, 2))
    returns[:, 0] = [[0, 5], [0, 5], [0, 5]]  # all members agree
    returns[:, 3] = [[0, 5], [5, 0], [0, 0]]  # members disagree strongly
    returns[:, 4] = [[0, 1], [1, 0], [0, 0]]  # disagree mildly
    assert select_by_disagreement(returns, 2).tolist() == [3, 4]
    with pytest.raises(ValueError, match="candidates"):
        select_by_disagreement(returns, 6)
    with pytest.raises(ValueError, match=r"\(K, M, 2\)"):
        select_by_disagreement(np.zeros((3, 5)), 1)


def test_segments_run_past_a_termination_into_the_zero_reward_absorbing_state():
    """Terminated episodes offer starts up to T - 1 (padded with 0 reward); time-limited ones do not."""
    rng = np.random.default_rng(0)
    pairs = sample_pairs([6, 6], 4, 4000, rng, terminated=[True, False])
    starts = {e: set(pairs[..., 1][pairs[..., 0] == e].tolist()) for e in (0, 1)}
    assert starts[0] == set(range(6)) and starts[1] == set(range(3))
    rewards = [np.arange(1.0, 7.0), np.ones(6)]
    sums = segment_sums(rewards, np.array([[[0, 4], [0, 5]]]), 4)
    np.testing.assert_allclose(sums, [[5 + 6, 6]])  # steps past the end count 0
    with pytest.raises(ValueError, match="terminated has 1 entries for 2 episodes"):
        sample_pairs([6, 6], 4, 10, rng, terminated=[True])


def test_reward_model_learns_a_terminal_bonus_from_padded_segments():
    """A +5 reward only on the terminal step: the model must give it to that transition, which it
    sees in H segment starts per episode only with padding."""
    from embodied.data import Episode
    from reward_models.bradley_terry import RewardModelConfig

    rng = np.random.default_rng(0)
    episodes = []
    for i in range(40):
        T = int(rng.integers(15, 30))
        obs = rng.normal(size=(T + 1, 3)).astype(np.float32)
        success = i % 2 == 0
        obs[-1, 0] = 4.0 if success else -4.0  # the outcome shows in the last observation
        rewards = 0.2 * obs[1:, 1]  # a small dense reward, so that few pairs tie
        rewards[-1] += 5.0 if success else 0.0
        episodes.append(Episode(observations=obs, actions=np.zeros((T, 1), np.float32), rewards=rewards,
                                terminations=np.r_[np.zeros(T - 1, bool), True], truncations=np.zeros(T, bool)))
    lengths = [len(e.actions) for e in episodes]

    def bonus_z(pad: bool) -> float:
        """The success transitions' learned reward, in standard deviations of the other transitions'."""
        pairs = sample_pairs(lengths, 10, 600, np.random.default_rng(1), terminated=[pad] * len(episodes))
        labels = TEACHERS["oracle"].label([e.rewards for e in episodes], pairs, 10, np.random.default_rng(2))
        model, report = fit_reward_model(episodes, labels, RewardModelConfig(hidden_dims=[32, 32], max_epochs=60))
        assert report["heldout_accuracy"] >= 0.8, report
        learned = relabel(model, episodes, normalize=False)
        bonus = np.mean([r[-1] for r, e in zip(learned, episodes) if e.observations[-1, 0] > 0])
        others = np.concatenate([r[:-1] for r in learned])
        return float((bonus - others.mean()) / others.std())

    padded, unpadded = bonus_z(True), bonus_z(False)  # measured: 2.9 and 1.2
    assert padded > 2.0 and padded > unpadded + 1.0, (padded, unpadded)
