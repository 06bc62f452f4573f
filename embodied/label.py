"""Labeling and reward learning alone: ``python -m embodied.label +task=NAME labeler=oracle``.

Runs the dataset, label and reward stages of the main job (see :mod:`embodied.pipeline`) into
the run folder, prints the label-quality report (held-out preference accuracy, abstain and tie
rates, Pearson and Spearman correlation of the learned with the true reward), writes it to
``metrics.json`` and draws ``plots/reward_vs_true.png``.
"""

from __future__ import annotations

import hydra
import numpy as np
from omegaconf import DictConfig

from embodied.cli import require_task, run_folder
from embodied.config import validate_config
from embodied.io import save_figure, write_json_atomic
from embodied.paths import RunPaths
from embodied.pipeline import dataset_stage, label_stage, needs_frames, print_json, reward_stage
from embodied.runtime import resolve_device, seed_everything
from reward_models.functions import BradleyTerryReward, normalize_rewards, relabel


def robust_limits(values: np.ndarray, share: float = 0.005, margin: float = 0.05) -> tuple[float, float]:
    """Axis limits that hold all but the ``share`` most extreme values on each side (quantiles),
    widened by ``margin`` of the range: one outlier does not squash a scatter plot."""
    lo, hi = (float(v) for v in np.quantile(values, [share, 1.0 - share]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def plot_reward_vs_true(learned: np.ndarray, true: np.ndarray, path, title: str, max_points: int = 5000) -> dict:
    """Scatter of learned (standardised) against true reward per transition, saved as PNG.

    The axes hold the central 99 % of each reward (:func:`robust_limits`); points outside are
    drawn on the border as triangles and counted in the plot's corner.

    Returns:
        ``xlim``, ``ylim`` and ``outside`` (points drawn on the border).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    pick = rng.choice(len(true), size=min(max_points, len(true)), replace=False)
    x, y = true[pick], learned[pick]
    xlim, ylim = robust_limits(true), robust_limits(learned)
    inside = (x >= xlim[0]) & (x <= xlim[1]) & (y >= ylim[0]) & (y <= ylim[1])
    figure, axis = plt.subplots(figsize=(4.5, 4), dpi=100)
    axis.scatter(x[inside], y[inside], s=3, alpha=0.4)
    if (~inside).any():
        axis.scatter(np.clip(x[~inside], *xlim), np.clip(y[~inside], *ylim), s=12, marker="^", color="tab:red",
                     label=f"{int((~inside).sum())} outside, on the border")
        axis.legend(loc="lower right", fontsize=7)
    axis.set_xlim(*xlim)
    axis.set_ylim(*ylim)
    axis.set_xlabel("true reward")
    axis.set_ylabel("learned reward (standardised)")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
    return {"xlim": xlim, "ylim": ylim, "outside": int((~inside).sum())}


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    with run_folder("label", cfg) as folder:
        validate_config(cfg)
        seed_everything(int(cfg.seed))
        device = resolve_device(cfg.device)
        dataset = dataset_stage(cfg, keep_frames=needs_frames(cfg, labeling=True))
        labels = label_stage(cfg, dataset.episodes, folder)
        model, report = reward_stage(cfg, dataset.episodes, labels, folder, device)
        learned, _ = normalize_rewards(relabel(BradleyTerryReward(model), dataset.episodes, device), "standardize")
        learned = learned.cpu().numpy()
        true = np.concatenate([ep.rewards for ep in dataset.episodes])
        paths = RunPaths(folder)
        plot = paths.plots / "reward_vs_true.png"
        plot_reward_vs_true(learned, true, plot, f"{cfg.task.name}, labeler {cfg.labeler.name}: "
                            f"Spearman {report['spearman_true_reward']:.2f}")
        write_json_atomic(paths.metrics, {"task": cfg.task.name, "labeler": cfg.labeler.name,
                                                    "dataset_id": dataset.source, "reward": report})
        print_json(f"{cfg.task.name}, labeler {cfg.labeler.name}:", report)
        print(f"metrics: {paths.metrics}\nplot: {plot}")


def main() -> None:
    """Console entry point; exits 2 when no task is selected."""
    require_task("label")
    _main()


if __name__ == "__main__":
    main()
