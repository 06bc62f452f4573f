"""The MuJoCo scene of the dressing task: a seated person's arm, a robot gripper, a sleeve.

The person's geoms are placed and sized per episode by editing the compiled model (capsules are
analytic shapes), so no XML is recompiled on reset. The sleeve is a 2-D ``flexcomp`` tube whose
opening ring is pinned to the gripper (a mocap body): the gripper carries the sleeve and the
free vertices hang, slide and catch on the arm under gravity, friction and contact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Radius of the sleeve tube and of its held opening, m.
SLEEVE_RADIUS = 0.075
#: Length of the sleeve tube from the held opening to the cuff, m.
SLEEVE_LENGTH = 0.22
#: Mass of the sleeve, kg.
SLEEVE_MASS = 0.06
#: Height of the shoulder above the floor, m (seated person).
SHOULDER_HEIGHT = 1.05

PERSON_RGBA = "0.87 0.69 0.58 1"
#: Geoms of the person, in the order the model defines them.
PERSON_GEOMS = ("torso", "head", "shoulder", "upper_arm", "forearm", "hand")


def sleeve_mesh(n_around: int, n_along: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, triangles and pinned (opening) vertex ids of an open tube along -x.

    Returns:
        points ``(n_around * n_along, 3)`` in m, in the gripper frame (opening ring at x = 0,
        cuff at x = -SLEEVE_LENGTH); triangles ``(2 * n_around * (n_along - 1), 3)`` int;
        pinned ids ``(n_around,)`` int (the ring at x = 0).
    """
    angles = 2 * np.pi * np.arange(n_around) / n_around
    xs = -SLEEVE_LENGTH * np.arange(n_along) / (n_along - 1)
    points = np.array([(x, SLEEVE_RADIUS * np.cos(a), SLEEVE_RADIUS * np.sin(a)) for x in xs for a in angles])
    triangles = []
    for j in range(n_along - 1):
        for i in range(n_around):
            a, b = j * n_around + i, j * n_around + (i + 1) % n_around
            triangles += [(a, b, b + n_around), (a, b + n_around, a + n_around)]
    return points, np.asarray(triangles), np.arange(n_around)


def scene_xml(timestep: float, n_around: int, n_along: int, render_size: int = 512,
              gripper: tuple[float, float, float] | None = None) -> str:
    """MJCF of the dressing scene for MuJoCo 3.3.0.

    Args:
        timestep: physics step, s.
        n_around, n_along: sleeve resolution (vertices around the tube and along it).
        render_size: offscreen framebuffer size, px (largest renderable frame side).
        gripper: None: the gripper is a mocap body that follows its target exactly (kinematic).
            ``(stiffness N/m, mass kg, damping ratio)``: an impedance-controlled gripper, a
            ``mass`` kg carriage on three world-axis slide joints (``gripper_x/y/z``, gravity
            compensated) driven to its target by position actuators ``F = K (x* - x) - D v``
            with ``D = 2 zeta sqrt(K m)`` (a Cartesian impedance controller, as dressing robots
            use to stay compliant); the body ``gripper`` (the held opening's frame) is its child.
    """
    points, triangles, pinned = sleeve_mesh(n_around, n_along)
    point = " ".join(f"{v:.5f}" for v in points.ravel())
    element = " ".join(str(int(i)) for i in triangles.ravel())
    pin = " ".join(str(int(i)) for i in pinned)
    # One static body per person geom, geom at the body origin: reset moves the body and resizes
    # the capsule, and the body's one-node bounding-volume tree stays easy to keep right.
    person = "".join(
        f'<body name="{name}"><geom name="{name}" type="capsule" size="0.05 0.1" rgba="{PERSON_RGBA}" '
        f'friction="0.6"/></body>'
        for name in PERSON_GEOMS
    )
    if gripper is None:
        gripper_open, gripper_close, actuators = '<body name="gripper" mocap="true" pos="0.8 0 1.0">', "</body>", ""
    else:
        stiffness, mass, zeta = (float(v) for v in gripper)
        damping = 2.0 * zeta * np.sqrt(stiffness * mass)
        gripper_open = (
            f'<body name="carriage" pos="0 0 0" gravcomp="1">'
            f'<inertial pos="0 0 0" mass="{mass}" diaginertia="0.01 0.01 0.01"/>'
            + "".join(f'<joint name="gripper_{a}" type="slide" axis="{v}"/>'
                      for a, v in (("x", "1 0 0"), ("y", "0 1 0"), ("z", "0 0 1")))
            + '<body name="gripper" gravcomp="1">'
        )
        gripper_close = "</body></body>"
        actuators = "\n  <actuator>" + "".join(
            f'<position name="gripper_{a}" joint="gripper_{a}" kp="{stiffness}" kv="{damping}" ctrllimited="false"/>'
            for a in "xyz") + "</actuator>"
    return f"""
<mujoco model="dressing">
  <option timestep="{timestep}" integrator="implicitfast" cone="pyramidal"/>
  <size memory="32M"/>
  <visual>
    <global offwidth="{render_size}" offheight="{render_size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1=".75 .75 .72" rgb2=".65 .65 .62" width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light pos="0.3 -0.6 2.5" dir="0 0.2 -1" diffuse="0.5 0.5 0.5"/>
    <camera name="side" pos="0.38 -1.6 1.45" xyaxes="1 0 0 0 0.3 0.954" fovy="48"/>
    <camera name="front" pos="1.35 -0.35 1.35" xyaxes="0.25 0.97 0 -0.3 0.08 0.95" fovy="45"/>
    <camera name="top" pos="0.35 0 2.1" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <geom name="floor" type="plane" size="2 2 0.1" material="floor" contype="0" conaffinity="0"/>
    <geom name="chair" type="box" pos="-0.25 0 0.25" size="0.22 0.22 0.25" rgba="0.35 0.3 0.28 1" contype="0" conaffinity="0"/>
    {person}
    {gripper_open}
      <geom name="palm" type="box" pos="0 0 {SLEEVE_RADIUS + 0.035}" size="0.012 0.03 0.025"
            rgba="0.25 0.25 0.28 1" contype="0" conaffinity="0"/>
      <geom name="finger_a" type="box" pos="0 0.012 {SLEEVE_RADIUS + 0.005}" size="0.01 0.006 0.012"
            rgba="0.4 0.4 0.45 1" contype="0" conaffinity="0"/>
      <geom name="finger_b" type="box" pos="0 -0.012 {SLEEVE_RADIUS + 0.005}" size="0.01 0.006 0.012"
            rgba="0.4 0.4 0.45 1" contype="0" conaffinity="0"/>
      <geom name="wrist" type="cylinder" pos="0 0 {SLEEVE_RADIUS + 0.12}" size="0.025 0.06"
            rgba="0.9 0.55 0.1 1" contype="0" conaffinity="0"/>
      <flexcomp name="sleeve" type="direct" dim="2" radius="0.004" rgba="0.2 0.45 0.85 1"
                point="{point}" element="{element}" mass="{SLEEVE_MASS}">
        <edge equality="true" damping="0.02"/>
        <contact condim="3" friction="0.3" selfcollide="none" internal="false" solref="0.02 1"/>
        <pin id="{pin}"/>
      </flexcomp>
    {gripper_close}
  </worldbody>{actuators}
</mujoco>
"""


@dataclass
class ArmPose:
    """One person's arm, sampled per episode. Positions in m (world frame), angles in rad.

    Keypoints run shoulder -> elbow -> wrist -> hand tip (fingertips).
    """

    shoulder: np.ndarray
    elbow: np.ndarray
    wrist: np.ndarray
    hand_tip: np.ndarray
    radii: np.ndarray  # (3,) upper arm, forearm, hand
    shoulder_yaw: float
    shoulder_pitch: float
    elbow_flex: float

    @property
    def keypoints(self) -> np.ndarray:
        """``(4, 3)``: shoulder, elbow, wrist, hand tip."""
        return np.stack([self.shoulder, self.elbow, self.wrist, self.hand_tip])

    @property
    def path(self) -> np.ndarray:
        """``(4, 3)``: the dressing path, hand tip -> wrist -> elbow -> shoulder."""
        return self.keypoints[::-1]

    @property
    def segment_lengths(self) -> np.ndarray:
        """``(3,)`` m: hand, forearm, upper arm (in path order)."""
        return np.linalg.norm(np.diff(self.path, axis=0), axis=1)


#: Documented ranges of the per-episode randomisation (uniform).
POSE_RANGES = {
    "shoulder_yaw": np.deg2rad([-15.0, 15.0]),  # about z; 0 = arm straight ahead (+x)
    "shoulder_pitch": np.deg2rad([-15.0, 5.0]),  # elevation; negative = arm lowered
    "elbow_flex": np.deg2rad([0.0, 35.0]),  # forearm raised relative to the upper arm
    "upper_arm_length": (0.27, 0.33),
    "forearm_length": (0.23, 0.28),
    "hand_length": (0.15, 0.19),
    "limb_scale": (0.9, 1.1),  # multiplies the radii 0.045 (upper), 0.037 (fore), 0.028 (hand)
}


def sample_arm(rng: np.random.Generator) -> ArmPose:
    """Draw an arm pose and limb sizes from :data:`POSE_RANGES`."""
    u = {k: rng.uniform(*v) for k, v in POSE_RANGES.items()}
    yaw, pitch, flex = u["shoulder_yaw"], u["shoulder_pitch"], u["elbow_flex"]
    d1 = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    # The forearm bends upward in the vertical plane that contains the upper arm.
    axis = np.cross(d1, [0.0, 0.0, 1.0])
    axis /= np.linalg.norm(axis)
    d2 = d1 * np.cos(flex) + np.cross(axis, d1) * np.sin(flex)
    shoulder = np.array([0.0, -0.2, SHOULDER_HEIGHT])
    elbow = shoulder + u["upper_arm_length"] * d1
    wrist = elbow + u["forearm_length"] * d2
    hand_tip = wrist + u["hand_length"] * d2
    radii = u["limb_scale"] * np.array([0.045, 0.037, 0.028])
    return ArmPose(shoulder, elbow, wrist, hand_tip, radii, float(yaw), float(pitch), float(flex))


def quat_z_to(direction: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) rotating +z onto ``direction``."""
    d = direction / np.linalg.norm(direction)
    z = np.array([0.0, 0.0, 1.0])
    c = float(np.dot(z, d))
    if c < -0.999999:
        return np.array([0.0, 1.0, 0.0, 0.0])
    axis = np.cross(z, d)
    q = np.array([1.0 + c, *axis])
    return q / np.linalg.norm(q)


def frame_x_to(direction: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a frame whose +x is ``direction`` and whose +z is as
    close to world up as possible (so the gripper stays above the sleeve)."""
    import mujoco

    x = direction / np.linalg.norm(direction)
    z = np.array([0.0, 0.0, 1.0]) - x[2] * x
    z /= np.linalg.norm(z)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x, y, z], axis=1).ravel())
    return quat
