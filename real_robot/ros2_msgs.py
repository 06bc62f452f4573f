"""ROS 2 message types as Cyclone DDS IDL structs, wire-compatible with ``rmw_cyclonedds_cpp``.

ROS 2 maps message ``pkg/msg/Name`` to the DDS type ``pkg::msg::dds_::Name_`` and topic ``/x`` to
the DDS topic ``rt/x`` (FACTS.md). Field order and types follow the ``.msg`` definitions, so a
ROS 2 node on the same domain reads what we write and the other way round, with no ROS install
here. Only the messages the robot bridge uses are defined.
"""

# No `from __future__ import annotations`: cyclonedds resolves the field types at class creation.
import time
from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, int32, int64, sequence, uint8, uint32


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    """``builtin_interfaces/msg/Time``: seconds and nanoseconds."""

    sec: int32 = 0
    nanosec: uint32 = 0

    @classmethod
    def from_seconds(cls, t: float) -> "Time":
        sec = int(t // 1)
        return cls(sec, int(round((t - sec) * 1e9)) % 1_000_000_000)

    @classmethod
    def now(cls) -> "Time":
        return cls.from_seconds(time.time())

    def to_seconds(self) -> float:
        return self.sec + self.nanosec * 1e-9


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    """``std_msgs/msg/Header``."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class Bool(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):
    """``std_msgs/msg/Bool`` (the e-stop topic)."""

    data: bool = False


@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    """``std_msgs/msg/MultiArrayDimension``."""

    label: str = ""
    size: uint32 = 0
    stride: uint32 = 0


@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    """``std_msgs/msg/MultiArrayLayout``."""

    dim: sequence[MultiArrayDimension] = field(default_factory=list)
    data_offset: uint32 = 0


@dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    """``std_msgs/msg/Float64MultiArray`` (ros2_control forward command controllers)."""

    layout: MultiArrayLayout = field(default_factory=MultiArrayLayout)
    data: sequence[float64] = field(default_factory=list)


@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    """``sensor_msgs/msg/JointState``: rad, rad/s, N m (or m, m/s, N for prismatic joints)."""

    header: Header = field(default_factory=Header)
    name: sequence[str] = field(default_factory=list)
    position: sequence[float64] = field(default_factory=list)
    velocity: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    """``sensor_msgs/msg/Image``; ``encoding`` e.g. ``rgb8``, ``step`` = bytes per row."""

    header: Header = field(default_factory=Header)
    height: uint32 = 0
    width: uint32 = 0
    encoding: str = "rgb8"
    is_bigendian: uint8 = 0
    step: uint32 = 0
    data: sequence[uint8] = field(default_factory=list)


@dataclass
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    """``geometry_msgs/msg/Point`` in m."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
class Vector3(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    """``geometry_msgs/msg/Vector3``."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    """``geometry_msgs/msg/Quaternion`` (x, y, z, w)."""

    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    """``geometry_msgs/msg/Pose``."""

    position: Point = field(default_factory=Point)
    orientation: Quaternion = field(default_factory=Quaternion)


@dataclass
class PoseStamped(IdlStruct, typename="geometry_msgs::msg::dds_::PoseStamped_"):
    """``geometry_msgs/msg/PoseStamped`` (the end-effector pose)."""

    header: Header = field(default_factory=Header)
    pose: Pose = field(default_factory=Pose)


@dataclass
class Twist(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    """``geometry_msgs/msg/Twist``: m/s and rad/s."""

    linear: Vector3 = field(default_factory=Vector3)
    angular: Vector3 = field(default_factory=Vector3)


@dataclass
class TwistStamped(IdlStruct, typename="geometry_msgs::msg::dds_::TwistStamped_"):
    """``geometry_msgs/msg/TwistStamped`` (Cartesian velocity, as MoveIt Servo takes)."""

    header: Header = field(default_factory=Header)
    twist: Twist = field(default_factory=Twist)


@dataclass
class Wrench(IdlStruct, typename="geometry_msgs::msg::dds_::Wrench_"):
    """``geometry_msgs/msg/Wrench``: force (N) and torque (N m)."""

    force: Vector3 = field(default_factory=Vector3)
    torque: Vector3 = field(default_factory=Vector3)


@dataclass
class WrenchStamped(IdlStruct, typename="geometry_msgs::msg::dds_::WrenchStamped_"):
    """``geometry_msgs/msg/WrenchStamped`` (what a force-torque sensor driver publishes)."""

    header: Header = field(default_factory=Header)
    wrench: Wrench = field(default_factory=Wrench)


@dataclass
class Int64(IdlStruct, typename="std_msgs::msg::dds_::Int64_"):
    """``std_msgs/msg/Int64`` (the simulated robot's reset request: the episode's seed)."""

    data: int64 = 0


@dataclass
class Duration(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    """``builtin_interfaces/msg/Duration``: seconds and nanoseconds."""

    sec: int32 = 0
    nanosec: uint32 = 0


@dataclass
class JointTrajectoryPoint(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectoryPoint_"):
    """``trajectory_msgs/msg/JointTrajectoryPoint``: rad (m), rad/s, rad/s^2, N m; time from the
    trajectory's start."""

    positions: sequence[float64] = field(default_factory=list)
    velocities: sequence[float64] = field(default_factory=list)
    accelerations: sequence[float64] = field(default_factory=list)
    effort: sequence[float64] = field(default_factory=list)
    time_from_start: Duration = field(default_factory=Duration)


@dataclass
class JointTrajectory(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectory_"):
    """``trajectory_msgs/msg/JointTrajectory`` (ros2_control's joint trajectory controller)."""

    header: Header = field(default_factory=Header)
    joint_names: sequence[str] = field(default_factory=list)
    points: sequence[JointTrajectoryPoint] = field(default_factory=list)


#: ROS 2 type name -> IDL struct.
MESSAGES: dict[str, type] = {
    "builtin_interfaces/msg/Time": Time,
    "std_msgs/msg/Header": Header,
    "std_msgs/msg/Bool": Bool,
    "std_msgs/msg/Float64MultiArray": Float64MultiArray,
    "sensor_msgs/msg/JointState": JointState,
    "sensor_msgs/msg/Image": Image,
    "geometry_msgs/msg/PoseStamped": PoseStamped,
    "geometry_msgs/msg/TwistStamped": TwistStamped,
    "geometry_msgs/msg/WrenchStamped": WrenchStamped,
    "std_msgs/msg/Int64": Int64,
    "trajectory_msgs/msg/JointTrajectory": JointTrajectory,
}
