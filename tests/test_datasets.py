"""Minari datasets: collection (resumable, atomic), loading with Minari and ours, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
import torch

import envs
from embodied.data import rollout
from embodied.datasets import DatasetConfig, DatasetError, collect_dataset, load_dataset, make_dataset_id, write_minari
from envs.dressing import DressingExpert
from envs.pointmass import PointMassExpert
from envs.policies import RandomPolicy
from policies.data import EpisodeData, TransitionSampler

POINTMASS = make_dataset_id("pointmass", "mixed")


def _pointmass(root: Path, episodes: int = 4, frames: bool = False, name: str = "mixed") -> Path:
    make = (lambda: envs.make("embodied/PointMass-v0", render_mode="rgb_array", width=32, height=24)) if frames \
        else (lambda: envs.make("embodied/PointMass-v0"))
    space = make().action_space
    recipe = DatasetConfig(recipe=name, episodes=episodes, mixture={"expert": 1, "random": 1}, frames=frames, width=32, height=24)
    return collect_dataset(make_dataset_id("pointmass", name), make, {"expert": PointMassExpert(), "random": RandomPolicy(space)},
                           recipe, ["success", "distance"], provenance={"task": "pointmass"}, root=root, progress=False)


def test_dressing_dataset_opens_with_minari_and_ours(datasets_root):
    make = lambda: envs.make("embodied/Dressing-v1", render_mode="rgb_array", width=48, height=48)  # noqa: E731
    recipe = DatasetConfig(recipe="frames", episodes=3, mixture={"expert": 1.0}, frames=True, width=48, height=48)
    path = collect_dataset("embodied/dressing/frames-v0", make, {"expert": DressingExpert()}, recipe,
                           ["success", "dressed_distance"], provenance={"task": "dressing"}, progress=False)
    assert path == datasets_root / "embodied/dressing/frames-v0"

    theirs = minari.load_dataset("embodied/dressing/frames-v0")
    assert theirs.total_episodes == 3
    first = next(theirs.iterate_episodes())
    assert first.observations["pixels"].shape[1:] == (48, 48, 3) and first.observations["pixels"].dtype == np.uint8
    assert first.observations["state"].shape[1] == 26
    assert theirs.recover_environment().spec.id == "embodied/Dressing-v1"

    ours = load_dataset("embodied/dressing/frames-v0", keep_frames=True)
    assert ours.has_frames and [ep.policy for ep in ours.episodes] == ["expert"] * 3
    assert [ep.seed for ep in ours.episodes] == [0, 1, 2]
    ep = ours.episodes[0]
    assert np.array_equal(ep.observations, first.observations["state"])
    assert ep.frames.shape == (len(ep) + 1, 48, 48, 3) and ep.success
    assert ours.provenance["recipe"]["frames"] and ours.provenance["packages"]["mujoco"] == "3.3.0"
    assert ours.provenance["task"] == "dressing"
    # the same episode collected directly matches what was stored
    direct = rollout(make(), DressingExpert(), seed=0, info_keys=["success"])
    assert np.array_equal(direct.observations, ep.observations) and np.array_equal(direct.actions, ep.actions)


def test_episode_data_hides_the_true_reward_unless_asked(datasets_root):
    _pointmass(datasets_root)
    episodes = load_dataset(POINTMASS).episodes
    assert "reward" not in TransitionSampler(EpisodeData(episodes)).sample(4, torch.Generator())
    data = EpisodeData(episodes, include_reward=True)
    assert torch.allclose(data.rewards[: len(episodes[0])], torch.as_tensor(episodes[0].rewards))


def test_existing_dataset_is_reused_and_a_changed_recipe_is_refused(datasets_root):
    path = _pointmass(datasets_root)
    stamp = (path / "data" / "main_data.hdf5").stat().st_mtime_ns
    assert _pointmass(datasets_root) == path
    assert (path / "data" / "main_data.hdf5").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match=r"collected with dataset.episodes=4, not 5\. Name the new one \(dataset.recipe=mixed-2"):
        _pointmass(datasets_root, episodes=5)


def test_a_dataset_collected_in_another_env_version_is_refused(datasets_root):
    """A task whose env id changed version (other dynamics: Dressing-v0 -> v1) does not reuse
    the episodes collected in the old one."""
    make = lambda: envs.make("embodied/PointMass-v0")  # noqa: E731
    recipe = DatasetConfig(recipe="mixed", episodes=2, mixture={"expert": 1})

    def collect(env_id: str) -> Path:
        return collect_dataset(POINTMASS, make, {"expert": PointMassExpert()}, recipe, ["success"], root=datasets_root,
                               provenance={"task": "pointmass", "task_config": {"env": {"id": env_id}}}, progress=False)

    path = collect("embodied/PointMass-v0")
    assert collect("embodied/PointMass-v0") == path
    with pytest.raises(DatasetError, match=r"collected in embodied/PointMass-v0, and the task now makes "
                                           r"embodied/PointMass-v9 \(another version: other dynamics\)\. Delete "):
        collect("embodied/PointMass-v9")


def test_any_minari_dataset_on_disk_loads(datasets_root):
    """A dataset written by Minari itself (like mujoco/hopper/medium-v0) loads the same way."""
    from minari.data_collector import EpisodeBuffer

    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,), np.float64)
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    rng = np.random.default_rng(0)
    buffers = [EpisodeBuffer(id=i, observations=rng.normal(size=(8, 5)), actions=rng.uniform(-1, 1, (7, 2)).astype(np.float32),
                             rewards=list(rng.normal(size=7)), terminations=[False] * 6 + [True], truncations=[False] * 7,
                             infos={}) for i in range(3)]
    minari.create_dataset_from_buffers("thirdparty/hopper/medium-v0", buffers, observation_space=obs_space, action_space=act_space)
    dataset = load_dataset("thirdparty/hopper/medium-v0")
    assert len(dataset.episodes) == 3 and dataset.observation_space.shape == (5,)
    assert dataset.episodes[0].observations.dtype == np.float32 and dataset.episodes[0].terminations[-1]
    assert load_dataset(datasets_root / "thirdparty/hopper/medium-v0").source.endswith("medium-v0")


# -- bad datasets -------------------------------------------------------------------------------

def _copy(datasets_root: Path, frames: bool = False) -> Path:
    source = _pointmass(datasets_root, frames=frames, name="frames" if frames else "mixed")
    target = datasets_root / "broken" / source.name
    shutil.copytree(source, target)
    return target


def _edit(path: Path, edit) -> None:
    with h5py.File(path / "data" / "main_data.hdf5", "r+") as f:
        edit(f)


def _replace(f: h5py.File, name: str, data) -> None:
    del f[name]
    f.create_dataset(name, data=data)


BAD_DATASETS = {
    "nan observation": (lambda f: f["episode_1/observations"].__setitem__((3, 0), np.nan),
                        r"episode 1: field 'observations' has a non-finite value \(NaN or inf\) at step 3"),
    "wrong action shape": (lambda f: _replace(f, "episode_0/actions", np.zeros((100, 3), np.float32)),
                           r"episode 0: field 'actions' has shape \(100, 3\); expected \(100, 2\)"),
    "observation length": (lambda f: _replace(f, "episode_2/observations", np.zeros((100, 6), np.float32)),
                           r"episode 2: field 'observations' has shape \(100, 6\); expected \(101, 6\)"),
    "wrong dtype": (lambda f: _replace(f, "episode_0/actions", np.zeros((100, 2), np.int32)),
                    r"episode 0: field 'actions' has dtype int32; expected a float dtype"),
    "empty episode": (lambda f: (_replace(f, "episode_3/actions", np.zeros((0, 2), np.float32)),
                                 _replace(f, "episode_3/observations", np.zeros((1, 6), np.float32))),
                      r"episode 3: field 'actions' is empty"),
    "infinite reward": (lambda f: f["episode_0/rewards"].__setitem__(5, np.inf),
                        r"episode 0: field 'rewards' has a non-finite value"),
    "missing rewards": (lambda f: f.__delitem__("episode_1/rewards"),
                        r"episode 1 cannot be read .*rewards"),
    "reward length": (lambda f: _replace(f, "episode_0/rewards", np.zeros(99)),
                      r"episode 0: field 'rewards' has shape \(99,\); expected \(100,\)"),
}


@pytest.mark.parametrize("kind", sorted(BAD_DATASETS))
def test_bad_dataset_raises_an_error_naming_episode_and_field(datasets_root, kind):
    edit, message = BAD_DATASETS[kind]
    path = _copy(datasets_root)
    _edit(path, edit)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_missing_frames_are_named(datasets_root):
    path = _copy(datasets_root, frames=True)
    _edit(path, lambda f: f.__delitem__("episode_0/observations/pixels"))
    with pytest.raises(DatasetError, match=r"episode 0: field 'observations/pixels' is missing"):
        load_dataset(path)


def test_truncated_file_is_reported(datasets_root):
    path = _copy(datasets_root)
    data = path / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot be (opened|read)"):
        load_dataset(path)


def test_corrupt_metadata_is_reported(datasets_root):
    path = _copy(datasets_root)
    (path / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot be opened"):
        load_dataset(path)


def test_unknown_id_lists_local_datasets(datasets_root):
    _pointmass(datasets_root)
    with pytest.raises(DatasetError, match=r"unknown dataset 'embodied/nope/mixed-v0'.*embodied/pointmass/mixed-v0"):
        load_dataset("embodied/nope/mixed-v0")


def test_collect_refuses_unknown_policy_names(datasets_root):
    recipe = DatasetConfig(episodes=2, mixture={"ghost": 1.0})
    with pytest.raises(KeyError, match="ghost"):
        collect_dataset("embodied/pointmass/ghost-v0", lambda: envs.make("embodied/PointMass-v0"),
                        {"expert": PointMassExpert()}, recipe, root=datasets_root, progress=False)


def test_refuses_to_write_frames_that_are_missing(datasets_root):
    env = envs.make("embodied/PointMass-v0")
    episode = rollout(env, PointMassExpert(), seed=0)
    with pytest.raises(DatasetError, match="has no frames"):
        write_minari("embodied/x/y-v0", [episode], env.observation_space, env.action_space, datasets_root,
                     frame_shape=(8, 8, 3))
    assert not (datasets_root / "embodied/x/y-v0").exists()


# -- interrupted collection ---------------------------------------------------------------------

def _collect_command(root: Path, episodes: int) -> list[str]:
    return [sys.executable, "-m", "embodied.collect", "+task=pointmass", f"dataset.episodes={episodes}",
            "dataset.recipe=killed", "trainer.progress=false", f"output_root={root / 'outputs'}"]


@pytest.mark.slow
def test_collection_killed_midway_resumes_without_duplicates(tmp_path, datasets_root):
    episodes = 150
    staging = datasets_root / ".staging/embodied/pointmass/killed-v0"
    env = dict(os.environ, MINARI_DATASETS_PATH=str(datasets_root))
    proc = subprocess.Popen(_collect_command(tmp_path, episodes), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(staging.glob("episode_*.npz"))) < 10:
        assert time.time() < deadline and proc.poll() is None, "collection never got going"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    staged = len(list(staging.glob("episode_*.npz")))
    assert 10 <= staged < episodes, "the kill must land mid-collection"
    with pytest.raises(DatasetError, match=f"incomplete: its collection stopped after {staged} episodes"):
        load_dataset("embodied/pointmass/killed-v0")
    assert not minari.list_local_datasets()  # nothing loads as a dataset yet

    changed = subprocess.run(_collect_command(tmp_path, episodes + 1), cwd=tmp_path, env=env, capture_output=True,
                             text=True)
    assert changed.returncode != 0 and (f"holds episodes collected with dataset.episodes={episodes}, not {episodes + 1} "
                                        "(an interrupted collection). Rerun with those settings") in changed.stderr
    rerun = subprocess.run(_collect_command(tmp_path, episodes), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    resumed = load_dataset("embodied/pointmass/killed-v0")
    assert [ep.seed for ep in resumed.episodes] == list(range(episodes))
    assert not staging.exists()

    other = tmp_path / "uninterrupted"
    env["MINARI_DATASETS_PATH"] = str(other)
    straight = subprocess.run(_collect_command(tmp_path, episodes), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    reference = load_dataset("embodied/pointmass/killed-v0", root=other)
    for a, b in zip(resumed.episodes, reference.episodes):
        assert a.policy == b.policy and np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)


def test_writing_a_dataset_prints_no_minari_metadata_warnings(datasets_root):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _pointmass(datasets_root)
    assert not [w for w in caught if "is set to None" in str(w.message)], [str(w.message) for w in caught]
