"""Issue 20: one row of one sweep against a row of another, paired by task, from the kept result.json files.

python docs/results/mt20/cross_budget.py docs/results/mt20/mt40_u20k iql docs/results/mt20/mt40 bc [0,1]

For the rows (the benchmark's ``algo`` names) in two sweep folders, for example IQL at 20,000
updates against BC at 5,000 (BC's own best budget on MT10): per task the mean success over the
seeds each has, then the mean over the tasks both have of the difference A - B, its 95 %
percentile bootstrap interval over tasks (``embodied.benchmark.bootstrap_interval``, the one the
benchmark's own tables use), and the count of tasks where A is worse. The optional fifth argument
keeps only those seeds (comma-separated), so that both rows are compared on the same seeds.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from embodied.benchmark import bootstrap_interval


def success_by_task(folder: Path, algo: str, seeds: set[int] | None = None) -> dict[str, tuple[float, int]]:
    """Mean success rate per task of row ``algo`` in ``folder`` (only ``seeds`` if given) and the
    number of seeds it has."""
    runs: dict[str, list[float]] = defaultdict(list)
    for path in sorted(folder.glob("*/result.json")):
        result = json.loads(path.read_text())
        if result["algo"] == algo and (seeds is None or int(result["seed"]) in seeds):
            runs[result["task"]].append(float(result["eval"]["success_rate"]))
    if not runs:
        raise SystemExit(f"no result.json of algo {algo!r} under {folder}")
    return {task: (float(np.mean(v)), len(v)) for task, v in runs.items()}


def main(folder_a: str, algo_a: str, folder_b: str, algo_b: str, seeds: str | None = None) -> None:
    keep = {int(s) for s in seeds.split(",")} if seeds else None
    a, b = success_by_task(Path(folder_a), algo_a, keep), success_by_task(Path(folder_b), algo_b, keep)
    tasks = sorted(set(a) & set(b))
    diff = np.array([a[t][0] - b[t][0] for t in tasks])
    low, high = bootstrap_interval(diff)
    seeds_a = sorted({a[t][1] for t in tasks})
    seeds_b = sorted({b[t][1] for t in tasks})
    print(f"{algo_a} ({folder_a}, seeds per task {seeds_a}) - {algo_b} ({folder_b}, seeds per task {seeds_b})")
    print(f"tasks {len(tasks)}: A {np.mean([a[t][0] for t in tasks]):.3f}, B {np.mean([b[t][0] for t in tasks]):.3f}, "
          f"difference {diff.mean():+.3f} [{low:+.3f}, {high:+.3f}], A worse on {int((diff < 0).sum())}, "
          f"ties {int((diff == 0).sum())}, median {np.median(diff):+.3f}")


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
