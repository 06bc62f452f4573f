"""The dressing task: physics sanity, measurements, determinism and scripted policies."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from embodied.data import rollout
from envs.dressing import OBSERVATION_LAYOUT, DressingEnv, DressingExpert, SnagPolicy, StopEarlyPolicy, WrongApproachPolicy
from envs.dressing.env import OBSERVATION_DIM, SUCCESS_MARGIN, project_on_path, winding_number
from envs.dressing.scene import POSE_RANGES, sample_arm
from envs.policies import RandomPolicy

KEYS = ["success", "dressed_distance", "dressed_fraction", "max_force", "unsafe", "arm_inside"]


@pytest.fixture(scope="module")
def env():
    env = envs.make("embodied/Dressing-v1")
    yield env
    env.close()


def test_layout_covers_the_observation(env):
    covered = sorted(i for s in OBSERVATION_LAYOUT.values() for i in range(s.start, s.stop))
    assert covered == list(range(OBSERVATION_DIM)) == list(range(env.observation_space.shape[0]))
    observation, info = env.reset(seed=0)
    assert observation.dtype == np.float32 and observation.shape == (OBSERVATION_DIM,)
    arm = env.unwrapped.arm
    assert np.allclose(observation[OBSERVATION_LAYOUT["elbow"]], arm.elbow, atol=1e-6)
    assert np.isclose(np.linalg.norm(observation[OBSERVATION_LAYOUT["opening_normal"]]), 1.0, atol=1e-5)
    assert info["dressed_distance"] == 0.0 and not info["arm_inside"]


def test_arm_randomisation_stays_in_documented_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        arm = sample_arm(rng)
        hand, fore, upper = arm.segment_lengths
        assert POSE_RANGES["hand_length"][0] <= hand <= POSE_RANGES["hand_length"][1]
        assert POSE_RANGES["forearm_length"][0] <= fore <= POSE_RANGES["forearm_length"][1]
        assert POSE_RANGES["upper_arm_length"][0] <= upper <= POSE_RANGES["upper_arm_length"][1]
        assert POSE_RANGES["elbow_flex"][0] - 1e-9 <= arm.elbow_flex <= POSE_RANGES["elbow_flex"][1] + 1e-9


def test_geometry_helpers():
    path = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0, 1.0, 0]])
    s, segment, t_raw, nearest = project_on_path(np.array([1.2, 0.5, 0.1]), path)
    assert segment == 1 and np.isclose(s, 1.5) and np.allclose(nearest, [1.0, 0.5, 0])
    assert project_on_path(np.array([-0.5, 0, 0]), path)[2] < 0  # before the path starts
    ring = np.stack([np.zeros(8), np.cos(np.linspace(0, 2 * np.pi, 8, endpoint=False)),
                     np.sin(np.linspace(0, 2 * np.pi, 8, endpoint=False))], axis=1) * 0.1
    assert np.isclose(abs(winding_number(ring, np.zeros(3), np.array([1.0, 0, 0]))), 1.0)
    assert np.isclose(winding_number(ring, np.array([0, 0.5, 0]), np.array([1.0, 0, 0])), 0.0)


def test_same_seed_same_trajectory(env):
    policy = WrongApproachPolicy()
    a, b = rollout(env, policy, 11, KEYS), rollout(env, policy, 11, KEYS)
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.rewards, b.rewards)
    assert not np.array_equal(a.observations, rollout(env, policy, 12, KEYS).observations)


def test_expert_dresses_the_arm_past_the_elbow(env):
    for seed in range(3):
        ep = rollout(env, DressingExpert(env.action_space), seed, KEYS)
        assert ep.success and ep.terminations[-1] and len(ep) < 150
        arm = env.unwrapped.arm
        hand, fore, _ = arm.segment_lengths
        assert ep.infos["dressed_distance"][-1] >= hand + fore + SUCCESS_MARGIN
        assert ep.infos["max_force"][-1] < env.unwrapped.unsafe_force
        assert ep.rewards.sum() > 5.0
        # dressed distance grows while the sleeve goes up the arm
        inside = ep.infos["dressed_distance"][ep.infos["arm_inside"]]
        assert len(inside) > 10 and np.all(np.diff(inside) > -0.01)


def test_failure_modes_are_what_their_names_say(env):
    wrong = [rollout(env, WrongApproachPolicy(), s, KEYS) for s in range(3)]
    assert all(not ep.infos["arm_inside"].any() and not ep.success for ep in wrong)
    stop = [rollout(env, StopEarlyPolicy(fraction_range=(0.3, 0.5)), s, KEYS) for s in range(3)]
    assert all(not ep.success and ep.truncations[-1] and ep.infos["dressed_distance"][-1] > 0 for ep in stop)
    snag = [rollout(env, SnagPolicy(distance=(0.05, 0.06)), s, KEYS) for s in range(3)]
    assert max(ep.infos["max_force"][-1] for ep in snag) > env.unwrapped.unsafe_force
    assert any(ep.terminations[-1] and ep.infos["unsafe"][-1] for ep in snag)


def test_a_varied_expert_changes_its_style_within_the_episode_only_when_asked(env):
    """One style per episode by default (the seed's draws, as before ``restyle_every`` existed);
    with ``restyle_every=(8, 8)`` a new speed and height every 8 steps, each step's action the
    expert's towards the current waypoints scaled by the current speed."""
    from envs.dressing import VariedDressingExpert

    fixed = VariedDressingExpert(env.action_space)
    fixed.reset(5)
    rng = np.random.default_rng(5)
    assert fixed.style == (rng.uniform(0.3, 1.0), rng.uniform(-0.02, 0.04))

    policy = VariedDressingExpert(env.action_space, restyle_every=(8, 8))
    observation, _ = env.reset(seed=0)
    policy.reset(0)
    styles = []
    for t in range(24):
        action = policy.act(observation)
        styles.append(policy.style)
        unit = DressingExpert.act(policy, observation)  # the unscaled step towards the same waypoint
        assert np.allclose(action, policy.style[0] * unit, atol=1e-6)
        assert policy._waypoints[-1][2] == pytest.approx(policy._plan(observation)[-1][2])  # the path at this height
        observation, *_ = env.step(action)
    changes = [t for t in range(1, 24) if styles[t] != styles[t - 1]]
    assert changes == [8, 16]
    speeds, heights = np.array(styles).T
    assert speeds.min() >= 0.3 and speeds.max() <= 1.0 and heights.min() >= -0.02 and heights.max() <= 0.04
    with pytest.raises(ValueError, match="restyle_every"):
        VariedDressingExpert(env.action_space, restyle_every=(0, 5))


def test_random_actions_stay_finite_and_fail(env):
    for seed in range(5):
        ep = rollout(env, RandomPolicy(env.action_space), seed, KEYS)
        assert np.all(np.isfinite(ep.observations)) and np.all(np.isfinite(ep.rewards))
        assert not ep.success


def test_frames_show_the_scene():
    env = envs.make("embodied/Dressing-v1", render_mode="rgb_array", width=96, height=64, camera="front")
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8 and frame.std() > 10


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="substeps"):
        DressingEnv(substeps=0)
    with pytest.raises(ValueError, match="sleeve_resolution"):
        DressingEnv(sleeve_resolution=(3, 1))
    with pytest.raises(ValueError, match="camera"):
        DressingEnv(camera="ceiling")
    with pytest.raises(ValueError, match="comfort_force"):
        DressingEnv(comfort_force=30.0, unsafe_force=20.0)
    with pytest.raises(ValueError, match="gripper_stiffness=-1.0 N/m"):
        DressingEnv(gripper_stiffness=-1.0)
    env = DressingEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="3 finite numbers"):
        env.step(np.array([0.0, np.inf, 0.0]))


@pytest.mark.parametrize("mass,gripper", [(0.5, None), (1.0, None), (1.0, 300.0)])
def test_the_force_on_the_person_reads_the_weight_of_a_body_resting_on_the_forearm(monkeypatch, mass, gripper):
    """The force the task reports (and the safety judges read) is a physical quantity, N: a box
    of mass m at rest on a level forearm reads m g, through the observation and the info."""
    import mujoco

    from envs.dressing import env as dressing

    box = (f'<body name="weight" pos="0.75 0.6 0.965"><freejoint/><geom name="weight" type="box" '
           f'size="0.03 0.03 0.02" mass="{mass}" friction="1"/></body>')
    scene = dressing.scene_xml
    monkeypatch.setattr(dressing, "scene_xml", lambda *a, **k: scene(*a, **k).replace("</worldbody>", box + "</worldbody>"))
    env = DressingEnv(gripper_stiffness=gripper, substeps=3 if gripper is None else 5)
    env.reset(seed=0)
    # a level forearm away from the rest of the person and from the sleeve, the box above its middle
    env._place_capsule("forearm", np.array([0.6, 0.6, 0.9]), np.array([0.9, 0.6, 0.9]), 0.04)
    joint = env.model.body("weight").jntadr[0]
    start = env.model.jnt_qposadr[joint]
    env.data.qpos[start:start + 7] = [0.75, 0.6, 0.965, 1.0, 0.0, 0.0, 0.0]
    env.data.qvel[:] = 0.0
    mujoco.mj_forward(env.model, env.data)
    mujoco.mj_step(env.model, env.data, nstep=int(round(1.0 / env.model.opt.timestep)))  # settle, 1 s
    weight = mass * -env.model.opt.gravity[2]
    assert env._person_force() == pytest.approx(weight, rel=0.1)
    readings = []
    for _ in range(8):  # the gripper holds still; the box stays where it rests
        obs, _, _, _, info = env.step(np.zeros(3, dtype=np.float32))
        readings.append((info["force"], float(obs[OBSERVATION_LAYOUT["force"]][0])))
    for force, observed in readings[3:]:  # past the first step's solver transient
        assert force == pytest.approx(weight, rel=0.1) and observed == pytest.approx(force, rel=1e-5)
    assert env.data.qpos[start + 2] == pytest.approx(0.96, abs=0.005), "the box rests on the forearm"


def _snag_forces(env, seeds) -> list[np.ndarray]:
    """The force after each step (N, with 0 before the first) of snag episodes."""
    out = []
    for seed in seeds:
        episode = rollout(env, SnagPolicy(distance=(0.04, 0.06)), seed, KEYS)
        out.append(np.concatenate([[0.0], np.asarray(episode.observations[1:, OBSERVATION_LAYOUT["force"]][:, 0])]))
    return out


def test_a_snag_pulls_on_the_arm_step_by_step_so_a_5_N_margin_sees_it_coming():
    """v1's compliant gripper: the force on the person grows with how far the gripper's target
    ran ahead of it (300 N/m x at most 0.02 m a step), so every snag that ends over the 20 N
    limit read at least 15 N the step before (the safety layer stops there). v0's kinematic
    gripper jumps past the limit from below 15 N in one step."""
    compliant, kinematic = envs.make("embodied/Dressing-v1"), DressingEnv()
    try:
        forces = _snag_forces(compliant, range(8))
        crossings = [f[np.flatnonzero(f > 20.0)[0] - 1] for f in forces if (f > 20.0).any()]
        assert len(crossings) >= 3, "the snags must reach the limit for the check to mean something"
        assert min(crossings) >= 15.0, crossings
        rises = np.concatenate([np.diff(f) for f in forces])
        assert rises.max() < 10.0, rises.max()
        old = [f[np.flatnonzero(f > 20.0)[0] - 1] for f in _snag_forces(kinematic, range(8)) if (f > 20.0).any()]
        assert min(old) < 15.0, "v0 jumps over the margin (the reason for v1)"
    finally:
        compliant.close()
        kinematic.close()


@pytest.mark.slow
def test_the_snag_force_is_converged_in_the_physics_timestep():
    """v1 at 5 and at 10 physics steps per control step (20 ms and 10 ms): the snags' peak
    forces agree within 10 % (median over episodes); v0's were 33 N against 127 N."""
    peaks = {}
    for substeps in (5, 10):
        env = DressingEnv(substeps=substeps, gripper_stiffness=300.0)
        peaks[substeps] = np.median([f.max() for f in _snag_forces(env, range(8))])
        env.close()
    assert peaks[5] > 15.0 and peaks[10] == pytest.approx(peaks[5], rel=0.1), peaks
