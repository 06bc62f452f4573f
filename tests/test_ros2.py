"""ROS 2 messages over real Cyclone DDS participants on this machine (no ROS install)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from real_robot.ros2 import QosConfig, ROS2Node, dds_topic, ros_domain_id, validate_joint_state, validate_pose_stamped
from real_robot.ros2_msgs import Header, JointState, Point, Pose, PoseStamped, Quaternion, Time, TwistStamped

ROOT = Path(__file__).resolve().parents[1]

PUBLISHER = """
import sys, time
from real_robot.ros2 import ROS2Node
from real_robot.ros2_msgs import Header, JointState, Time
node = ROS2Node(int(sys.argv[1]))
pub = node.publisher("/joint_states", "sensor_msgs/msg/JointState")
deadline = time.time() + 20
while not pub._writer.get_matched_subscriptions() and time.time() < deadline:
    time.sleep(0.01)
for i in range(20):
    position = [float(i), float("nan") if i % 5 == 0 else 0.5]
    names = ["shoulder", "elbow"] if i % 7 else ["shoulder"]
    pub.publish(JointState(Header(Time.from_seconds(i), "base"), names, position, [], []))
    time.sleep(0.02)  # a 50 Hz robot
time.sleep(1.0)
"""


def test_ros2_naming_and_type_names():
    assert dds_topic("/joint_states") == "rt/joint_states" and dds_topic("robot/cmd") == "rt/robot/cmd"
    with pytest.raises(ValueError, match="letters, digits"):
        dds_topic("/bad topic")
    assert JointState.__idl__.idl_transformed_typename == "sensor_msgs::msg::dds_::JointState_"
    assert TwistStamped.__idl__.idl_transformed_typename == "geometry_msgs::msg::dds_::TwistStamped_"
    assert Time.from_seconds(1.25) == Time(1, 250_000_000) and Time(3, 500_000_000).to_seconds() == 3.5
    assert ros_domain_id(7) == 7
    with pytest.raises(ValueError, match="0..232"):
        ros_domain_id(500)
    with pytest.raises(ValueError, match="best_effort"):
        QosConfig(reliability="sometimes")


def test_joint_states_cross_processes_and_malformed_ones_are_dropped_and_counted():
    domain = 100 + os.getpid() % 100
    node = ROS2Node(domain)
    sub = node.subscription("/joint_states", "sensor_msgs/msg/JointState", validator=lambda m: validate_joint_state(m, 2))
    child = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(domain)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    got, deadline = [], time.time() + 30
    while sub.received < 20 and time.time() < deadline:
        got += sub.take()
        time.sleep(0.01)
    child.wait(timeout=30)
    assert child.returncode == 0, child.stderr.read()
    bad_names = {i for i in range(20) if i % 7 == 0}  # checked first
    bad_nan = {i for i in range(20) if i % 5 == 0} - bad_names
    assert sub.received == 20
    assert [int(m.header.stamp.sec) for m in got] == [i for i in range(20) if i not in bad_nan | bad_names]
    assert sub.dropped == {"a non-finite value": len(bad_nan), "1 names for 2 positions": len(bad_names)}
    assert got[0].name == ["shoulder", "elbow"] and got[0].header.frame_id == "base"


def test_pose_validation():
    good = PoseStamped(Header(), Pose(Point(0.1, 0.2, 0.3), Quaternion(0, 0, 0, 1)))
    assert validate_pose_stamped(good) is None
    assert validate_pose_stamped(PoseStamped(Header(), Pose(Point(math.nan, 0, 0), Quaternion()))) == "a non-finite value"
    assert "unit quaternion" in validate_pose_stamped(PoseStamped(Header(), Pose(Point(), Quaternion(0, 0, 0, 2))))
    with pytest.raises(ValueError, match="not supported"):
        ROS2Node(0).publisher("/x", "std_msgs/msg/String")
