"""The labeler seam: one contract over every labeler (the six B-Pref teachers, CLIP, the VLM over
HTTP), the label store, and SIGKILL in the middle of labeling: the rerun asks only for the missing
pairs and ends with the labels of an uninterrupted run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embodied.checkpoint import load_checkpoint
from reward_models.clip import CLIPPreferenceLabeler
from reward_models.labeling import Answer, Labeler, LabelStore, label_pairs, labeler_key
from reward_models.preferences import sample_pairs
from reward_models.teachers import TEACHERS
from reward_models.vlm import VLMPreferenceLabeler
from tests.conftest import REPO, TINY, small_train_overrides
from tests.vlm_server import FakeVLM, make_episodes

LABELERS = [*sorted(TEACHERS), "clip", "vlm"]


def _episodes():
    """Episodes with frames and a true reward that both rise with brightness (20 e + 3 t + 10)."""
    episodes = make_episodes(n=6, steps=8)
    for e, ep in enumerate(episodes):
        ep.rewards = (ep.frames[1:].mean(axis=(1, 2, 3)) / 100).astype(np.float32)
    return episodes


def _make(name: str, server, checkpoint) -> Labeler:
    if name in TEACHERS:
        return TEACHERS[name]
    if name == "clip":
        return CLIPPreferenceLabeler({"model_name": TINY, "pretrained": None, "checkpoint": str(checkpoint), "device": "cpu"})
    return VLMPreferenceLabeler(base_url=server.url, model="test-vlm", task="make the image bright", concurrency=3,
                                requests_per_minute=0, timeout_s=5, max_retries=2, backoff_s=0.01, progress=False)


@pytest.mark.parametrize("name", LABELERS)
def test_labeler_contract(name, tiny_checkpoint, tmp_path):
    """Every labeler: one valid answer per pair, answers independent of which other pairs are
    asked with them, JSON-able settings that key the store, frames required when it looks."""
    episodes = _episodes()
    pairs = sample_pairs([len(ep) for ep in episodes], 2, 24, np.random.default_rng(0))
    with FakeVLM() as server:
        labeler = _make(name, server, tiny_checkpoint[0])
        assert isinstance(labeler, Labeler) and isinstance(labeler.name, str)
        json.dumps(labeler.settings())
        assert labeler_key(labeler) == labeler_key(labeler) and len(labeler_key(labeler)) == 16
        answers = list(labeler.answers(episodes, pairs, 2, seed=7, workdir=tmp_path))
        assert sorted(a.index for a in answers) == list(range(len(pairs)))
        assert all(isinstance(a, Answer) and a.outcome != "failed" for a in answers)
        whole = {a.index: a.label for a in answers}
        # asked about every other pair only, and in reverse order: the same answers
        subset = np.arange(len(pairs))[::2][::-1]
        part = {subset[a.index]: a.label for a in labeler.answers(episodes, pairs[subset], 2, seed=7, workdir=tmp_path)}
        assert all(np.array_equal(part[i], whole[i], equal_nan=True) for i in subset)
        labels = label_pairs(labeler, episodes, pairs, 2, seed=7, store=LabelStore(tmp_path / "store.sqlite"))
        assert np.array_equal(labels.labels, np.array([whole[i] for i in range(len(pairs))], np.float32), equal_nan=True)
        assert labels.provenance["name"] == labeler.name and labels.provenance["asked"] == len(pairs)
        assert sum(v for k, v in labels.provenance["counts"].items() if k in ("answered", "tie", "unsure", "abstain",
                                                                            "unparseable", "swap_inconsistent")) == len(pairs)
    if name == "oracle":  # brighter is better, for the true reward and for the test VLM alike
        brighter = np.array([float(episodes[b[0]].frames[b[1] + 2].mean() > episodes[a[0]].frames[a[1] + 2].mean())
                             for a, b in pairs])
        assert np.array_equal(labels.labels, brighter)
    if labeler.needs_frames:
        no_frames = make_episodes(n=6, steps=8)
        for ep in no_frames:
            ep.frames = None
        with pytest.raises(ValueError, match="no frames"):
            label_pairs(labeler, no_frames, pairs, 2)


def test_label_store_saves_each_answer_and_asks_only_for_missing_pairs(tmp_path):
    episodes = _episodes()
    pairs = sample_pairs([len(ep) for ep in episodes], 2, 30, np.random.default_rng(1))
    pairs = np.concatenate([pairs, pairs[:3]])  # a sample may hold a pair twice: asked once
    unique = len(np.unique(pairs.reshape(-1, 4), axis=0))
    unique_head = len(np.unique(pairs[:10].reshape(-1, 4), axis=0))
    store = LabelStore(tmp_path / "labels.sqlite")
    first = label_pairs(TEACHERS["noisy"], episodes, pairs[:10], 2, seed=3, store=store)
    assert len(store) == unique_head and first.provenance["asked"] == unique_head
    both = label_pairs(TEACHERS["noisy"], episodes, pairs, 2, seed=3, store=store)
    assert both.provenance["asked"] == unique - unique_head and len(store) == unique
    assert np.array_equal(both.labels[-3:], both.labels[:3])
    assert np.array_equal(both.labels[:10], first.labels)
    fresh = label_pairs(TEACHERS["noisy"], episodes, pairs, 2, seed=3)
    assert np.array_equal(both.labels, fresh.labels)  # per-pair randomness: order and batching do not matter
    again = label_pairs(TEACHERS["noisy"], episodes, pairs, 2, seed=3, store=store)
    assert again.provenance["asked"] == 0
    # another labeler (other settings) gets its own answers; another segment length too
    assert label_pairs(TEACHERS["mistake"], episodes, pairs[:5], 2, seed=3, store=store).provenance["asked"] == 5
    assert label_pairs(TEACHERS["noisy"], episodes, pairs[:5], 3, seed=3, store=store).provenance["asked"] == 5
    store.close()
    with sqlite3.connect(tmp_path / "labels.sqlite") as db:
        names = sorted(n for (n,) in db.execute("SELECT name FROM labelers"))
        assert names == ["mistake", "noisy"]
    with pytest.raises(ValueError, match="outcome"):
        Answer(0, 1.0, "maybe")
    with pytest.raises(ValueError, match="label 0.3"):
        Answer(0, 0.3)


def test_failed_vlm_pairs_are_not_stored_and_are_asked_again(tmp_path):
    episodes = _episodes()
    pairs = np.array([[[1, 0], [2, 0]], [[3, 2], [1, 4]]])
    store = LabelStore(tmp_path / "labels.sqlite")
    with FakeVLM() as server:
        server.mode = "always_500"
        labeler = VLMPreferenceLabeler(base_url=server.url, model="m", task="t", requests_per_minute=0, max_retries=1,
                                       backoff_s=0.01, progress=False)
        failed = label_pairs(labeler, episodes, pairs, 1, store=store, workdir=tmp_path)
        assert failed.provenance["counts"]["failed"] == 2 and np.isnan(failed.labels).all() and len(store) == 0
        server.mode = "ok"
        again = label_pairs(labeler, episodes, pairs, 1, store=store, workdir=tmp_path)
    assert again.provenance["asked"] == 2 and again.labels.tolist() == [1.0, 0.0]


def _label_command(run: Path, extra: list[str]) -> list[str]:
    return ["embodied.label", *small_train_overrides(run.parent / "outputs"), "labeler.pairs=80", "labeler.segment_length=5",
            "reward_model.hidden_dims=[16]", "reward_model.max_epochs=2", f"hydra.run.dir={run}", *extra]


def _stored(run: Path) -> dict[tuple, tuple]:
    with sqlite3.connect(run / "labels" / "labels.sqlite") as db:
        rows = db.execute("SELECT e0, s0, e1, s1, segment_length, label, outcome FROM answers").fetchall()
    return {tuple(r[:5]): (r[5], r[6]) for r in rows}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "HYDRA_FULL_ERROR": "1"})


def _settled_count(server, quiet_s: float = 0.5, limit_s: float = 10.0) -> int:
    """The server's request count once no request has arrived for ``quiet_s`` seconds."""
    import time

    count, since, start = len(server.bodies), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - start < limit_s:
        time.sleep(0.05)
        if len(server.bodies) != count:
            count, since = len(server.bodies), time.monotonic()
    return count


@pytest.mark.slow
@pytest.mark.parametrize("labeler", ["oracle", "noisy", "vlm"])
def test_sigkill_during_labeling_loses_no_answer_and_the_rerun_asks_only_for_the_rest(tmp_path, labeler):
    """SIGKILL after the 30th saved answer of 80 pairs; the rerun asks for the missing pairs only
    and ends with the labels (and reward model) of an uninterrupted run."""
    with FakeVLM() as server:
        extra = [f"labeler={labeler}"]
        if labeler == "vlm":
            extra += [f"labeler.teacher.base_url={server.url}", "labeler.teacher.model=test-vlm",
                      "labeler.teacher.requests_per_minute=0", "labeler.teacher.concurrency=2", "labeler.segment_length=1",
                      "dataset.width=32", "dataset.height=32"]
        killed, clean = tmp_path / "killed", tmp_path / "clean"
        result = _run([str(REPO / "tests" / "kill_after_answers.py"), "30", *_label_command(killed, extra)], tmp_path)
        assert result.returncode == -9, result.stderr[-2000:]  # SIGKILL
        assert len(_stored(killed)) == 30 and not (killed / "reward_model").exists()
        # a request the killed process had in flight may still reach the server: count it before the rerun
        requests_before = _settled_count(server)
        rerun = _run(["-m", *_label_command(killed, extra)], tmp_path)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        provenance = load_checkpoint(killed / "reward_model").state["labels"]
        total = len(_stored(killed))  # distinct pairs among the 80 drawn
        assert total >= 70 and provenance["asked"] == total - 30
        if labeler == "vlm":  # two stages per pair; pairs whose answers were cached before the kill cost nothing
            assert len(server.bodies) - requests_before <= 2 * (total - 30)
        reference = _run(["-m", *_label_command(clean, extra)], tmp_path)
        assert reference.returncode == 0, reference.stderr[-2000:]
    assert _stored(killed) == _stored(clean)
    first = json.loads((killed / "metrics.json").read_text())["reward"]
    second = json.loads((clean / "metrics.json").read_text())["reward"]
    assert first["heldout_accuracy"] == second["heldout_accuracy"]


def test_a_vlm_server_that_is_down_is_named_and_nothing_is_cached(tmp_path):
    """The label stage says the connection was refused at the URL, stores no abstains, and a rerun
    with the server up asks for every pair."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "run"
    common = ["labeler=vlm", "labeler.teacher.model=test-vlm", "labeler.teacher.requests_per_minute=0",
              "labeler.teacher.max_retries=1", "labeler.teacher.backoff_s=0.01", "labeler.pairs=20",
              "dataset.width=32", "dataset.height=32"]
    down = _run(["-m", *_label_command(run, [*common, f"labeler.teacher.base_url=http://127.0.0.1:{port}/v1"])], tmp_path)
    assert down.returncode != 0
    assert "answered 0 of 20 pairs" in down.stderr and "ConnectError" in down.stderr
    assert f"127.0.0.1:{port}" in down.stderr and f"rerun with hydra.run.dir={run}" in down.stderr
    assert _stored(run) == {}
    with FakeVLM() as server:
        up = _run(["-m", *_label_command(run, [*common, f"labeler.teacher.base_url={server.url}"])], tmp_path)
        assert up.returncode == 0, up.stderr[-2000:]
    assert len(_stored(run)) >= 19


@pytest.mark.parametrize("damage", ["garbage", "folder"])
def test_a_damaged_label_store_is_named_and_left_as_it_is(tmp_path, damage):
    path = tmp_path / "labels" / "labels.sqlite"
    path.parent.mkdir()
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    else:
        path.mkdir()
    before = path.read_bytes() if damage == "garbage" else None
    with pytest.raises(ValueError, match=r"labels.sqlite cannot be opened as this store's SQLite database \(.+\); "
                                         r"move it away to start an empty one"):
        LabelStore(path)
    if before is not None:
        assert path.read_bytes() == before, "a damaged store is not overwritten"


def test_label_quality_warns_when_the_true_reward_cannot_tell_most_pairs_apart():
    from embodied.data import Episode
    from embodied.pipeline import label_quality
    from reward_models.preferences import PreferenceLabels

    def episodes(sparse: bool):
        rng = np.random.default_rng(0)
        out = []
        for e in range(4):
            rewards = np.zeros(30, np.float32) if sparse else rng.normal(size=30).astype(np.float32)
            if sparse and e == 0:
                rewards[-1] = 1.0  # one goal reached, at the very end of one episode
            out.append(Episode(observations=np.zeros((31, 2), np.float32), actions=np.zeros((30, 1), np.float32),
                               rewards=rewards, terminations=np.zeros(30, bool), truncations=np.r_[np.zeros(29, bool), True]))
        return out

    pairs = sample_pairs([30] * 4, 5, 40, np.random.default_rng(1))
    labels = PreferenceLabels(pairs, np.zeros(40, np.float32), 5)
    with pytest.warns(UserWarning, match="equal true returns"):
        sparse = label_quality(labels, episodes(sparse=True))
    assert sparse["pairs_with_equal_true_return"] > 0.9
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dense reward: no warning
        dense = label_quality(labels, episodes(sparse=False))
    assert dense["pairs_with_equal_true_return"] == 0.0
