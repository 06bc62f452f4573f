"""Judges beside labelers: verdicts, their store, and the mixture of judges deciding pairs."""

from __future__ import annotations

import json
import sqlite3

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
