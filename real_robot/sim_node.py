"""A simulated robot that speaks ROS 2 topics: one of our MuJoCo tasks behind the same topics a
real robot would use, so the whole deploy loop runs on one machine
(``python -m embodied.sim_robot +task=dressing``).

Each control step the node publishes the observation split over the configured sources
(:class:`real_robot.robot.ROS2RobotConfig`: e.g. the end-effector ``PoseStamped`` and the rest
as ``Float64MultiArray``), the episode status (``Float64MultiArray`` of
:data:`real_robot.robot.STATUS_FIELDS`), the force on the person as a ``WrenchStamped`` (force
``(0, 0, F)`` N, from the observation entry ``force_index``; a force-torque sensor's driver
publishes the same type) and optionally a camera ``Image``; it applies the commands
it receives (``TwistStamped``: ``action = twist.linear / scale``; ``Float64MultiArray``:
``data / scale``) and starts an episode with the seed of each ``std_msgs/Int64`` on the reset
topic.

Two clocks:

- ``lockstep``: after publishing step t the node waits for the command answering it (a
  TwistStamped whose stamp equals step t's, or any Float64MultiArray) and then steps. The
  simulation is exactly what a direct rollout would be, whatever the latency.
- real time (``lockstep=False``): every ``1 / rate_hz`` s the node steps with the newest command;
  when none arrived since the previous step it holds (zero action) and counts a missed command,
  as a velocity-controlled robot whose driver times out would.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from real_robot.robot import ARRAY, TWIST, WRENCH, ROS2RobotConfig, encode_source
from real_robot.ros2 import ROS2Node
from real_robot.ros2_msgs import Float64MultiArray, Header, Image, Time, Vector3, Wrench, WrenchStamped


def decode_command(config: ROS2RobotConfig, msg: Any, action_dim: int) -> tuple[np.ndarray | None, float | None]:
    """``(action (A,), stamp)`` from a command message, or ``(None, None)`` when it is malformed
    (wrong size or a non-finite value)."""
    c = config.command
    if c.type == TWIST:
        values = [msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z,
                  msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z][:action_dim]
        stamp = msg.header.stamp.to_seconds()
    elif c.type == ARRAY:
        values, stamp = list(msg.data), None
    else:
        values = list(msg.points[0].positions) if len(msg.points) else []
        stamp = msg.header.stamp.to_seconds()
    action = np.asarray(values, dtype=np.float64) / c.scale
    if action.shape != (action_dim,) or not np.isfinite(action).all():
        return None, None
    return action, stamp


class SimRobotNode:
    """Runs a gymnasium env as a ROS 2 robot (module docstring).

    Args:
        env: the task's env (observation ``(D,)``, action ``(A,)``).
        config: the same topic configuration the deploy side uses.
        rate_hz: control rate (the task's, e.g. 10 Hz for dressing).
        lockstep: wait for the command answering each step (see the module docstring).
        image: publish ``env.render()`` on ``config.image_topic`` (the env renders rgb_array).
        clock: monotonic seconds.
        force_index: observation entry with the force on the person (N), published on
            ``config.wrench_topic``; None: no wrench.
    """

    def __init__(self, env: Any, config: ROS2RobotConfig, rate_hz: float = 10.0, lockstep: bool = True,
                 image: bool = False, clock: Callable[[], float] = time.monotonic, force_index: int | None = None):
        if not rate_hz > 0:
            raise ValueError(f"rate_hz={rate_hz}; expected > 0")
        self.env, self.config, self.period, self.lockstep = env, config, 1.0 / rate_hz, lockstep
        self.clock = clock
        self.observation_dim = int(env.observation_space.shape[0])
        self.action_dim = int(env.action_space.shape[0])
        self.sizes = config.sizes(self.observation_dim)
        self.node = ROS2Node(config.domain_id)
        q = config.sensor_qos
        self._sources = [self.node.publisher(s.topic, s.type, q) for s in config.observation]
        self._status = self.node.publisher(config.status_topic, ARRAY, q) if config.status_topic else None
        self._image = self.node.publisher(config.image_topic, "sensor_msgs/msg/Image", q) if (
            image and config.image_topic) else None
        self.force_index = force_index
        self._wrench = self.node.publisher(config.wrench_topic, WRENCH, q) if (
            config.wrench_topic and force_index is not None) else None
        self._commands = self.node.subscription(config.command.topic, config.command.type, q)
        self._resets = self.node.subscription(config.reset_topic, "std_msgs/msg/Int64", q) if config.reset_topic else None
        self._wait = self.node.waiter([self._commands, *(s for s in (self._resets,) if s is not None)])
        self.counters: Counter = Counter()
        self.round_trips: list[float] = []
        """s from publishing an observation to receiving the command stamped with it."""
        self.episode = -1
        self.step_index = 0
        self._observation: np.ndarray | None = None
        self._stamp = 0.0
        self._done = True
        self._seed: int | None = None
        self._status_values = (0.0, False, False, False)

    # -- publishing ---------------------------------------------------------------------------
    def _publish(self, repeat: bool = False) -> None:
        assert self._observation is not None
        if not repeat:  # a repeat keeps its stamp, so that a command answering either copy matches
            self._stamp = time.time()
        if self._status is not None:
            reward, terminated, truncated, success = self._status_values
            self._status.publish(Float64MultiArray(data=[float(self.episode), float(self.step_index), float(reward),
                                                         float(terminated), float(truncated), float(success)]))
        if self._image is not None:
            frame = np.ascontiguousarray(self.env.render(), dtype=np.uint8)
            h, w = frame.shape[:2]
            self._image.publish(Image(Header(Time.from_seconds(self._stamp), "camera"), h, w, "rgb8", 0, 3 * w,
                                      list(frame.tobytes())))
        if self._wrench is not None:  # before the observation: the force is there when it is complete
            force = float(self._observation[self.force_index])
            self._wrench.publish(WrenchStamped(Header(Time.from_seconds(self._stamp), "ee"),
                                               Wrench(Vector3(0.0, 0.0, force), Vector3())))
        start = 0
        for source, publisher, size in zip(self.config.observation, self._sources, self.sizes):
            publisher.publish(encode_source(source, self._observation[start:start + size], self._stamp))
            start += size
        self.counters["observations"] += 1

    # -- episode ------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        """Start an episode with ``seed`` and publish its first observation. A repeated request
        for the episode just started (same seed, no step yet) publishes that observation again."""
        if self._observation is not None and seed == self._seed and self.step_index == 0 and not self._done:
            self.counters["repeated_resets"] += 1
            self._publish(repeat=True)
            return
        self._seed = int(seed)
        observation, _ = self.env.reset(seed=int(seed))
        self.episode, self.step_index, self._done = self.episode + 1, 0, False
        self._observation = np.asarray(observation, dtype=np.float64)
        self._status_values = (0.0, False, False, False)
        self.counters["episodes"] += 1
        self._publish()

    def apply(self, action: np.ndarray) -> None:
        """Step the env with ``action`` and publish the new observation and status."""
        observation, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float32))
        self.step_index += 1
        self._observation = np.asarray(observation, dtype=np.float64)
        self._status_values = (float(reward), bool(terminated), bool(truncated), bool(info.get("success", False)))
        self._done = bool(terminated or truncated)
        self._publish()

    def _take_reset(self) -> int | None:
        if self._resets is None:
            return None
        requests = self._resets.take()
        return int(requests[-1].data) if requests else None

    def _take_command(self) -> tuple[np.ndarray | None, float | None]:
        newest: tuple[np.ndarray | None, float | None] = (None, None)
        for msg in self._commands.take():
            action, stamp = decode_command(self.config, msg, self.action_dim)
            if action is None:
                self.counters["malformed_commands"] += 1
                continue
            if self.lockstep and stamp is not None and abs(stamp - self._stamp) > 1e-6:
                self.counters["stale_commands"] += 1  # answers an earlier step
                continue
            if stamp is not None and abs(stamp - self._stamp) <= 1e-6:
                self.round_trips.append(time.time() - self._stamp)
            newest = (action, stamp)
        return newest

    # -- the loop -----------------------------------------------------------------------------
    def spin_once(self, timeout_s: float | None = None) -> str:
        """Serve one event: a reset request, a command (lockstep), or one real-time tick.

        Returns:
            ``"reset"``, ``"step"``, ``"hold"`` (real time, no new command) or ``"idle"``.
        """
        deadline = self.clock() + (self.period if timeout_s is None else timeout_s)
        pending = None
        while True:
            seed = self._take_reset()
            if seed is not None:
                self.reset(seed)
                return "reset"
            if not self._done:
                action, _ = self._take_command()  # taken as it arrives, so round trips are exact
                if action is not None:
                    if self.lockstep:
                        self.apply(action)
                        return "step"
                    pending = action
            if self.clock() >= deadline:
                break
            self._wait.wait(deadline - self.clock())
        if self.lockstep or self._done or self._observation is None:
            if self._done and self._observation is not None and not self.lockstep:
                self._publish(repeat=True)  # a finished episode stays visible until the next reset
            return "idle"
        if pending is None:
            self.counters["missed_commands"] += 1
            self.apply(np.zeros(self.action_dim))
            return "hold"
        self.apply(pending)
        return "step"

    def spin(self, duration_s: float | None = None, episodes: int | None = None) -> Counter:
        """Serve until ``duration_s`` passes or ``episodes`` episodes have finished (forever when
        both are None). Returns the counters."""
        end = None if duration_s is None else self.clock() + duration_s
        finished = 0
        while end is None or self.clock() < end:
            before = self._done
            self.spin_once()
            if self._done and not before:
                finished += 1
                if episodes is not None and finished >= episodes:
                    break
        return self.counters

    def report(self) -> dict[str, float]:
        """Counters, and the observation-to-command round trip (ms: p50, p99, max) seen here."""
        out: dict[str, float] = dict(self.counters)
        if self.round_trips:
            ms = 1000.0 * np.asarray(self.round_trips)
            out.update({"round_trip_ms_p50": float(np.percentile(ms, 50)), "round_trip_ms_p99": float(np.percentile(ms, 99)),
                        "round_trip_ms_max": float(ms.max()), "round_trips": len(ms)})
        return out

    def close(self) -> None:
        self.env.close()

