"""LeRobot v3.0 export and import (parquet + mp4), and the command line around them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import envs
from embodied.data import rollout
from embodied.datasets import load_dataset
from embodied.lerobot import LeRobotFormatError, export_lerobot, import_lerobot, main
from envs.pointmass import PointMassExpert
from envs.policies import RandomPolicy


@pytest.fixture(scope="module")
def episodes():
    env = envs.make("embodied/PointMass-v0", render_mode="rgb_array", width=32, height=32)
    policies = [PointMassExpert(), RandomPolicy(env.action_space)]
    out = [rollout(env, policies[i % 2], i, render=True) for i in range(4)]
    env.close()
    return out


def test_round_trip_keeps_every_array_and_the_frames(tmp_path, episodes):
    root = export_lerobot(episodes, tmp_path / "ds", fps=20, task="reach the goal")
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 4
    assert info["total_frames"] == sum(len(ep.actions) for ep in episodes)
    assert (root / "videos" / "observation.images.main" / "chunk-000" / "file-000.mp4").stat().st_size > 0
    rows = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [r["length"] for r in rows] == [len(ep.actions) for ep in episodes]
    assert rows[1]["dataset_from_index"] == rows[0]["dataset_to_index"]
    tasks = pq.read_table(root / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == ["reach the goal"] and b"pandas" in tasks.schema.metadata

    back = import_lerobot(root)
    assert len(back) == len(episodes)
    for ours, theirs in zip(episodes, back):
        np.testing.assert_array_equal(theirs.observations, ours.observations)
        np.testing.assert_array_equal(theirs.actions, ours.actions)
        np.testing.assert_array_equal(theirs.rewards, ours.rewards)
        np.testing.assert_array_equal(theirs.terminations, ours.terminations)
        np.testing.assert_array_equal(theirs.truncations, ours.truncations)
        np.testing.assert_array_equal(theirs.infos["success"][1:], ours.infos["success"][1:])
        assert theirs.frames.shape == ours.frames.shape  # T + 1 frames: the extra last one survives
        assert np.abs(theirs.frames.astype(int) - ours.frames.astype(int)).mean() < 4.0  # H.264, lossy


def test_a_dataset_lerobot_wrote_one_frame_per_row_imports_with_t_minus_1_transitions(tmp_path, episodes):
    root = export_lerobot(episodes[:2], tmp_path / "ds", fps=20, task="reach", overwrite=True)
    data_file = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(data_file)
    pq.write_table(table.drop_columns(["next.observation.state", "next.truncated"]), data_file)
    info = json.loads((root / "meta" / "info.json").read_text())
    del info["embodied"]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    back = import_lerobot(root, keep_frames=False)
    for ours, theirs in zip(episodes, back):
        T = len(ours.actions)
        np.testing.assert_array_equal(theirs.observations, ours.observations[:T])
        np.testing.assert_array_equal(theirs.actions, ours.actions[: T - 1])
        assert theirs.truncations[-1] or theirs.terminations[-1]


def test_bad_folders_give_errors_that_name_the_problem(tmp_path, episodes):
    with pytest.raises(LeRobotFormatError, match="info.json is missing"):
        import_lerobot(tmp_path)
    root = export_lerobot(episodes[:2], tmp_path / "ds", fps=20, task="reach")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_lerobot(episodes[:2], root, fps=20, task="reach")
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(LeRobotFormatError, match="'v2.1'.*v3.0"):
        import_lerobot(root)
    info_path.write_text(json.dumps({**info, "features": {"action": info["features"]["action"]}}))
    with pytest.raises(LeRobotFormatError, match="'observation.state' is missing"):
        import_lerobot(root)
    info_path.write_text(json.dumps(info))
    episodes_file = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(episodes_file).to_pylist()
    table[1]["dataset_to_index"] += 5
    pq.write_table(pa.Table.from_pylist(table), episodes_file)
    with pytest.raises(LeRobotFormatError, match="episode 1 claims rows"):
        import_lerobot(root, keep_frames=False)
    (root / "data" / "chunk-000" / "file-000.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(LeRobotFormatError, match="cannot be read"):
        import_lerobot(root)
    with pytest.raises(ValueError, match="episode 0 is empty"):
        export_lerobot([episodes[0].__class__(**{**episodes[0].__dict__, "actions": episodes[0].actions[:0]})],
                       tmp_path / "empty", fps=20, task="x")
    assert not (tmp_path / "empty").exists() and not list(tmp_path.glob(".empty.tmp-*"))


def test_command_line_exports_a_minari_dataset_and_imports_it_back(tmp_path, episodes, monkeypatch):
    import gymnasium as gym

    from embodied.datasets import write_minari

    root = tmp_path / "minari"
    write_minari("test/pointmass/frames-v0", episodes, gym.spaces.Box(-np.inf, np.inf, (episodes[0].observations.shape[1],), np.float32),
                 gym.spaces.Box(-1, 1, (2,), np.float32), root, frame_shape=(32, 32, 3))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    assert main(["export", "test/pointmass/frames-v0", str(tmp_path / "lr"), "--fps", "20", "--task", "reach"]) == 0
    assert main(["import", str(tmp_path / "lr"), "test/pointmass/from-lerobot-v0"]) == 0
    back = load_dataset("test/pointmass/from-lerobot-v0", keep_frames=True)
    assert len(back.episodes) == 4 and back.has_frames
    np.testing.assert_array_equal(back.episodes[2].actions, episodes[2].actions)
