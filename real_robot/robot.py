"""The robot interface and its two backends: MuJoCo simulation and ROS 2 over Cyclone DDS.

A :class:`Robot` is what the deploy loop (:mod:`real_robot.deploy`) talks to::

    robot.connect()
    first = robot.reset(seed)                   # a new episode (simulation) or a fresh observation
    obs = robot.get_observation(timeout_s)      # RobotObservation, the newest state
    robot.send_action(command, respond_to=obs)  # a command the safety layer let through
    robot.disconnect()

:class:`MujocoRobot` steps one of our gymnasium environments. :class:`ROS2Robot` subscribes the
observation topics (``sensor_msgs/JointState``, ``geometry_msgs/PoseStamped``,
``std_msgs/Float64MultiArray``, optionally ``sensor_msgs/Image``) and publishes commands as
``geometry_msgs/TwistStamped`` (Cartesian velocity, MoveIt Servo), ``std_msgs/Float64MultiArray``
or ``trajectory_msgs/JointTrajectory`` (ros2_control controllers), with ROS 2's DDS naming
(:mod:`real_robot.ros2`). The policy's observation vector is the concatenation of the
observation sources in their configured order; :func:`encode_source` and :func:`decode_source`
are the two directions of that mapping, shared with the simulated robot node.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from real_robot.ros2 import QosConfig, ROS2Node, validate_joint_state, validate_pose_stamped
from real_robot.ros2_msgs import (
    Duration,
    Float64MultiArray,
    Header,
    Int64,
    JointState,
    JointTrajectory,
    JointTrajectoryPoint,
    MultiArrayDimension,
    MultiArrayLayout,
    Point,
    Pose,
    PoseStamped,
    Quaternion,
    Time,
    Twist,
    TwistStamped,
    Vector3,
)

POSE = "geometry_msgs/msg/PoseStamped"
JOINTS = "sensor_msgs/msg/JointState"
ARRAY = "std_msgs/msg/Float64MultiArray"
TWIST = "geometry_msgs/msg/TwistStamped"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
WRENCH = "geometry_msgs/msg/WrenchStamped"
#: Entries of the episode-status message the simulated robot publishes.
STATUS_FIELDS = ("episode", "step", "reward", "terminated", "truncated", "success")


@dataclass
class RobotObservation:
    """The newest state of the robot.

    Attributes:
        observation: ``(D,) float32``, the policy's input.
        received: s (the receiver's monotonic clock) when the newest part arrived.
        source_stamp: s, the robot's own stamp (a ``header.stamp``), or None.
        fresh: every part is new since the previous call (False: some part is old).
        position: ``(3,) float64`` end-effector position, m, for the workspace rule, or None.
        image: ``(H, W, 3) uint8`` camera frame, or None.
        reward, terminated, truncated, success, episode, step: the episode status, when the
            robot reports one (simulation); None or False on a real robot.
        info: ``info`` entries of a simulated step.
    """

    observation: np.ndarray
    received: float
    source_stamp: float | None = None
    fresh: bool = True
    position: np.ndarray | None = None
    image: np.ndarray | None = None
    reward: float | None = None
    terminated: bool = False
    truncated: bool = False
    success: bool | None = None
    episode: int | None = None
    step: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    force: float | None = None
    """N, the force on the person (a ``WrenchStamped``'s force norm, or the simulation's
    reading), or None when the robot has no force source."""
    force_stamp: float | None = None
    """s (the receiver's monotonic clock) when the force reading arrived."""


class Robot(ABC):
    """A robot the deploy loop can drive (module docstring for the calls)."""

    self_clocked: bool = True
    """The robot moves on its own clock and publishes at its rate (a real robot, the simulated
    robot node); False: it moves only when sent a command (:class:`MujocoRobot`), so the deploy
    loop paces it."""

    observation_features: dict[str, tuple[int, ...]]
    """Name -> shape of what :meth:`get_observation` returns (``observation``: ``(D,)``)."""
    action_features: dict[str, tuple[int, ...]]
    """Name -> shape of what :meth:`send_action` takes (``action``: ``(A,)``)."""

    @abstractmethod
    def connect(self) -> None:
        """Open the connection (topics, simulation)."""

    @abstractmethod
    def reset(self, seed: int) -> RobotObservation | None:
        """Start an episode (simulation resets with ``seed``); the first observation, or None
        when none came in time."""

    @abstractmethod
    def get_observation(self, timeout_s: float = 0.0) -> RobotObservation | None:
        """The newest observation, waiting up to ``timeout_s`` for a fresh one; None before any."""

    @abstractmethod
    def send_action(self, command: np.ndarray, respond_to: RobotObservation | None = None) -> None:
        """Send ``command (A,)``, already filtered by the safety layer."""

    @abstractmethod
    def disconnect(self) -> None:
        """Close the connection."""

    def control_events(self) -> list[tuple[str, bool]]:
        """``("estop", True)`` / ``("arm", True)`` events received since the last call."""
        return []

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()


class MujocoRobot(Robot):
    """One of our MuJoCo gymnasium environments as a robot: ``send_action`` steps it.

    Args:
        make_env: builds the env (called on :meth:`connect`).
        position_indices: observation entries holding the end-effector position (m), or None.
        info_keys: ``info`` entries copied into :attr:`RobotObservation.info`.
        clock: monotonic seconds.
        force_index: observation entry holding the force on the person (N), read into
            :attr:`RobotObservation.force`, or None.
    """

    self_clocked = False

    def __init__(self, make_env: Callable[[], Any], position_indices: list[int] | None = (0, 1, 2),
                 info_keys: list[str] | None = None, clock: Callable[[], float] = time.monotonic,
                 force_index: int | None = None):
        self.force_index = force_index
        self._make_env, self.position_indices = make_env, position_indices
        self.info_keys, self.clock = list(info_keys or ["success"]), clock
        self.env: Any = None
        self._current: RobotObservation | None = None
        self._episode = -1
        self._step = 0

    def connect(self) -> None:
        self.env = self._make_env()
        self.observation_features = {"observation": tuple(self.env.observation_space.shape)}
        self.action_features = {"action": tuple(self.env.action_space.shape)}

    def _observation(self, obs: np.ndarray, reward: float | None, terminated: bool, truncated: bool,
                     info: dict[str, Any]) -> RobotObservation:
        obs = np.asarray(obs, dtype=np.float32)
        position = None if self.position_indices is None else obs[list(self.position_indices)].astype(np.float64)
        now = self.clock()
        force = None if self.force_index is None else float(obs[self.force_index])
        return RobotObservation(obs, now, None, True, position, None, reward, terminated, truncated,
                                bool(info.get("success", False)), self._episode, self._step,
                                {k: info[k] for k in self.info_keys if k in info}, force,
                                None if force is None else now)

    def reset(self, seed: int) -> RobotObservation:
        obs, info = self.env.reset(seed=int(seed))
        self._episode, self._step = self._episode + 1, 0
        self._current = self._observation(obs, None, False, False, info)
        return self._current

    def get_observation(self, timeout_s: float = 0.0) -> RobotObservation | None:
        if self._current is None:
            return None
        # The simulation does not move between steps: its state is as new as the moment it is read.
        now = self.clock()
        current = dataclasses.replace(self._current, received=now,
                                      force_stamp=None if self._current.force is None else now)
        self._current = dataclasses.replace(self._current, fresh=False)
        return current

    def send_action(self, command: np.ndarray, respond_to: RobotObservation | None = None) -> None:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(command, dtype=np.float32))
        self._step += 1
        self._current = self._observation(obs, float(reward), bool(terminated), bool(truncated), info)

    def disconnect(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


# -- ROS 2 ------------------------------------------------------------------------------------
@dataclass
class ObservationSource:
    """One observation topic and the entries of the observation vector it fills.

    ``sensor_msgs/msg/JointState``: ``fields`` of ``position``, ``velocity``, ``effort``, each
    ``len(joint_names)`` entries. ``geometry_msgs/msg/PoseStamped``: ``position`` (x, y, z, m)
    and/or ``orientation`` (x, y, z, w). ``std_msgs/msg/Float64MultiArray``: ``size`` entries
    (None: what the other sources leave of the observation).
    """

    topic: str = "/ee_pose"
    type: str = POSE
    fields: list[str] = field(default_factory=lambda: ["position"])
    joint_names: list[str] = field(default_factory=list)
    size: int | None = None

    def __post_init__(self) -> None:
        allowed = {POSE: ("position", "orientation"), JOINTS: ("position", "velocity", "effort"), ARRAY: ()}
        if self.type not in allowed:
            raise ValueError(f"observation source {self.topic}: type {self.type!r}; expected one of {sorted(allowed)}")
        bad = [f for f in self.fields if f not in allowed[self.type]]
        if self.type != ARRAY and (bad or not self.fields):
            raise ValueError(f"observation source {self.topic}: fields {self.fields}; {self.type} has {allowed[self.type]}")
        if self.type == JOINTS and not self.joint_names:
            raise ValueError(f"observation source {self.topic}: JointState needs joint_names")

    def fixed_size(self) -> int | None:
        """Entries this source fills, or None (a Float64MultiArray without ``size``)."""
        if self.type == POSE:
            return sum(3 if f == "position" else 4 for f in self.fields)
        if self.type == JOINTS:
            return len(self.joint_names) * len(self.fields)
        return self.size


@dataclass
class CommandConfig:
    """How commands are published.

    ``geometry_msgs/msg/TwistStamped``: ``twist.linear = scale * command[:3]`` (m/s) and
    ``twist.angular = scale * command[3:6]`` (rad/s) when the command has 6 entries;
    ``std_msgs/msg/Float64MultiArray``: ``data = scale * command``;
    ``trajectory_msgs/msg/JointTrajectory``: one point, ``positions = scale * command`` (rad)
    reached ``time_from_start_s`` after the stamp.
    """

    topic: str = "/embodied/command"
    type: str = TWIST
    scale: float = 1.0
    frame_id: str = "base_link"
    joint_names: list[str] = field(default_factory=list)
    time_from_start_s: float = 0.1

    def __post_init__(self) -> None:
        if self.type not in (TWIST, ARRAY, TRAJECTORY):
            raise ValueError(f"command type {self.type!r}; expected {TWIST}, {ARRAY} or {TRAJECTORY}")
        if not self.scale > 0:
            raise ValueError(f"command scale={self.scale}; expected > 0")


@dataclass
class ROS2RobotConfig:
    """Topics, types, QoS and domain of a ROS 2 robot (docs/real_robot.md)."""

    domain_id: int | None = None
    """DDS domain; None: ``ROS_DOMAIN_ID``, else 0."""
    observation: list[ObservationSource] = field(default_factory=lambda: [
        ObservationSource("/ee_pose", POSE, ["position"]), ObservationSource("/embodied/task_state", ARRAY, [])])
    """Sources of the observation vector, in order."""
    position_source: int | None = 0
    """Index of the PoseStamped source giving the end-effector position (workspace rule), or None."""
    image_topic: str | None = None
    """``sensor_msgs/msg/Image`` (rgb8) recorded with each step, or None."""
    status_topic: str | None = "/embodied/episode_status"
    """Float64MultiArray of :data:`STATUS_FIELDS` (the simulated robot publishes it), or None."""
    command: CommandConfig = field(default_factory=CommandConfig)
    reset_topic: str | None = "/embodied/reset"
    """``std_msgs/msg/Int64`` seed that starts an episode (simulated robot), or None."""
    estop_topic: str = "/embodied/estop"
    """``std_msgs/msg/Bool``, latched (transient local): True stops, False releases."""
    arm_topic: str = "/embodied/arm"
    """``std_msgs/msg/Bool``: True arms, False disarms."""
    wrench_topic: str | None = None
    """``geometry_msgs/msg/WrenchStamped`` of a force-torque sensor (the force on the person is
    the norm of its force, N), read by the safety layer's force limit; None: no force source.
    When set, an observation is complete only with a wrench newer than the previous one (a
    sensor publishes faster than the control rate; a silent sensor makes observations late,
    and the watchdog holds the robot)."""
    sensor_qos: QosConfig = field(default_factory=QosConfig)
    """QoS of observation, status and command topics (ROS default: reliable, keep last 10)."""
    reset_timeout_s: float = 5.0
    """s to wait for the first observation of a new episode."""

    def __post_init__(self) -> None:
        self.observation = [s if isinstance(s, ObservationSource) else ObservationSource(**s) for s in self.observation]
        if isinstance(self.command, dict):
            self.command = CommandConfig(**self.command)
        if isinstance(self.sensor_qos, dict):
            self.sensor_qos = QosConfig(**self.sensor_qos)
        if not self.observation:
            raise ValueError("a ROS 2 robot needs at least one observation source")
        if sum(s.fixed_size() is None for s in self.observation) > 1:
            raise ValueError("at most one Float64MultiArray observation source may leave its size unset")
        if self.position_source is not None and (
                not 0 <= self.position_source < len(self.observation)
                or self.observation[self.position_source].type != POSE
                or self.observation[self.position_source].fields[:1] != ["position"]):
            raise ValueError(f"position_source={self.position_source}: expected the index of a PoseStamped source "
                             "whose first field is position")

    def sizes(self, observation_dim: int) -> list[int]:
        """Entries of each source for an observation of ``observation_dim``.

        Raises:
            ValueError: the sources cannot fill exactly ``observation_dim`` entries.
        """
        fixed = [s.fixed_size() for s in self.observation]
        rest = observation_dim - sum(n for n in fixed if n is not None)
        sizes = [rest if n is None else n for n in fixed]
        if sum(sizes) != observation_dim or min(sizes) < 1:
            raise ValueError(f"observation sources fill {sizes} entries; the policy's observation has {observation_dim}")
        return sizes


def encode_source(source: ObservationSource, values: np.ndarray, stamp: float, frame_id: str = "world") -> Any:
    """The message carrying ``values`` (this source's slice of the observation)."""
    values = [float(v) for v in np.asarray(values, dtype=np.float64)]
    header = Header(Time.from_seconds(stamp), frame_id)
    if source.type == POSE:
        pose, i = Pose(), 0
        for f in source.fields:
            if f == "position":
                pose.position, i = Point(*values[i:i + 3]), i + 3
            else:
                pose.orientation, i = Quaternion(*values[i:i + 4]), i + 4
        return PoseStamped(header, pose)
    if source.type == JOINTS:
        n = len(source.joint_names)
        parts = {f: values[k * n:(k + 1) * n] for k, f in enumerate(source.fields)}
        return JointState(header, list(source.joint_names), parts.get("position", []), parts.get("velocity", []),
                          parts.get("effort", []))
    return Float64MultiArray(MultiArrayLayout([MultiArrayDimension(source.topic, len(values), len(values))], 0), values)


def decode_source(source: ObservationSource, msg: Any) -> tuple[np.ndarray, float | None]:
    """``(values, stamp)`` from a message of this source (stamp None for Float64MultiArray)."""
    if source.type == POSE:
        p, q = msg.pose.position, msg.pose.orientation
        parts = {"position": [p.x, p.y, p.z], "orientation": [q.x, q.y, q.z, q.w]}
        return np.asarray([v for f in source.fields for v in parts[f]]), msg.header.stamp.to_seconds()
    if source.type == JOINTS:
        order = [list(msg.name).index(n) for n in source.joint_names] if msg.name else range(len(source.joint_names))
        values = [getattr(msg, f)[i] for f in source.fields for i in order]
        return np.asarray(values, dtype=np.float64), msg.header.stamp.to_seconds()
    return np.asarray(msg.data, dtype=np.float64), None


def source_validator(source: ObservationSource, size: int) -> Callable[[Any], str | None]:
    """``msg -> reason | None``: shape, names and finiteness of one source's messages."""
    def check(msg: Any) -> str | None:
        if source.type == POSE:
            if "orientation" not in source.fields:  # position-only sources may leave orientation at zero
                values = [msg.pose.position.x, msg.pose.position.y, msg.pose.position.z]
                return None if np.isfinite(values).all() else "a non-finite value"
            return validate_pose_stamped(msg)
        if source.type == JOINTS:
            reason = validate_joint_state(msg)
            if reason is None and msg.name and set(source.joint_names) - set(msg.name):
                reason = f"missing joints {sorted(set(source.joint_names) - set(msg.name))}"
            if reason is None and not msg.name and len(msg.position) != len(source.joint_names):
                reason = f"{len(msg.position)} positions, expected {len(source.joint_names)}"
            if reason is None:
                for f in source.fields:
                    if len(getattr(msg, f)) < len(source.joint_names):
                        reason = f"{len(getattr(msg, f))} {f} entries, expected {len(source.joint_names)}"
            return reason
        if len(msg.data) != size:
            return f"{len(msg.data)} values, expected {size}"
        return None if np.isfinite(np.asarray(msg.data, dtype=np.float64)).all() else "a non-finite value"

    return check


def _status_validator(msg: Any) -> str | None:
    if len(msg.data) != len(STATUS_FIELDS):
        return f"{len(msg.data)} status values, expected {len(STATUS_FIELDS)}"
    return None if np.isfinite(np.asarray(msg.data, dtype=np.float64)).all() else "a non-finite value"


def _wrench_validator(msg: Any) -> str | None:
    f, t = msg.wrench.force, msg.wrench.torque
    values = [f.x, f.y, f.z, t.x, t.y, t.z]
    return None if all(math.isfinite(v) for v in values) else "a non-finite force or torque"


def _image_validator(msg: Any) -> str | None:
    if msg.encoding != "rgb8" or msg.step != 3 * msg.width or len(msg.data) != msg.height * msg.step:
        return f"image {msg.width}x{msg.height} {msg.encoding!r} with {len(msg.data)} bytes; expected rgb8, step 3*width"
    return None


def latched_qos() -> QosConfig:
    """QoS of the e-stop and arm topics: reliable, keep last 1, transient local (latched)."""
    return QosConfig("reliable", 1, "transient_local")


class ROS2Robot(Robot):
    """A ROS 2 robot over Cyclone DDS (no ROS install); see :class:`ROS2RobotConfig`.

    Args:
        config: topics, types, QoS, domain.
        observation_dim: entries of the policy's observation.
        action_dim: entries of a command.
        clock: monotonic seconds (receive times, the watchdog's clock).

    Raises:
        ValueError: the observation sources do not fill ``observation_dim`` entries.
    """

    def __init__(self, config: ROS2RobotConfig, observation_dim: int, action_dim: int,
                 clock: Callable[[], float] = time.monotonic):
        self.config, self.clock = config, clock
        self.sizes = config.sizes(observation_dim)
        self.observation_features = {"observation": (observation_dim,)}
        self.action_features = {"action": (action_dim,)}
        self.node: Any = None
        self.dropped: Counter = Counter()

    def connect(self) -> None:
        c = self.config
        self.node = ROS2Node(c.domain_id)
        self._sources = [self.node.subscription(s.topic, s.type, c.sensor_qos, source_validator(s, n))
                         for s, n in zip(c.observation, self.sizes)]
        self._status = self.node.subscription(c.status_topic, ARRAY, c.sensor_qos, _status_validator) if c.status_topic else None
        self._image = self.node.subscription(c.image_topic, "sensor_msgs/msg/Image", c.sensor_qos,
                                             _image_validator) if c.image_topic else None
        self._estop = self.node.subscription(c.estop_topic, "std_msgs/msg/Bool", latched_qos())
        self._arm = self.node.subscription(c.arm_topic, "std_msgs/msg/Bool", latched_qos())
        self._wrench = self.node.subscription(c.wrench_topic, WRENCH, c.sensor_qos, _wrench_validator) if (
            c.wrench_topic) else None
        self._latest_force: tuple[float, float] | None = None
        self._command = self.node.publisher(c.command.topic, c.command.type, c.sensor_qos)
        self._reset = self.node.publisher(c.reset_topic, "std_msgs/msg/Int64", c.sensor_qos) if c.reset_topic else None
        self._wait = self.node.waiter([*self._sources, *(s for s in (self._status, self._wrench) if s is not None)])
        self._new_wrench = False
        self._latest: list[Any] = [None] * len(self._sources)
        self._new = [False] * len(self._sources)
        self._latest_status, self._new_status = None, False
        self._latest_image = None
        self._received = 0.0
        self._events: list[tuple[str, bool]] = []

    def _poll(self) -> None:
        now = self.clock()
        for i, sub in enumerate(self._sources):
            samples = sub.take()
            if samples:
                self._latest[i], self._new[i], self._received = samples[-1], True, now
        if self._status is not None:
            samples = self._status.take()
            if samples:
                self._latest_status, self._new_status, self._received = samples[-1], True, now
        if self._image is not None:
            samples = self._image.take()
            if samples:
                self._latest_image = samples[-1]
        if self._wrench is not None:
            samples = self._wrench.take()
            if samples:
                f = samples[-1].wrench.force
                self._latest_force, self._new_wrench = (float(np.linalg.norm([f.x, f.y, f.z])), now), True
        for name, sub in (("estop", self._estop), ("arm", self._arm)):
            self._events.extend((name, bool(m.data)) for m in sub.take())

    def _complete(self) -> bool:
        return all(self._new) and (self._status is None or self._new_status) and (
            self._wrench is None or self._new_wrench)

    def get_observation(self, timeout_s: float = 0.0) -> RobotObservation | None:
        deadline = self.clock() + timeout_s
        self._poll()
        while not self._complete() and self.clock() < deadline:
            self._wait.wait(deadline - self.clock())
            self._poll()
        if any(m is None for m in self._latest):
            return None
        fresh = self._complete()
        parts, stamp = [], None
        for source, msg in zip(self.config.observation, self._latest):
            values, source_stamp = decode_source(source, msg)
            parts.append(values)
            stamp = source_stamp if stamp is None else stamp
        observation = np.concatenate(parts).astype(np.float32)
        position = None
        if self.config.position_source is not None:
            position = parts[self.config.position_source][:3].astype(np.float64)
        out = RobotObservation(observation, self._received, stamp, fresh, position)
        if self._latest_force is not None:
            out.force, out.force_stamp = self._latest_force
        if self._latest_image is not None:
            m = self._latest_image
            out.image = np.frombuffer(bytes(m.data), dtype=np.uint8).reshape(m.height, m.width, 3)
        if self._latest_status is not None:
            s = dict(zip(STATUS_FIELDS, self._latest_status.data))
            out.episode, out.step, out.reward = int(s["episode"]), int(s["step"]), float(s["reward"])
            out.terminated, out.truncated, out.success = bool(s["terminated"]), bool(s["truncated"]), bool(s["success"])
        self._new = [False] * len(self._new)
        self._new_status = self._new_wrench = False
        return out

    def reset(self, seed: int) -> RobotObservation | None:
        """Ask for a new episode (``reset_topic``) and wait for its first observation (step 0 of a
        new episode when the robot reports status; else any fresh observation)."""
        previous = None if self._latest_status is None else int(self._latest_status.data[0])
        deadline = self.clock() + self.config.reset_timeout_s
        if self._reset is not None:
            # A request written before discovery matched the robot's reader would be lost.
            self._reset.wait_for_subscribers(self.config.reset_timeout_s)
            self._command.wait_for_subscribers(max(0.0, deadline - self.clock()))
        retry = self.clock()
        while self.clock() < deadline:
            if self._reset is not None and self.clock() >= retry:
                # Repeated requests carry the same seed; the simulated robot ignores a repeat of
                # the episode it has just started.
                self._reset.publish(Int64(int(seed)))
                retry = self.clock() + 1.0
            obs = self.get_observation(timeout_s=max(0.0, min(retry, deadline) - self.clock()))
            if obs is None or not obs.fresh:
                continue
            if obs.episode is None or (obs.step == 0 and obs.episode != previous):
                return obs
        return None

    def send_action(self, command: np.ndarray, respond_to: RobotObservation | None = None) -> None:
        c = self.config.command
        values = [float(v) * c.scale for v in np.asarray(command, dtype=np.float64)]
        stamp = respond_to.source_stamp if respond_to is not None and respond_to.source_stamp is not None else time.time()
        header = Header(Time.from_seconds(stamp), c.frame_id)
        if c.type == TWIST:
            padded = (values + [0.0] * 6)[:6]  # linear (m/s), then angular (rad/s) when given
            msg: Any = TwistStamped(header, Twist(Vector3(*padded[:3]), Vector3(*padded[3:])))
        elif c.type == ARRAY:
            msg = Float64MultiArray(data=values)
        else:
            seconds = int(c.time_from_start_s)
            point = JointTrajectoryPoint(positions=values, time_from_start=Duration(
                seconds, int(round((c.time_from_start_s - seconds) * 1e9))))
            msg = JointTrajectory(header, list(c.joint_names), [point])
        self._command.publish(msg)

    def control_events(self) -> list[tuple[str, bool]]:
        self._poll()
        events, self._events = self._events, []
        return events

    def dropped_counts(self) -> dict[str, int]:
        """``topic: reason -> count`` of every malformed message dropped so far."""
        subs = [*self._sources, *(s for s in (self._status, self._image, self._wrench) if s is not None)]
        return {f"{s.topic}: {reason}": n for s in subs for reason, n in s.dropped.items()}

    def disconnect(self) -> None:
        self.node = None  # cyclonedds entities are freed with their participant
