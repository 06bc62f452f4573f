"""Issue 20: the MT10 selection table, one row per IQL setting (arm), from the kept result.json files.

python docs/results/mt20/selection_table.py [docs/results/mt20]

Per arm: success per task (mean over the seeds it has), the mean over the 10 tasks per seed, and
the diagnosis means over tasks (the value's expectile balance, the advantage weights' effective
sample share, the expert's share of the actor's weight).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


def arm_rows(root: Path) -> dict[str, dict]:
    rows = {}
    for folder in sorted(root.glob("mt10_*")):
        results = [json.loads(p.read_text()) for p in folder.glob("*/result.json")]
        results = [r for r in results if r["algo"] == "iql" and r["reward"] == "learned"]
        if not results:
            continue
        success: dict[str, dict[int, float]] = defaultdict(dict)
        for r in results:
            success[r["task"]][int(r["seed"])] = float(r["eval"]["success_rate"])
        seeds = sorted({s for v in success.values() for s in v})
        per_seed = {s: float(np.mean([success[t][s] for t in MT10])) for s in seeds if all(s in success.get(t, {}) for t in MT10)}
        diagnosis = [r["diagnosis"] for r in results if r.get("diagnosis")]
        rows[folder.name.removeprefix("mt10_")] = {
            "tasks": {t: float(np.mean(list(success[t].values()))) for t in MT10 if t in success},
            "per_seed": per_seed,
            "jobs": len(results),
            "balance": float(np.mean([d["expectile_balance"] for d in diagnosis if "expectile_balance" in d] or [np.nan])),
            "ess": float(np.mean([d["effective_sample_share"] for d in diagnosis] or [np.nan])),
            "expert_weight": float(np.mean([d["by_behaviour"]["expert"]["weight_share"] for d in diagnosis] or [np.nan])),
        }
    return rows


def main(root: str = "docs/results/mt20") -> None:
    rows = arm_rows(Path(root))
    short = [t.removesuffix("-v3") for t in MT10]
    print("| setting | " + " | ".join(short) + " | mean (per seed) | ESS share | expert weight | expectile balance |")
    print("|---|" + "---|" * (len(MT10) + 4))
    for arm, row in rows.items():
        cells = [f"{row['tasks'][t]:.2f}" if t in row["tasks"] else "–" for t in MT10]
        seeds = ", ".join(f"s{s} {v:.3f}" for s, v in row["per_seed"].items())
        mean = f"**{np.mean(list(row['per_seed'].values())):.3f}** ({seeds})" if row["per_seed"] else f"({row['jobs']} jobs)"
        balance = "–" if np.isnan(row["balance"]) else f"{row['balance']:+.3f}"
        print(f"| {arm} | " + " | ".join(cells) + f" | {mean} | {row['ess']:.3f} | {row['expert_weight']:.3f} | {balance} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
