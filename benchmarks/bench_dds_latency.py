"""Observation-to-command latency over Cyclone DDS at a fixed rate, two processes on this machine.

    python benchmarks/bench_dds_latency.py                 # 3000 steps at 50 Hz (about 60 s)
    python benchmarks/bench_dds_latency.py --steps 500 --rate 100

A "robot" process publishes ``sensor_msgs/JointState`` (7 joints) at ``--rate`` Hz, stamped with
its send time. A "controller" process (this one) takes each observation, runs a 2x256 MLP
policy, passes the command through the safety layer and publishes it as
``std_msgs/Float64MultiArray`` carrying the observation's stamp. The robot records, per step,
the time from publishing the observation to receiving its command (same clock, one machine),
and counts missed deadlines: a command later than one period (1/rate s). Prints p50, p99, max
and the missed count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROBOT = """
import json, sys, time
import numpy as np
from real_robot.ros2 import ROS2Node, QosConfig
from real_robot.ros2_msgs import Header, JointState, Time
domain, steps, rate, out_path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
node = ROS2Node(domain)
obs = node.publisher("/joint_states", "sensor_msgs/msg/JointState")
cmd = node.subscription("/joint_commands", "std_msgs/msg/Float64MultiArray")
deadline = time.time() + 30
while not (obs._writer.get_matched_subscriptions() and cmd._reader.get_matched_publications()) and time.time() < deadline:
    time.sleep(0.01)
sent, latency = {}, {}
period, start = 1.0 / rate, time.perf_counter()
for i in range(steps):
    target = start + i * period
    while (now := time.perf_counter()) < target:
        for c in cmd.take():
            latency[int(c.data[0])] = time.perf_counter() - sent[int(c.data[0])]
        time.sleep(min(0.0005, max(0.0, target - now)))
    sent[i] = time.perf_counter()
    q = np.sin(0.01 * i + np.arange(7))
    obs.publish(JointState(Header(Time(i, 0), "base"), [], q.tolist(), [], []))
end = time.perf_counter() + 0.5
while time.perf_counter() < end:
    for c in cmd.take():
        latency[int(c.data[0])] = time.perf_counter() - sent[int(c.data[0])]
    time.sleep(0.0005)
with open(out_path, "w") as f:
    json.dump({"latency": [latency.get(i) for i in range(steps)]}, f)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="Hz")
    args = parser.parse_args()

    import torch

    from policies.networks import mlp
    from real_robot.ros2 import ROS2Node
    from real_robot.ros2_msgs import Float64MultiArray
    from real_robot.safety import SafetyConfig, SafetyLayer

    torch.set_num_threads(1)
    domain = 150 + os.getpid() % 80
    node = ROS2Node(domain)
    observations = node.subscription("/joint_states", "sensor_msgs/msg/JointState")
    commands = node.publisher("/joint_commands", "std_msgs/msg/Float64MultiArray")
    policy = mlp(7, 7, [256, 256]).eval()
    safety = SafetyLayer(SafetyConfig(low=[-1.0] * 7, high=[1.0] * 7, max_delta=0.2, watchdog_s=0.1))
    safety.arm()
    root = Path(__file__).resolve().parents[1]
    result = Path(tempfile.mkdtemp()) / "latency.json"
    robot = subprocess.Popen([sys.executable, "-c", ROBOT, str(domain), str(args.steps), str(args.rate), str(result)],
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    handled = 0
    wait = node.waiter([observations])  # a DDS WaitSet: sleep until an observation lands
    while robot.poll() is None:
        for msg in observations.take():
            safety.observed()
            with torch.no_grad():
                action = policy(torch.as_tensor(msg.position, dtype=torch.float32)[None])[0].numpy()
            decision = safety.filter(action)
            if decision.send:
                commands.publish(Float64MultiArray(data=[float(msg.header.stamp.sec), *decision.command.tolist()]))
            handled += 1
        wait.wait(0.05)
    if robot.returncode != 0:
        raise SystemExit(f"the robot process failed (exit {robot.returncode})")
    latency = json.loads(result.read_text())["latency"]
    got = np.array([x for x in latency if x is not None]) * 1e3
    lost = sum(x is None for x in latency)
    period_ms = 1e3 / args.rate
    print(f"{args.steps} steps at {args.rate:g} Hz over Cyclone DDS (2 processes, 7-joint JointState -> 2x256 MLP "
          f"-> safety layer -> Float64MultiArray)")
    print(f"  observation-to-command latency: p50 {np.percentile(got, 50):.2f} ms, p99 {np.percentile(got, 99):.2f} ms, "
          f"max {got.max():.2f} ms")
    print(f"  missed deadlines (> {period_ms:.0f} ms): {int((got > period_ms).sum())}; commands lost: {lost}; "
          f"handled by the controller: {handled}; safety: {dict(safety.counters)}")


if __name__ == "__main__":
    main()
