"""ROS 2 topics over Cyclone DDS without a ROS install: publishers, validated subscriptions.

Naming (FACTS.md): ROS topic ``/joint_states`` is DDS topic ``rt/joint_states``; message
``sensor_msgs/msg/JointState`` is DDS type ``sensor_msgs::msg::dds_::JointState_``
(:mod:`real_robot.ros2_msgs`); the domain id is ``ROS_DOMAIN_ID`` (default 0). A ROS 2 robot on
the same domain with ``RMW_IMPLEMENTATION=rmw_cyclonedds_cpp`` talks to these endpoints directly.

A subscription checks every sample with a validator (:func:`validate_joint_state`, ...) and
drops, and counts, the ones that fail (a malformed message never reaches the policy).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from real_robot.ros2_msgs import MESSAGES, JointState, PoseStamped


def dds_topic(ros_topic: str) -> str:
    """``/joint_states`` -> ``rt/joint_states`` (a relative name gets the leading slash).

    Raises:
        ValueError: an empty name, or characters ROS 2 does not allow in topic names.
    """
    name = ros_topic.strip()
    if not name or name == "/":
        raise ValueError("empty ROS topic name")
    name = name.lstrip("/")
    if not all(c.isalnum() or c in "_/" for c in name) or name[0].isdigit():
        raise ValueError(f"ROS topic {ros_topic!r}: expected letters, digits, '_' and '/', not starting with a digit")
    return "rt/" + name


def ros_domain_id(domain_id: int | None = None) -> int:
    """``domain_id``, else ``ROS_DOMAIN_ID``, else 0.

    Raises:
        ValueError: not an integer in 0..232 (the range ROS 2 supports).
    """
    value = domain_id if domain_id is not None else os.environ.get("ROS_DOMAIN_ID", "0")
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"ROS domain id {value!r}; expected an integer 0..232") from None
    if not 0 <= value <= 232:
        raise ValueError(f"ROS domain id {value}; expected 0..232")
    return value


@dataclass
class QosConfig:
    """A topic's QoS, ROS 2 defaults: reliable, keep last 10, volatile.

    Raises:
        ValueError: an unknown reliability or durability, or depth < 1.
    """

    reliability: str = "reliable"
    """``reliable`` or ``best_effort`` (sensor data)."""
    depth: int = 10
    """History: keep the last ``depth`` samples."""
    durability: str = "volatile"
    """``volatile`` or ``transient_local`` (latched, e.g. an e-stop)."""

    def __post_init__(self) -> None:
        if self.reliability not in ("reliable", "best_effort"):
            raise ValueError(f"reliability={self.reliability!r}; expected 'reliable' or 'best_effort'")
        if self.durability not in ("volatile", "transient_local"):
            raise ValueError(f"durability={self.durability!r}; expected 'volatile' or 'transient_local'")
        if self.depth < 1:
            raise ValueError(f"depth={self.depth}; expected >= 1")

    def to_dds(self) -> Qos:
        reliability = (Policy.Reliability.Reliable(duration(milliseconds=100)) if self.reliability == "reliable"
                       else Policy.Reliability.BestEffort)
        durability = Policy.Durability.Volatile if self.durability == "volatile" else Policy.Durability.TransientLocal
        return Qos(reliability, Policy.History.KeepLast(self.depth), durability)


def _finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


def validate_joint_state(msg: JointState, joints: int | None = None) -> str | None:
    """Why a JointState is malformed, or None when it is fine.

    Checks: ``position`` has ``joints`` entries (when given) and as many as ``name`` (when names
    are sent); ``velocity`` and ``effort`` are empty or as long as ``position``; all finite.
    """
    n = len(msg.position)
    if joints is not None and n != joints:
        return f"{n} positions, expected {joints}"
    if msg.name and len(msg.name) != n:
        return f"{len(msg.name)} names for {n} positions"
    for key in ("velocity", "effort"):
        if len(getattr(msg, key)) not in (0, n):
            return f"{len(getattr(msg, key))} {key} entries for {n} positions"
    if not (_finite(msg.position) and _finite(msg.velocity) and _finite(msg.effort)):
        return "a non-finite value"
    return None


def validate_pose_stamped(msg: PoseStamped) -> str | None:
    """Why a PoseStamped is malformed (non-finite, or a quaternion far from unit norm), or None."""
    p, q = msg.pose.position, msg.pose.orientation
    if not _finite([p.x, p.y, p.z, q.x, q.y, q.z, q.w]):
        return "a non-finite value"
    if abs(math.sqrt(q.x**2 + q.y**2 + q.z**2 + q.w**2) - 1.0) > 1e-3:
        return "orientation is not a unit quaternion"
    return None


class Publisher:
    """Writes messages of one type to one ROS topic."""

    def __init__(self, writer: DataWriter, topic: str):
        self._writer, self.topic = writer, topic
        self.sent = 0

    def publish(self, msg) -> None:
        self._writer.write(msg)
        self.sent += 1

    def matched(self) -> int:
        """Subscriptions discovered on this topic (0 until DDS discovery has matched them)."""
        return len(self._writer.get_matched_subscriptions())

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until some subscription is matched (a message written before
        that is lost on a volatile topic). Returns whether one is."""
        deadline = time.monotonic() + timeout_s
        while not self.matched():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True


class Subscription:
    """Takes the samples of one ROS topic, drops (and counts) the ones its validator rejects.

    Attributes:
        received: samples taken, valid or not.
        dropped: ``reason -> count`` of the rejected ones.
    """

    def __init__(self, reader: DataReader, topic: str, msg_class: type, validator: Callable | None):
        self._reader, self.topic, self._class, self._validator = reader, topic, msg_class, validator
        self.received = 0
        self.dropped: Counter = Counter()

    def take(self, limit: int = 64) -> list:
        """The valid samples that arrived since the last call (oldest first), without waiting."""
        out = []
        for sample in self._reader.take(N=limit):
            if not isinstance(sample, self._class):  # InvalidSample markers (a writer left, ...)
                continue
            self.received += 1
            reason = self._validator(sample) if self._validator else None
            if reason is None:
                out.append(sample)
            else:
                self.dropped[reason] += 1
        return out


class DataWait:
    """Blocks until one of some subscriptions holds a sample (a DDS WaitSet on read conditions),
    in place of polling with sleeps: the waiting process uses no CPU and wakes as the sample
    lands."""

    def __init__(self, participant: DomainParticipant, subscriptions: list[Subscription]):
        from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet

        self._waitset = WaitSet(participant)
        mask = SampleState.Any | ViewState.Any | InstanceState.Any
        self._conditions = [ReadCondition(sub._reader, mask) for sub in subscriptions]
        for condition in self._conditions:
            self._waitset.attach(condition)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` (s) for a sample; whether one is there."""
        return self._waitset.wait(duration(nanoseconds=max(0, int(timeout_s * 1e9)))) > 0


class ROS2Node:
    """One DDS participant with ROS 2-named publishers and subscriptions.

    Args:
        domain_id: DDS domain (default ``ROS_DOMAIN_ID``, else 0).

    Raises:
        ValueError: a bad domain id, topic name or message type name.
    """

    def __init__(self, domain_id: int | None = None):
        self.domain_id = ros_domain_id(domain_id)
        self.participant = DomainParticipant(self.domain_id)
        self._topics: dict[str, Topic] = {}

    def _topic(self, ros_topic: str, msg_type: str, qos: QosConfig) -> Topic:
        if msg_type not in MESSAGES:
            raise ValueError(f"message type {msg_type!r} is not supported; known: {', '.join(sorted(MESSAGES))}")
        name = dds_topic(ros_topic)
        if name not in self._topics:
            self._topics[name] = Topic(self.participant, name, MESSAGES[msg_type], qos=qos.to_dds())
        return self._topics[name]

    def publisher(self, ros_topic: str, msg_type: str, qos: QosConfig | None = None) -> Publisher:
        """A publisher of ``msg_type`` (e.g. ``geometry_msgs/msg/TwistStamped``) on ``ros_topic``."""
        qos = qos or QosConfig()
        return Publisher(DataWriter(self.participant, self._topic(ros_topic, msg_type, qos), qos=qos.to_dds()),
                         ros_topic)

    def waiter(self, subscriptions: list[Subscription]) -> DataWait:
        """A :class:`DataWait` on ``subscriptions`` (made by this node)."""
        return DataWait(self.participant, subscriptions)

    def subscription(self, ros_topic: str, msg_type: str, qos: QosConfig | None = None,
                     validator: Callable | None = None) -> Subscription:
        """A subscription to ``ros_topic``; ``validator(msg) -> reason | None`` drops bad samples."""
        qos = qos or QosConfig()
        return Subscription(DataReader(self.participant, self._topic(ros_topic, msg_type, qos), qos=qos.to_dds()),
                            ros_topic, MESSAGES[msg_type], validator)
