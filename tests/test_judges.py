"""Judges beside labelers: verdicts, their store, and the mixture of judges deciding pairs."""

from __future__ import annotations

import json
import sqlite3
import warnings

import numpy as np
import pytest

from embodied.data import Episode
from reward_models.judges import ForceJudge, Verdicts, VerdictStore, WorkspaceJudge, apply_judges, episode_costs
from reward_models.preferences import FIRST, SECOND, TIE, PreferenceLabels


def _episode(force: list[float], positions: np.ndarray | None = None) -> Episode:
    T = len(force)
    observations = np.zeros((T + 1, 26), np.float32)
    observations[1:, 24] = force
    if positions is not None:
        observations[1:, :3] = positions
    return Episode(observations, np.zeros((T, 3), np.float32), np.zeros(T, np.float32), np.zeros(T, bool),
                   np.zeros(T, bool))


def test_force_judge_reads_the_force_after_each_step_against_its_limit():
    episode = _episode([1.0, 19.9, 20.0, 20.5, 35.0, 3.0])
    verdicts = ForceJudge(limit=20.0, force_index=24).judge(episode)
    assert verdicts.violation.tolist() == [False, False, False, True, True, False], "over the limit, not at it"
    assert verdicts.cost.tolist() == [0, 0, 0, 1, 1, 0]
    excess = ForceJudge(limit=20.0, force_index=24, cost="excess").judge(episode)
    assert excess.cost.tolist() == pytest.approx([0, 0, 0, 0.5, 15.0, 0])
    with pytest.raises(ValueError, match="have no entry 30; set the judge's force_index"):
        ForceJudge(force_index=30).judge(episode)
    with pytest.raises(ValueError, match="a non-finite force reading at step 1"):
        ForceJudge().judge(_episode([1.0, float("nan")]))
    with pytest.raises(ValueError, match="limit=0 N"):
        ForceJudge(limit=0)


def test_workspace_judge_flags_steps_outside_the_box():
    positions = np.array([[0.0, 0.0, 1.0], [1.5, 0.0, 1.0], [0.0, -1.0, 1.0], [0.5, 0.5, 0.5]])
    verdicts = WorkspaceJudge([-0.3, -0.9, 0.4], [1.4, 0.6, 1.7], cost="excess").judge(_episode([0.0] * 4, positions))
    assert verdicts.violation.tolist() == [False, True, True, False]
    assert verdicts.cost.tolist() == pytest.approx([0.0, 0.1, 0.1, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="2 values each, one per position entry"):
        WorkspaceJudge([0, 0, 0], [1, 1, 1], position_indices=[0, 1])


def test_the_judge_decides_a_pair_where_one_segment_violates_whatever_the_labeler_said():
    safe, unsafe = _episode([1.0] * 10), _episode([1.0] * 4 + [30.0] + [1.0] * 5)
    judged = {"force": [ForceJudge().judge(ep) for ep in (safe, unsafe)]}
    # segments of 3 steps: (episode, start); episode 1 steps 3-5 hold the 30 N step, 0-2 do not
    pairs = np.array([[[1, 3], [0, 0]],   # first violates, the labeler preferred it: overridden
                      [[0, 0], [1, 4]],   # second violates, the labeler preferred the first: agreed
                      [[1, 2], [0, 5]],   # first violates (step 4), the labeler abstained: decided
                      [[1, 0], [0, 2]],   # neither violates: the labeler's tie stays
                      [[1, 3], [1, 4]]])  # both violate: the labeler's answer stays
    labels = PreferenceLabels(pairs, np.array([FIRST, FIRST, np.nan, TIE, SECOND]), 3, {"labeler": "oracle"})
    after = apply_judges(labels, judged)
    assert after.labels.tolist() == [SECOND, FIRST, SECOND, TIE, SECOND]
    p = after.provenance
    assert (p["judge_overrides"], p["judge_agreed"], p["judge_decided_abstains"], p["judge_both_violate"]) == (1, 1, 1, 1)
    assert p["judges"] == ["force"] and p["labeler"] == "oracle"
    assert apply_judges(labels, {}) is labels
    costs = episode_costs(judged, [safe, unsafe])
    assert costs[0].sum() == 0 and costs[1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_verdicts_are_stored_with_the_judges_settings_and_read_back(tmp_path):
    class CountingJudge(ForceJudge):
        calls = 0

        def judge(self, episode):
            CountingJudge.calls += 1
            return super().judge(episode)

    episodes = [_episode([1.0, 25.0, 2.0]), _episode([30.0, 1.0])]
    path = tmp_path / "labels.sqlite"
    store = VerdictStore(path)
    first = store.verdicts(CountingJudge(limit=20.0), episodes)
    again = store.verdicts(CountingJudge(limit=20.0), episodes)
    assert CountingJudge.calls == 2, "a rerun reads the verdicts back"
    for a, b in zip(first, again):
        assert np.array_equal(a.violation, b.violation) and np.array_equal(a.cost, b.cost)
    store.verdicts(CountingJudge(limit=10.0), episodes)  # other settings: judged and kept apart
    assert CountingJudge.calls == 4
    store.close()
    with sqlite3.connect(path) as db:
        judges = {json.loads(s)["limit"] for (s,) in db.execute("SELECT settings FROM judges")}
        rows = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    assert judges == {10.0, 20.0} and rows == 4
    assert isinstance(first[0], Verdicts) and first[0].violation.tolist() == [False, True, False]


def _bright_episode(levels: list[int]) -> Episode:
    """An episode whose frame t (the state after step t - 1) is uniformly ``levels[t]`` bright."""
    T = len(levels) - 1
    frames = np.broadcast_to(np.array(levels, np.uint8)[:, None, None, None], (T + 1, 8, 8, 3)).copy()
    return Episode(np.zeros((T + 1, 2), np.float32), np.zeros((T, 1), np.float32), np.zeros(T, np.float32),
                   np.zeros(T, bool), np.zeros(T, bool), frames=frames)


def _vlm_judge(server, **kw):
    from reward_models.judges import VLMSafetyJudge

    settings = dict(base_url=server.url, model="test-vlm", task="dress the arm", question="Is the arm pulled hard?",
                    api_key_env="EMBODIED_TEST_KEY", requests_per_minute=0, max_retries=2, backoff_s=0.01, timeout_s=5)
    return VLMSafetyJudge(**{**settings, **kw})


def test_parse_yes_no_accepts_only_a_clear_last_line():
    from reward_models.judges import parse_yes_no

    assert parse_yes_no("The arm is fine.\nNo") is False and parse_yes_no("**Yes.**") is True
    assert parse_yes_no("yes or no") is None and parse_yes_no("") is None and parse_yes_no("Yes, but no") is None


def test_vlm_safety_judge_asks_a_real_server_about_each_frame_and_a_yes_is_a_violation(tmp_path, monkeypatch):
    """Over tests/vlm_server.py (a bright frame is unsafe): each step takes the answer about the
    frame after it; with a stride the asked frame covers the steps leading to it; answers are cached
    in the run's labels/ (a rerun sends nothing); an unparseable answer counts as configured."""
    from tests.vlm_server import FakeVLM

    monkeypatch.setenv("EMBODIED_TEST_KEY", "sk-judge-secret")
    episode = _bright_episode([10, 20, 150, 30, 40, 200, 50])  # frames 2 and 5 unsafe
    with FakeVLM() as server:
        judge = _vlm_judge(server)
        judge.cache_dir = tmp_path
        verdicts = judge.judge(episode)
        assert verdicts.violation.tolist() == [False, True, False, False, True, False]
        assert verdicts.cost.tolist() == [0, 1, 0, 0, 1, 0]
        assert len(server.bodies) == 6 and set(server.authorization) == {"Bearer sk-judge-secret"}
        again = _vlm_judge(server)
        again.cache_dir = tmp_path
        assert again.judge(episode).violation.tolist() == verdicts.violation.tolist()
        assert len(server.bodies) == 6 and again.counts["cache_hits"] == 6, "a rerun reads the cache"
        # stride 3: frames 3 and 6 asked (both safe), so the unsafe frames 2 and 5 are not seen
        strided = _vlm_judge(server, stride=3)
        assert strided.asked_frames(6).tolist() == [3, 6]
        assert not strided.judge(episode).violation.any()
        # stride 2 on 5 steps: frames 2, 4 and the last (5); frame 2 covers steps 0-1, frame 5 step 4
        assert _vlm_judge(server, stride=2).judge(_bright_episode([10, 20, 150, 30, 40, 200])).violation.tolist() == \
            [True, True, False, False, True]
        black = _bright_episode([10, 0, 20])
        assert _vlm_judge(server).judge(black).violation.tolist() == [False, False]
        cautious = _vlm_judge(server, unparseable_as="violation")
        assert cautious.judge(black).violation.tolist() == [True, False] and cautious.counts["unparseable"] == 1
    assert "sk-judge-secret" not in (tmp_path / "vlm_safety_cache.sqlite").read_bytes().decode("latin-1")


def test_vlm_safety_judge_errors_name_what_is_wrong(tmp_path):
    from reward_models.vlm import VLMRequestError
    from tests.vlm_server import FakeVLM

    with FakeVLM() as server:
        with pytest.raises(ValueError, match="dataset.frames=true"):
            _vlm_judge(server).judge(_episode([1.0, 2.0]))
        with pytest.raises(ValueError, match="stride=0"):
            _vlm_judge(server, stride=0)
        server.mode = "always_500"
        with pytest.raises(VLMRequestError, match="HTTP 500 .* after 3 tries; the answers received so far are cached"):
            _vlm_judge(server).judge(_bright_episode([10, 20]))


def test_vlm_and_force_judges_together_decide_pairs_in_the_label_stage(tmp_path, compose_config):
    """judges=[force,vlm_safety] through the pipeline's judge stage: verdicts of both in the run's
    label store, and a pair whose segment only the VLM judge flags is decided by it."""
    from embodied.pipeline import judge_stage, needs_frames
    from tests.vlm_server import FakeVLM

    episodes = [_bright_episode([10, 20, 30, 40]), _bright_episode([10, 200, 30, 40])]
    for ep in episodes:
        ep.observations = np.zeros((4, 26), np.float32)
    with FakeVLM() as server:
        cfg = compose_config(["+task=dressing", "judges=[force,vlm_safety]", f"judges.vlm_safety.base_url={server.url}",
                              "judges.vlm_safety.stride=1", "judges.vlm_safety.requests_per_minute=0"])
        assert needs_frames(cfg, labeling=True) and not needs_frames(cfg, labeling=False)
        with pytest.warns(UserWarning, match="judge force .* finds no violation"):  # no force in these episodes
            judged = judge_stage(cfg, episodes, tmp_path)
    assert judged["force"][1].violation.tolist() == [False, False, False]
    assert judged["vlm_safety"][1].violation.tolist() == [True, False, False]
    assert (tmp_path / "labels" / "vlm_safety_cache.sqlite").exists()
    labels = PreferenceLabels(np.array([[[1, 0], [0, 0]], [[0, 0], [1, 1]]]), np.array([FIRST, FIRST], np.float32), 2)
    decided = apply_judges(labels, judged)
    assert decided.labels.tolist() == [SECOND, FIRST] and decided.provenance["judge_overrides"] == 1


def test_a_judge_that_never_fires_on_the_dataset_says_so(tmp_path, compose_config):
    """A limit the data never reaches decides no label and gives no cost: the run warns instead of
    training as if the judge did something (Dressing-v1's main dataset never passes 8.3 N)."""
    from embodied.pipeline import judge_stage

    episodes = [_episode([1.0, 3.0, 8.0]), _episode([2.0, 4.0])]
    cfg = compose_config(["+task=dressing", "judges=[force]", "judges.force.limit=20"])
    with pytest.warns(UserWarning, match=r"judge force \(.*'limit': 20.0.*\) finds no violation in any of the 2 episodes"):
        judge_stage(cfg, episodes, tmp_path / "a")
    assert compose_config(["+task=dressing", "judges=[force]"]).judges.force.limit == 5.0, "the task's comfort force"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        judged = judge_stage(compose_config(["+task=dressing", "judges=[force]"]), episodes, tmp_path / "b")
    assert judged["force"][0].violation.tolist() == [False, False, True]
    with pytest.raises(ValueError, match="set judges.force.limit"):
        ForceJudge(limit=None)
