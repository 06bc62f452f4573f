"""Draw docs/labeling_page.png: the labeling page of `labeler=human` on two dressing segments.

    python docs/make_labeling_screenshot.py

Collects one expert and one snag episode of the dressing task at the main job's frame size
(128 x 128), serves a pair of their segments on the page (the real server and Debian's Chromium,
as in tests/test_human_labeling.py) and takes a screenshot once both clips play.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import envs  # noqa: F401  (picks the OpenGL backend before mujoco loads)
from embodied.data import rollout
from envs.dressing.policies import DressingExpert, SnagPolicy
from reward_models.human import HumanLabeler
from reward_models.labeling import LabelStore, label_pairs

OUT = Path(__file__).with_name("labeling_page.png")


def main() -> None:
    from playwright.sync_api import sync_playwright

    env = envs.make("embodied/Dressing-v1", render_mode="rgb_array", width=128, height=128)
    episodes = [rollout(env, DressingExpert(env.action_space), seed=3, render=True),
                rollout(env, SnagPolicy(env.action_space), seed=4, render=True)]
    env.close()
    pairs = np.array([[[0, 20], [1, 20]], [[1, 5], [0, 5]]])
    urls: list[str] = []
    labeler = HumanLabeler(annotator="caregiver", task="pull the sleeve up the arm, past the elbow, without pulling on the arm",
                           port=0, on_start=urls.append)
    with tempfile.TemporaryDirectory() as tmp:
        thread = threading.Thread(target=label_pairs, args=(labeler, episodes, pairs, 10),
                                  kwargs={"store": LabelStore(Path(tmp) / "labels.sqlite"), "workdir": Path(tmp)}, daemon=True)
        thread.start()
        while not urls:
            time.sleep(0.02)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.goto(urls[0])
            page.wait_for_selector("body[data-state=ready]")
            page.wait_for_timeout(600)  # a few frames into the clips
            page.screenshot(path=str(OUT), full_page=True)
            browser.close()
        labeler.stop()
        thread.join(30)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
