"""The labeling page for people: a real server on 127.0.0.1, driven by Debian's Chromium
(/usr/bin/chromium, installed by the README's setup) through Playwright, and by plain HTTP for
the bad inputs. No part of the page or the store is a test double."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from embodied.data import Episode
from reward_models.bradley_terry import RewardModelConfig, fit_reward_model
from reward_models.functions import BradleyTerryReward, relabel
from reward_models.human import HumanLabeler, pair_id, render_clip, segment_frames
from reward_models.labeling import LabelStore, compare_labels, label_pairs, labeler_key
from reward_models.preferences import PreferenceLabels, sample_pairs
from reward_models.teachers import TEACHERS

CHROMIUM = "/usr/bin/chromium"
H = 4
KEY_OF = {0.0: "ArrowLeft", 1.0: "ArrowRight", 0.5: "="}


def make_episodes(n: int = 8, steps: int = 12, seed: int = 0) -> list[Episode]:
    """Episodes whose reward is the first observation coordinate, with frames whose brightness
    follows it (so a person could tell), 16x16 pixels."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        obs = rng.uniform(-1, 1, (steps + 1, 3)).astype(np.float32)
        level = ((obs[:, 0] + 1) * 120).astype(np.uint8)
        frames = np.broadcast_to(level[:, None, None, None], (steps + 1, 16, 16, 3)).copy()
        episodes.append(Episode(observations=obs, actions=rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                                rewards=obs[:-1, 0].copy(), terminations=np.zeros(steps, bool),
                                truncations=np.zeros(steps, bool), infos={}, frames=frames))
    return episodes


def oracle(episodes, pairs, segment_length=H) -> np.ndarray:
    return TEACHERS["oracle"].label([ep.rewards for ep in episodes], pairs, segment_length, np.random.default_rng(0)).labels


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Job:
    """A labeling job in a thread: ``label_pairs`` with a :class:`HumanLabeler` into a store, as
    ``embodied.label`` runs it; ``url`` once the page is served."""

    def __init__(self, episodes, pairs, store, workdir, **kw):
        self.urls: list[str] = []
        self.labeler = HumanLabeler(**{"annotator": "alice", "task": "keep the square bright", "on_start": self.urls.append,
                                       "port": 0, **kw})
        self.result: dict = {}
        self.thread = threading.Thread(target=lambda: self.result.setdefault(
            "labels", label_pairs(self.labeler, episodes, pairs, H, store=store, workdir=workdir)), daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.urls and time.time() < deadline and self.thread.is_alive():
            time.sleep(0.02)
        assert self.urls, "the labeling page did not start"
        self.url = self.urls[0]

    def stop(self) -> PreferenceLabels:
        self.labeler.stop()
        return self.join()

    def join(self) -> PreferenceLabels:
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.result["labels"]


def test_segment_frames_hold_the_last_frame_and_clips_are_webm(tmp_path):
    episode = make_episodes(1, steps=5)[0]
    frames = segment_frames(episode, 3, H)  # s_3 .. s_7; the episode ends at s_5
    assert frames.shape == (H + 1, 16, 16, 3)
    assert (frames[2:] == episode.frames[5]).all() and (frames[0] == episode.frames[3]).all()
    clip = render_clip(frames, tmp_path / "clip.webm", fps=10)
    decoded = _decode_ffmpeg(clip)
    assert clip.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska/WebM file
    assert decoded.shape[0] == H + 1 and min(decoded.shape[1:3]) >= 256
    # brightness survives the encoding (VP8 is lossy: within a few levels)
    assert np.allclose(decoded.reshape(H + 1, -1).mean(1), frames.reshape(H + 1, -1).mean(1), atol=4)
    with pytest.raises(ValueError, match=r"\(T, h, w, 3\) uint8"):
        render_clip(frames.astype(np.float32), tmp_path / "bad.webm", fps=10)


def _decode_ffmpeg(path: Path) -> np.ndarray:
    import imageio_ffmpeg

    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    w, h = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in frames])


@pytest.mark.slow
def test_the_page_labels_20_pairs_by_keyboard_across_a_restart_and_a_reward_model_learns_from_them(tmp_path):
    """Must-show 1: Chromium answers 20 pairs by keyboard with the oracle's choice, the server is
    restarted after 10 (the page reloaded), the labels on disk equal the oracle's, and a
    Bradley-Terry model trained on them ranks transitions like the true reward."""
    from playwright.sync_api import sync_playwright

    episodes = make_episodes()
    pairs = sample_pairs([len(ep) for ep in episodes], H, 20, np.random.default_rng(1))
    truth = oracle(episodes, pairs)
    assert set(np.unique(truth)) <= {0.0, 1.0}
    store = LabelStore(tmp_path / "labels" / "labels.sqlite")
    port = free_port()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page()
        answered: list[str] = []

        def answer(n: int) -> None:
            for _ in range(n):
                page.wait_for_selector("body[data-state=ready]", timeout=20_000)
                shown = page.evaluate("document.body.dataset.pair")
                assert shown not in answered, f"pair {shown} shown again after it was answered"
                e0, s0, e1, s1 = map(int, shown.split("-"))
                i = next(k for k, pair in enumerate(pairs) if pair_id(pair) == shown)
                assert page.locator("#left").get_attribute("src").startswith(f"clips/e{e0}_s{s0}_h{H}.webm")
                assert page.locator("#right").get_attribute("src").startswith(f"clips/e{e1}_s{s1}_h{H}.webm")
                page.keyboard.press(KEY_OF[float(truth[i])])
                page.wait_for_function("p => document.body.dataset.pair !== p", arg=shown, timeout=20_000)
                answered.append(shown)

        first = Job(episodes, pairs, store, tmp_path / "labels", port=port)
        page.goto(first.url)
        page.wait_for_selector("body[data-state=ready]", timeout=20_000)
        assert "keep the square bright" in page.locator("#task").inner_text()
        answer(10)
        half = first.stop()
        assert int(half.answered.sum()) == 10
        # the playing clips decode in the browser: both videos have frames and a duration
        second = Job(episodes, pairs, store, tmp_path / "labels", port=port)
        assert second.url == first.url
        page.reload()
        page.wait_for_selector("body[data-state=ready]", timeout=20_000)
        assert page.evaluate("[document.getElementById('left').videoWidth, document.getElementById('left').duration]")[0] >= 256
        assert page.locator("#count").inner_text().startswith("0 of 10")  # the 10 unanswered, resumed
        answer(10)
        page.wait_for_selector("body[data-state=done]", timeout=20_000)
        labels = second.join()
        browser.close()

    assert len(set(answered)) == 20
    key = labeler_key(HumanLabeler(annotator="alice", task="keep the square bright"))
    on_disk, found, outcomes = LabelStore(tmp_path / "labels" / "labels.sqlite").lookup(key, pairs, H)
    assert found.all() and set(outcomes) == {"answered"}
    np.testing.assert_array_equal(on_disk, truth)
    np.testing.assert_array_equal(labels.labels, truth)
    infos = [json.loads(row[0]) for row in store._read("SELECT info FROM answers")]
    assert {i["annotator"] for i in infos} == {"alice"} and all(i["time_taken_s"] >= 0 and i["answered_at"] > 0 for i in infos)
    # clips rendered once each, cached beside the store
    assert len(list((tmp_path / "labels" / "clips").glob("*.webm"))) == len({tuple(s) for s in pairs.reshape(-1, 2).tolist()})

    model, report = fit_reward_model(episodes, labels, RewardModelConfig(hidden_dims=[32], ensemble_size=2, max_epochs=200, inputs="s",
                                                                         patience=200, holdout_fraction=0.2), seed=0)
    learned = relabel(BradleyTerryReward(model), episodes, "cpu").numpy()
    true = np.concatenate([ep.rewards for ep in episodes])
    spearman = np.corrcoef(np.argsort(np.argsort(learned)), np.argsort(np.argsort(true)))[0, 1]
    assert spearman > 0.6, spearman


@pytest.fixture
def served(tmp_path):
    episodes = make_episodes()
    pairs = sample_pairs([len(ep) for ep in episodes], H, 5, np.random.default_rng(2))
    store = LabelStore(tmp_path / "labels" / "labels.sqlite")
    (tmp_path / "labels" / "secret.txt").write_text("not for the page")
    job = Job(episodes, pairs, store, tmp_path / "labels", token="tok-123")
    yield job, pairs, store
    job.stop()


def _rows(store):
    return store._read("SELECT * FROM answers ORDER BY e0, s0, e1, s1")


def test_bad_inputs_get_a_4xx_and_change_nothing(served):
    job, pairs, store = served
    base = job.url.split("?")[0]
    auth = {"X-Token": "tok-123"}
    state = httpx.get(base + "api/state", headers=auth).json()
    pid = state["pair"]["id"]
    good = {"pair": pid, "choice": "left", "time_taken_s": 1.0}
    bad = [
        ({"content": b"{not json", "headers": auth}, 400),
        ({"json": ["left"], "headers": auth}, 400),
        ({"json": {**good, "choice": "up"}, "headers": auth}, 400),
        ({"json": {**good, "choice": None}, "headers": auth}, 400),
        ({"json": {**good, "pair": 3}, "headers": auth}, 400),
        ({"json": {**good, "time_taken_s": -1}, "headers": auth}, 400),
        ({"json": {**good, "time_taken_s": "NaN"}, "headers": auth}, 400),
        ({"json": {**good, "pair": "99-0-98-0"}, "headers": auth}, 404),
        ({"json": good}, 401),
        ({"json": good, "headers": {"X-Token": "tok-12"}}, 401),
    ]
    for kwargs, status in bad:
        response = httpx.post(base + "api/answer", **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert "error" in response.json()
        assert _rows(store) == []
    # a good answer is saved once; the same answer replayed is refused and changes nothing
    assert httpx.post(base + "api/answer", json=good, headers=auth).status_code == 200
    saved = _rows(store)
    assert len(saved) == 1 and saved[0][6] == 0.0
    replay = httpx.post(base + "api/answer", json={**good, "choice": "right"}, headers=auth)
    assert replay.status_code == 409 and _rows(store) == saved
    # the page, the state and the clips need the token
    assert httpx.get(base).status_code == 401 and httpx.get(base + "api/state").status_code == 401
    left = state["pair"]["left"]
    assert httpx.get(base + f"clips/{left}").status_code == 401
    assert httpx.get(base + f"clips/{left}?token=tok-123").status_code == 200
    assert httpx.get(base + "?token=tok-123").status_code == 200
    # nothing outside the session's clips is served
    for name in ("..%2Fsecret.txt", "%2e%2e/secret.txt", "..%2F..%2Flabels%2Fsecret.txt", "secret.txt",
                 "e99_s0_h4.webm", f"e0_s0_h{H + 1}.webm", "%2Fetc%2Fpasswd"):
        response = httpx.get(base + f"clips/{name}?token=tok-123")
        assert response.status_code == 404, name
        assert b"not for the page" not in response.content
    assert _rows(store) == saved


def test_clips_are_served_with_range_requests(served):
    job, _, _ = served
    base = job.url.split("?")[0]
    left = httpx.get(job.url.replace("/?", "/api/state?")).json()["pair"]["left"]
    whole = httpx.get(base + f"clips/{left}?token=tok-123")
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/webm"
    part = httpx.get(base + f"clips/{left}?token=tok-123", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole.content)}"


def test_choices_map_to_bradley_terry_labels_and_a_rerun_asks_only_the_rest(tmp_path):
    episodes = make_episodes()
    pairs = sample_pairs([len(ep) for ep in episodes], H, 4, np.random.default_rng(3))
    store = LabelStore(tmp_path / "labels.sqlite")
    job = Job(episodes, pairs, store, tmp_path)
    base = job.url
    for choice in ("right", "equal", "cant_tell"):
        pid = httpx.get(base + "api/state").json()["pair"]["id"]
        assert httpx.post(base + "api/answer", json={"pair": pid, "choice": choice}).status_code == 200
    labels = job.stop()
    np.testing.assert_array_equal(labels.labels[:3], [1.0, 0.5, np.nan])
    assert labels.provenance["counts"] == {"answered": 1, "tie": 1, "unsure": 1}
    rerun = Job(episodes, pairs, store, tmp_path)
    state = httpx.get(rerun.url + "api/state").json()
    assert state["total"] == 1 and state["pair"]["id"] == pair_id(pairs[3])
    assert httpx.post(rerun.url + "api/answer", json={"pair": pair_id(pairs[0]), "choice": "left"}).status_code == 404
    assert httpx.post(rerun.url + "api/answer", json={"pair": state["pair"]["id"], "choice": "left"}).json()["pair"] is None
    assert rerun.join().labels[3] == 0.0


def test_two_annotators_keep_their_own_answers_and_the_report_gives_their_agreement(tmp_path):
    episodes = make_episodes()
    pairs = sample_pairs([len(ep) for ep in episodes], H, 30, np.random.default_rng(4))
    truth = oracle(episodes, pairs)
    # alice answers as the true reward; bob flips the last 10
    bob_says = truth.copy()
    bob_says[20:] = 1 - bob_says[20:]

    def label_as(name: str, answers: np.ndarray, folder: Path) -> PreferenceLabels:
        store = LabelStore(folder / "labels" / "labels.sqlite")
        job = Job(episodes, pairs, store, folder / "labels", annotator=name)
        for _ in range(len(pairs)):
            pid = httpx.get(job.url + "api/state").json()["pair"]["id"]
            i = next(k for k, pair in enumerate(pairs) if pair_id(pair) == pid)
            httpx.post(job.url + "api/answer", json={"pair": pid, "choice": "right" if answers[i] == 1.0 else "left"})
        return job.join()

    alice = label_as("alice", truth, tmp_path / "alice")
    bob = label_as("bob", bob_says, tmp_path / "bob")
    report = compare_labels(alice, [tmp_path / "bob"], truth)
    assert report["pairs_shared_with_human:bob"] == 30
    assert report["agreement_with_human:bob"] == pytest.approx(20 / 30)
    assert report["human:bob_agreement_with_true_reward"] == pytest.approx(20 / 30)
    back = compare_labels(bob, [tmp_path / "alice" / "labels" / "labels.sqlite"], truth)
    assert back["human:alice_agreement_with_true_reward"] == 1.0
    with pytest.raises(FileNotFoundError, match="compare_with"):
        compare_labels(alice, [tmp_path / "nobody"])


def test_a_taken_port_and_missing_frames_are_clear_errors(tmp_path):
    episodes = make_episodes(2)
    pairs = sample_pairs([len(ep) for ep in episodes], H, 2, np.random.default_rng(0))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        labeler = HumanLabeler(port=taken.getsockname()[1], on_start=lambda url: None)
        with pytest.raises(OSError, match="labeler.teacher.port"):
            list(labeler.answers(episodes, pairs, H, workdir=tmp_path))
    episodes[1].frames = None
    with pytest.raises(ValueError, match="dataset.frames=true"):
        list(HumanLabeler(port=0).answers(episodes, pairs, H))
    with pytest.raises(ValueError, match="annotator"):
        HumanLabeler(annotator=" ")


def _serve_job(args: list[str], cwd: Path):
    """Start ``python -m embodied.label`` with the human labeler; returns the process and the
    address it printed."""
    import os
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "embodied.label", *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "HYDRA_FULL_ERROR": "1",
                                                                          "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("label in the browser: open "):
            return process, line.split("open ", 1)[1].strip(), lines
    process.wait(30)
    raise AssertionError("the label job printed no address:\n" + "".join(lines[-40:]))


@pytest.mark.slow
def test_the_label_job_serves_the_page_resumes_after_a_kill_and_reports_agreement(tmp_path):
    """``python -m embodied.label ... labeler=human`` as a user runs it: the address is printed,
    answers given before a SIGKILL are kept, the rerun serves only the rest, and a second
    annotator's run reports the agreement with the first (``labeler.compare_with``)."""
    import signal

    from tests.conftest import small_train_overrides

    def command(run: Path, *extra: str) -> list[str]:
        return [*small_train_overrides(tmp_path / "outputs"), "labeler=human", "labeler.pairs=20",
                "labeler.segment_length=5", "labeler.teacher.port=0", "labeler.teacher.clip_size=32",
                "dataset.width=32", "dataset.height=32", "reward_model.hidden_dims=[16]", "reward_model.max_epochs=2",
                f"hydra.run.dir={run}", *extra]

    def answer(url: str, choice: str, n: int) -> None:
        for _ in range(n):
            state = httpx.get(url + "api/state", timeout=30).json()
            assert httpx.post(url + "api/answer", json={"pair": state["pair"]["id"], "choice": choice},
                              timeout=30).status_code == 200

    alice = tmp_path / "alice"
    process, url, _ = _serve_job(command(alice, "labeler.teacher.annotator=alice"), tmp_path)
    try:
        answer(url, "left", 8)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    store = LabelStore(alice / "labels" / "labels.sqlite")
    assert len(_rows(store)) == 8, "every answer the page confirmed is on disk after the SIGKILL"
    store.close()
    process, url, lines = _serve_job(command(alice, "labeler.teacher.annotator=alice"), tmp_path)
    assert httpx.get(url + "api/state").json()["total"] == 12
    answer(url, "left", 12)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(lines) + out
    report = json.loads((alice / "metrics.json").read_text())["reward"]
    assert report["tie"] == 0 and 0 <= report["agreement_with_true_reward"] <= 1

    bob = tmp_path / "bob"
    process, url, lines = _serve_job(command(bob, "labeler.teacher.annotator=bob", f"labeler.compare_with=[{alice}]"), tmp_path)
    answer(url, "right", 20)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(lines) + out
    report = json.loads((bob / "metrics.json").read_text())["reward"]
    assert report["pairs_shared_with_human:alice"] == 20 and report["agreement_with_human:alice"] == 0.0
    assert "agreement_with_human:alice" in out
