"""The VLM labeler against a real chat-completions server on 127.0.0.1 (tests/vlm_server.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from reward_models.labeling import LabelStore, labeler_key
from reward_models.vlm import VLMAttributeLabeler, VLMPreferenceLabeler, VLMRequestError, parse_label
from tests.vlm_server import FakeVLM, make_episodes

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-do-not-log-4242"
# (episode, start) pairs of 1-step segments; the segment's image is frame start + 1.
PAIRS = np.array([[[1, 0], [2, 0]], [[3, 2], [1, 4]], [[2, 1], [2, 3]], [[4, 0], [4, 0]], [[5, 2], [0, 1]]])


def expected_labels(episodes, pairs, H=1):
    out = []
    for (e0, s0), (e1, s1) in pairs:
        b0, b1 = episodes[e0].frames[s0 + H].mean(), episodes[e1].frames[s1 + H].mean()
        out.append(0.5 if b0 == b1 else float(b1 > b0))
    return np.array(out, np.float32)


def labeler(server, **kw):
    settings = dict(base_url=server.url, model="test-vlm", task="make the image bright", api_key_env="EMBODIED_TEST_KEY",
                    concurrency=2, requests_per_minute=0, timeout_s=5, max_retries=3, backoff_s=0.01, progress=False)
    return VLMPreferenceLabeler(**{**settings, **kw})


def test_parse_label_accepts_only_a_clear_last_line():
    assert parse_label("1") == 1 and parse_label("0.") == 0 and parse_label("**-1**") == -1
    assert parse_label("Image 2 is better.\n1") == 1
    # labelled answers, as RL-VLM-F's prompts and chatty models write them
    assert parse_label("After comparing the two images, image 2 is closer to the goal. Answer: 1") == 1
    assert parse_label("Image 1 shows the sleeve higher.\nFinal answer: 0\nHope this helps!") == 0
    assert parse_label("The answer is **-1**.") == -1 and parse_label("answer = 0") == 0
    for bad in ["", "Image 2", "1 or 0", "maybe 1?", "2", "10", "The answer is 2", "Answer: 1 or 0",
                "answer: 10", "I would answer 1 if the sleeve were higher, but I cannot tell"]:
        assert parse_label(bad) is None, bad


def test_labels_ties_swap_check_and_the_key_never_leaves_the_header(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMBODIED_TEST_KEY", SECRET)
    episodes = make_episodes()
    with FakeVLM() as server:
        labels = labeler(server, swap_check=True).label_segments(episodes, PAIRS, 1, workdir=tmp_path)
    np.testing.assert_array_equal(labels.labels, expected_labels(episodes, PAIRS))
    assert labels.labels[3] == 0.5  # the same image twice: the VLM says -1, a tie
    counts = labels.provenance["counts"]
    assert counts["answered"] == 4 and counts["unsure"] == 1 and counts["requests"] == len(PAIRS) * 2 * 2 - 2
    assert counts["cache_hits"] == 2  # the tie pair swapped is the same question: answered from the cache
    assert set(server.authorization) == {f"Bearer {SECRET}"}
    stored = json.dumps(labels.provenance) + (tmp_path / "vlm_cache.sqlite").read_bytes().decode("latin-1")
    captured = capsys.readouterr()
    assert SECRET not in stored + captured.out + captured.err
    assert labels.provenance["model"] == "test-vlm" and len(labels.provenance["prompt_hash"]) == 16


def test_the_attribute_labeler_asks_its_question_about_strips_of_frames(tmp_path):
    """AlignDiff's attribute labels from a VLM: the question reaches the label prompt (the test
    server answers 'darker' questions by the darker clip), each clip is a strip of frames, and two
    attributes' answers stay apart in one store."""
    episodes, pairs, H = make_episodes(), PAIRS[[0, 1, 2, 4]], 2
    settings = dict(base_url="", model="test-vlm", task="move the sleeve", api_key_env="EMBODIED_TEST_KEY", concurrency=2,
                    requests_per_minute=0, timeout_s=5, max_retries=3, backoff_s=0.01, frames_per_segment=2, progress=False)
    with FakeVLM() as server:
        settings["base_url"] = server.url
        brighter = VLMAttributeLabeler(question="In which clip is the picture brighter?", **settings)
        darker = VLMAttributeLabeler(question="In which clip is the picture darker?", **settings)
        store = LabelStore(tmp_path / "labels.sqlite")
        bright = brighter.label_segments(episodes, pairs, H, store=store, workdir=tmp_path)
        dark = darker.label_segments(episodes, pairs, H, store=store, workdir=tmp_path)
        asked = len(server.bodies)
        again = darker.label_segments(episodes, pairs, H, store=store, workdir=tmp_path)
        assert len(server.bodies) == asked  # the store answers a rerun
    strip = brighter.segment_image(episodes[1], 0, H)
    assert strip.shape == (8, 16, 3)  # two frames side by side
    np.testing.assert_array_equal(strip[:, :8], episodes[1].frames[1])
    np.testing.assert_array_equal(strip[:, 8:], episodes[1].frames[2])
    means = np.array([[brighter.segment_image(episodes[e], s, H).mean() for e, s in pair] for pair in pairs])
    expected = (means[:, 1] > means[:, 0]).astype(np.float32)
    np.testing.assert_array_equal(bright.labels, expected)
    np.testing.assert_array_equal(dark.labels, 1.0 - expected)
    np.testing.assert_array_equal(again.labels, dark.labels)
    assert labeler_key(brighter) != labeler_key(darker) and darker.settings()["question"].endswith("darker?")
    with pytest.raises(ValueError, match="question is empty"):
        VLMAttributeLabeler(question=" ", **settings)


def test_429_500_and_slow_answers_are_retried(tmp_path):
    episodes = make_episodes()
    with FakeVLM() as server:
        server.script.extend(["429", "500", "slow"])
        server.slow_s = 2.0
        labels = labeler(server, concurrency=1, timeout_s=0.5).label_segments(episodes, PAIRS[:2], 1)
    np.testing.assert_array_equal(labels.labels, expected_labels(episodes, PAIRS[:2]))
    counts = labels.provenance["counts"]
    assert counts["retry_http_429"] == 1 and counts["retry_http_500"] == 1 and counts["retry_ReadTimeout"] == 1
    assert counts["retries"] == 3 and counts["requests"] == 2 * 2 + 3


def test_a_pair_failing_after_all_retries_abstains_uncached_and_a_rerun_asks_again(tmp_path):
    episodes = make_episodes()
    with FakeVLM() as server:
        server.mode = "always_500"
        failed = labeler(server, max_retries=2).label_segments(episodes, PAIRS[:2], 1, workdir=tmp_path)
        assert np.isnan(failed.labels).all() and failed.provenance["counts"]["failed"] == 2
        assert failed.provenance["counts"]["requests"] == 2 * 3  # first stage only: 1 try + 2 retries per pair
        server.mode = "ok"
        again = labeler(server).label_segments(episodes, PAIRS[:2], 1, workdir=tmp_path)
    np.testing.assert_array_equal(again.labels, expected_labels(episodes, PAIRS[:2]))


def test_an_unparseable_answer_is_an_abstain_counted_and_cached(tmp_path):
    episodes = make_episodes(black_episode=0)
    pairs = np.array([[[0, 1], [2, 0]], [[1, 0], [2, 0]]])
    with FakeVLM() as server:
        first = labeler(server).label_segments(episodes, pairs, 1, workdir=tmp_path)
        asked = len(server.bodies)
        rerun = labeler(server).label_segments(episodes, pairs, 1, workdir=tmp_path)
        assert len(server.bodies) == asked  # the rerun asked nothing: both stages came from the cache
    assert np.isnan(first.labels[0]) and first.labels[1] == 1.0
    assert first.provenance["counts"]["unparseable"] == 1 and first.provenance["counts"]["answered"] == 1
    np.testing.assert_array_equal(rerun.labels, first.labels)
    assert rerun.provenance["counts"]["cache_hits"] == 4 and "requests" not in rerun.provenance["counts"]


def test_a_refused_request_stops_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("EMBODIED_TEST_KEY", SECRET)
    with FakeVLM() as server:
        server.script.append("401")
        with pytest.raises(VLMRequestError, match="HTTP 401.*EMBODIED_TEST_KEY") as error:
            labeler(server, concurrency=1).label_segments(make_episodes(), PAIRS[:1], 1)
    assert SECRET not in str(error.value)
    with pytest.raises(ValueError, match="episode 1 has no frames"):
        episodes = make_episodes()
        episodes[1].frames = None
        VLMPreferenceLabeler("http://127.0.0.1:9/v1", "m", "t").label_segments(episodes, PAIRS[:1], 1)
    with pytest.raises(ValueError, match="unsure_as='maybe'"):
        VLMPreferenceLabeler("http://127.0.0.1:9/v1", "m", "t", unsure_as="maybe")


CHILD = """
import sys, numpy as np
from reward_models.vlm import VLMPreferenceLabeler
from tests.vlm_server import make_episodes
pairs = np.array({pairs})
labeler = VLMPreferenceLabeler(sys.argv[1], "test-vlm", "make the image bright", concurrency=1,
                               requests_per_minute=0, timeout_s=60, progress=False, cache_path=sys.argv[2])
labels = labeler.label_segments(make_episodes(), pairs, 1)
print("LABELS", labels.labels.tolist(), labels.provenance["counts"])
"""


def test_labeling_killed_midway_and_rerun_asks_nothing_twice(tmp_path):
    rng = np.random.default_rng(0)
    pairs = np.stack([[[rng.integers(6), rng.integers(5)], [rng.integers(6), rng.integers(5)]] for _ in range(8)])
    script = CHILD.format(pairs=pairs.tolist())
    cache = tmp_path / "cache.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FakeVLM() as server:
        server.script.extend(["ok"] * 6 + ["hold"])  # answer 6 requests, then hang on the 7th
        child = subprocess.Popen([sys.executable, "-c", script, server.url, str(cache)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while len(server.bodies) < 7 and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert len(server.bodies) == 7, child.communicate()
        child.send_signal(signal.SIGKILL)
        child.wait()
        server.release.set()
        answered_before_kill = server.bodies[:6]
        rerun = subprocess.run([sys.executable, "-c", script, server.url, str(cache)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    asked_again = server.bodies[7:]
    assert not set(answered_before_kill) & set(asked_again)  # nothing answered before the kill was asked twice
    assert len(asked_again) == len(set(asked_again))
    labels = json.loads(rerun.stdout.split("LABELS ", 1)[1].split("] ", 1)[0] + "]")
    np.testing.assert_array_equal(np.array(labels, np.float32), expected_labels(make_episodes(), pairs))
