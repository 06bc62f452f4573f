"""The reward-function seam: every reward function maps a batch to (N,) float32 the same way
offline (relabel a dataset) and online (one step), and one normalisation serves them all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from embodied.data import rollout
from envs.pointmass import PointMassExpert
from envs.policies import RandomPolicy
from policies.data import EpisodeData
from reward_models.bradley_terry import RewardEnsemble, RewardModelConfig
from reward_models.clip import CLIPReward
from reward_models.functions import (
    BradleyTerryReward,
    CLIPFrameReward,
    TrueReward,
    normalize_rewards,
    relabel,
)
from tests.conftest import TINY


@pytest.fixture(scope="module")
def episodes():
    env = envs.make("embodied/PointMass-v0", render_mode="rgb_array", width=32, height=32)
    out = [rollout(env, [PointMassExpert(), RandomPolicy(env.action_space)][i % 2], i, render=True) for i in range(4)]
    env.close()
    return out


def _functions(checkpoint) -> dict:
    torch.manual_seed(0)
    clip = CLIPReward(TINY, pretrained=None, checkpoint=str(checkpoint), device="cpu")
    return {
        "gt": TrueReward(),
        "bradley_terry_sas": BradleyTerryReward(RewardEnsemble(RewardModelConfig(hidden_dims=[16]), 6, 2)),
        "bradley_terry_image": BradleyTerryReward(RewardEnsemble(
            RewardModelConfig(hidden_dims=[16], inputs="image", image_size=16, cnn_channels=[4, 4]), 6, 2)),
        "clip": CLIPFrameReward(clip),
    }


@pytest.mark.parametrize("name", ["gt", "bradley_terry_sas", "bradley_terry_image", "clip"])
def test_reward_function_contract(name, episodes, tiny_checkpoint):
    """Relabelling a dataset and scoring the same transitions one at a time (as online) agree,
    and the output is (N,) float32 and finite."""
    reward = _functions(tiny_checkpoint[0])[name]
    flat = relabel(reward, episodes)
    n = sum(len(ep) for ep in episodes)
    assert flat.shape == (n,) and flat.dtype == torch.float32 and torch.isfinite(flat).all()
    frames = any(f.endswith("frame") for f in reward.fields)
    data = EpisodeData(episodes, include_reward=True, frames=frames, frame_size=reward.frame_size if frames else None)
    for row in (0, 57, n - 1):  # one step at a time, as a loop acting online would ask
        step = reward(data.gather(torch.tensor([row]), reward.fields))
        assert step.shape == (1,) and torch.allclose(step, flat[row:row + 1], atol=1e-5)
    if name == "gt":
        assert torch.equal(flat, torch.as_tensor(np.concatenate([ep.rewards for ep in episodes])))
    if name == "clip":  # VLM-RM reward of the frame after each step
        expected = np.concatenate([reward.clip(ep.frames[1:]) for ep in episodes])
        assert np.allclose(flat.numpy(), expected, atol=1e-5)
    if name.startswith("bradley_terry") and reward.frame_size is None:
        inputs = data.gather(torch.arange(n), ("observation", "action", "next_observation"))
        assert torch.allclose(flat, reward.model.member_rewards(inputs).mean(0))


def test_frame_rewards_need_frames(episodes, tiny_checkpoint):
    no_frames = [type(ep)(**{**ep.__dict__, "frames": None}) for ep in episodes]
    with pytest.raises(ValueError, match="no frames"):
        relabel(_functions(tiny_checkpoint[0])["clip"], no_frames)


def test_normalisations_follow_their_formulas():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, -4.0])
    episode = torch.tensor([0, 0, 0, 1, 1])
    same, stats = normalize_rewards(rewards, "none")
    assert torch.equal(same, rewards) and stats["scale"] == 1.0
    standard, stats = normalize_rewards(rewards, "standardize")
    assert abs(float(standard.mean())) < 1e-6 and abs(float(standard.std(unbiased=False)) - 1) < 1e-5
    assert stats["shift"] == pytest.approx(2.4) and stats["reward_std"] == pytest.approx(float(rewards.std(unbiased=False)))
    # returns 6 and 6: no range -> guarded; returns 6 and 7 with episodes of 3 and 2 steps: L / range = 3
    ranged, stats = normalize_rewards(torch.tensor([1.0, 2.0, 3.0, 10.0, -3.0]), "return_range", episode)
    assert stats["scale"] == pytest.approx(3.0) and torch.allclose(ranged, torch.tensor([3.0, 6.0, 9.0, 30.0, -9.0]))
    with pytest.raises(ValueError, match="expected one of"):
        normalize_rewards(rewards, "minmax")
    with pytest.raises(ValueError, match="episode"):
        normalize_rewards(rewards, "return_range")
