"""Behaviour attributes (AlignDiff): measurements in simulation units, the scripted attribute
teacher, the attribute strength model recovering a scripted order on held-out pairs, and the
MAE-area metric against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_models.attributes import (
    MAE_THRESHOLDS,
    AttributeStrengthModel,
    AttributeTeacher,
    attribute_accuracy,
    attribute_loss,
    dressing_force,
    dressing_height,
    dressing_speed,
    fit_attribute_model,
    mae_area,
    masked_mae,
    metaworld_smoothness,
    metaworld_speed,
    segment_observations,
)


def _dressing_segment(speed: float, force: float, height: float, steps: int = 10, rng=None) -> np.ndarray:
    """Observations (steps + 1, 26): the gripper moving along x at ``speed`` m/s, the forearm
    along x at z = 1 m, the opening ``height`` m above it, ``force`` N on the person."""
    rng = rng or np.random.default_rng(0)
    obs = np.zeros((steps + 1, 26), np.float32)
    t = np.arange(steps + 1)
    obs[:, 0] = speed * 0.1 * t
    obs[:, 1:3] = rng.normal(0, 0.01, 2)
    obs[:, 9:12] = [0.0, 0.0, 1.0]   # wrist
    obs[:, 6:9] = [0.3, 0.0, 1.0]    # elbow
    obs[:, 15] = 0.1 + 0.01 * t      # the opening moves along the forearm
    obs[:, 17] = 1.0 + height
    obs[:, 24] = force
    return obs


def test_measurements_read_the_segment_in_si_units():
    segment = _dressing_segment(speed=0.15, force=3.0, height=0.04)
    assert dressing_speed(segment) == pytest.approx(0.15, rel=1e-5)
    assert dressing_force(segment) == pytest.approx(3.0)
    assert dressing_height(segment) == pytest.approx(0.04, abs=1e-6)
    beyond = segment.copy()
    beyond[:, 15] = -0.2  # before the wrist: measured from the wrist (the segment's end)
    beyond[:, 11] = 0.9
    assert dressing_height(beyond) == pytest.approx(1.04 - 0.9, abs=1e-6)
    hand = np.zeros((5, 39))
    hand[:, 0] = 0.01 * np.arange(5)  # 0.01 m per 12.5 ms step: 0.8 m/s, no acceleration
    assert metaworld_speed(hand) == pytest.approx(0.8)
    assert metaworld_smoothness(hand) == pytest.approx(0.0, abs=1e-9)
    hand[:, 0] = 0.01 * np.arange(5) ** 2  # accelerating: less smooth
    assert metaworld_smoothness(hand) < -100.0
    with pytest.raises(ValueError, match="segment"):
        dressing_speed(np.zeros((1, 26)))


def test_the_teacher_prefers_the_stronger_segment_per_attribute_with_ties_and_mistakes():
    slow_gentle = _dressing_segment(0.05, 1.0, 0.02)
    fast_hard = _dressing_segment(0.2, 6.0, 0.02)
    teacher = AttributeTeacher([dressing_speed, dressing_force, dressing_height], ["speed", "force", "height"])
    labels = teacher.label(np.stack([np.stack([slow_gentle, fast_hard]), np.stack([fast_hard, slow_gentle])]),
                           np.random.default_rng(0))
    assert labels[:, :2].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    equal = AttributeTeacher([dressing_speed, dressing_force, dressing_height], ["speed", "force", "height"], eps_equal=0.1)
    assert (equal.label(np.stack([np.stack([slow_gentle, fast_hard])] * 3), np.random.default_rng(0))[:, 2] == 0.5).all()
    rng = np.random.default_rng(1)
    pairs = np.stack([np.stack([_dressing_segment(0.05, 1, 0), _dressing_segment(0.2, 1, 0)])] * 2000)
    mistaken = AttributeTeacher([dressing_speed], ["speed"], eps_mistake=0.2).label(pairs, rng)
    assert abs((mistaken[:, 0] == 0.0).mean() - 0.2) < 0.03
    with pytest.raises(ValueError, match="names"):
        AttributeTeacher([dressing_speed], ["speed", "force"])


def test_the_strength_model_recovers_a_scripted_attribute_order_on_held_out_pairs():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    segments = np.stack([_dressing_segment(rng.uniform(0.02, 0.2), rng.uniform(0, 8), rng.uniform(-0.05, 0.08), rng=rng)
                         for _ in range(400)])
    pairs = rng.integers(0, len(segments), (1200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    windows = segments[pairs]  # (N, 2, T, D)
    teacher = AttributeTeacher([dressing_speed, dressing_force, dressing_height], ["speed", "force", "height"])
    labels = teacher.label(windows, rng)
    model = AttributeStrengthModel(26, 3, hidden=32, members=2)
    report = fit_attribute_model(model, windows, labels, steps=300, heldout=0.2, generator=torch.Generator().manual_seed(0))
    assert min(report["heldout_accuracy"]) > 0.9, report
    model.fit_range(torch.as_tensor(segments))
    strengths = model(torch.as_tensor(segments)).detach().numpy()
    assert strengths.min() >= -1e-5 and strengths.max() <= 1 + 1e-5  # scaled by the dataset's range
    speeds = np.array([dressing_speed(s) for s in segments])
    assert np.corrcoef(strengths[:, 0], speeds)[0, 1] > 0.9
    assert attribute_accuracy(np.stack([strengths[:5], strengths[5:10]], 1), np.full((5, 3), 0.5))[0] != 0.0  # all ties: NaN
    with pytest.raises(ValueError, match="labels"):
        fit_attribute_model(model, windows, labels[:, :2])


def test_checkpoints_from_before_the_shared_normalizer_load_with_the_same_strengths():
    """Before 2026-11-30 the model kept ``mean``/``std`` buffers and divided by std alone; such a
    state dict, inside a parent module as in a planner's checkpoint, loads strictly and gives the
    strengths of the old formula (std taken down by the normalizer's eps)."""
    from policies.attributes import AttributeStrengthModel

    torch.manual_seed(0)
    model = AttributeStrengthModel(observation_dim=4, attributes=2, hidden=8, members=2)
    mean, std = torch.randn(4), torch.tensor([0.004, 0.02, 1.0, 3.0])  # small stds: eps 1e-3 matters
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("normalizer.")}
    old.update(mean=mean, std=std)
    windows = torch.randn(5, 6, 4) * std + mean
    x = (windows - mean) / std
    pairs = torch.cat([x[:, :-1], x[:, 1:] - x[:, :-1]], dim=-1).transpose(1, 2)
    expected = torch.stack([net["head"](net["conv"](pairs).mean(-1)) for net in model.nets])

    parent = torch.nn.Module()
    parent.attribute_model = AttributeStrengthModel(observation_dim=4, attributes=2, hidden=8, members=2)
    parent.load_state_dict({f"attribute_model.{k}": v for k, v in old.items()}, strict=True)
    torch.testing.assert_close(parent.attribute_model.member_strengths(windows), expected, rtol=1e-5, atol=1e-5)
    # a current state dict is left alone
    model.fit_normalizer(windows.reshape(-1, 4))
    parent.load_state_dict({f"attribute_model.{k}": v for k, v in model.state_dict().items()}, strict=True)
    torch.testing.assert_close(parent.attribute_model.normalizer.std, model.normalizer.std)


def test_abstained_attribute_labels_add_nothing_to_the_loss_or_the_accuracy():
    """A VLM abstain (NaN) is left out per attribute, never read as 'the first is stronger'."""
    strengths = torch.tensor([[[0.0, 1.0], [2.0, 0.0]], [[1.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [1.0, 1.0]]])
    labels = torch.tensor([[1.0, float("nan")], [1.0, 1.0], [float("nan"), 0.5]])
    logits = strengths[:, 1] - strengths[:, 0]  # (3, 2): [[2, -1], [-1, 3], [1, 1]]
    answered = [(logits[0, 0], 1.0), (logits[1, 0], 1.0), (logits[1, 1], 1.0), (logits[2, 1], 0.5)]
    by_hand = np.mean([-(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))
                       for x, y in ((float(x), y) for x, y in answered)])
    assert float(attribute_loss(strengths, labels)) == pytest.approx(by_hand, rel=1e-5)
    assert float(attribute_loss(strengths, torch.full((3, 2), float("nan")))) == 0.0
    # accuracy over decided labels only: attribute 0 has pairs 0 (right) and 1 (wrong: its strengths say the first)
    assert attribute_accuracy(strengths.numpy(), labels.numpy()).tolist() == [0.5, 1.0]
    segments = np.stack([_dressing_segment(0.1, 1.0, 0.0, steps=4)] * 6).reshape(3, 2, 5, 26)
    model = AttributeStrengthModel(26, 2, hidden=8, members=1)
    fit_attribute_model(model, segments, labels.numpy(), steps=5, heldout=0.0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="labels must be in"):
        fit_attribute_model(model, segments, np.full((3, 2), 2.0, np.float32), steps=1)


def test_segments_are_read_from_their_episodes_and_must_fit():
    class Episode:
        def __init__(self, n):
            self.observations = np.arange((n + 1) * 2, dtype=np.float32).reshape(n + 1, 2)

    episodes = [Episode(5), Episode(8)]
    out = segment_observations(episodes, np.array([[[0, 1], [1, 4]]]), 3)
    assert out.shape == (1, 2, 4, 2) and out[0, 1, 0].tolist() == [8.0, 9.0]
    with pytest.raises(ValueError, match="runs past"):
        segment_observations(episodes, np.array([[[0, 3], [1, 0]]]), 3)


def test_mae_area_matches_a_hand_computation():
    assert len(MAE_THRESHOLDS) == 100 and MAE_THRESHOLDS[0] == 1.0 and MAE_THRESHOLDS[-1] == 0.0
    assert mae_area(np.zeros(4)) == pytest.approx(0.99)  # below every threshold but the last (0)
    assert mae_area(np.full(3, 2.0)) == 0.0
    errors = np.array([0.05, 0.5])
    by_hand = np.mean([np.mean([e < x for e in errors]) for x in MAE_THRESHOLDS])
    assert mae_area(errors) == pytest.approx(by_hand)
    assert mae_area(np.array([0.05])) > mae_area(np.array([0.5]))  # smaller errors, larger area
    realized, target = np.array([[0.2, 0.9], [0.5, 0.5]]), np.array([[0.4, 0.1], [0.5, 0.0]])
    assert masked_mae(realized, target, np.array([[1, 0], [1, 1]])).tolist() == pytest.approx([0.2, 0.25])
    with pytest.raises(ValueError, match="at least one attribute"):
        masked_mae(realized, target, np.array([[0, 0], [1, 1]]))


def _aligndiff_overrides(root, *extra, planner: bool = True):
    small = ["algo.learner.unet_dims=[8,16]", "algo.learner.horizon=8", "algo.learner.samples=2",
             "algo.learner.sampling_steps=2"] if planner else []
    return ["+task=dressing", "+experiment=aligndiff", "dataset.episodes=6", "trainer.steps=20", "trainer.batch_size=16",
            "trainer.checkpoint_every=20", "trainer.eval_every=0", "trainer.progress=false", "eval.episodes=1", "eval.videos=0",
            *small, "algo.learner.attribute_hidden=8", "algo.learner.attribute_members=1", "attributes.pairs=60",
            "attributes.steps=10", "attributes.targets=2", "attributes.segment_length=8", "attributes.switch_steps=[3,6]",
            "device=cpu", f"output_root={root}", *extra]


def test_the_main_job_labels_attributes_and_reports_alignment(compose_config, tmp_path, datasets_root):
    from embodied.attributes import task_attributes
    from embodied.pipeline import train

    report = train(compose_config(_aligndiff_overrides(tmp_path)), tmp_path / "run")
    attributes = report["attributes"]
    assert attributes["names"] == ["speed", "force", "height"] and attributes["pairs"] == 60
    assert 0.0 <= attributes["alignment"]["mae_area"] <= 1.0 and 0.0 <= attributes["alignment"]["mae_area_measured"] <= 1.0
    assert (tmp_path / "run" / "plots" / "attribute_following.png").is_file()
    assert (tmp_path / "run" / "attributes" / "labels.npz").is_file()
    assert "MAE-area" in (tmp_path / "run" / "report.md").read_text()
    # the dataset has the variety AlignDiff needs: the varied expert at different speeds
    speeds = [dressing_speed(ep.observations) for ep in _dataset(compose_config(_aligndiff_overrides(tmp_path)))]
    assert max(speeds) > 1.5 * min(speeds)
    bc = train(compose_config(_aligndiff_overrides(tmp_path, "algo=attribute_bc", "algo.learner.attribute_horizon=8",
                                                   "algo.learner.hidden_dims=[16]", planner=False)), tmp_path / "bc")
    assert bc["attributes"]["heldout_accuracy"].keys() == attributes["heldout_accuracy"].keys()
    with pytest.raises(ValueError, match="algo.learner.attributes=3"):
        train(compose_config(_aligndiff_overrides(tmp_path, "algo.learner.attributes=2")), tmp_path / "wrong")
    with pytest.raises(ValueError, match="declares no attributes"):
        task_attributes(compose_config(["+task=pointmass"]).task)


def test_the_main_job_asks_a_vlm_each_attributes_question_and_resumes_from_its_answers(compose_config, tmp_path):
    """+attribute_labeler=vlm: frames collected, every task attribute's question asked over HTTP
    (a real server on 127.0.0.1), labels stored as they arrive; a rerun asks nothing."""
    from embodied.pipeline import train
    from tests.vlm_server import FakeVLM

    with FakeVLM() as server:
        overrides = _aligndiff_overrides(tmp_path, "algo=attribute_bc", "algo.learner.attribute_horizon=8",
                                         "algo.learner.hidden_dims=[16]", "+attribute_labeler=vlm",
                                         f"attributes.labeler.base_url={server.url}", "attributes.labeler.model=test-vlm",
                                         "attributes.labeler.requests_per_minute=0", "attributes.labeler.frames_per_segment=2",
                                         "attributes.pairs=12", "dataset.width=16", "dataset.height=16", planner=False)
        cfg = compose_config(overrides)
        assert cfg.dataset.frames and cfg.dataset.recipe == "attributes-frames"
        report = train(cfg, tmp_path / "run")["attributes"]
        asked = len(server.bodies)
        assert 12 * 3 <= asked <= 12 * 3 * 2  # two stages per pair and attribute, less identical questions
        (tmp_path / "run" / "attributes" / "labels.npz").unlink()  # forget the labels: the label store answers
        for path in (tmp_path / "run" / "checkpoints").iterdir():
            path.rename(path.with_name(path.name + ".old")) if path.is_dir() else path.unlink()
        (tmp_path / "run" / "metrics.json").unlink(missing_ok=True)
        rerun = train(compose_config(overrides), tmp_path / "run")["attributes"]
        assert len(server.bodies) == asked, "the rerun asked the VLM again"
    assert report["labeler"] == "reward_models.vlm.VLMAttributeLabeler"
    assert set(report["agreement_with_teacher"]) == {"speed", "force", "height"}
    assert all(v == 0.0 for v in report["abstain"].values())
    assert rerun["agreement_with_teacher"] == report["agreement_with_teacher"]
    with pytest.raises(ValueError, match="has no question"):
        from embodied.attributes import task_attribute_questions
        task_attribute_questions(compose_config(["+task=dressing", "~task.attributes.force.question"]).task)


def _dataset(cfg):
    from embodied.pipeline import dataset_stage

    return dataset_stage(cfg).episodes


def test_a_varied_policy_draws_a_speed_and_smoothness_per_episode():
    import gymnasium as gym

    from envs.policies import VariedPolicy

    class Zigzag:
        def reset(self, seed=None):
            self.t = 0

        def act(self, observation):
            self.t += 1
            return np.array([1.0 if self.t % 2 else -1.0, 0.5], np.float32)

    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = VariedPolicy(Zigzag(), space, scale=(0.3, 1.0), smoothing=(0.0, 0.8))
    styles, jerks, norms = [], [], []
    for seed in range(12):
        policy.reset(seed)
        actions = np.array([policy.act(None) for _ in range(20)])
        styles.append(policy.style)
        jerks.append(np.abs(np.diff(actions[:, 0])).mean())
        norms.append(np.abs(actions[:, 1]).mean())
    scales, alphas = np.array(styles).T
    assert scales.min() >= 0.3 and scales.max() <= 1.0 and scales.std() > 0.1 and alphas.std() > 0.1
    assert np.corrcoef(norms, scales)[0, 1] > 0.95  # faster: larger steps
    assert np.corrcoef(np.array(jerks) / scales, alphas)[0, 1] < -0.9  # smoother: smaller changes between steps
    policy.reset(3)
    again = policy.style
    policy.reset(3)
    assert policy.style == again  # the style is the seed's
    with pytest.raises(ValueError, match="smoothing"):
        VariedPolicy(Zigzag(), space, smoothing=(0.5, 1.0))
