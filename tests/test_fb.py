"""Forward-backward representations: the FB loss against a hand computation, orthonormality,
z normalisation, prompts to z, and which loss reaches which network."""

from __future__ import annotations

import math

import pytest
import torch

from policies.fb import FBConfig, FBLearner, fb_loss, orthonormality_loss, project_z


def test_fb_loss_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    M, T = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    discount = torch.tensor([[0.9], [0.9], [0.0], [0.9]])  # row 2 ended in a terminal state
    off, diag = 0.0, 0.0
    for i in range(4):
        for j in range(4):
            d = float(M[i, j] - discount[i, 0] * T[i, j])
            if i == j:
                diag -= d / 4
            else:
                off += 0.5 * d * d / 12
    loss, off_part, diag_part = fb_loss(M, T, discount)
    assert off_part.item() == pytest.approx(off, rel=1e-5) and diag_part.item() == pytest.approx(diag, rel=1e-5)
    assert loss.item() == pytest.approx(off + diag, rel=1e-5)
    B = torch.randn(5, 3, generator=g)
    C = B @ B.T
    expected = 0.5 * sum(float(C[i, j]) ** 2 for i in range(5) for j in range(5) if i != j) / 20 - float(C.diagonal().mean())
    assert orthonormality_loss(B).item() == pytest.approx(expected, rel=1e-5)


def test_the_orthonormality_loss_makes_the_covariance_of_b_the_identity():
    torch.manual_seed(0)
    learner = FBLearner(FBConfig(hidden_dims=[64, 64], z_dim=4, normalize_observations=False), 3, 2)
    states = torch.randn(512, 3, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(learner.backward_map.parameters(), lr=1e-3)
    for step in range(600):
        batch = states[torch.randint(0, 512, (128,), generator=torch.Generator().manual_seed(step))]
        loss = orthonormality_loss(learner.backward_map(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        B = learner.backward_map(states)
    covariance = B.T @ B / len(B)
    assert torch.allclose(covariance, torch.eye(4), atol=0.15), covariance
    assert torch.allclose(B.norm(dim=-1), torch.full((512,), 2.0), atol=1e-4)  # on the sphere of radius sqrt(d)


def test_every_z_lies_on_the_sphere_of_radius_sqrt_d():
    d = 16
    learner = FBLearner(FBConfig(hidden_dims=[16], z_dim=d), 5, 2)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(40, 5, generator=g)
    learner.prepare(obs)
    radius = math.sqrt(d)
    assert torch.allclose(learner.sample_z(100, g, torch.device("cpu")).norm(dim=-1), torch.full((100,), radius), atol=1e-4)
    assert torch.allclose(learner.goal_z(obs).norm(dim=-1), torch.full((40,), radius), atol=1e-4)
    reward = torch.randn(40, generator=g)
    z = learner.reward_z(obs, reward)
    expected = project_z((reward[:, None] * learner.backward_map(learner.normalizer(obs))).mean(0))
    assert torch.allclose(z, expected, atol=1e-5) and z.norm().item() == pytest.approx(radius, rel=1e-5)
    assert learner.imitation_z(obs).shape == (d,) and learner.imitation_z(obs, window=5).shape == (40, d)
    assert torch.allclose(learner.imitation_z(obs, window=5).norm(dim=-1), torch.full((40,), radius), atol=1e-4)
    with pytest.raises(ValueError, match="rewards"):
        learner.reward_z(obs, reward[:3])


def _grads(module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_fb_and_orthonormality_reach_f_and_b_and_the_actor_loss_only_the_actor():
    learner = FBLearner(FBConfig(hidden_dims=[16], z_dim=8), 5, 2)
    g = torch.Generator().manual_seed(0)
    n = 32
    obs, nxt, future = (torch.randn(n, 5, generator=g) for _ in range(3))
    action = torch.rand(n, 2, generator=g) * 2 - 1
    z = learner.sample_z(n, g, torch.device("cpu"))
    mix = torch.rand(n, 1, generator=g) < 0.5
    losses = learner.losses(obs, action, nxt, torch.zeros(n), future, z, mix)
    (losses["fb_loss"] + losses["orthonormality_loss"]).backward()
    assert _grads(learner.forward_map) and _grads(learner.backward_map) and not _grads(learner.actor)
    learner.zero_grad(set_to_none=True)
    learner.losses(obs, action, nxt, torch.zeros(n), future, z, mix)["actor_loss"].backward()
    assert _grads(learner.actor) and not _grads(learner.forward_map) and not _grads(learner.backward_map)
    assert not _grads(learner.target_forward) and not _grads(learner.target_backward)
    with pytest.raises(ValueError, match="goal_source"):
        FBConfig(goal_source="past")
    with pytest.raises(KeyError, match="future_observation"):
        learner.update({"observation": obs, "action": action, "next_observation": nxt, "terminal": torch.zeros(n)})


def test_the_main_job_trains_fb_and_evaluates_it_towards_the_given_z(compose_config, tmp_path):
    from embodied.pipeline import train
    from tests.conftest import small_train_overrides

    overrides = [o for o in small_train_overrides(tmp_path) if not o.startswith("algo=")]
    cfg = compose_config([*overrides, "algo=fb", "algo.learner.z_dim=4", "algo.learner.hidden_dims=[16]",
                          "eval.baselines=[]", "eval.videos=0"])
    with pytest.raises(ValueError, match="condition of size 4"):
        train(cfg, tmp_path / "no_z")
    z = [float(v) for v in project_z(torch.tensor([1.0, -1.0, 0.5, 0.0]))]
    cfg = compose_config([*overrides, "algo=fb", "algo.learner.z_dim=4", "algo.learner.hidden_dims=[16]",
                          "eval.baselines=[]", "eval.videos=0", f"condition={z}"])
    report = train(cfg, tmp_path / "z")
    assert report["step"] == 40 and 0.0 <= report["eval"]["success_rate"] <= 1.0


def test_the_fb_target_takes_the_pessimistic_head():
    """With target_pessimism 0.5 the FB loss's target is min(T_1, T_2); with 0 their mean."""
    g = torch.Generator().manual_seed(0)
    n = 16
    obs, nxt, future = (torch.randn(n, 5, generator=g) for _ in range(3))
    action = torch.rand(n, 2, generator=g) * 2 - 1
    values = {}
    for p in (0.5, 0.0):
        torch.manual_seed(0)
        learner = FBLearner(FBConfig(hidden_dims=[16], z_dim=8, target_pessimism=p, actor_noise=0.0), 5, 2)
        with torch.no_grad():  # two different target heads
            for param in learner.target_forward.heads[1].parameters():
                param.add_(0.3)
        z = learner.sample_z(n, g, torch.device("cpu"))
        mix = torch.zeros(n, 1, dtype=torch.bool)
        out = learner.losses(obs, action, nxt, torch.zeros(n), future, z, mix)
        with torch.no_grad():
            a2 = learner.actor(nxt, z)
            T = learner.target_forward(nxt, a2, z) @ learner.target_backward(nxt).T
            target = torch.minimum(T[0], T[1]) if p else T.mean(0)
            B = learner.backward_map(nxt)
            expected = sum(fb_loss(F_k @ B.T, target, torch.full((n, 1), 0.98))[0] for F_k in learner.forward_map(obs, action, z))
        values[p] = out["fb_loss"].item()
        assert out["fb_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert values[0.5] != pytest.approx(values[0.0])
