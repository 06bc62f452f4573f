"""Sampler contract: shapes, masks at episode ends, the same batches from the same generator,
future offsets that follow the geometric law, and a replay buffer that survives a checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied.checkpoint import load_checkpoint, save_checkpoint
from embodied.data import Episode
from policies.base import BatchSpec
from policies.data import (
    EpisodeData,
    FutureSampler,
    ReplayBuffer,
    TransitionSampler,
    WindowSampler,
    make_sampler,
    reservoir_selection,
)

D, A = 3, 2


def _episode(e: int, length: int, terminated: bool = False) -> Episode:
    """Observation row t of episode e is (e, t, t^2 / 100): every row says where it came from."""
    t = np.arange(length + 1, dtype=np.float32)
    observations = np.stack([np.full_like(t, e), t, t**2 / 100], axis=1)
    actions = np.stack([np.full(length, e / 10), np.arange(length) / 100], axis=1).astype(np.float32)
    return Episode(observations=observations, actions=actions, rewards=(e * 100 + np.arange(length)).astype(np.float32),
                   terminations=np.r_[np.zeros(length - 1, bool), terminated],
                   truncations=np.r_[np.zeros(length - 1, bool), not terminated])


def _data(lengths=(5, 12, 3, 9), **kwargs) -> EpisodeData:
    return EpisodeData([_episode(e, n, terminated=e % 2 == 0) for e, n in enumerate(lengths)], **kwargs)


def test_episode_data_indexes_episodes_and_times():
    data = _data(include_reward=True)
    assert data.size == 29 and data.num_episodes == 4 and data.observations.shape == (33, D)
    assert data.episode.tolist()[:7] == [0] * 5 + [1] * 2 and data.time.tolist()[:7] == [0, 1, 2, 3, 4, 0, 1]
    batch = data.gather(torch.arange(data.size), ("observation", "next_observation", "action", "reward", "terminal"))
    assert torch.equal(batch["observation"][:, 0].long(), data.episode)
    assert torch.equal(batch["observation"][:, 1].long(), data.time)
    assert torch.equal(batch["next_observation"][:, 1], batch["observation"][:, 1] + 1)  # same episode, next step
    assert torch.equal(batch["reward"], data.episode * 100.0 + data.time)
    assert batch["terminal"].sum() == 2 and batch["terminal"][4] == 1  # episodes 0 and 2 terminated
    assert torch.allclose(data.episode_returns(), torch.tensor([10.0, 1266.0, 603.0, 2736.0]))


def test_episode_data_rejects_bad_episodes():
    bad = _episode(0, 4)
    bad.actions[2, 1] = np.inf
    with pytest.raises(ValueError, match="'action' has non-finite values \\(first at row 2\\)"):
        EpisodeData([bad])
    short = _episode(0, 4)
    short.observations = short.observations[:-1]
    with pytest.raises(ValueError, match="T\\+1 observations"):
        EpisodeData([short])
    with pytest.raises(ValueError, match="no frames"):
        EpisodeData([_episode(0, 4)], frames=True)
    wide = _episode(1, 4)
    wide.observations = np.zeros((5, D + 1), np.float32)
    with pytest.raises(ValueError, match="'observation': episodes do not stack"):
        EpisodeData([_episode(0, 4), wide])
    long_rewards = _episode(0, 4)
    long_rewards.rewards = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="'reward' has 5 rows for 4 transitions"):
        EpisodeData([long_rewards], include_reward=True)
    with pytest.raises(KeyError, match="'reward'"):
        EpisodeData([_episode(0, 4)]).gather(torch.arange(2), ("reward",))


@pytest.mark.parametrize("kind", ["transitions", "windows", "future"])
def test_every_sampler_is_reproducible_from_its_generator(kind):
    data = _data(include_reward=True)
    sampler = make_sampler(BatchSpec(kind, horizon=4, discount=0.9), data)
    a = sampler.sample(16, torch.Generator().manual_seed(3))
    b = sampler.sample(16, torch.Generator().manual_seed(3))
    c = sampler.sample(16, torch.Generator().manual_seed(4))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["observation"], c["observation"])
    # a generator restored from a saved state continues with the same batches
    g = torch.Generator().manual_seed(5)
    sampler.sample(16, g)
    state = g.get_state()
    first = sampler.sample(16, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert all(torch.equal(first[k], v) for k, v in sampler.sample(16, g2).items())


def test_transition_batches_have_transition_shapes():
    batch = TransitionSampler(_data(include_reward=True)).sample(32, torch.Generator().manual_seed(0))
    assert batch["observation"].shape == (32, D) and batch["next_observation"].shape == (32, D)
    assert batch["action"].shape == (32, A) and batch["reward"].shape == (32,) and batch["terminal"].shape == (32,)
    assert all(v.dtype == torch.float32 for v in batch.values())
    relabeled = TransitionSampler(_data(), rewards=torch.arange(29.0)).sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(relabeled["reward"], relabeled["observation"][:, 1] + torch.tensor(
        [0, 5, 17, 20], dtype=torch.float32)[relabeled["observation"][:, 0].long()])


def test_windows_are_consecutive_and_masked_past_the_episode_end():
    data = _data(include_reward=True)
    batch = WindowSampler(data, horizon=6).sample(256, torch.Generator().manual_seed(0))
    assert batch["observation"].shape == (256, 6, D) and batch["action"].shape == (256, 6, A)
    assert batch["mask"].shape == (256, 6) and batch["reward"].shape == (256, 6)
    episode, start = batch["episode"], batch["time"]
    length = data.lengths[episode]
    expected_mask = (start[:, None] + torch.arange(6) < length[:, None]).float()
    assert torch.equal(batch["mask"], expected_mask)
    assert expected_mask.min() == 0 and expected_mask[:, 0].min() == 1  # some windows run past an end
    # inside the mask: consecutive steps of the start's episode; past it: the last transition repeated
    t = batch["observation"][..., 1]
    assert torch.equal(batch["observation"][..., 0], episode[:, None].float().expand(-1, 6))
    assert torch.equal(t, torch.minimum(start[:, None] + torch.arange(6), length[:, None] - 1).float())
    with pytest.raises(ValueError, match="horizon"):
        WindowSampler(data, horizon=0)


def test_future_observations_are_later_in_the_same_episode_at_a_geometric_offset():
    gamma = 0.8
    data = EpisodeData([_episode(e, 400) for e in range(3)])
    batch = FutureSampler(data, discount=gamma).sample(20000, torch.Generator().manual_seed(0))
    obs, future, offset = batch["observation"], batch["future_observation"], batch["future_offset"]
    assert future.shape == (20000, D)
    assert torch.equal(future[:, 0], obs[:, 0])  # same episode
    assert torch.equal(future[:, 1] - obs[:, 1], offset.float()) and offset.min() >= 1
    # away from the episode end the offset is Geometric(1 - gamma): P(k) = (1 - gamma) gamma^(k - 1)
    free = obs[:, 1] < 300
    k = offset[free].float()
    assert abs(k.mean().item() - 1 / (1 - gamma)) < 0.1
    for value in (1, 2, 3):
        assert abs((k == value).float().mean().item() - (1 - gamma) * gamma ** (value - 1)) < 0.015
    # near the end it stops at the episode's last observation
    last = FutureSampler(EpisodeData([_episode(0, 2)]), discount=0.99).sample(200, torch.Generator().manual_seed(0))
    assert last["future_observation"][:, 1].max() == 2 and torch.all(last["future_observation"][:, 1] > last["observation"][:, 1])


def test_replay_buffer_fifo_keeps_the_newest_and_restores_from_a_checkpoint(tmp_path):
    buffer = ReplayBuffer(capacity=5)
    assert buffer.add({"observation": torch.arange(3.0)[:, None], "reward": torch.arange(3.0)}) == 3
    buffer.add({"observation": torch.arange(3.0, 8.0)[:, None], "reward": torch.arange(3.0, 8.0)})
    assert len(buffer) == 5 and sorted(buffer.storage["reward"].tolist()) == [3, 4, 5, 6, 7]
    batch = buffer.sample(64, torch.Generator().manual_seed(0))
    assert batch["observation"].shape == (64, 1) and set(batch["reward"].tolist()) <= {3.0, 4.0, 5.0, 6.0, 7.0}
    # saved inside a checkpoint (safetensors + json) and restored into a new buffer
    save_checkpoint(tmp_path, 1, {}, {"sampler": buffer.state_dict()})
    restored = ReplayBuffer(capacity=5)
    restored.load_state_dict(load_checkpoint(tmp_path).state["sampler"])
    a, b = buffer.sample(16, torch.Generator().manual_seed(1)), restored.sample(16, torch.Generator().manual_seed(1))
    assert all(torch.equal(a[k], b[k]) for k in a) and restored.seen == 8
    restored.add({"observation": torch.tensor([[8.0]]), "reward": torch.tensor([8.0])})
    buffer.add({"observation": torch.tensor([[8.0]]), "reward": torch.tensor([8.0])})
    assert torch.equal(restored.storage["reward"], buffer.storage["reward"])  # the same slot is overwritten
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=6).load_state_dict(buffer.state_dict())


def test_replay_buffer_rejects_bad_items_and_sampling_when_empty():
    buffer = ReplayBuffer(capacity=4)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(2, torch.Generator())
    buffer.add({"observation": torch.zeros(2, 3), "reward": torch.zeros(2)})
    with pytest.raises(ValueError, match="fields"):
        buffer.add({"observation": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="'observation' is \\(4,\\)"):
        buffer.add({"observation": torch.zeros(1, 4), "reward": torch.zeros(1)})
    with pytest.raises(ValueError, match="non-finite"):
        buffer.add({"observation": torch.full((1, 3), math.nan), "reward": torch.zeros(1)})
    with pytest.raises(ValueError, match="different lengths"):
        buffer.add({"observation": torch.zeros(2, 3), "reward": torch.zeros(1)})
    with pytest.raises(ValueError, match="selection"):
        ReplayBuffer(capacity=4, selection="lifo")


def test_reservoir_selection_keeps_a_uniform_sample_of_the_stream():
    kept = torch.zeros(1000)
    for trial in range(300):
        buffer = ReplayBuffer(capacity=100, selection="reservoir")
        generator = torch.Generator().manual_seed(trial)
        for start in range(0, 1000, 50):
            buffer.add({"item": torch.arange(start, start + 50)}, generator)
        assert len(buffer) == 100 and buffer.seen == 1000
        kept[buffer.storage["item"]] += 1
    share = kept / 300  # each item kept with probability capacity / stream = 0.1
    assert abs(share[:100].mean() - 0.1) < 0.02 and abs(share[-100:].mean() - 0.1) < 0.02
    # a pluggable rule: keep only even items
    even = ReplayBuffer(capacity=10, selection=lambda size, cap, seen, n, g: torch.where(
        (seen + torch.arange(n)) % 2 == 0, (seen + torch.arange(n)) // 2 % cap, -1))
    even.add({"item": torch.arange(10)})
    assert sorted(even.storage["item"][: len(even)].tolist()) == [0, 2, 4, 6, 8]
    assert reservoir_selection(0, 3, 0, 3, torch.Generator()).tolist() == [0, 1, 2]
