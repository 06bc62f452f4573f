"""Meta-World through the adapter: reproducible resets, upright frames, experts, evaluate."""

from __future__ import annotations

import json

import mujoco
import numpy as np
import pytest

import envs
from embodied.data import rollout
from envs.metaworld_adapter import MetaWorldEnv, MetaWorldExpert, camera_is_upside_down
from tests.conftest import run_module


@pytest.fixture(scope="module")
def drawer():
    env = envs.make("embodied/MetaWorld-v0", task="drawer-open-v3")
    yield env
    env.close()


def test_spaces_and_reproducible_resets(drawer):
    assert drawer.observation_space.shape == (39,) and drawer.action_space.shape == (4,)
    a, _ = drawer.reset(seed=5)
    b, _ = drawer.reset(seed=5)
    c, _ = drawer.reset(seed=6)
    assert a.dtype == np.float32 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_expert_succeeds_through_the_adapter(drawer):
    episode = rollout(drawer, MetaWorldExpert(drawer.action_space, task="drawer-open-v3"), seed=0)
    assert episode.success and len(episode) == 500 and episode.truncations[-1]


def _height_row_correlation(env: MetaWorldEnv, camera: str, size: int = 96) -> float:
    """Correlation of image row with the world height of what each pixel sees (from a depth
    render), in the frame as the adapter orients it: negative when higher things appear higher
    up, i.e. the frame is upright."""
    base = env.unwrapped
    renderer = mujoco.Renderer(base.model, size, size)
    renderer.enable_depth_rendering()
    renderer.update_scene(base.data, camera=camera)
    depth = renderer.render().astype(np.float64)
    renderer.close()
    cam = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    focal = (size / 2) / np.tan(np.deg2rad(base.model.cam_fovy[cam]) / 2)
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    local = np.stack([(cols - size / 2) / focal * depth, -(rows - size / 2) / focal * depth, -depth], axis=-1)
    heights = local @ base.data.cam_xmat[cam].reshape(3, 3).T[:, 2] + base.data.cam_xpos[cam][2]
    near = depth < 3.0  # drop the far background
    if env._flip:
        heights, near = heights[::-1, ::-1], near[::-1, ::-1]
    return float(np.corrcoef(rows[near], heights[near])[0, 1])


@pytest.mark.parametrize("camera", ["corner", "corner2", "corner3", "behindGripper"])
def test_frames_are_upright(camera):
    env = MetaWorldEnv("drawer-open-v3", render_mode="rgb_array", camera=camera, width=64, height=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3)
    if camera.startswith("corner"):
        base = env.unwrapped
        assert camera_is_upside_down(base.model, base.data, camera)
        assert np.array_equal(frame, env.env.render()[::-1, ::-1])
    env.close()
    assert _height_row_correlation(env, camera) < -0.5


def test_unknown_task_and_camera_are_refused():
    with pytest.raises(ValueError, match="unknown Meta-World task 'drawer-open-v9'"):
        MetaWorldEnv("drawer-open-v9")
    with pytest.raises(ValueError, match="camera"):
        MetaWorldEnv("reach-v3", camera="ceiling")


@pytest.mark.slow
def test_evaluate_runs_the_expert_on_metaworld(tmp_path):
    result = run_module("embodied.evaluate", "+task=metaworld", "task.env.task=reach-v3", "policy=expert",
                        "eval.episodes=3", "trainer.progress=false", f"output_root={tmp_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(next(tmp_path.glob("*/*_mw-reach-v3_evaluate/metrics.json")).read_text())
    assert metrics["eval"]["success_rate"] == 1.0
