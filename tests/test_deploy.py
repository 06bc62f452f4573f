"""The robot bridge end to end: the deploy loop against real DDS participants on loopback.

Faults are injected over topics, as a robot or an operator would: a test participant publishes
the observation topics (and stops, or sends malformed messages), the e-stop and arm topics, and
listens to the command topic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from real_robot.deploy import DeployConfig, DeployLoop
from real_robot.robot import ARRAY, POSE, ObservationSource, ROS2Robot, ROS2RobotConfig, encode_source, latched_qos
from real_robot.ros2 import ROS2Node
from real_robot.ros2_msgs import Bool, Float64MultiArray, Header, PoseStamped, Time, Vector3, Wrench, WrenchStamped
from real_robot.safety import SafetyConfig, SafetyLayer
from tests.conftest import REPO

_domains = iter(range(150, 230))


def _config(domain: int, **overrides) -> ROS2RobotConfig:
    """Observation: ee position (PoseStamped) + 2 task values; no status or resets (a real robot)."""
    return ROS2RobotConfig(domain_id=domain, observation=[ObservationSource("/ee_pose", POSE, ["position"]),
                                                           ObservationSource("/task_state", ARRAY, [])],
                           status_topic=None, reset_topic=None, **overrides)


class FakeRobotSide:
    """The robot's side of the topics, in the test: publishes observations, listens to commands."""

    def __init__(self, config: ROS2RobotConfig):
        self.node = ROS2Node(config.domain_id)
        self.pose = self.node.publisher("/ee_pose", POSE, config.sensor_qos)
        self.state = self.node.publisher("/task_state", ARRAY, config.sensor_qos)
        self.commands = self.node.subscription(config.command.topic, config.command.type, config.sensor_qos)
        self.estop = self.node.publisher(config.estop_topic, "std_msgs/msg/Bool", latched_qos())
        self.arm = self.node.publisher(config.arm_topic, "std_msgs/msg/Bool", latched_qos())
        self.sources = config.observation
        self.received: list[tuple[float, np.ndarray]] = []

    def publish(self, observation: np.ndarray) -> None:
        self.pose.publish(encode_source(self.sources[0], observation[:3], time.time()))
        self.state.publish(encode_source(self.sources[1], observation[3:], time.time()))

    def collect(self) -> list[tuple[float, np.ndarray]]:
        for msg in self.commands.take():
            t = msg.twist.linear
            self.received.append((time.monotonic(), np.array([t.x, t.y, t.z])))
        return self.received


class ScriptedPolicy:
    def __init__(self, actions):
        self.actions, self.calls = actions, 0

    def act(self, observation):
        action = self.actions(self.calls, observation)
        self.calls += 1
        return action


def _wait_connected(robot: ROS2Robot, side: FakeRobotSide, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        side.publish(np.array([0.5, 0.0, 1.0, 0.1, 0.2]))
        if robot.get_observation(timeout_s=0.05) is not None:
            return
    raise AssertionError("no DDS discovery between the test participants")


def _loop(robot, actions):
    """An armed 50 Hz loop running the scripted ``actions(k, observation)``."""
    safety = SafetyLayer(SafetyConfig(watchdog_s=0.1, max_delta=None))
    loop = DeployLoop(robot, ScriptedPolicy(actions), safety, DeployConfig(rate_hz=50), log=lambda _: None)
    safety.arm()
    return loop


@pytest.fixture
def bridge():
    """``(config, robot side, ROS2Robot)`` on a fresh DDS domain, discovery done."""
    config = _config(next(_domains))
    side = FakeRobotSide(config)
    with ROS2Robot(config, observation_dim=5, action_dim=3) as robot:
        _wait_connected(robot, side)
        yield config, side, robot


def _drive(loop: DeployLoop, robot: ROS2Robot, side: FakeRobotSide, steps: int, publish_until: int | None = None,
           observation=lambda k: np.array([0.5, 0.0, 1.0, 0.1, 0.2]), before_step=None):
    """Run the loop at 50 Hz for ``steps`` steps; the robot side publishes an observation before each
    step up to ``publish_until``. Returns the time of the last observation received."""
    for k in range(steps):
        if publish_until is None or k < publish_until:
            side.publish(observation(k))
        if before_step:
            before_step(k)
        obs = robot.get_observation(timeout_s=0.015)
        loop.step(obs)
        side.collect()
        time.sleep(0.02)
    time.sleep(0.1)
    side.collect()


def test_observations_stop_then_zero_command_within_the_watchdog_time(bridge):
    config, side, robot = bridge
    loop = _loop(robot, lambda k, o: np.array([0.5, 0.0, 0.0]))
    stopped = {}

    def mark(k):
        if k == 30:
            stopped["t"] = robot._received  # the last observation arrived before this step
    _drive(loop, robot, side, steps=50, publish_until=30, before_step=mark)
    received = side.received
    moving = [t for t, c in received if c[0] > 0]
    holds = [t for t, c in received if t > stopped["t"] and not c.any()]
    assert moving and holds, "commands before the stop and hold commands after it"
    # the first hold answers the first step whose observation is older than the watchdog
    assert holds[0] - stopped["t"] <= 0.1 + 0.02 + 0.05
    assert all(not c.any() for t, c in received if t > holds[0]), "no motion after the watchdog fired"
    assert loop.safety.counters["watchdog"] >= 15


def test_nan_action_is_not_sent_and_out_of_limit_action_is_clamped(bridge):
    config, side, robot = bridge
    script = {3: np.array([np.nan, 0.0, 0.0]), 6: np.array([5.0, -7.0, 0.25])}
    loop = _loop(robot, lambda k, o: script.get(k, np.array([0.1, 0.0, 0.0])))
    _drive(loop, robot, side, steps=10)
    commands = np.array([c for _, c in side.received])
    assert len(commands) == 10 and np.isfinite(commands).all(), "a NaN never reaches the topic"
    assert not commands[3].any(), "the NaN step sends the hold command instead"
    scale = config.command.scale
    assert np.allclose(commands[6], np.array([1.0, -1.0, 0.25]) * scale), "clamped to the limits"
    assert loop.safety.counters["nan"] == 1 and loop.safety.counters["clamped"] == 1


def test_estop_topic_latches_no_command_until_rearmed(bridge):
    config, side, robot = bridge
    loop = _loop(robot, lambda k, o: np.array([0.2, 0.0, 0.0]))

    def operator(k):
        if k == 5:
            side.estop.publish(Bool(True))
        if k == 15:
            side.estop.publish(Bool(False))  # released, but not re-armed: still nothing
        if k == 25:
            side.arm.publish(Bool(True))
        time.sleep(0.005 if k in (5, 15, 25) else 0)
    _drive(loop, robot, side, steps=40, before_step=operator)
    times = [t for t, _ in side.received]
    assert len(times) < 40 and loop.safety.counters["blocked_estop"] >= 5
    assert loop.safety.counters["blocked_unarmed"] >= 5, "released e-stop alone does not re-arm"
    gaps = np.diff(times)
    assert gaps.max() > 0.3, "no command at all between the e-stop and re-arming"
    assert all(c[0] == pytest.approx(0.2 * config.command.scale) for _, c in side.received)
    assert loop.counters["estop_received"] == 1


def test_the_force_limit_stops_a_command_stream_pushing_into_the_arm_and_retracts(tmp_path):
    """A wrench over DDS (as a force-torque sensor's driver publishes it) that rises while the
    policy keeps pushing: the layer stops at force_limit - force_margin, sends the retract move,
    then nothing; the stop is latched; malformed wrenches are dropped."""
    config = _config(next(_domains), wrench_topic="/ft_sensor/wrench")
    side = FakeRobotSide(config)
    wrench = side.node.publisher("/ft_sensor/wrench", "geometry_msgs/msg/WrenchStamped", config.sensor_qos)
    with ROS2Robot(config, observation_dim=5, action_dim=3) as robot:
        _wait_connected(robot, side)
        safety = SafetyLayer(SafetyConfig(watchdog_s=0.1, max_delta=None, force_limit=20.0, force_margin=5.0,
                                          backoff_steps=3))
        loop = DeployLoop(robot, ScriptedPolicy(lambda k, o: np.array([0.3, 0.0, 0.0])), safety,
                          DeployConfig(rate_hz=50), log=lambda _: None)
        safety.arm()
        newtons = []
        for k in range(20):
            force = 2.0 * k  # the arm pushes back harder every step: 15 N is reached at k = 8
            if k == 3:
                wrench.publish(WrenchStamped(Header(Time.now(), "ft"), Wrench(Vector3(float("nan"), 0.0, 0.0))))
            wrench.publish(WrenchStamped(Header(Time.now(), "ft"), Wrench(Vector3(0.0, 0.6 * force, -0.8 * force))))
            time.sleep(0.005)
            side.publish(np.array([0.5, 0.0, 1.0, 0.1, 0.2]))
            obs = robot.get_observation(timeout_s=0.015)
            newtons.append(obs.force)
            loop.step(obs)
            side.collect()
            time.sleep(0.02)
        time.sleep(0.1)
        side.collect()
        dropped = robot.dropped_counts()
    assert newtons[8] == pytest.approx(16.0), "the force is the norm of the wrench's force, N"
    commands = np.array([c for _, c in side.received])
    scale = config.command.scale
    pushes, retracts = commands[commands[:, 0] > 0], commands[commands[:, 0] < 0]
    assert len(pushes) == 8 and np.allclose(pushes[:, 0], 0.3 * scale), "pushing until the reading reached 15 N"
    assert len(retracts) == 3 and np.allclose(retracts[:, 0], -0.3 * scale), "back along the approach, 3 steps"
    assert len(commands) == 11 and commands[-1, 0] < 0, "then nothing at all: the stop is latched"
    assert safety.counters["force_stop"] == 1 and safety.estopped
    assert dropped == {"/ft_sensor/wrench: a non-finite force or torque": 1}


def test_malformed_messages_are_dropped_and_counted(bridge):
    config, side, robot = bridge
    robot.get_observation(timeout_s=0.1)
    good = np.array([0.4, 0.1, 1.1, 0.7, 0.8])
    side.publish(good)
    time.sleep(0.05)
    side.state.publish(Float64MultiArray(data=[1.0, 2.0, 3.0]))              # wrong size
    side.state.publish(Float64MultiArray(data=[float("nan"), 1.0]))          # NaN
    bad_pose = encode_source(config.observation[0], np.array([np.inf, 0.0, 1.0]), time.time())
    side.pose.publish(bad_pose)
    assert isinstance(bad_pose, PoseStamped)
    time.sleep(0.2)
    obs = robot.get_observation(timeout_s=0.05)
    np.testing.assert_allclose(obs.observation, good.astype(np.float32))
    dropped = robot.dropped_counts()
    assert dropped == {"/task_state: 3 values, expected 2": 1, "/task_state: a non-finite value": 1,
                       "/ee_pose: a non-finite value": 1}


def test_robot_config_errors_are_named():
    with pytest.raises(ValueError, match="observation sources fill"):
        ROS2RobotConfig(observation=[ObservationSource("/ee_pose", POSE, ["position", "orientation"])]).sizes(5)
    with pytest.raises(ValueError, match="JointState needs joint_names"):
        ObservationSource("/joint_states", "sensor_msgs/msg/JointState", ["position"])
    with pytest.raises(ValueError, match="command type"):
        ROS2RobotConfig(command={"type": "std_msgs/msg/String"})
    with pytest.raises(ValueError, match="at most one Float64MultiArray"):
        ROS2RobotConfig(observation=[ObservationSource("/a", ARRAY, []), ObservationSource("/b", ARRAY, [])])


def _run(module: str, *args: str, env: dict, timeout: float = 300) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_dressing_over_dds_matches_direct_simulation(tmp_path):
    """sim_robot in one process, deploy in another, over Cyclone DDS on loopback: the scripted
    expert's episodes are the same as deploy's robot=mujoco (direct simulation), step for step."""
    from embodied.datasets import load_dataset

    env = dict(os.environ, ROS_DOMAIN_ID=str(next(_domains)), HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1")
    episodes = "3"
    sim = _run("embodied.sim_robot", "+task=dressing", f"output_root={tmp_path}", f"sim.episodes={episodes}", env=env)
    try:
        common = ["+task=dressing", f"deploy.episodes={episodes}", "deploy.pace=false", f"output_root={tmp_path}"]
        over_dds = subprocess.run([sys.executable, "-m", "embodied.deploy", "robot=ros2", *common,
                                   f"hydra.run.dir={tmp_path / 'ros2'}"], cwd=REPO, env=env, capture_output=True,
                                  text=True, timeout=300)
        assert over_dds.returncode == 0, over_dds.stderr[-3000:]
        sim_out, sim_err = sim.communicate(timeout=60)
        assert sim.returncode == 0, sim_err[-3000:]
    finally:
        if sim.poll() is None:
            sim.kill()
    direct = subprocess.run([sys.executable, "-m", "embodied.deploy", "robot=mujoco", *common,
                             f"hydra.run.dir={tmp_path / 'mujoco'}"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert direct.returncode == 0, direct.stderr[-3000:]
    ros2 = json.loads((tmp_path / "ros2" / "deploy.json").read_text())
    mujoco = json.loads((tmp_path / "mujoco" / "deploy.json").read_text())
    assert ros2["episodes"] == mujoco["episodes"] == 3
    assert ros2["success_rate"] == mujoco["success_rate"] >= 2 / 3
    assert ros2["steps"] == mujoco["steps"] and ros2["return_mean"] == pytest.approx(mujoco["return_mean"], abs=1e-4)
    assert ros2["dropped_messages"] == {} and ros2["safety"].get("watchdog", 0) == 0
    # the force on the person reaches the safety layer over DDS (a WrenchStamped) as in simulation
    assert ros2["force_limit_n"] == mujoco["force_limit_n"] == 20.0, "the task's limit is on by default"
    assert ros2["force_stop_n"] == mujoco["force_stop_n"] == 12.0, "the task's 8 N margin by default"
    assert ros2["force_max_n"] == pytest.approx(mujoco["force_max_n"], rel=1e-5) and 0 < ros2["force_max_n"] < 15
    assert ros2["episodes_over_force_limit"] == ros2["episodes_stopped_by_force"] == 0
    assert ros2["safety"].get("force_missing", 0) == 0 and mujoco["safety"].get("force_missing", 0) == 0
    assert '"episodes": 3' in sim_out
    # the deployment became data in our format
    data = load_dataset(ros2["dataset"])
    assert len(data.episodes) == 3 and sum(len(ep) for ep in data.episodes) == ros2["steps"]
    assert [ep.success for ep in data.episodes].count(True) == round(3 * ros2["success_rate"])
    # a rerun into the same folder keeps the recorded episodes and goes on with the next one
    more = subprocess.run([sys.executable, "-m", "embodied.deploy", "robot=mujoco", *common[:1], "deploy.episodes=4",
                           "deploy.pace=false", f"hydra.run.dir={tmp_path / 'mujoco'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "3 episodes already recorded" in more.stdout and "episode 3 (seed 1000003)" in more.stdout
    assert "episode 0 (seed" not in more.stdout
    assert len(load_dataset(json.loads((tmp_path / "mujoco" / "deploy.json").read_text())["dataset"]).episodes) == 4


def test_sim_node_in_real_time_holds_without_commands_and_applies_the_newest(tmp_path):
    import envs
    from real_robot.sim_node import SimRobotNode

    config = ROS2RobotConfig(domain_id=next(_domains), command={"type": ARRAY, "scale": 1.0})
    node = SimRobotNode(envs.make("embodied/PointMass-v0"), config, rate_hz=50, lockstep=False)
    commander = ROS2Node(config.domain_id).publisher(config.command.topic, ARRAY, config.sensor_qos)
    assert commander.wait_for_subscribers(5.0)
    node.reset(0)
    assert [node.spin_once() for _ in range(3)] == ["hold"] * 3 and node.counters["missed_commands"] == 3
    start = node._observation.copy()
    commander.publish(Float64MultiArray(data=[1.0, 0.0]))
    commander.publish(Float64MultiArray(data=[float("nan"), 0.0]))  # malformed: counted, not applied
    time.sleep(0.05)
    assert node.spin_once() == "step" and node.counters["malformed_commands"] == 1
    assert node._observation[2] > start[2], "pushed along +x"
    node.close()


def test_deploy_reads_the_task_from_the_checkpoints_run_folder(tmp_path):
    from omegaconf import OmegaConf

    from embodied.deploy import task_from_checkpoint

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints" / "00000010").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"task": {"name": "dressing", "env": {"id": "embodied/Dressing-v1"}}}),
                   run / ".hydra" / "config.yaml")
    assert task_from_checkpoint(run / "checkpoints" / "00000010").name == "dressing"
    with pytest.raises(FileNotFoundError, match=r"give the task with \+task=NAME"):
        task_from_checkpoint(tmp_path / "elsewhere")
    (run / ".hydra" / "config.yaml").write_text(": : :\n")
    with pytest.raises(ValueError, match=r"config.yaml cannot be read as a run config \(ParserError"):
        task_from_checkpoint(run)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match=r"config.yaml has no task; give the task with \+task=NAME"):
        task_from_checkpoint(run)


def test_joint_state_and_pose_sources_round_trip_by_name():
    from real_robot.robot import JOINTS, decode_source

    joints = ObservationSource("/joint_states", JOINTS, ["position", "velocity"], ["j1", "j2", "j3"])
    msg = encode_source(joints, np.array([0.1, 0.2, 0.3, 1.0, 2.0, 3.0]), stamp=12.5)
    order = [2, 0, 1]  # a robot may list its joints in another order
    msg.name, msg.position, msg.velocity = [msg.name[i] for i in order], [msg.position[i] for i in order], \
        [msg.velocity[i] for i in order]
    values, stamp = decode_source(joints, msg)
    np.testing.assert_allclose(values, [0.1, 0.2, 0.3, 1.0, 2.0, 3.0])
    assert stamp == pytest.approx(12.5)
    pose = ObservationSource("/ee_pose", POSE, ["position", "orientation"])
    values, _ = decode_source(pose, encode_source(pose, np.array([1.0, 2.0, 3.0, 0.0, 0.0, 0.6, 0.8]), 0.0))
    np.testing.assert_allclose(values, [1.0, 2.0, 3.0, 0.0, 0.0, 0.6, 0.8])


def test_joint_trajectory_commands_and_camera_images_over_dds():
    from real_robot.robot import TRAJECTORY
    from real_robot.ros2_msgs import Header, Image, Time

    config = _config(next(_domains), image_topic="/camera/image_raw",
                     command={"type": TRAJECTORY, "scale": 0.5, "joint_names": ["a", "b"], "time_from_start_s": 0.25})
    side = FakeRobotSide(config)
    camera = side.node.publisher("/camera/image_raw", "sensor_msgs/msg/Image", config.sensor_qos)
    with ROS2Robot(config, observation_dim=5, action_dim=2) as robot:
        frame = (np.arange(4 * 6 * 3) % 251).astype(np.uint8).reshape(4, 6, 3)
        deadline = time.monotonic() + 5
        obs = None
        while time.monotonic() < deadline and (obs is None or obs.image is None):
            camera.publish(Image(Header(Time.from_seconds(1.0), "camera"), 4, 6, "rgb8", 0, 18, list(frame.tobytes())))
            side.publish(np.array([0.5, 0.0, 1.0, 0.1, 0.2]))
            obs = robot.get_observation(timeout_s=0.05)
        np.testing.assert_array_equal(obs.image, frame)
        assert robot._command.wait_for_subscribers(5.0)
        robot.send_action(np.array([0.2, -0.4]), respond_to=obs)
        deadline, got = time.monotonic() + 5, []
        while not got and time.monotonic() < deadline:
            got = side.commands.take()
            time.sleep(0.01)
    assert got, "no JointTrajectory arrived"
    (msg,) = got
    assert list(msg.joint_names) == ["a", "b"] and np.allclose(msg.points[0].positions, [0.1, -0.2])
    assert (msg.points[0].time_from_start.sec, msg.points[0].time_from_start.nanosec) == (0, 250_000_000)


def test_data_wait_sleeps_until_a_sample_lands():
    domain = next(_domains)
    node = ROS2Node(domain)
    sub = node.subscription("/ticks", ARRAY)
    pub = ROS2Node(domain).publisher("/ticks", ARRAY)
    assert pub.wait_for_subscribers(5.0)
    wait = node.waiter([sub])
    assert wait.wait(0.05) is False  # nothing there: it times out
    threading.Timer(0.1, lambda: pub.publish(Float64MultiArray(data=[1.0]))).start()
    assert wait.wait(5.0) is True
    assert [list(m.data) for m in sub.take()] == [[1.0]]
    assert wait.wait(0.0) is False  # taken: nothing left to wake on


def test_rearm_each_episode_releases_a_latched_stop_in_simulation_only_when_asked():
    import envs
    from envs.pointmass import PointMassExpert
    from real_robot.robot import MujocoRobot

    for rearm in (False, True):
        with MujocoRobot(lambda: envs.make("embodied/PointMass-v0"), [0, 1, 2]) as robot:
            safety = SafetyLayer(SafetyConfig(low=[-1, -1], high=[1, 1], max_delta=None, watchdog_s=10.0))
            config = DeployConfig(episodes=2, max_steps=5, pace=False, arm_on_start=False, rearm_each_episode=rearm)
            loop = DeployLoop(robot, PointMassExpert(), safety, config, log=lambda _: None)
            safety.arm()
            safety.estop()  # latched before the run, as a force stop at the end of an episode leaves it
            report = loop.run()
        if rearm:
            assert report["loop"]["rearmed"] == 1 and report["steps"] == 10 and not safety.estopped
        else:
            assert "rearmed" not in report["loop"] and report["loop"]["episodes_stopped_by_estop"] == 2
