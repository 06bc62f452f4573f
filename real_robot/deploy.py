"""The deploy loop: a policy drives a robot at a fixed rate through the safety layer, and every
episode is recorded as data.

Each control step (period ``1 / rate_hz``):

1. apply e-stop and arm events from the robot's topics to the safety layer;
2. the policy proposes a command for the newest observation;
   :meth:`real_robot.safety.SafetyLayer.filter` decides what is sent (watchdog on the
   observation's age, NaN guard, limits, rate limit, workspace, e-stop);
3. send it, and account the step: observation-to-command latency, and a missed deadline when the
   command left more than one period after its observation arrived;
4. wait for the next complete observation. A self-clocked robot (a real one, the simulated robot
   node) sets the rate: the loop acts as soon as its observation arrives, and counts a late
   observation when none came within 1.5 periods (the watchdog then holds the robot). A robot
   that moves only when commanded (:class:`real_robot.robot.MujocoRobot`) is paced here: the loop
   sleeps to the end of the period (``pace=false``: no sleeping).

An episode ends when the robot reports termination or truncation, after ``max_steps``, or when the
e-stop latches. It is recorded as an :class:`embodied.data.Episode` (observations ``(T+1, D)``,
the commands actually sent ``(T, A)``, the robot's reward when it reports one, else zeros) and
handed to ``on_episode`` at once (the deploy entry point saves it as
``episodes/episode_<k>.npz``, atomically), so a crash loses at most the running episode and a
rerun continues with the next one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from real_robot.robot import Robot, RobotObservation
from real_robot.safety import SafetyLayer


@dataclass
class DeployConfig:
    """The control loop's settings.

    Raises:
        ValueError: ``rate_hz <= 0``, ``episodes < 1`` or ``max_steps < 1``.
    """

    episodes: int = 10
    """Episodes to run. Default 10."""
    rate_hz: float = 10.0
    """Control rate, Hz (the period is the deadline of each step). Default 10 (dressing)."""
    max_steps: int = 150
    """Steps before an episode is truncated. Default 150 (15 s at 10 Hz)."""
    seed: int = 1_000_000
    """Seed of the first episode (simulation resets; episode k uses seed + k)."""
    arm_on_start: bool = True
    """Arm the safety layer when the loop starts; False: wait for True on the arm topic."""
    pace: bool = True
    """Sleep to the period's end; False: start the next step as soon as an observation is fresh
    (simulation and lockstep testing)."""
    step_scale: float = 1.0
    """m of end-effector motion per unit of command (workspace rule). Dressing: 0.02."""
    rearm_each_episode: bool = False
    """Release a latched e-stop (a force stop's, an operator's) and re-arm at the start of every
    episode. Only for simulation, where each episode is a new scene; on a real robot a person
    releases the e-stop. Default False."""

    def __post_init__(self) -> None:
        if not self.rate_hz > 0 or self.episodes < 1 or self.max_steps < 1:
            raise ValueError(f"deploy: rate_hz={self.rate_hz} (> 0), episodes={self.episodes} (>= 1), "
                             f"max_steps={self.max_steps} (>= 1) expected")


@dataclass
class RecordedEpisode:
    """One deployed episode, in the layout of :class:`embodied.data.Episode` (which the deploy
    entry point turns it into): observations ``(T+1, D) float32``, the commands sent ``(T, A)
    float32`` (zeros where the safety layer held), rewards ``(T,) float32`` (the robot's, zeros
    when it reports none), terminations and truncations ``(T,) bool``, ``infos`` (``success``,
    ``safety_hold``) ``(T,)``."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    infos: dict[str, np.ndarray]
    policy: str
    seed: int

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        return bool(np.any(self.infos.get("success", False)))


def _record(observations: list[np.ndarray], actions: list[np.ndarray], rewards: list[float], terminated: bool,
            truncated: bool, infos: dict[str, list], seed: int, policy: str) -> RecordedEpisode:
    T = len(actions)
    terminations = np.zeros(T, dtype=bool)
    truncations = np.zeros(T, dtype=bool)
    if T:
        terminations[-1], truncations[-1] = terminated, truncated and not terminated
    return RecordedEpisode(np.asarray(observations, dtype=np.float32), np.asarray(actions, dtype=np.float32),
                           np.asarray(rewards, dtype=np.float32), terminations, truncations,
                           {k: np.asarray(v) for k, v in infos.items()}, policy, int(seed))


class DeployLoop:
    """Runs a policy on a robot (module docstring).

    Args:
        robot: connected robot.
        policy: ``act(observation (D,) float32) -> (A,)``; ``reset(seed)`` when it has one.
        safety: the safety layer (its clock should be the loop's).
        config: rate, episodes, arming.
        on_episode: called with ``(index, episode)`` as each episode ends (the deploy entry
            point saves it at once), or None.
        policy_name: stored with recorded episodes.
        clock, sleep: injectable time (tests).
        log: one line per episode.
    """

    def __init__(self, robot: Robot, policy: Any, safety: SafetyLayer, config: DeployConfig,
                 on_episode: Callable[[int, RecordedEpisode], None] | None = None, policy_name: str = "deployed",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], None] = print):
        self.robot, self.policy, self.safety, self.config = robot, policy, safety, config
        self.on_episode = on_episode
        self.policy_name, self.clock, self.sleep, self.log = policy_name, clock, sleep, log
        self.period = 1.0 / config.rate_hz
        self.latencies: list[float] = []
        self.step_times: list[float] = []
        self.counters: Counter = Counter()

    def _events(self) -> None:
        for name, value in self.robot.control_events():
            if name == "estop" and value:
                self.safety.estop()
                self.counters["estop_received"] += 1
            elif name == "estop":
                self.safety.reset_estop()
            elif name == "arm" and value:
                try:
                    self.safety.arm()
                except RuntimeError:
                    self.counters["arm_refused_estop"] += 1
            elif name == "arm":
                self.safety.disarm()

    def step(self, obs: RobotObservation) -> tuple[np.ndarray, bool]:
        """One control decision for ``obs``: ``(command sent or held, whether it was sent)``."""
        self._events()
        if obs.fresh:
            self.safety.observed(obs.received)
        if obs.force is not None:
            self.safety.force(obs.force, obs.force_stamp if obs.force_stamp is not None else obs.received)
        proposal = np.asarray(self.policy.act(obs.observation), dtype=np.float64)
        decision = self.safety.filter(proposal, position=obs.position, step_scale=self.config.step_scale)
        if decision.send:
            self.robot.send_action(decision.command, respond_to=obs)
            self.latencies.append(self.clock() - obs.received)
        return decision.command, decision.send

    def run_episode(self, index: int) -> Any:
        """Run episode ``index`` (seed ``config.seed + index``); returns the recorded episode."""
        seed = self.config.seed + index
        if self.config.rearm_each_episode and (self.safety.estopped or not self.safety.armed):
            self.safety.reset_estop()
            self.safety.arm()
            self.counters["rearmed"] += 1
        if hasattr(self.policy, "reset"):
            self.policy.reset(seed)
        obs = self.robot.reset(seed)
        if obs is None:
            raise TimeoutError(f"no observation from the robot after the reset of episode {index} (seed {seed}); "
                               "is the robot (or python -m embodied.sim_robot) running on this ROS domain?")
        observations, actions, rewards = [obs.observation], [], []
        infos: dict[str, list] = {"success": [], "safety_hold": [], "force": []}
        terminated = truncated = False
        paced = self.config.pace and not self.robot.self_clocked
        stops_before = self.safety.counters["force_stop"]
        while len(actions) < self.config.max_steps:
            started = self.clock()
            command, sent = self.step(obs)
            # Deadline: the command for an observation goes out within one period of its arrival.
            self.step_times.append(self.clock() - obs.received)
            if self.step_times[-1] > self.period:
                self.counters["missed_deadlines"] += 1
            if self.safety.estopped and not self.safety.backing_off and not sent:
                truncated = True
                stop = "force" if self.safety.counters["force_stop"] > stops_before else "estop"
                self.counters[f"episodes_stopped_by_{stop}"] += 1
                break
            if paced:  # a robot that moves only when told: keep the rate here
                self.sleep(max(0.0, started + self.period - self.clock()))
            # A self-clocked robot sets the pace: act as soon as its next observation is complete.
            # Lockstep simulation (pace=false) waits as long as it takes.
            following = self.robot.get_observation(timeout_s=1.5 * self.period if self.config.pace else max(self.period, 1.0))
            if following is None:
                raise TimeoutError("the robot stopped publishing observations")
            if not following.fresh:
                self.counters["late_observations"] += 1
            obs = following
            actions.append(command if sent else np.zeros_like(command))
            observations.append(obs.observation)
            rewards.append(0.0 if obs.reward is None else obs.reward)
            infos["success"].append(bool(obs.success))
            infos["safety_hold"].append(not sent)
            infos["force"].append(np.nan if obs.force is None else float(obs.force))
            if obs.terminated or obs.truncated:
                terminated, truncated = obs.terminated, obs.truncated
                break
        else:
            truncated = True
        episode = _record(observations, actions, rewards, terminated, truncated, infos, seed, self.policy_name)
        if self.on_episode is not None and len(episode):
            self.on_episode(index, episode)
        self.log(f"episode {index} (seed {seed}): {len(episode)} steps, success {episode.success}, "
                 f"return {float(episode.rewards.sum()):.3f}")
        return episode

    def run(self, done: list[Any] | None = None) -> dict[str, Any]:
        """Run episodes ``len(done)`` to ``config.episodes - 1`` and report on all of them
        (``done``: episodes recorded by an earlier, interrupted run).

        Returns:
            ``episodes``, ``success_rate``, ``return_mean``, ``latency_ms`` (p50, p99, max of
            observation arrival to command sent, commands sent only), ``step_ms`` (the same for
            every step, held ones included), ``missed_deadlines``, ``safety`` (the layer's
            counters) and the loop's counters (``late_observations``, e-stops); with a force
            source: the largest force on the person (N) over all episodes and the mean of each
            episode's peak, and with a force limit the episodes over it and those the layer
            stopped.
        """
        if self.config.arm_on_start:
            self.safety.arm()
        episodes = list(done or [])
        for index in range(len(episodes), self.config.episodes):
            episodes.append(self.run_episode(index))
        return self.report(episodes)

    def report(self, episodes: list[Any]) -> dict[str, Any]:
        """The numbers of :meth:`run` for ``episodes``."""
        def percentiles(values: list[float]) -> dict[str, float]:
            if not values:
                return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
            ms = 1000.0 * np.asarray(values)
            return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}

        limit = self.safety.config.force_limit
        peaks = [float(np.nanmax(f)) for f in (np.asarray(ep.infos.get("force", []), dtype=float) for ep in episodes)
                 if f.size and np.isfinite(f).any()]
        force = {} if not peaks else {
            "force_max_n": max(peaks),
            "force_episode_peak_mean_n": float(np.mean(peaks)),
            **({"force_limit_n": limit, "force_stop_n": limit - self.safety.config.force_margin,
                "episodes_over_force_limit": int(sum(p > limit for p in peaks)),
                "episodes_stopped_by_force": int(self.counters["episodes_stopped_by_force"])} if limit is not None else {}),
        }
        return {
            "episodes": len(episodes),
            "success_rate": float(np.mean([ep.success for ep in episodes])) if episodes else float("nan"),
            "return_mean": float(np.mean([ep.rewards.sum() for ep in episodes])) if episodes else float("nan"),
            "steps": int(sum(len(ep) for ep in episodes)),
            "latency_ms": percentiles(self.latencies),
            "step_ms": percentiles(self.step_times),
            "missed_deadlines": int(self.counters["missed_deadlines"]),
            "safety": dict(self.safety.counters),
            "loop": dict(self.counters),
            **force,
        }
