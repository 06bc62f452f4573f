"""Issue 20: mean success against the update budget (5,000 and 20,000), per row, on MT10 and the 40
report tasks, from the kept result.json files.

python docs/results/mt20/budget_plot.py [docs/results/mt20/budget.png] [seeds, e.g. 0 or 0,1]

Folders (all at IQL's chosen setting, beta 0.5 with a constant actor learning rate): MT10 at 5,000
updates ``mt10_nodecay`` and at 20,000 ``mt10_u20k`` (all rows); the 40 tasks at 5,000 ``mt40``
(the first report) and at 20,000 ``mt40_u20k`` (the second look); IQL at beta 0 (Gaussian BC
inside IQL, the actor-loss check) ``mt10_b0_u20k``.
A point is the mean over the tasks of each task's mean over the chosen seeds, and only tasks that
have the row at both budgets count, so the two points of a line are over the same tasks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cross_budget import success_by_task  # noqa: E402  (this folder is on sys.path when run as a script)

ROOT = Path(__file__).parent
ROWS = {"iql": "IQL, learned reward (β 0.5)", "iql_gt": "IQL, true reward (β 0.5)", "bc": "BC"}
#: suite -> budget -> the folder that holds that budget's jobs
FOLDERS = {
    "MT10 (selection)": {5000: "mt10_nodecay", 20000: "mt10_u20k"},
    "40 report tasks": {5000: "mt40", 20000: "mt40_u20k"},
}


def success(folder: str, algo: str, seeds: set[int] | None) -> dict[str, float]:
    """Per task, the mean success rate of row ``algo`` in ``folder`` over ``seeds`` (all if None)."""
    return {task: mean for task, (mean, _) in success_by_task(ROOT / folder, algo, seeds).items()}


def main(out: str = str(ROOT / "budget.png"), seeds: str | None = None) -> None:
    keep = {int(s) for s in seeds.split(",")} if seeds else None
    figure, axes = plt.subplots(1, len(FOLDERS), figsize=(5 * len(FOLDERS), 4), sharey=True)
    for ax, (suite, budgets) in zip(np.atleast_1d(axes), FOLDERS.items()):
        for algo, label in ROWS.items():
            by_budget = {b: success(f, algo, keep) for b, f in budgets.items()}
            tasks = sorted(set.intersection(*(set(v) for v in by_budget.values())))
            if not tasks:
                continue
            means = [np.mean([by_budget[b][t] for t in tasks]) for b in budgets]
            ax.plot(list(budgets), means, marker="o", label=f"{label} ({len(tasks)} tasks)")
            print(f"{suite} | {label} | " + " | ".join(f"{b}: {m:.3f}" for b, m in zip(budgets, means)))
        if suite.startswith("MT10"):
            b0 = success("mt10_b0_u20k", "iql", keep)
            if b0:
                ax.plot([20000], [np.mean(list(b0.values()))], marker="s", linestyle="none", color="black",
                        label=f"IQL at β 0: Gaussian BC ({len(b0)} tasks)")
                print(f"{suite} | IQL beta 0 | 20000: {np.mean(list(b0.values())):.3f} ({len(b0)} tasks)")
        ax.set_title(suite)
        ax.set_xlabel("updates (batch 256)")
        ax.set_xticks(list(budgets))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("mean success rate (Meta-World protocol)")
    figure.suptitle("Success against the update budget" + (f" (seeds: {seeds})" if seeds else " (all seeds)"))
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
