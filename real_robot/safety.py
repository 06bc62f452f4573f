"""A transport-independent safety layer between a policy and a robot.

Every command a policy proposes passes :meth:`SafetyLayer.filter` before it is sent. The layer
decides, in this order:

1. **e-stop** (latched): once :meth:`SafetyLayer.estop` is called, no command is sent at all
   until :meth:`SafetyLayer.reset_estop` *and* a new :meth:`SafetyLayer.arm`.
2. **arming**: no command is sent before :meth:`SafetyLayer.arm`.
3. **watchdog**: when the newest observation is older than ``watchdog_s`` (default 0.1 s), the
   hold command (zero velocity, or no displacement).
4. **NaN guard**: a command with a NaN or infinite entry is not sent; the hold command is.
5. **limits**: each entry is clamped to ``[low, high]`` (joint or velocity limits, or the
   normalised action box).
6. **rate limit**: each entry moves at most ``max_delta`` from the previous command sent
   (the per-step clamp on how far a target may jump).
7. **workspace**: with an end-effector position and ``workspace_low/high`` (m), the components
   of a Cartesian command that would leave the box are zeroed.

**Force limit** (with ``force_limit``, N): the force on the person (a force-torque sensor's
``geometry_msgs/WrenchStamped``, or the force field of the observation in simulation) is read
before every decision. A reading at or above ``force_limit - force_margin`` (before the limit)
latches the e-stop and starts the back-off move: ``backoff_steps`` commands that retract
(``backoff_command``, or the reverse of the last command sent: back along the path that pushed
into the person), sent although the e-stop is latched, then nothing until reset and re-armed,
like the e-stop. A missing or stale force reading (older than ``watchdog_s``) holds the robot.

The hold command is zeros: zero velocity for velocity interfaces, no displacement for the
dressing task's Cartesian displacement actions. ``dry_run`` makes :meth:`filter` return what it
would send while marking it as not to be sent (the caller logs it). Every decision is counted in
``counters``, so a deployment log says how often each rule fired.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SafetyConfig:
    """Limits of the safety layer; units are those of the command (m per step, rad, rad/s).

    Raises:
        ValueError: a non-positive watchdog, ``low > high``, a negative ``max_delta``, or a
            workspace box with ``low > high``.
    """

    low: list[float] = field(default_factory=lambda: [-1.0, -1.0, -1.0])
    """Lower limit of each command entry. Default -1 (the normalised action box)."""
    high: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Upper limit of each command entry. Default 1."""
    max_delta: float | None = 0.5
    """Largest change of any entry between two commands sent; None: no rate limit. Default 0.5."""
    watchdog_s: float = 0.1
    """s; an observation older than this stops the robot (hold command). Default 0.1 s."""
    workspace_low: list[float] | None = None
    """m; lower corner of the allowed end-effector box (x, y, z), or None for no box."""
    workspace_high: list[float] | None = None
    """m; upper corner of the box."""
    require_arming: bool = True
    """Send nothing but the hold command before :meth:`SafetyLayer.arm`. Default True."""
    dry_run: bool = False
    """Decide as usual but mark every command as not to be sent. Default False."""
    force_limit: float | None = None
    """N; the largest force allowed on the person, or None for no force rule. Dressing: 20 N
    (the task's ``unsafe_force``)."""
    force_margin: float = 5.0
    """N; the layer stops at ``force_limit - force_margin``, before the limit. Default 5 N."""
    backoff_steps: int = 3
    """Retract commands sent after a force stop (0: stop in place). Default 3."""
    backoff_command: list[float] | None = None
    """The retract command; None: the reverse of the last command sent (clamped to the limits)."""

    def __post_init__(self) -> None:
        self.low, self.high = [float(x) for x in self.low], [float(x) for x in self.high]
        if len(self.low) != len(self.high) or any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError(f"safety limits low={self.low} high={self.high}: same length and low <= high expected")
        if not self.watchdog_s > 0:
            raise ValueError(f"watchdog_s={self.watchdog_s}; expected > 0 s")
        if self.max_delta is not None and self.max_delta < 0:
            raise ValueError(f"max_delta={self.max_delta}; expected >= 0 or None")
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("give both workspace_low and workspace_high, or neither")
        if self.force_limit is not None and not 0 <= self.force_margin < self.force_limit:
            raise ValueError(f"force_limit={self.force_limit} N and force_margin={self.force_margin} N: expected "
                             "0 <= force_margin < force_limit")
        if self.backoff_steps < 0:
            raise ValueError(f"backoff_steps={self.backoff_steps}; expected >= 0")
        if self.backoff_command is not None:
            self.backoff_command = [float(x) for x in self.backoff_command]
            if len(self.backoff_command) != len(self.low):
                raise ValueError(f"backoff_command={self.backoff_command} has {len(self.backoff_command)} entries; "
                                 f"commands have {len(self.low)}")
        if self.workspace_low is not None:
            if len(self.workspace_low) != 3 or len(self.workspace_high) != 3 or any(
                    lo > hi for lo, hi in zip(self.workspace_low, self.workspace_high)):
                raise ValueError(f"workspace box {self.workspace_low}..{self.workspace_high}: two (x, y, z) corners, "
                                 "low <= high, in m, expected")


@dataclass
class Decision:
    """What :meth:`SafetyLayer.filter` decided for one proposed command.

    Attributes:
        command: ``(A,) float64`` to send (the hold command when a rule stopped the proposal).
        send: whether to send it (False only in dry-run mode).
        reasons: the rules that changed or replaced the proposal, e.g. ``["clamped"]``.
    """

    command: np.ndarray
    send: bool
    reasons: list[str]


class SafetyLayer:
    """Filters every command before it reaches the robot (module docstring for the rules).

    Args:
        config: the limits.
        clock: seconds, monotonic; injectable so that tests control time. Default
            :func:`time.monotonic`.
    """

    def __init__(self, config: SafetyConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.dim = len(config.low)
        self._low, self._high = np.asarray(config.low), np.asarray(config.high)
        self._armed = not config.require_arming
        self._estopped = False
        self._last_observation: float | None = None
        self._last_command = np.zeros(self.dim)
        self._backoff: list[np.ndarray] = []
        self._last_force: tuple[float, float] | None = None  # (N, clock s)
        self.max_force = 0.0
        self.counters: Counter = Counter()

    # -- state --------------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        return self._armed and not self._estopped

    @property
    def estopped(self) -> bool:
        return self._estopped

    def arm(self) -> None:
        """Allow commands. Raises RuntimeError while the e-stop is latched."""
        if self._estopped:
            raise RuntimeError("e-stop is latched: reset_estop() first, then arm()")
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    @property
    def backing_off(self) -> bool:
        """Whether retract commands of a force stop are still to be sent."""
        return bool(self._backoff)

    def estop(self) -> None:
        """Latch the emergency stop: only hold commands until reset and re-armed."""
        self._estopped, self._armed = True, False
        self.counters["estop"] += 1

    def force(self, newtons: float, stamp: float | None = None) -> None:
        """Record a force reading on the person (N, the magnitude; ``stamp`` in the clock's s,
        default now). At or above ``force_limit - force_margin`` it latches the e-stop and
        queues the back-off move. A non-finite or negative reading counts as no reading."""
        value = float(newtons)
        if not math.isfinite(value) or value < 0:
            self.counters["force_malformed"] += 1
            return
        self._last_force = (value, self.clock() if stamp is None else float(stamp))
        self.max_force = max(self.max_force, value)
        limit = self.config.force_limit
        if limit is None or value < limit - self.config.force_margin or self._estopped:
            return
        self.estop()
        self.counters["force_stop"] += 1
        retract = (np.asarray(self.config.backoff_command) if self.config.backoff_command is not None
                   else np.clip(-self._last_command, self._low, self._high))
        self._backoff = [retract.copy() for _ in range(self.config.backoff_steps)]

    def reset_estop(self) -> None:
        """Release the latch (and drop a force stop's remaining back-off); the robot stays
        disarmed until :meth:`arm`."""
        self._estopped = False
        self._backoff = []

    def observed(self, stamp: float | None = None) -> None:
        """Record that a fresh observation arrived (``stamp`` in the clock's seconds; default now)."""
        self._last_observation = self.clock() if stamp is None else float(stamp)

    def observation_age(self) -> float:
        """s since the newest observation (inf before the first)."""
        return math.inf if self._last_observation is None else self.clock() - self._last_observation

    # -- the filter ---------------------------------------------------------------------------
    def hold(self) -> np.ndarray:
        """The hold command: zeros ``(A,)``."""
        return np.zeros(self.dim)

    def _stop(self, reason: str, send: bool = True) -> Decision:
        self.counters[reason] += 1
        self._last_command = self.hold()
        return Decision(self.hold(), send and not self.config.dry_run, [reason])

    def filter(self, proposal: Sequence[float] | np.ndarray, position: Sequence[float] | None = None,
               step_scale: float = 1.0) -> Decision:
        """Decide what to send for the policy's ``proposal (A,)``.

        Args:
            proposal: the policy's command.
            position: the end-effector position (m, world frame) for the workspace rule.
            step_scale: m of end-effector motion per unit of a Cartesian command (the dressing
                task: 0.02 m); used to predict where the command leads.

        Returns:
            The decision (command, whether to send, reasons).

        Raises:
            ValueError: ``proposal`` of the wrong shape (a wiring error, not a runtime fault).
        """
        proposal = np.asarray(proposal, dtype=np.float64)
        if proposal.shape != (self.dim,):
            raise ValueError(f"command must have shape ({self.dim},), got {proposal.shape}")
        if self._backoff:  # a force stop's retract move goes out although the e-stop is latched
            command = self._backoff.pop(0)
            self.counters["backoff"] += 1
            self._last_command = command
            return Decision(command.copy(), not self.config.dry_run, ["force_backoff"])
        if self._estopped:  # nothing is sent at all: the robot's own stop holds it
            return self._stop("blocked_estop", send=False)
        if not self._armed:
            return self._stop("blocked_unarmed", send=False)
        if self.observation_age() > self.config.watchdog_s:
            return self._stop("watchdog")
        if not np.isfinite(proposal).all():
            return self._stop("nan")
        if self.config.force_limit is not None and (
                self._last_force is None or self.clock() - self._last_force[1] > self.config.watchdog_s):
            return self._stop("force_missing")  # no fresh force reading: no motion
        reasons = []
        command = np.clip(proposal, self._low, self._high)
        if not np.array_equal(command, proposal):
            reasons.append("clamped")
        if self.config.max_delta is not None:
            limited = np.clip(command, self._last_command - self.config.max_delta,
                              self._last_command + self.config.max_delta)
            if not np.array_equal(limited, command):
                reasons.append("rate_limited")
            command = limited
        if self.config.workspace_low is not None and position is not None:
            target = np.asarray(position, dtype=np.float64)[:3] + step_scale * command[:3]
            leaving = ((target < self.config.workspace_low) & (command[:3] < 0)) | (
                (target > self.config.workspace_high) & (command[:3] > 0))
            if leaving.any():
                command[:3][leaving] = 0.0
                reasons.append("workspace")
        for reason in reasons:
            self.counters[reason] += 1
        self.counters["sent" if not self.config.dry_run else "dry_run"] += 1
        self._last_command = command
        return Decision(command, not self.config.dry_run, reasons)
