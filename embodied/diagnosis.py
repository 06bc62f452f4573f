"""Why an offline RL learner does what it does on a dataset: the diagnosis of a trained IQL run,
per behaviour policy of the data (expert, noisy, random, ...).

For a learner with ``transition_diagnostics`` (IQL), over every transition of the dataset with
the rewards it trained on:

- **advantage weights** (IQL Eq. 7): per behaviour, the share of transitions, the mean advantage,
  the mean weight, the share of the total actor weight it carries, the share of its transitions
  at the weight cap; overall the effective sample size of the weights ``(sum w)^2 / sum w^2`` as
  a share of the transitions (1: every transition counts alike, as in BC);
- **value fit** (Eq. 5): the expectile balance, the gradient of the expectile loss
  ``L_2^tau(u) = |tau - 1(u < 0)| u^2`` in V, ``E[|tau - 1(u<0)| u] / E[|tau - 1(u<0)| |u|]`` over the
  residuals ``u = Q_hat(s, a) - V(s)``: in [-1, 1], 0 once V is the tau-expectile of Q_hat over the
  data, positive while V sits below it. The share of negative residuals is reported beside it; it
  is *not* ``1 - tau`` at the optimum (that holds for the tau-quantile, not the expectile): a
  skewed residual distribution puts more or fewer of them below V;
- **critic fit** (Eq. 6): the RMS of the TD error against the standard deviation of its target,
  and the fraction of the target's variance it explains;
- **actor fit**: the mean log-likelihood of the dataset's actions per behaviour (a filtering
  actor gives the expert's actions the highest).

:func:`diagnose` returns these as one JSON-able dict; the main job writes it into its report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from policies.data import EpisodeData


@torch.no_grad()
def transition_diagnostics(learner: Any, data: EpisodeData, rewards: torch.Tensor, batch_size: int = 8192
                           ) -> dict[str, np.ndarray]:
    """``learner.transition_diagnostics`` over every transition of ``data``, in batches: each key
    an ``(N,) float64`` array in transition order.

    Raises:
        ValueError: a learner without ``transition_diagnostics``, or ``rewards`` not ``(N,)``.
    """
    if not hasattr(learner, "transition_diagnostics"):
        raise ValueError(f"{type(learner).__name__} has no transition_diagnostics; the diagnosis reads IQL's networks")
    n = len(data.observation_row)
    if rewards.shape != (n,):
        raise ValueError(f"rewards of shape {tuple(rewards.shape)}; expected ({n},), one per transition")
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch_size):
        rows = torch.arange(start, min(start + batch_size, n), device=rewards.device)
        batch = data.gather(rows, ("observation", "action", "reward", "next_observation", "terminal"), rewards=rewards)
        out = learner.transition_diagnostics(batch["observation"], batch["action"], batch["reward"],
                                             batch["next_observation"], batch["terminal"])
        for key, value in out.items():
            parts.setdefault(key, []).append(value.double().cpu().numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}


def expectile_balance(residual: np.ndarray, expectile: float) -> float:
    """How far V is from the expectile of Q_hat over the data: the gradient of IQL's value loss
    (Eq. 5, ``L_2^tau(u) = |tau - 1(u < 0)| u^2``) in V, normalised,
    ``E[|tau - 1(u<0)| u] / E[|tau - 1(u<0)| |u|]``.

    Args:
        residual: ``(N,)`` float, ``u = Q_hat(s, a) - V(s)`` per transition.
        expectile: tau in (0, 1).

    Returns:
        A float in [-1, 1]: 0 when V is the tau-expectile (the loss is at its minimum in a shared
        shift of V), positive when V sits below it, negative above; 0 for all-zero residuals.
    """
    residual = np.asarray(residual, dtype=np.float64)
    coefficient = np.where(residual < 0, 1.0 - expectile, expectile)  # |tau - 1(u < 0)|
    scale = float(np.sum(coefficient * np.abs(residual)))
    return float(np.sum(coefficient * residual) / scale) if scale > 0 else 0.0


def diagnose(learner: Any, data: EpisodeData, rewards: torch.Tensor, episodes: Sequence) -> dict[str, Any]:
    """The diagnosis of the module docstring for a trained learner on its training data.

    Args:
        learner: an IQL learner (``transition_diagnostics``, ``config.max_weight``, ``config.expectile``).
        data: the dataset's transitions (:class:`EpisodeData`).
        rewards: ``(N,)`` the rewards it trained on (relabelled and normalised).
        episodes: the episodes of ``data``, in order; ``episode.policy`` names the behaviour.

    Returns:
        ``{"effective_sample_share", "expectile_balance", "negative_residual_share", "expectile", "td_rmse",
        "target_std", "td_explained_variance", "by_behaviour": {name: {...}}}``.
    """
    values = transition_diagnostics(learner, data, rewards)
    lengths = np.array([len(ep.actions) for ep in episodes])
    behaviour = np.repeat(np.array([ep.policy or "unknown" for ep in episodes]), lengths)
    weight, advantage = values["weight"], values["advantage"]
    cap = float(learner.config.max_weight)
    total = float(weight.sum())
    by_behaviour = {}
    for name in sorted(set(behaviour.tolist())):
        rows = behaviour == name
        by_behaviour[name] = {
            "transition_share": float(rows.mean()),
            "advantage_mean": float(advantage[rows].mean()),
            "weight_mean": float(weight[rows].mean()),
            "weight_share": float(weight[rows].sum() / total) if total > 0 else float("nan"),
            "capped_share": float((weight[rows] >= cap * (1 - 1e-6)).mean()),
            "log_prob_mean": float(values["log_prob"][rows].mean()),
        }
    tau = float(learner.config.expectile)
    target_std = float(values["target"].std())
    td_rmse = float(np.sqrt(np.mean(values["td_error"] ** 2)))
    return {"effective_sample_share": float(total ** 2 / (len(weight) * np.sum(weight ** 2))) if total > 0 else float("nan"),
            "expectile_balance": expectile_balance(advantage, tau),
            "negative_residual_share": float((advantage < 0).mean()),
            "expectile": tau,
            "td_rmse": td_rmse, "target_std": target_std,
            "td_explained_variance": float(1.0 - np.var(values["td_error"]) / max(np.var(values["target"]), 1e-12)),
            "by_behaviour": by_behaviour}


def diagnosis_lines(diagnosis: dict[str, Any] | None) -> list[str]:
    """The report's section for :func:`diagnose` (nothing for ``None``)."""
    if not diagnosis:
        return []
    lines = ["## Diagnosis: who carries the actor's weight", "",
             f"Advantage weights exp(beta A) (IQL Eq. 7) over every transition of the dataset. Effective sample share "
             f"of the weights {diagnosis['effective_sample_share']:.3f} (1: every transition alike, as in BC). Value "
             f"fit at expectile {diagnosis['expectile']}: balance {diagnosis.get('expectile_balance', float('nan')):+.3f} "
             f"(0 once V is the expectile of Q over the data; positive: V below it), "
             f"{diagnosis['negative_residual_share']:.3f} of the residuals Q - V negative. Critic: TD error RMS "
             f"{diagnosis['td_rmse']:.3g} against a target std of {diagnosis['target_std']:.3g} (explained variance "
             f"{diagnosis['td_explained_variance']:.3f}).", "",
             "| behaviour | transitions | advantage (mean) | weight (mean) | share of the weight | at the cap | log pi(a|s) |",
             "|---|---|---|---|---|---|---|"]
    for name, row in diagnosis["by_behaviour"].items():
        lines.append(f"| {name} | {row['transition_share']:.3f} | {row['advantage_mean']:.3g} | {row['weight_mean']:.3g} | "
                     f"{row['weight_share']:.3f} | {row['capped_share']:.3f} | {row['log_prob_mean']:.2f} |")
    return [*lines, ""]


__all__ = ["diagnose", "diagnosis_lines", "expectile_balance", "transition_diagnostics"]
