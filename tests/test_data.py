"""Episodes on disk, rollouts and behaviour mixtures."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from embodied.data import Episode, load_episodes, mixture_assignment, rollout, save_episodes
from envs.pointmass import PointMassExpert
from envs.policies import RandomPolicy


def _episodes(n: int = 4) -> list[Episode]:
    env = envs.make("embodied/PointMass-v0")
    policies = [PointMassExpert(), RandomPolicy(env.action_space)]
    return [rollout(env, policies[i % 2], i, ["success", "distance"], policy_name=f"p{i % 2}") for i in range(n)]


def test_mixture_counts_follow_weights_and_seed():
    order = mixture_assignment({"expert": 0.2, "noisy": 0.5, "random": 0.3}, 10, seed=1)
    assert sorted(order) == sorted(["expert"] * 2 + ["noisy"] * 5 + ["random"] * 3)
    assert order == mixture_assignment({"expert": 0.2, "noisy": 0.5, "random": 0.3}, 10, seed=1)
    assert len(mixture_assignment({"a": 1, "b": 1, "c": 1}, 7, seed=0)) == 7
    with pytest.raises(ValueError, match="mixture"):
        mixture_assignment({"a": -1.0}, 3, seed=0)


def test_episodes_round_trip_through_disk(tmp_path):
    episodes = _episodes()
    path = save_episodes(tmp_path / "d" / "episodes.npz", episodes)
    loaded = load_episodes(path)
    assert len(loaded) == 4 and [e.policy for e in loaded] == [e.policy for e in episodes]
    for a, b in zip(episodes, loaded):
        assert np.array_equal(a.observations, b.observations) and np.array_equal(a.infos["distance"], b.infos["distance"])
    assert not list((tmp_path / "d").glob(".*tmp"))


def test_bad_episode_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no episode file"):
        load_episodes(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable episode archive"):
        load_episodes(junk)
    whole = save_episodes(tmp_path / "whole.npz", _episodes(1))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])  # a file cut short
    with pytest.raises(ValueError, match=f"{cut}.*not a readable episode archive"):
        load_episodes(cut)
    episode = _episodes(1)[0]
    episode.observations = episode.observations[:-1]
    save_episodes(tmp_path / "short.npz", [episode])
    with pytest.raises(ValueError, match="episode_000000.*T\\+1"):
        load_episodes(tmp_path / "short.npz")
