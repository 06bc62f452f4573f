"""A real HTTP server on 127.0.0.1 that answers like an OpenAI-compatible chat-completions API.

It judges image pairs as a VLM would, but by a rule the tests know: the brighter image is
better (the darker one when the question asks which is darker); equal images get ``-1``; a pair with an all-black image gets an unparseable answer. To
the safety judge's yes/no question it answers yes for an image brighter than 100, no for a
darker one, and an unparseable answer for an all-black one.
Faults are scripted per request (``script``): ``429``, ``500``, ``slow`` (answer after
``slow_s``), ``hold`` (wait until ``release`` is set), or ``mode="always_500"``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from embodied.data import Episode


def brightness(data_url: str) -> float:
    from PIL import Image

    png = base64.b64decode(data_url.split(",", 1)[1])
    return float(np.asarray(Image.open(io.BytesIO(png))).mean())


class FakeVLM:
    """Start with ``with FakeVLM() as server:``; ``server.url`` is the API root."""

    def __init__(self):
        self.script: deque[str] = deque()
        self.mode = "ok"
        self.slow_s = 1.5
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.bodies: list[str] = []  # sha256 of each request body, in arrival order
        self.statuses: list[int] = []
        self.authorization: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with server.lock:
                    server.bodies.append(hashlib.sha256(raw).hexdigest())
                    server.authorization.append(self.headers.get("Authorization"))
                    action = server.script.popleft() if server.script else server.mode
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if action in ("429", "500", "always_500"):
                    code = 429 if action == "429" else 500
                    return self._send(code, {"error": {"message": "busy"}}, {"Retry-After": "0.05"} if code == 429 else {})
                if action == "401":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if action == "slow":
                    time.sleep(server.slow_s)
                if action == "hold":
                    server.release.wait(30)
                body = json.loads(raw)
                content = body["messages"][0]["content"]
                images = [brightness(c["image_url"]["url"]) for c in content if c["type"] == "image_url"]
                text = " ".join(c["text"] for c in content if c["type"] == "text")
                if "holding only yes or no" in text:  # the safety judge: a bright frame is unsafe
                    answer = ("I cannot tell from this picture." if images[0] == 0.0 else
                              "**Yes.**" if images[0] > 100 else "no")
                elif "Reply with a single line" not in text:
                    answer = f"Image 1 has brightness {images[0]:.1f}. Image 2 has brightness {images[1]:.1f}."
                elif min(images) == 0.0:
                    answer = "I cannot tell from these pictures."
                elif images[0] == images[1]:
                    answer = "-1"
                else:  # an attribute question about darkness is answered by the darker image
                    second = images[1] < images[0] if "darker" in text else images[1] > images[0]
                    answer = "Image 2 is closer to the goal.\n1" if second else "0"
                self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": answer}}]})

            def _send(self, code, payload, headers=None):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                with server.lock:
                    server.statuses.append(code)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeVLM:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def make_episodes(n: int = 6, steps: int = 5, black_episode: int | None = None) -> list[Episode]:
    """Episodes whose frames have brightness 20 e + 3 t + 10 (episode e, frame t); 8x8 pixels."""
    episodes = []
    for e in range(n):
        level = np.array([0 if e == black_episode else 20 * e + 3 * t + 10 for t in range(steps + 1)], np.uint8)
        frames = np.broadcast_to(level[:, None, None, None], (steps + 1, 8, 8, 3)).copy()
        episodes.append(Episode(observations=np.zeros((steps + 1, 2), np.float32), actions=np.zeros((steps, 1), np.float32),
                                rewards=np.zeros(steps, np.float32), terminations=np.zeros(steps, bool),
                                truncations=np.zeros(steps, bool), infos={}, frames=frames))
    return episodes
