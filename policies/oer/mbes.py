"""Model-based experience selection (MBES, OER Sec. 4.1): which of a finished task's offline
transitions go into the small replay buffer.

OER's observation: replaying transitions drawn at random from an offline dataset replays the
behaviour policy's state distribution, which differs from the states the learned policy visits.
MBES learns a transition model of the task, rolls the learned policy out in it and keeps the
offline transitions nearest to the rolled-out states, so the buffer follows the learned policy.

Our reading, top to bottom (the paper has no public code):

1. fit a dynamics ensemble s' = s + f_k(s, a) (k = 1..K, mean-squared error on normalised
   inputs and state differences, each member on its own bootstrap of the data);
2. from start states s_0 drawn from the dataset's first observations, roll the policy out in
   the model, s_{j+1} = mean_k T_k(s_j, pi(s_j)), for L steps, and at each step keep the dataset
   transition (s_i, a_i) not kept before whose normalised (observation, action) is nearest
   (Euclidean) to (s_j, pi(s_j)); rollouts repeat from the start states until ``count`` rows are
   kept (a rollout that stays in one region keeps that region's next-nearest rows);
3. the kept transitions, rollout by rollout, are the task's ranking for
   :class:`policies.data.TaskReplayBuffer`.

Taking the nearest row *not kept before* matters: Meta-World episodes start from nearly the
same pose and a deterministic policy's rollouts from them collapse onto a few rows, so nearest
neighbours with repeats found only 8 to 22 distinct transitions of 30,000 (the first CW5 sweep).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from policies.networks import mlp


class DynamicsEnsemble(nn.Module):
    """K deterministic MLPs predicting ``s' - s`` from ``(s, a)`` on normalised inputs.

    Args:
        observation_dim: D; action_dim: A; hidden_dims: widths; members: K.
    """

    def __init__(self, observation_dim: int, action_dim: int, hidden_dims: list[int], members: int = 5):
        super().__init__()
        if members < 1:
            raise ValueError(f"members={members}; expected >= 1")
        self.members = nn.ModuleList(mlp(observation_dim + action_dim, observation_dim, hidden_dims) for _ in range(members))
        self.register_buffer("obs_mean", torch.zeros(observation_dim))
        self.register_buffer("obs_std", torch.ones(observation_dim))
        self.register_buffer("delta_std", torch.ones(observation_dim))

    def member_predictions(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(K, B, D)`` predicted next observations for ``observation (B, D)``, ``action (B, A)``."""
        x = torch.cat([(observation - self.obs_mean) / self.obs_std, action], dim=-1)
        return torch.stack([observation + m(x) * self.delta_std for m in self.members])

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``(B, D)``: the members' mean prediction of the next observation."""
        return self.member_predictions(observation, action).mean(0)


def fit_dynamics(observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor,
                 hidden_dims: list[int], members: int, steps: int, batch_size: int, learning_rate: float,
                 generator: torch.Generator) -> tuple[DynamicsEnsemble, dict[str, float]]:
    """Fit a :class:`DynamicsEnsemble` on transitions ``(N, D)``, ``(N, A)``, ``(N, D)``.

    Each member trains on minibatches of its own bootstrap resample. Returns the model (eval mode)
    and ``dynamics_loss`` (final mean-squared error on normalised state differences) and
    ``dynamics_held_out_mse`` (the same on the 10 % of transitions no member trained on).

    Raises:
        ValueError: fewer than 10 transitions or mismatched lengths.
    """
    n = len(observations)
    if n < 10 or len(actions) != n or len(next_observations) != n:
        raise ValueError(f"dynamics: {n} observations, {len(actions)} actions, {len(next_observations)} next "
                         "observations; expected the same number, at least 10")
    model = DynamicsEnsemble(observations.shape[1], actions.shape[1], hidden_dims, members).to(observations.device)
    delta = next_observations - observations
    model.obs_mean.copy_(observations.mean(0))
    model.obs_std.copy_(observations.std(0, unbiased=False) + 1e-3)
    model.delta_std.copy_(delta.std(0, unbiased=False) + 1e-6)
    order = torch.randperm(n, generator=generator)
    held_out, train = order[: max(1, n // 10)], order[max(1, n // 10):]
    boot = train[torch.randint(len(train), (members, len(train)), generator=generator)]
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    target = delta / model.delta_std
    loss = torch.zeros(())
    for _ in range(steps):
        rows = boot.gather(1, torch.randint(len(train), (members, batch_size), generator=generator))
        losses = []
        for k, member in enumerate(model.members):
            r = rows[k].to(observations.device)
            x = torch.cat([(observations[r] - model.obs_mean) / model.obs_std, actions[r]], dim=-1)
            losses.append((member(x) - target[r]).pow(2).mean())
        loss = torch.stack(losses).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        h = held_out.to(observations.device)
        predicted = model(observations[h], actions[h])
        held = ((predicted - next_observations[h]) / model.delta_std).pow(2).mean()
    return model, {"dynamics_loss": float(loss.detach()), "dynamics_held_out_mse": float(held)}


@torch.no_grad()
def mbes_select(observations: torch.Tensor, actions: torch.Tensor, start_rows: torch.Tensor,
                policy: Callable[[torch.Tensor], torch.Tensor], model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                count: int, rollout_length: int, generator: torch.Generator, chunk: int = 4096,
                stats: dict[str, float] | None = None) -> torch.Tensor:
    """Rank transitions by model-based experience selection (module docstring, steps 2-3).

    Args:
        observations: ``(N, D) float32`` the transitions' observations.
        actions: ``(N, A) float32`` their actions.
        start_rows: ``(S,) int64`` rows whose observations start rollouts (episodes' first steps).
        policy: ``(B, D) -> (B, A)`` the learned policy (deterministic).
        model: ``(B, D), (B, A) -> (B, D)`` the next observation (a :class:`DynamicsEnsemble`).
        count: how many rows to rank (at most N).
        rollout_length: L, model steps per rollout.
        generator: draws the start states.
        chunk: dataset rows per distance block (bounds memory: ``B x chunk`` distances).
        stats: when given, receives ``rollout_selected`` (rows the rollouts kept: ``count``).

    Returns:
        ``(count,) int64`` distinct row indices, rollout by rollout.

    Raises:
        ValueError: ``count`` > N, no start rows, or ``rollout_length`` < 1.
    """
    n = len(observations)
    if count > n or len(start_rows) == 0 or rollout_length < 1:
        raise ValueError(f"mbes: count={count} of {n} rows, {len(start_rows)} start rows, rollout_length="
                         f"{rollout_length}; expected count <= rows, start rows, rollout_length >= 1")
    keys = torch.cat([observations, actions], dim=-1)
    mean, std = keys.mean(0), keys.std(0, unbiased=False) + 1e-3
    keys = (keys - mean) / std
    taken = torch.zeros(n, dtype=torch.bool, device=keys.device)
    picked: list[tuple[int, int, int, int]] = []  # (attempt, rollout, step, row)
    batch = min(len(start_rows), max(1, count // rollout_length + 1), 256)
    attempt = 0
    while len(picked) < count and int(taken.sum()) < n:
        pick = start_rows[torch.randint(len(start_rows), (batch,), generator=generator)]
        state = observations[pick]
        for step in range(rollout_length):
            action = policy(state)
            query = (torch.cat([state, action], dim=-1) - mean) / std
            for b, row in enumerate(_nearest_untaken(query, keys, taken, chunk).tolist()):
                if row >= 0 and len(picked) < count:
                    taken[row] = True
                    picked.append((attempt, b, step, row))
            state = model(state, action)  # the imagined trajectory goes on in the model
        attempt += 1
    picked.sort()  # rollout by rollout, so that truncating the ranking drops whole rollouts
    chosen = [row for *_, row in picked]
    if stats is not None:
        stats["rollout_selected"] = float(len(chosen))
    return torch.as_tensor(chosen, dtype=torch.long)


def _nearest_untaken(query: torch.Tensor, keys: torch.Tensor, taken: torch.Tensor, chunk: int) -> torch.Tensor:
    """``(B,)`` for each query row in turn, its nearest key row (Euclidean) not taken before nor by
    an earlier query of the batch (-1 when none is left), in blocks of ``chunk`` keys."""
    k = min(len(query) + 1, len(keys))
    best_d, best_i = [], []
    for start in range(0, len(keys), chunk):
        d = torch.cdist(query, keys[start:start + chunk])
        d[:, taken[start:start + chunk]] = float("inf")
        value, where = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_d.append(value)
        best_i.append(where + start)
    value, order = torch.cat(best_d, 1).sort(dim=1)
    candidates = torch.cat(best_i, 1).gather(1, order).tolist()
    finite = torch.isfinite(value).tolist()
    out, used = [], set()
    for b in range(len(query)):
        row = next((r for r, ok in zip(candidates[b], finite[b]) if ok and r not in used), -1)
        used.add(row)
        out.append(row)
    return torch.as_tensor(out, dtype=torch.long)


__all__ = ["DynamicsEnsemble", "fit_dynamics", "mbes_select"]
