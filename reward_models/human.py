"""People label preferences in the browser: a local labeling page behind the labeler seam.

``python -m embodied.label +task=dressing labeler=human`` (or the main job with ``labeler=human``)
starts a web app (Starlette on uvicorn) bound to 127.0.0.1, prints the address to open and shows
the pairs the label store does not hold, one at a time: the two segments as clips side by side,
played in sync and looping, with a scrubber; the person answers left / right / equally good /
can't tell by click or by keyboard (arrow keys, ``=``, ``s``).

**Saving.** Each answer goes through :func:`reward_models.labeling.label_pairs` like any
labeler's: the page's request returns only after the answer is committed to the label store
(:class:`HumanLabeler` yields it and waits until the store has written it), with the
annotator's name, the time and the time taken. A page reload asks the server for the next
unanswered pair; a server restart (the job run again) asks only for the pairs the store lacks.

**Annotators.** ``annotator`` is part of the labeler's settings, so each person's answers are
kept under their own key in the store and never overwrite another's; two people label the same
pairs (same dataset, seed and pair count) in their own runs, and ``labeler.compare_with`` lists
the other runs' stores so the report gives their agreement (:func:`reward_models.labeling.compare_labels`).

**Clips.** Rendered once per segment from the dataset's frames (WebM, VP8, through imageio's
ffmpeg) into ``labels/clips/``, upscaled by an integer factor (nearest neighbour) so the longer
side is at least ``clip_size`` pixels, and served with HTTP range requests. A segment shows the
frames of its observations ``s_t .. s_{t+H}`` (H + 1 frames); a segment that runs past a
termination holds the last frame.

**Bad input** gets a 4xx and changes nothing: a malformed body or choice (400/422), a pair id
that is not waiting for an answer (404), an answer to a pair already answered (409), a clip name
outside the clip folder (404), and a request without the session token when one is set (401).

Label convention (:mod:`reward_models.preferences`): left = first segment = 0.0, right = 1.0,
equally good = 0.5 (outcome ``tie``), can't tell = NaN (outcome ``unsure``, not trained on).
"""

from __future__ import annotations

import json
import math
import queue
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reward_models.labeling import Answer, Labeler

PAGE = Path(__file__).with_name("human_page") / "index.html"
#: Choices on the page, and the (label, outcome) each one stores.
CHOICES = {"left": (0.0, "answered"), "right": (1.0, "answered"), "equal": (0.5, "tie"), "cant_tell": (math.nan, "unsure")}
CLIP_NAME = re.compile(r"^e(\d+)_s(\d+)_h(\d+)\.webm$")


def pair_id(pair: np.ndarray) -> str:
    """The page's stable name of a pair ``(2, 2)`` of ``(episode, start)``: ``"e0-s0-e1-s1"``."""
    (e0, s0), (e1, s1) = np.asarray(pair, dtype=np.int64).tolist()
    return f"{e0}-{s0}-{e1}-{s1}"


def segment_frames(episode, start: int, segment_length: int) -> np.ndarray:
    """Frames of a segment's observations ``s_start .. s_{start+H}``: ``(H + 1, h, w, 3) uint8``;
    past the end of the episode (a segment into the absorbing state) the last frame is held.

    Raises:
        ValueError: the episode has no frames.
    """
    if getattr(episode, "frames", None) is None:
        raise ValueError("the episode has no frames; the human labeler needs a dataset collected with dataset.frames=true")
    index = np.minimum(np.arange(start, start + segment_length + 1), len(episode.frames) - 1)
    return np.asarray(episode.frames[index], dtype=np.uint8)


def render_clip(frames: np.ndarray, path: Path, fps: float, min_size: int = 256) -> Path:
    """Write ``frames (T, h, w, 3) uint8`` as a WebM (VP8) clip at ``fps`` (Hz), atomically
    (temporary file + rename). Frames are upscaled by an integer factor (nearest neighbour) so
    the longer side is at least ``min_size`` pixels, and padded to even sizes (yuv420p).

    Raises:
        ValueError: frames of another shape or dtype, or ``fps`` <= 0.
    """
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"clip frames must be (T, h, w, 3) uint8, got {frames.shape} {frames.dtype}")
    if not fps > 0:
        raise ValueError(f"clip fps={fps}; expected > 0")
    scale = max(1, math.ceil(min_size / max(frames.shape[1:3])))
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.webm")
    try:
        with imageio.get_writer(partial, format="FFMPEG", fps=fps, codec="libvpx", macro_block_size=1,
                                output_params=["-b:v", "2M", "-auto-alt-ref", "0", "-deadline", "realtime", "-cpu-used", "8"], pixelformat="yuv420p") as writer:
            for frame in frames:
                writer.append_data(frame)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


@dataclass
class _Given:
    """An answer taken by the page, waiting until the store has written it."""

    index: int
    answer: Answer
    saved: threading.Event = field(default_factory=threading.Event)


class LabelingSession:
    """The pairs one :meth:`HumanLabeler.answers` call waits for, shared by the web app's threads.

    Args:
        episodes: the episodes the pairs index (with frames).
        pairs: ``(N, 2, 2) int64`` pairs still unanswered, in the order shown.
        segment_length: H.
        clip_dir: where clips are cached.
        fps: clip frame rate (Hz).
        clip_size: minimum longer side of a clip (pixels).
        annotator: who answers.
        task: the task description shown on the page.
    """

    def __init__(self, episodes: Sequence, pairs: np.ndarray, segment_length: int, clip_dir: Path, fps: float,
                 clip_size: int, annotator: str, task: str):
        self.episodes, self.pairs, self.segment_length = episodes, np.asarray(pairs, dtype=np.int64), int(segment_length)
        self.clip_dir, self.fps, self.clip_size = Path(clip_dir), float(fps), int(clip_size)
        self.annotator, self.task = annotator, task
        self.index = {pair_id(p): i for i, p in enumerate(self.pairs)}
        self.segments = {tuple(segment) for segment in self.pairs.reshape(-1, 2).tolist()}
        self.answered: set[int] = set()
        self.shown: dict[int, float] = {}  # pair -> server time it was first served
        self.given: queue.Queue[_Given] = queue.Queue()
        self.started = time.time()
        self._lock = threading.Lock()
        self._render_locks: dict[str, threading.Lock] = {}

    # -- clips ---------------------------------------------------------------------------------
    def clip_name(self, episode: int, start: int) -> str:
        return f"e{episode}_s{start}_h{self.segment_length}.webm"

    def clip(self, episode: int, start: int) -> Path:
        """The clip of segment ``(episode, start)``, rendered on first use."""
        path = self.clip_dir / self.clip_name(episode, start)
        if not path.exists():
            with self._lock:
                lock = self._render_locks.setdefault(path.name, threading.Lock())
            with lock:  # one render per clip; different clips render in parallel
                if not path.exists():
                    render_clip(segment_frames(self.episodes[episode], start, self.segment_length), path, self.fps,
                                self.clip_size)
        return path

    def clip_path(self, name: str) -> Path | None:
        """The cached clip file called ``name`` if it is a clip of a pair of this session; None
        for any other name (another folder, another file, a segment nobody asked about)."""
        match = CLIP_NAME.match(name)
        if not match or int(match.group(3)) != self.segment_length:
            return None
        segment = (int(match.group(1)), int(match.group(2)))
        if segment not in self.segments:
            return None
        return self.clip(*segment)

    # -- state ---------------------------------------------------------------------------------
    def next_pair(self) -> int | None:
        with self._lock:
            return next((i for i in range(len(self.pairs)) if i not in self.answered), None)

    def state(self) -> dict[str, Any]:
        """What the page shows: task, annotator, progress, and the next pair with its clips."""
        with self._lock:
            done = len(self.answered)
        elapsed = time.time() - self.started
        i = self.next_pair()
        state: dict[str, Any] = {
            "task": self.task, "annotator": self.annotator, "total": len(self.pairs), "answered": done,
            "per_minute": 60.0 * done / elapsed if done and elapsed > 0 else None, "pair": None,
        }
        if i is not None:
            (e0, s0), (e1, s1) = self.pairs[i].tolist()
            self._render_pair(i)
            with self._lock:
                self.shown.setdefault(i, time.time())
            state["pair"] = {"id": pair_id(self.pairs[i]), "left": self.clip_name(e0, s0), "right": self.clip_name(e1, s1),
                             "frames": self.segment_length + 1, "fps": self.fps}
            following = next((j for j in range(i + 1, len(self.pairs)) if j not in self.answered), None)
            if following is not None:  # render the next pair's clips while this one is watched
                threading.Thread(target=self._prefetch, args=(following,), daemon=True).start()
        return state

    def _render_pair(self, i: int) -> None:
        """Both clips of pair ``i``, the second in a thread beside the first."""
        (e0, s0), (e1, s1) = self.pairs[i].tolist()
        errors: list[BaseException] = []

        def second() -> None:
            try:
                self.clip(e1, s1)
            except BaseException as error:  # noqa: BLE001 - raised below, in the caller's thread
                errors.append(error)

        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        self.clip(e0, s0)
        thread.join()
        if errors:
            raise errors[0]

    def _prefetch(self, i: int) -> None:
        try:
            self._render_pair(i)
        except Exception:  # noqa: BLE001 - rendered again (and the error shown) when the pair is served
            pass

    def give(self, body: Any, timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
        """Take one answer from the page: ``{"pair": id, "choice": ..., "time_taken_s": s}``.

        Returns ``(status, body)``: 200 with the next state once the store has written the
        answer; 400 for a malformed body or choice, 404 for a pair id this session does not wait
        for, 409 for a pair already answered, 503 when the store did not confirm in time.
        """
        if not isinstance(body, dict):
            return 400, {"error": f"the body must be a JSON object, got {type(body).__name__}"}
        pair, choice, taken = body.get("pair"), body.get("choice"), body.get("time_taken_s")
        if not isinstance(pair, str):
            return 400, {"error": "'pair' must be the pair id the page was given (a string)"}
        if choice not in CHOICES:
            return 400, {"error": f"'choice' is {choice!r}; expected one of {sorted(CHOICES)}"}
        if taken is not None and (isinstance(taken, bool) or not isinstance(taken, (int, float))
                                  or not math.isfinite(taken) or taken < 0):
            return 400, {"error": f"'time_taken_s' is {taken!r}; expected seconds >= 0"}
        if pair not in self.index:
            return 404, {"error": f"no pair {pair!r} is waiting for an answer"}
        i = self.index[pair]
        now = time.time()
        with self._lock:
            if i in self.answered:
                return 409, {"error": f"pair {pair} is already answered"}
            self.answered.add(i)
            served = self.shown.get(i, now)
        label, outcome = CHOICES[choice]
        info = {"annotator": self.annotator, "choice": choice, "answered_at": now,
                "time_taken_s": float(taken) if taken is not None else round(now - served, 3),
                "server_time_taken_s": round(now - served, 3)}
        given = _Given(i, Answer(i, label, outcome, info))
        self.given.put(given)
        if not given.saved.wait(timeout_s):
            return 503, {"error": "the label store did not confirm the answer in time; reload the page"}
        return 200, self.state()


class LabelingServer:
    """The web app of one :class:`LabelingSession`, served by uvicorn in a thread.

    Args:
        session: what to serve.
        host: address to bind (default 127.0.0.1: this machine only).
        port: TCP port; 0 picks a free one (see :attr:`url`).
        token: when set, every request must carry it (``?token=`` or the ``X-Token`` header).
    """

    def __init__(self, session: LabelingSession, host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        self.session, self.host, self.port, self.token = session, host, int(port), token or None
        self._server = None
        self._thread: threading.Thread | None = None

    def app(self):
        """The Starlette app: ``/`` (page), ``/api/state``, ``/api/answer`` and ``/clips/<name>``."""
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
        from starlette.routing import Route

        session, token = self.session, self.token

        def allowed(request: Request) -> bool:
            given = request.query_params.get("token") or request.headers.get("x-token") or ""
            return token is None or secrets.compare_digest(given.encode(), token.encode())

        def refused() -> Response:
            return JSONResponse({"error": "this labeling session needs its token: open the address the job printed"},
                                status_code=401)

        def page(request: Request) -> Response:
            if not allowed(request):
                return refused()
            return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

        def state(request: Request) -> Response:
            if not allowed(request):
                return refused()
            return JSONResponse(session.state(), headers={"Cache-Control": "no-store"})

        async def answer(request: Request) -> Response:
            from starlette.concurrency import run_in_threadpool

            if not allowed(request):
                return refused()
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError) as error:
                return JSONResponse({"error": f"the body is not JSON ({error})"}, status_code=400)
            status, out = await run_in_threadpool(session.give, body)
            return JSONResponse(out, status_code=status)

        def clip(request: Request) -> Response:
            if not allowed(request):
                return refused()
            path = session.clip_path(request.path_params["name"])
            if path is None:
                return JSONResponse({"error": "no such clip"}, status_code=404)
            return FileResponse(path, media_type="video/webm")

        return Starlette(routes=[Route("/", page), Route("/api/state", state), Route("/api/answer", answer, methods=["POST"]),
                                 Route("/clips/{name:path}", clip)])

    def start(self) -> str:
        """Serve in a background thread; returns the address to open (with the token).

        Raises:
            OSError: the port is taken (the message names it and says how to pick another).
        """
        import uvicorn

        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        failed: list[BaseException] = []

        def serve() -> None:
            try:
                self._server.run()
            except BaseException as error:  # noqa: BLE001 - SystemExit when the port is taken
                failed.append(error)

        self._thread = threading.Thread(target=serve, name="labeling-page", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise OSError(f"the labeling page cannot listen on {self.host}:{self.port} ({failed[0] if failed else 'stopped'});"
                          " pick another with labeler.teacher.port=... (0: any free port)")
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self.url

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def stop(self) -> None:
        """Stop serving (waits for the thread)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


class HumanLabeler(Labeler):
    """Preference labels from a person through the browser page (see the module docstring).

    :meth:`answers` serves the pairs it is asked about (those the store lacks), yields each answer
    as the person gives it, and returns when all are answered or :meth:`stop` is called.

    Args:
        annotator: the person's name, kept with every answer and part of the store key.
        task: the task description shown on the page.
        fps: clip frame rate (Hz), normally the task's control rate.
        clip_size: the longer side of a clip in pixels, at least (integer upscaling).
        host: address to bind; ``127.0.0.1`` (default) serves this machine only.
        port: TCP port (0: any free port).
        token: a session token every request must carry (None: none; ``auto``: a random one).
        open_browser: open the address in the default browser.
        on_start: called with the address once the page is served (default: print it).

    Raises:
        ValueError: an empty annotator, fps <= 0 or clip_size < 16.
    """

    name = "human"
    needs_frames: ClassVar[bool] = True

    def __init__(self, annotator: str = "annotator", task: str = "", fps: float = 10.0, clip_size: int = 256,
                 host: str = "127.0.0.1", port: int = 8765, token: str | None = None, open_browser: bool = False,
                 on_start=None):
        if not str(annotator).strip():
            raise ValueError("labeler.teacher.annotator is empty; give the person's name")
        if not fps > 0 or clip_size < 16:
            raise ValueError(f"labeler.teacher.fps={fps} (> 0) and clip_size={clip_size} (>= 16)")
        self.annotator, self.task, self.fps, self.clip_size = str(annotator).strip(), str(task), float(fps), int(clip_size)
        self.host, self.port, self.open_browser = host, int(port), bool(open_browser)
        self.token = secrets.token_urlsafe(16) if token == "auto" else (str(token) if token else None)
        self.on_start = on_start or (lambda url: print(f"label in the browser: open {url}", flush=True))
        self.server: LabelingServer | None = None
        self._stop = threading.Event()

    def settings(self) -> dict[str, Any]:
        return {"annotator": self.annotator, "task": self.task, "fps": self.fps, "clip_size": self.clip_size}

    def stop(self) -> None:
        """Make a running :meth:`answers` return after the answer in hand (from another thread)."""
        self._stop.set()

    def answers(self, episodes: Sequence, pairs: np.ndarray, segment_length: int, seed: int = 0,
                workdir: Path | None = None) -> Iterator[Answer]:
        """Serve ``pairs (N, 2, 2)`` on the page and yield each answer once the store has it.

        Clips are cached in ``workdir/clips`` (a temporary folder without ``workdir``).

        Raises:
            ValueError: an episode of a pair has no frames.
            OSError: the page cannot listen on ``host:port``.
        """
        pairs = np.asarray(pairs, dtype=np.int64)
        for e in np.unique(pairs[..., 0]):
            if getattr(episodes[e], "frames", None) is None:
                raise ValueError(f"episode {e} has no frames; the human labeler needs a dataset collected with "
                                 "dataset.frames=true")
        temporary = tempfile.TemporaryDirectory(prefix="embodied-clips-") if workdir is None else None
        clip_dir = Path(temporary.name) if temporary else Path(workdir) / "clips"
        session = LabelingSession(episodes, pairs, segment_length, clip_dir, self.fps, self.clip_size, self.annotator,
                                  self.task)
        self._stop.clear()
        self.server = LabelingServer(session, self.host, self.port, self.token)
        try:
            url = self.server.start()
            self.on_start(url)
            if self.open_browser:
                import webbrowser

                webbrowser.open(url)
            remaining = len(pairs)
            while remaining and not self._stop.is_set():
                try:
                    given = session.given.get(timeout=0.2)
                except queue.Empty:
                    continue
                yield given.answer  # label_pairs writes it to the store before asking for the next
                given.saved.set()
                remaining -= 1
        finally:
            self.server.stop()
            if temporary:
                temporary.cleanup()


__all__ = ["CHOICES", "HumanLabeler", "LabelingServer", "LabelingSession", "pair_id", "render_clip", "segment_frames"]
