"""Issue 20: are the tasks where feedback-trained IQL loses to BC different in the diagnosis?

python docs/results/mt20/loss_diagnosis.py docs/results/mt20/mt40_u20k

From the kept result.json files of one sweep folder: per task, the learned-reward IQL row's
diagnosis (means over its seeds) and whether its mean success is below BC's (same folder, same
seeds). Prints the median and range of each measure over the losing tasks and over the others,
so "the reward is worse where IQL loses" or "the weights are sharper there" is a measured claim.
Measures: the reward model's held-out pair accuracy and Spearman correlation with the true reward,
the effective sample share of the advantage weights exp(beta A) (1 = BC), the expert's share of
the actor's weight (30 % of the transitions), the mean advantage gap expert - noisy, and the
value's expectile balance.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from cross_budget import success_by_task  # this folder is on sys.path when run as a script

MEASURES = {
    "held-out accuracy": lambda r: r["reward_model"]["heldout_accuracy"],
    "Spearman with true reward": lambda r: r["reward_model"]["spearman_true_reward"],
    "effective sample share": lambda r: r["diagnosis"]["effective_sample_share"],
    "expert weight": lambda r: r["diagnosis"]["by_behaviour"]["expert"]["weight_share"],
    "A expert - A noisy": lambda r: (r["diagnosis"]["by_behaviour"]["expert"]["advantage_mean"]
                                     - r["diagnosis"]["by_behaviour"]["noisy"]["advantage_mean"]),
    "expectile balance": lambda r: r["diagnosis"]["expectile_balance"],
}


def main(folder: str) -> None:
    iql, bc = success_by_task(Path(folder), "iql"), success_by_task(Path(folder), "bc")
    measures: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(folder).glob("*/result.json")):
        r = json.loads(path.read_text())
        if r["algo"] == "iql" and r.get("diagnosis"):
            for name, get in MEASURES.items():
                measures[r["task"]][name].append(float(get(r)))
    tasks = sorted(t for t in measures if t in bc)
    lost = [t for t in tasks if iql[t][0] < bc[t][0]]
    rest = [t for t in tasks if t not in lost]
    print(f"{folder}: learned-reward IQL below BC on {len(lost)} of {len(tasks)} tasks: {', '.join(lost)}\n")
    if not lost or not rest:
        return
    print(f"| measure | IQL below BC ({len(lost)} tasks): median [min, max] | others ({len(rest)} tasks) |")
    print("|---|---|---|")
    for name in MEASURES:
        cells = []
        for group in (lost, rest):
            values = np.array([np.mean(measures[t][name]) for t in group])
            cells.append(f"{np.median(values):+.3f} [{values.min():+.3f}, {values.max():+.3f}]")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
