"""Issue 20: do IQL's advantages rank the expert's transitions first? From the kept result.json files.

python docs/results/mt20/advantage_ranking.py docs/results/mt20/mt40 [docs/results/mt20/mt10_nodecay]

Per folder, for each IQL row (learned and true reward): per task, the mean advantage
A = Q_hat(s, a) - V(s) of the expert, noisy-expert and random transitions (means over seeds), the
expert's share of the actor's weight exp(beta A) (the expert is 30 % of the transitions), and over
tasks how often the order is expert > noisy > random; then BC's success against IQL's.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

BEHAVIOURS = ("expert", "noisy", "random")


def table(folder: Path) -> None:
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))]
    success: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        success[(r["task"], r["row"])].append(float(r["eval"]["success_rate"]))
    bc = {task: float(np.mean(v)) for (task, row), v in success.items() if row == "BC"}
    for reward in ("learned", "gt"):
        rows = [r for r in results if r["algo"].startswith("iql") and r["reward"] == reward and r.get("diagnosis")]
        if not rows:
            continue
        by_task: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_task[r["task"]].append(r)
        print(f"\n{folder} · {rows[0]['row']} ({len(by_task)} tasks)\n")
        print("| task | A expert | A noisy | A random | expert > noisy > random | expert weight | IQL success | BC success |")
        print("|---|---|---|---|---|---|---|---|")
        ordered, losing_ordered, losing = 0, 0, 0
        for task, jobs in sorted(by_task.items()):
            mean = {b: float(np.mean([j["diagnosis"]["by_behaviour"][b]["advantage_mean"] for j in jobs])) for b in BEHAVIOURS}
            weight = float(np.mean([j["diagnosis"]["by_behaviour"]["expert"]["weight_share"] for j in jobs]))
            iql = float(np.mean([j["eval"]["success_rate"] for j in jobs]))
            order = mean["expert"] > mean["noisy"] > mean["random"]
            ordered += order
            if task in bc and iql < bc[task]:
                losing += 1
                losing_ordered += order
            print(f"| {task.removesuffix('-v3')} | {mean['expert']:+.3f} | {mean['noisy']:+.3f} | {mean['random']:+.3f} | "
                  f"{'yes' if order else 'no'} | {weight:.3f} | {iql:.2f} | {bc.get(task, float('nan')):.2f} |")
        print(f"\nordered on {ordered} of {len(by_task)} tasks; on {losing_ordered} of the {losing} tasks where IQL is below BC")


if __name__ == "__main__":
    for name in sys.argv[1:] or ["docs/results/mt20/mt40"]:
        table(Path(name))
