"""Robot-assisted dressing in MuJoCo: pull a sleeve from the fingertips up past the elbow.

After the dressing task of Assistive Gym (Erickson et al., ICRA 2020) and the seed paper
"Real-World Offline Reinforcement Learning from Vision Language Model Feedback" (Venkataraman
et al., 2024). A seated person holds an arm out; the robot holds a sleeve's opening (the
armhole) and must slide it over the hand, along the forearm, past the elbow onto the upper arm,
without pressing on the person.

Spaces:
    action: ``Box(-1, 1, (3,), float32)``: Cartesian displacement of the gripper, ``0.02 * a``
        m per step, rescaled to at most 0.02 m in norm; the gripper keeps its orientation.
    observation: ``(26,) float32`` (m, unit vectors, N), see :data:`OBSERVATION_LAYOUT`.

Timing: 10 Hz control; each step runs ``substeps`` physics steps (default 3; 5 in
``Dressing-v1``) while the gripper's target moves along the straight line to its new position.

Gripper: ``gripper_stiffness=None`` (``Dressing-v0``) makes the gripper a mocap body that is
exactly where it is commanded; a caught sleeve then passes the motion straight to the arm, and
the force is the contact solver's (not converged in the timestep). ``gripper_stiffness=K`` N/m
(``Dressing-v1``: 300) makes it an impedance-controlled carriage of ``gripper_mass`` kg pulled to
its target by ``F = K (x* - x) - D v`` (``D = 2 zeta sqrt(K m)``, ``zeta = gripper_damping_ratio``),
so the pull on the arm grows with how far the target ran ahead of the held sleeve: at most
``K * 0.02`` N per step. The observation's end effector is where the gripper is, not its target.

Episodes last at most 150 steps (15 s); they terminate on success or when the force on the
person exceeds ``unsafe_force``.

``info``:
    ``dressed_distance`` (m): arc length from the fingertips along hand -> forearm -> upper arm
    to the point nearest the sleeve opening's centre, counted only while the arm passes through
    the opening (winding number of the opening ring around the arm axis, as Assistive Gym counts
    only while the arm is inside the sleeve), else 0.
    ``dressed_fraction``: ``dressed_distance`` over the arm's length (fingertips to shoulder).
    ``force`` (N): largest total contact normal force between sleeve and person over this step's
    physics steps; ``max_force`` (N): the largest so far in the episode.
    ``success``: ``dressed_distance >= hand + forearm length + SUCCESS_MARGIN`` (the opening is
    on the upper arm, ``SUCCESS_MARGIN`` past the elbow) with ``max_force <= unsafe_force``.
    ``unsafe``: ``force > unsafe_force`` (the episode terminates).

Ground-truth reward (evaluation, oracle baselines and scripted teachers only; learners never see
it unless asked): ``r_t = 10 (p_t - p_{t-1}) - 0.2 clip(force_t - comfort_force, 0,
unsafe_force - comfort_force) + 5 [success] - 5 [unsafe]``, where progress ``p`` is
``dressed_distance`` while the arm is inside the opening and minus the distance from the
opening's centre to the fingertips otherwise (m). The force term is bounded (at most 3 per step
with the defaults): past ``unsafe_force`` the episode ends with the -5 instead, so a contact
solver's force spike cannot swamp every other reward.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.dressing.scene import (
    PERSON_GEOMS,
    SLEEVE_RADIUS,
    ArmPose,
    frame_x_to,
    quat_z_to,
    sample_arm,
    scene_xml,
)
from envs.rendering import OffscreenRendering

#: Control period, s (10 Hz).
CONTROL_PERIOD = 0.1
#: Largest gripper displacement per step, m.
MAX_STEP = 0.02
#: How far past the elbow the opening must be for success, m.
SUCCESS_MARGIN = 0.05
#: Time the sleeve hangs from the gripper before an episode starts, s.
SETTLE_TIME = 0.3
#: Steps before truncation.
MAX_EPISODE_STEPS = 150
#: Gripper workspace (axis-aligned box, m): positions are clipped into it.
WORKSPACE = (np.array([-0.2, -0.8, 0.6]), np.array([1.3, 0.5, 1.6]))
#: Height of the robot flange (end effector) above the opening centre, in the gripper frame, m.
FLANGE_OFFSET = SLEEVE_RADIUS + 0.18

OBSERVATION_LAYOUT: dict[str, slice] = {
    "end_effector": slice(0, 3),  # robot flange position, m
    "shoulder": slice(3, 6),  # m
    "elbow": slice(6, 9),  # m
    "wrist": slice(9, 12),  # m
    "hand_tip": slice(12, 15),  # fingertips, m
    "opening_center": slice(15, 18),  # centre of the held sleeve opening, m
    "opening_normal": slice(18, 21),  # unit vector the opening faces (direction of pulling)
    "cuff_center": slice(21, 24),  # centre of the sleeve's far end, m
    "force": slice(24, 25),  # contact force on the person this step, N
    "max_force": slice(25, 26),  # largest contact force so far in the episode, N
}
OBSERVATION_DIM = 26


def project_on_path(point: np.ndarray, path: np.ndarray) -> tuple[float, int, float, np.ndarray]:
    """Nearest point to ``point`` on the polyline ``path (K, 3)``.

    Returns:
        ``(s, segment, t_raw, nearest)``: arc length from ``path[0]`` (m), the segment index, the
        unclamped position along that segment in segment lengths, and the nearest point (m).
    """
    starts, seg = path[:-1], path[1:] - path[:-1]
    squared = (seg * seg).sum(axis=1)
    t_raw = ((point - starts) * seg).sum(axis=1) / squared
    t = np.clip(t_raw, 0.0, 1.0)
    nearest = starts + t[:, None] * seg
    gap = nearest - point
    k = int(np.argmin((gap * gap).sum(axis=1)))
    lengths = np.sqrt(squared)
    s = float(lengths[:k].sum() + t[k] * lengths[k])
    return s, k, float(t_raw[k]), nearest[k]


def winding_number(ring: np.ndarray, origin: np.ndarray, axis: np.ndarray) -> float:
    """How many times the closed polygon ``ring (N, 3)`` turns around the line through
    ``origin`` along ``axis`` (signed; about 0 when the line misses the ring)."""
    ax, ay, az = axis / np.sqrt(axis @ axis)
    # An orthonormal pair (e1, e2) spanning the plane normal to the axis.
    e1 = np.array([0.0, az, -ay]) if abs(ax) < 0.9 else np.array([-az, 0.0, ax])
    e1 /= np.sqrt(e1 @ e1)
    e2 = np.array([ay * e1[2] - az * e1[1], az * e1[0] - ax * e1[2], ax * e1[1] - ay * e1[0]])
    rel = ring - origin
    angles = np.arctan2(rel @ e2, rel @ e1)
    turns = np.diff(angles, append=angles[:1])
    turns = (turns + np.pi) % (2 * np.pi) - np.pi
    return float(turns.sum() / (2 * np.pi))


class DressingEnv(OffscreenRendering, gym.Env):
    """Robot-assisted dressing (see the module docstring for spaces, info, reward and units).

    Args:
        render_mode: ``None`` or ``"rgb_array"``.
        width, height: frame size in px (at most 512).
        camera: ``"side"``, ``"front"`` or ``"top"``.
        substeps: physics steps per 0.1 s control step (physics timestep ``0.1 / substeps`` s).
        sleeve_resolution: (vertices around, vertices along) the tube. Default (10, 5).
        unsafe_force: N; a step whose contact force on the person exceeds it ends the episode.
        comfort_force: N; force above it is penalised in the reward.
        gripper_stiffness: N/m of the impedance-controlled gripper; None: kinematic (mocap).
        gripper_mass: kg of the compliant gripper's carriage. Default 1.
        gripper_damping_ratio: of the compliant gripper (1: critically damped). Default 1.

    Raises:
        ValueError: bad render settings, timestep, resolution, force limits or gripper settings.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        width: int = 128,
        height: int = 128,
        camera: str = "side",
        substeps: int = 3,
        sleeve_resolution: tuple[int, int] = (10, 5),
        unsafe_force: float = 20.0,
        comfort_force: float = 5.0,
        gripper_stiffness: float | None = None,
        gripper_mass: float = 1.0,
        gripper_damping_ratio: float = 1.0,
    ):
        self._setup_rendering(render_mode, width, height)
        if int(substeps) != substeps or not 1 <= substeps <= 50:
            raise ValueError(f"substeps={substeps}; expected an integer in 1..50")
        n_around, n_along = (int(v) for v in sleeve_resolution)
        if n_around < 6 or n_along < 2:
            raise ValueError(f"sleeve_resolution={sleeve_resolution}; expected >= (6, 2)")
        if not 0 < comfort_force <= unsafe_force:
            raise ValueError(f"need 0 < comfort_force ({comfort_force}) <= unsafe_force ({unsafe_force}), N")
        if gripper_stiffness is not None and not (gripper_stiffness > 0 and gripper_mass > 0 and gripper_damping_ratio > 0):
            raise ValueError(f"gripper_stiffness={gripper_stiffness} N/m, gripper_mass={gripper_mass} kg and "
                             f"gripper_damping_ratio={gripper_damping_ratio}: expected all > 0 (or stiffness None)")
        self.camera = camera
        self.substeps = int(substeps)
        self.compliant = gripper_stiffness is not None
        self.unsafe_force, self.comfort_force = float(unsafe_force), float(comfort_force)
        self.n_around, self.n_along = n_around, n_along

        gripper = (float(gripper_stiffness), float(gripper_mass), float(gripper_damping_ratio)) if self.compliant else None
        self.model = mujoco.MjModel.from_xml_string(scene_xml(CONTROL_PERIOD / self.substeps, n_around, n_along,
                                                              gripper=gripper))
        self.data = mujoco.MjData(self.model)
        if camera not in [self.model.camera(i).name for i in range(self.model.ncam)]:
            raise ValueError(f"camera={camera!r}; expected side, front or top")
        self._geom = {name: self.model.geom(name).id for name in PERSON_GEOMS}
        # Lookup table indexed by geom id + 1 (flex contacts report geom -1).
        self._is_person = np.zeros(self.model.ngeom + 1, dtype=bool)
        self._is_person[np.array(list(self._geom.values())) + 1] = True
        self._gripper = self.model.body("gripper").id
        self._mocap = int(self.model.body("gripper").mocapid[0])  # -1 for the compliant gripper
        self._slides = np.array([self.model.joint(f"gripper_{a}").qposadr[0] for a in "xyz"]) if self.compliant else None
        self._target = np.zeros(3)
        flex = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_FLEX, "sleeve")
        self._vert0 = int(self.model.flex_vertadr[flex])

        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBSERVATION_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
        self.arm: ArmPose | None = None

    # -- scene ---------------------------------------------------------------------------------
    def _place_capsule(self, name: str, a: np.ndarray, b: np.ndarray, radius: float) -> None:
        """Make person geom ``name`` the capsule from ``a`` to ``b`` (m) of ``radius`` (m)."""
        gid, body = self._geom[name], self.model.geom_bodyid[self._geom[name]]
        half = max(np.linalg.norm(b - a) / 2, 1e-4)
        self.model.body_pos[body] = (a + b) / 2
        self.model.body_quat[body] = quat_z_to(b - a)
        self.model.geom_size[gid] = [radius, half, 0.0]
        self.model.geom_rbound[gid] = radius + half
        box = [0.0, 0.0, 0.0, radius, radius, radius + half]  # (centre, half sizes), body frame
        self.model.geom_aabb[gid] = box
        self.model.bvh_aabb[self.model.body_bvhadr[body]] = box

    def _place_person(self, arm: ArmPose) -> None:
        r_upper, r_fore, r_hand = arm.radii
        s = arm.shoulder
        self._place_capsule("torso", np.array([-0.25, -0.02, 0.55]), np.array([-0.2, -0.02, s[2] - 0.05]), 0.14)
        self._place_capsule("head", np.array([-0.2, -0.02, s[2] + 0.17]), np.array([-0.2, -0.02, s[2] + 0.22]), 0.09)
        self._place_capsule("shoulder", s + [-0.15, 0.05, 0.0], s, r_upper + 0.01)
        self._place_capsule("upper_arm", s, arm.elbow, r_upper)
        self._place_capsule("forearm", arm.elbow, arm.wrist, r_fore)
        direction = (arm.hand_tip - arm.wrist) / np.linalg.norm(arm.hand_tip - arm.wrist)
        self._place_capsule("hand", arm.wrist, arm.hand_tip - r_hand * direction, r_hand)

    # -- measurements --------------------------------------------------------------------------
    def _ring(self) -> np.ndarray:
        return self.data.flexvert_xpos[self._vert0 : self._vert0 + self.n_around]

    def _cuff(self) -> np.ndarray:
        end = self._vert0 + self.n_around * self.n_along
        return self.data.flexvert_xpos[end - self.n_around : end]

    def _person_force(self) -> float:
        """Total contact normal force (N) between the sleeve and the person, now."""
        n = self.data.ncon
        if n == 0:
            return 0.0
        contact = self.data.contact
        geom = contact.geom[:n] + 1
        mask = self._is_person[geom[:, 0]] | self._is_person[geom[:, 1]]
        if not mask.any():
            return 0.0
        # Pyramidal cones: the normal force is the sum of the 2 (dim - 1) pyramid-edge forces.
        adr, dim = contact.efc_address[:n][mask], contact.dim[:n][mask]
        rows = np.where(dim > 1, 2 * (dim - 1), 1)
        index = np.repeat(adr, rows) + (np.arange(rows.sum()) - np.repeat(np.cumsum(rows) - rows, rows))
        return float(self.data.efc_force[index].sum())

    def _measure(self) -> dict[str, Any]:
        path, lengths = self._path, self._lengths
        center = self._gripper_position()
        s, segment, t_raw, nearest = project_on_path(center, path)
        axis = path[segment + 1] - path[segment]
        entered = not (segment == 0 and t_raw < 0.0)
        inside = (
            entered
            and np.linalg.norm(center - nearest) < SLEEVE_RADIUS
            and abs(winding_number(self._ring(), nearest, axis)) > 0.5
        )
        dressed = s if inside else 0.0
        progress = dressed if inside else -float(np.linalg.norm(center - path[0]))
        return {
            "dressed_distance": float(dressed),
            "dressed_fraction": float(dressed / lengths.sum()),
            "inside": bool(inside),
            "progress": float(progress),
            "success_distance": float(lengths[0] + lengths[1] + SUCCESS_MARGIN),
        }

    def _gripper_position(self) -> np.ndarray:
        """Where the held opening's frame is now (m): the mocap body, or the compliant gripper's
        body (which lags its target by the force it meets over the stiffness)."""
        # The carriage sits at the world origin and slides along world axes: its joint positions are
        # the gripper's position (exact now; xpos would be that of the last step's start).
        return (self.data.mocap_pos[self._mocap] if not self.compliant else self.data.qpos[self._slides]).copy()

    def _observation(self, force: float) -> np.ndarray:
        obs = np.empty(OBSERVATION_DIM, dtype=np.float32)
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, self.data.mocap_quat[self._mocap] if not self.compliant else self.model.body_quat[self._gripper])
        rot = rot.reshape(3, 3)
        center = self._gripper_position()
        L = OBSERVATION_LAYOUT
        obs[L["end_effector"]] = center + rot[:, 2] * FLANGE_OFFSET
        obs[L["shoulder"]], obs[L["elbow"]] = self.arm.shoulder, self.arm.elbow
        obs[L["wrist"]], obs[L["hand_tip"]] = self.arm.wrist, self.arm.hand_tip
        obs[L["opening_center"]] = self._ring().mean(axis=0)
        obs[L["opening_normal"]] = rot[:, 0]
        obs[L["cuff_center"]] = self._cuff().mean(axis=0)
        obs[L["force"]], obs[L["max_force"]] = force, self._max_force
        return obs

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.arm = sample_arm(self.np_random)
        self._path, self._lengths = self.arm.path, self.arm.segment_lengths
        self._place_person(self.arm)
        outward = (self.arm.hand_tip - self.arm.wrist) / np.linalg.norm(self.arm.hand_tip - self.arm.wrist)
        if self.compliant:  # the opening's orientation is the gripper body's fixed offset on the carriage
            self.model.body_quat[self._gripper] = frame_x_to(-outward)
        mujoco.mj_resetData(self.model, self.data)
        lateral = self.np_random.normal(0.0, 0.01, 3)
        start = np.clip(self.arm.hand_tip + 0.12 * outward + lateral - outward * float(lateral @ outward), *WORKSPACE)
        if self.compliant:
            self.data.qpos[self._slides] = start
        else:
            self.data.mocap_quat[self._mocap] = frame_x_to(-outward)
        self._set_target(start)
        # Let the sleeve hang under gravity before the first observation.
        mujoco.mj_step(self.model, self.data, nstep=int(round(SETTLE_TIME / self.model.opt.timestep)))
        self._max_force = 0.0
        measured = self._measure()
        self._progress = measured["progress"]
        return self._observation(0.0), self._info(measured, 0.0)

    def step(self, action):
        if self.arm is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (3,) or not np.all(np.isfinite(action)):
            raise ValueError(f"action must be 3 finite numbers in [-1, 1], got {action!r}")
        delta = MAX_STEP * np.clip(action, -1.0, 1.0)
        norm = np.linalg.norm(delta)
        if norm > MAX_STEP:
            delta *= MAX_STEP / norm
        start = self._target.copy()
        goal = np.clip(start + delta, *WORKSPACE)
        force = 0.0
        for k in range(1, self.substeps + 1):
            self._set_target(start + (goal - start) * k / self.substeps)
            mujoco.mj_step(self.model, self.data)
            force = max(force, self._person_force())
        if not np.all(np.isfinite(self.data.qpos)):
            raise RuntimeError("dressing physics diverged (non-finite sleeve state); please report the seed")
        self._max_force = max(self._max_force, force)
        measured = self._measure()
        info = self._info(measured, force)
        reward = 10.0 * (measured["progress"] - self._progress)
        reward -= 0.2 * min(max(0.0, force - self.comfort_force), self.unsafe_force - self.comfort_force)
        reward += 5.0 * info["success"] - 5.0 * info["unsafe"]
        self._progress = measured["progress"]
        terminated = bool(info["success"] or info["unsafe"])
        return self._observation(force), float(reward), terminated, False, info

    def _set_target(self, position: np.ndarray) -> None:
        """Command the gripper to ``position`` (m): the mocap body moves there; the compliant
        gripper's position actuators pull it there."""
        self._target = np.array(position, dtype=np.float64)
        if self.compliant:
            self.data.ctrl[:3] = self._target
        else:
            self.data.mocap_pos[self._mocap] = self._target

    def _info(self, measured: dict[str, Any], force: float) -> dict[str, Any]:
        unsafe = force > self.unsafe_force
        success = (not unsafe) and measured["dressed_distance"] >= measured["success_distance"]
        return {
            "dressed_distance": measured["dressed_distance"],
            "dressed_fraction": measured["dressed_fraction"],
            "arm_inside": measured["inside"],
            "force": float(force),
            "max_force": float(self._max_force),
            "unsafe": bool(unsafe),
            "success": bool(success),
        }

    def render(self):
        return self._render_camera(self.camera)
