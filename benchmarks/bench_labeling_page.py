"""How fast the labeling page answers, in Debian's Chromium driven by Playwright, in one process.

    python benchmarks/bench_labeling_page.py [--pairs 1000] [--answers 30] [--size 64]

Load: the time from opening the page to both clips of the first pair playing (``data-state=ready``),
with ``--pairs`` pairs waiting and, as the baseline, with 10: the ratio shows whether the page
slows down with the size of the labeling job. Cold = the first pair's clips rendered on request;
warm = after a reload, clips cached.

Answers: the time from a key press to the next pair playing, over ``--answers`` answers pressed at
once and ``--answers`` pressed after watching the pair for ``--watch`` seconds (one loop of a 1 s
segment; the next pair's clips are rendered while the current one is watched). Each answer is
saved in the SQLite label store before the page moves on. ``60 / (watch + median)`` is the labels
per minute of a person who watches each pair once and decides at once; a person's own time to
decide comes on top. Against it, the bare HTTP round trip of ``/api/state`` from Python in the
same process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from embodied.data import Episode
from reward_models.human import HumanLabeler
from reward_models.labeling import LabelStore, label_pairs
from reward_models.preferences import sample_pairs

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
H = 10


def make_episodes(n: int, steps: int, size: int) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [Episode(observations=rng.standard_normal((steps + 1, 4)).astype(np.float32),
                    actions=np.zeros((steps, 2), np.float32), rewards=rng.standard_normal(steps).astype(np.float32),
                    terminations=np.zeros(steps, bool), truncations=np.zeros(steps, bool), infos={},
                    frames=rng.integers(0, 255, (steps + 1, size, size, 3), dtype=np.uint8)) for _ in range(n)]


def serve(episodes, n_pairs: int, folder: Path):
    pairs = sample_pairs([len(ep) for ep in episodes], H, n_pairs, np.random.default_rng(n_pairs))
    urls: list[str] = []
    labeler = HumanLabeler(annotator="bench", task="benchmark", port=0, on_start=urls.append)
    store = LabelStore(folder / "labels.sqlite")
    thread = threading.Thread(target=label_pairs, args=(labeler, episodes, pairs, H), kwargs={"store": store, "workdir": folder},
                              daemon=True)
    thread.start()
    while not urls:
        time.sleep(0.01)
    return labeler, thread, urls[0]


def load_time(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="frame size (pixels) of the dataset (default: the main job's)")
    parser.add_argument("--watch", type=float, default=1.1, help="seconds a pair is watched before the answer (one loop)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    episodes = make_episodes(60, 100, args.size)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page()
        warmup, thread, url = serve(episodes, 10, Path(tmp) / "warmup")  # the browser's own first start
        load_time(page, url)
        warmup.stop()
        thread.join(30)
        loads = {}
        for n in (10, args.pairs):
            labeler, thread, url = serve(episodes, n, Path(tmp) / f"p{n}")
            cold = load_time(page, url)
            warm = min(load_time(page, url) for _ in range(3))
            loads[n] = (cold, warm)
            if n == args.pairs:
                latencies, watched = [], []
                for k in range(2 * args.answers):
                    if k >= args.answers:
                        page.wait_for_timeout(args.watch * 1000)
                    shown = page.evaluate("document.body.dataset.pair")
                    start = time.perf_counter()
                    page.keyboard.press("ArrowLeft")
                    page.wait_for_function("p => document.body.dataset.pair !== p && document.body.dataset.state === 'ready'",
                                           arg=shown, timeout=60_000)
                    (latencies if k < args.answers else watched).append(time.perf_counter() - start)
                trips = []
                for _ in range(args.answers):
                    start = time.perf_counter()
                    httpx.get(url + "api/state")
                    trips.append(time.perf_counter() - start)
            labeler.stop()
            thread.join(30)
        browser.close()
    print(f"frames {args.size}x{args.size}, segments of {H} steps ({H + 1} frames per clip)")
    for n, (cold, warm) in loads.items():
        print(f"page load with {n:5d} pairs waiting: cold {cold * 1000:7.1f} ms, warm {warm * 1000:7.1f} ms")
    print(f"load ratio {args.pairs} / 10 pairs: cold {loads[args.pairs][0] / loads[10][0]:.2f}x, "
          f"warm {loads[args.pairs][1] / loads[10][1]:.2f}x")
    for name, values in (("at once", latencies), (f"after watching {args.watch:.1f} s", watched)):
        median, p90 = statistics.median(values), float(np.quantile(values, 0.9))
        print(f"key press {name} -> next pair playing: median {median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms over "
              f"{len(values)} answers")
    median = statistics.median(watched)
    print(f"a person who watches each pair once ({args.watch:.1f} s) and answers at once: "
          f"{60 / (args.watch + median):.0f} labels per minute; the page alone allows {60 / median:.0f}")
    print(f"baseline /api/state round trip from Python: median {statistics.median(trips) * 1000:.1f} ms "
          f"(answer latency {median / statistics.median(trips):.1f}x)")


if __name__ == "__main__":
    main()
