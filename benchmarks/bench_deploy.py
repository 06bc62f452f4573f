"""The whole robot bridge in real time: ``python -m embodied.sim_robot`` (dressing, real-time
clock) in one process, ``python -m embodied.deploy robot=ros2`` in another, over Cyclone DDS.

    python benchmarks/bench_deploy.py                      # 3000 control steps at 50 Hz
    python benchmarks/bench_deploy.py --steps 600 --rate 10

The simulated robot steps every 1/rate s with the newest command (holding when none came) and
measures the round trip from publishing an observation to receiving the command stamped with
it; the deploy loop measures its own part (observation complete -> command sent: policy and
safety layer) and counts missed deadlines (a step longer than its period). The scripted expert
drives, so episodes are short and many (each reset settles the sleeve, which the loop waits for).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="control steps to run (at least)")
    parser.add_argument("--rate", type=float, default=50.0, help="Hz")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    out = Path(tempfile.mkdtemp())
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 80), PYTHONUNBUFFERED="1")
    episodes = max(1, args.steps // 30)  # the expert dresses in about 31 steps
    sim = subprocess.Popen([sys.executable, "-m", "embodied.sim_robot", "+task=dressing", f"output_root={out}",
                            "sim.lockstep=false", f"sim.rate_hz={args.rate}", f"sim.episodes={episodes}"],
                           cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        deploy = subprocess.run([sys.executable, "-m", "embodied.deploy", "+task=dressing", "robot=ros2",
                                 f"deploy.rate_hz={args.rate}", f"deploy.episodes={episodes}", f"output_root={out}",
                                 f"hydra.run.dir={out / 'deploy'}"], cwd=root, env=env, capture_output=True, text=True)
        if deploy.returncode != 0:
            raise SystemExit(f"deploy failed:\n{deploy.stderr[-3000:]}")
        sim_out, _ = sim.communicate(timeout=120)
    finally:
        if sim.poll() is None:
            sim.kill()
    report = json.loads((out / "deploy" / "deploy.json").read_text())
    counters = json.loads(re.search(r"sim_robot counters:\n(\{.*\})", sim_out, re.S).group(1))
    print(f"{report['steps']} control steps in {report['episodes']} dressing episodes at {args.rate:g} Hz, real time, "
          "over Cyclone DDS (sim_robot and deploy in two processes; expert policy; safety layer)")
    print(f"  round trip at the robot (observation published -> command received): "
          f"p50 {counters['round_trip_ms_p50']:.2f} ms, p99 {counters['round_trip_ms_p99']:.2f} ms, "
          f"max {counters['round_trip_ms_max']:.2f} ms over {counters['round_trips']} commands")
    print(f"  deploy loop (observation complete -> command sent): p50 {report['latency_ms']['p50']:.2f} ms, "
          f"p99 {report['latency_ms']['p99']:.2f} ms; step p99 {report['step_ms']['p99']:.2f} ms")
    print(f"  missed deadlines in deploy: {report['missed_deadlines']}; robot steps without a new command: "
          f"{counters.get('missed_commands', 0)} of {counters['observations']} observations; "
          f"success rate {report['success_rate']:.2f}; safety {report['safety']}")


if __name__ == "__main__":
    main()
