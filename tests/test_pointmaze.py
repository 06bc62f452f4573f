"""PointMaze (gymnasium-robotics) behind a flat observation, and the path-planning expert."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from embodied.data import rollout
from envs.pointmaze import PointMazeExpert, cell_center, cell_of, goal_observation, maze_map


@pytest.fixture(scope="module")
def env():
    env = envs.make("embodied/PointMaze-v0")
    yield env
    env.close()


def test_cell_coordinates_are_gymnasium_robotics_own(env):
    maze = env.unwrapped.maze
    cells = maze_map("medium")
    assert cells.shape == (8, 8) and cells[0].all() and not cells[1, 1]
    for row, col in zip(*np.nonzero(cells == 0)):
        center = cell_center(cells, row, col)
        assert np.allclose(center, maze.cell_rowcol_to_xy(np.array([row, col])))
        assert cell_of(cells, center + 0.3) == tuple(maze.cell_xy_to_rowcol(center + 0.3))


def test_flat_observation_and_info(env):
    observation, info = env.reset(seed=0)
    assert observation.shape == (6,) and observation.dtype == np.float32 and env.observation_space.shape == (6,)
    assert set(info) == {"success", "distance"}
    assert info["distance"] == pytest.approx(float(np.linalg.norm(observation[:2] - observation[4:])), abs=1e-5)
    assert np.array_equal(goal_observation(observation[4:]), np.r_[observation[4:], 0, 0, observation[4:]])


def test_the_expert_plans_around_walls():
    expert = PointMazeExpert(maze="medium")
    cells = expert.cells
    # from cell (1, 1) to cell (2, 5): the wall at (1, 3)/(2, 3) is in the way; the path goes down
    start, goal = cell_center(cells, 1, 1), cell_center(cells, 2, 5)
    waypoint = expert.next_waypoint(start, goal)
    assert cell_of(cells, waypoint) in {(1, 2), (2, 1)}
    assert np.array_equal(expert.next_waypoint(goal + 0.1, goal), goal)  # in the goal's cell: the goal itself


def test_the_expert_reaches_goals_that_a_straight_line_does_not(env):
    expert = PointMazeExpert(env.action_space, maze="medium")

    class StraightLine(PointMazeExpert):  # steers at the goal through the walls
        def next_waypoint(self, position, goal):
            return goal

    straight = StraightLine(env.action_space, maze="medium")
    expert_success = np.mean([rollout(env, expert, seed).success for seed in range(8)])
    straight_success = np.mean([rollout(env, straight, seed).success for seed in range(8)])
    assert expert_success == 1.0 and straight_success <= 0.75, (expert_success, straight_success)


def test_the_camera_can_be_moved_and_a_wrong_field_is_named():
    from envs.pointmaze import PointMazeEnv

    frames = []
    for camera in (None, {"elevation": -55.0, "azimuth": 60.0}):
        env = PointMazeEnv("umaze", render_mode="rgb_array", width=32, height=32, camera=camera)
        env.reset(seed=0)
        frames.append(env.render().astype(np.int16))
        env.close()
    assert np.abs(frames[0] - frames[1]).mean() > 5.0  # another viewpoint, another picture
    with pytest.raises(ValueError, match="camera field 'fovy'"):
        PointMazeEnv("umaze", camera={"fovy": 45})


def test_making_a_maze_leaves_no_model_file_behind():
    """gymnasium-robotics writes each maze's MJCF into the temporary folder's parent; the env deletes it."""
    from pathlib import Path

    env = envs.make("embodied/PointMaze-v0")
    try:
        path = Path(env.unwrapped.tmp_xml_file_path)
        assert not path.exists()
        env.reset(seed=0)
        env.step(env.action_space.sample())  # MuJoCo runs on the model it loaded
    finally:
        env.close()
