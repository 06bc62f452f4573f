"""Preference labels from a vision-language model over an OpenAI-compatible chat-completions API.

RL-VLM-F (Wang et al., "RL-VLM-F: Reinforcement Learning from Vision Language Foundation Model
Feedback", ICML 2024) asks in two stages for each pair of images: first an **analysis** (what each
image shows and how far each is from the goal), then, with that analysis in the prompt, a
**label**: ``0`` (image 1 is better), ``1`` (image 2 is better) or ``-1`` (no difference /
unsure). A segment is shown as the frame after its last step (``frames_per_segment=1``, as in the
paper with single-frame segments) or as a strip of evenly spaced frames.

Robustness, as a long labeling job against a hosted model needs:

- ``concurrency`` requests in flight, a client-side rate limit (``requests_per_minute``), a
  timeout per request, and retries with exponential backoff and jitter on 429, 5xx, timeouts
  and connection errors (``Retry-After`` honoured). Other 4xx answers (bad model name, bad key)
  stop the job with :class:`VLMRequestError`.
- An answer that cannot be parsed is an **abstain**, counted in the provenance, never a silent 0.
  A pair that still fails after all retries is an abstain too, counted as ``failed`` and not
  cached, so a rerun asks again.
- A persistent cache (SQLite, one row per request, committed as each answer arrives) keyed by
  the SHA-256 of everything the answer depends on (model, prompts, stage, images, analysis): a
  rerun, also after a kill, never sends a request whose answer it already received.
- Optional swap check: ask again with the images swapped and keep only consistent labels.
- The API key is read from the environment variable named by ``api_key_env`` and only ever put
  in the ``Authorization`` header: never logged, cached or stored in provenance.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import httpx
import numpy as np
from tqdm.auto import tqdm

from reward_models.labeling import Answer, Labeler, SQLiteTable
from reward_models.preferences import ABSTAIN, FIRST, SECOND, TIE

ANALYSIS_PROMPT = (
    "You will see two images of a robot doing a task. The goal of the task is: {task}.\n"
    "1. Describe what is shown in Image 1.\n"
    "2. Describe what is shown in Image 2.\n"
    "3. Compare the two images: is there a difference between them in how far the goal is achieved? "
    "Explain briefly."
)
LABEL_PROMPT = (
    "The goal of the task is: {task}. Here is an analysis of the two images:\n{analysis}\n"
    "Based on the images and the analysis, is the goal better achieved in Image 1 or in Image 2?\n"
    "Reply with a single line holding only 0 if Image 1 is better, 1 if Image 2 is better, "
    "or -1 if there is no difference or you are unsure."
)
#: AlignDiff's attribute question (Dong et al., ICLR 2024: annotators compare two
#: clips in one attribute), asked in RL-VLM-F's two stages; each image is a strip of frames.
ATTRIBUTE_ANALYSIS_PROMPT = (
    "You will see two clips of a robot doing a task, each shown as a strip of frames in time order from left to "
    "right. The task is: {task}.\n"
    "1. Describe how the robot moves in Image 1.\n"
    "2. Describe how the robot moves in Image 2.\n"
    "3. Compare the two clips with this question in mind: {question} Explain briefly."
)
ATTRIBUTE_LABEL_PROMPT = (
    "The task is: {task}. Here is an analysis of the two clips:\n{analysis}\n"
    "Question: {question}\n"
    "Reply with a single line holding only 0 if the answer is Image 1, 1 if it is Image 2, "
    "or -1 if there is no difference or you are unsure."
)
_ANSWER = re.compile(r"^[\s*_`'\"(\[]*(-1|0|1)[\s*_`'\".)\]]*$")
# "Answer: 1", "Final answer is **0**.", "answer = -1" ending a line (RL-VLM-F's own answer style)
_LABELLED_ANSWER = re.compile(r"\banswer\b[\s*_`'\"]*(?:is)?[\s*_`'\"]*[:=]?[\s*_`'\"(\[]*(-1|0|1)[\s*_`'\".)\]]*$",
                              re.IGNORECASE | re.MULTILINE)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class VLMRequestError(RuntimeError):
    """The API refused a request in a way retrying cannot fix (e.g. 400, 401, 404)."""


def parse_label(answer: str) -> int | None:
    """The label in a stage-2 answer: ``0``, ``1`` or ``-1``; ``None`` when it cannot be parsed.

    Accepted: the number alone on the last non-empty line (punctuation around it is allowed,
    e.g. ``"1."`` or ``"**0**"``), or else the last line that ends in a labelled answer
    (``"... Answer: 1"``, ``"The final answer is **0**."``, ``"answer = -1"``). Anything else,
    including ``"Answer: 1 or 0"`` and numbers other than -1, 0, 1, is unparseable.
    """
    lines = [line.strip() for line in str(answer).strip().splitlines() if line.strip()]
    if not lines:
        return None
    match = _ANSWER.match(lines[-1])
    if match:
        return int(match.group(1))
    labelled = _LABELLED_ANSWER.findall("\n".join(lines))
    return int(labelled[-1]) if labelled else None


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3) uint8`` image.

    Raises:
        ValueError: wrong shape or dtype.
    """
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class AnswerCache(SQLiteTable):
    """Request hash -> answer text, in an SQLite file; safe across threads and kills.

    Args:
        path: the database file (created with its folder). ``None``: an in-memory cache.
    """

    def __init__(self, path: str | Path | None):
        super().__init__(path, "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, "
                               "stage TEXT NOT NULL, created REAL NOT NULL);")

    def get(self, key: str) -> str | None:
        rows = self._read("SELECT answer FROM answers WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def put(self, key: str, answer: str, stage: str) -> None:
        self._write("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, answer, stage, time.time()))


class _RateLimiter:
    """At most ``per_minute`` request starts a minute, evenly spaced (0 = no limit)."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


class _RequestFailed(Exception):
    """Retries exhausted for one request."""


class ChatAPI:
    """The request machinery every VLM client here shares: an OpenAI-compatible chat-completions
    API, a client-side rate limit, retries with backoff on 429, 5xx, timeouts and connection
    errors, a persistent answer cache and request counters (see the module docstring).

    Raises:
        ValueError: a bad setting (named).
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4,
                 requests_per_minute: float = 60.0, timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
                 backoff_max_s: float = 30.0, max_tokens: int = 512, temperature: float = 0.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={base_url!r}; expected an http:// or https:// URL of an OpenAI-compatible API")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or requests_per_minute < 0:
            raise ValueError("concurrency >= 1, max_retries >= 0, timeout_s > 0 and requests_per_minute >= 0 expected; "
                             f"got {concurrency}, {max_retries}, {timeout_s}, {requests_per_minute}")
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.concurrency, self.timeout_s, self.max_retries = int(concurrency), float(timeout_s), int(max_retries)
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.requests_per_minute = float(requests_per_minute)
        self.max_tokens, self.temperature = int(max_tokens), float(temperature)
        self.prompt_hash = ""
        self.counts: Counter = Counter()
        self._counts_lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self.counts[name] += 1

    def _client(self) -> httpx.Client:
        """An HTTP client for the API, with the key (if set) in the ``Authorization`` header only."""
        key = os.environ.get(self.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s)

    # -- HTTP -----------------------------------------------------------------------------
    def _messages(self, text: str, images: Sequence[bytes]) -> list[dict]:
        content: list[dict] = []
        for i, png in enumerate(images, start=1):
            content.append({"type": "text", "text": f"Image {i}:"})
            content.append({"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}})
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}]

    def _post(self, client: httpx.Client, limiter: _RateLimiter, messages: list[dict]) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens, "temperature": self.temperature}
        reason = ""
        for attempt in range(self.max_retries + 1):
            limiter.wait()
            self._count("requests")
            wait = None
            try:
                response = client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                self._count(f"retry_{type(error).__name__}")
                reason = f"{type(error).__name__} ({error or 'no detail'}) at {self.base_url}/chat/completions"
            else:
                if response.status_code == 200:
                    try:
                        return str(response.json()["choices"][0]["message"]["content"] or "")
                    except (ValueError, KeyError, IndexError, TypeError):
                        self._count("retry_malformed_response")
                        reason = f"a malformed response from {self.base_url}/chat/completions: {response.text[:200]!r}"
                elif response.status_code in RETRY_STATUS:
                    self._count(f"retry_http_{response.status_code}")
                    reason = f"HTTP {response.status_code} from {self.base_url}/chat/completions"
                    try:
                        wait = float(response.headers.get("retry-after", ""))
                    except ValueError:
                        wait = None
                else:
                    raise VLMRequestError(
                        f"{self.base_url}/chat/completions answered HTTP {response.status_code} for model "
                        f"{self.model!r}: {response.text[:300]!r}; check base_url, model and the key in ${self.api_key_env}"
                    )
            if attempt < self.max_retries:
                self._count("retries")
                backoff = min(self.backoff_max_s, self.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
                time.sleep(max(backoff, wait or 0.0))
        raise _RequestFailed(f"{reason}, after {self.max_retries + 1} tries")

    def _ask(self, client, limiter, cache: AnswerCache, stage: str, key_parts: list[str], text: str,
             images: Sequence[bytes]) -> str:
        key = hashlib.sha256(json.dumps([self.model, self.prompt_hash, stage, *key_parts]).encode()).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            self._count("cache_hits")
            return cached
        answer = self._post(client, limiter, self._messages(text, images))
        cache.put(key, answer, stage)
        return answer


class VLMPreferenceLabeler(ChatAPI, Labeler):
    """RL-VLM-F two-stage preference labels from an OpenAI-compatible chat-completions API.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is added).
        model: the model name the server expects.
        task: the goal, in words, put into both prompts.
        api_key_env: name of the environment variable holding the key (unset: no ``Authorization``).
        concurrency: requests in flight. Default 4.
        requests_per_minute: client-side rate limit (0 = none). Default 60.
        timeout_s: seconds per request. Default 60.
        max_retries: retries of a request after the first try. Default 5.
        backoff_s: first backoff in s, doubled each retry, with jitter, capped at ``backoff_max_s``.
        backoff_max_s: cap of one backoff in s. Default 30.
        swap_check: also ask with the images swapped; inconsistent pairs abstain. Default False.
        unsure_as: what an answer of ``-1`` becomes: ``tie`` (default) or ``abstain``.
        frames_per_segment: frames shown per segment, tiled left to right. Default 1 (the last).
        max_tokens: answer length cap per stage. Default 512.
        temperature: sampling temperature. Default 0.
        cache_path: the answer cache file; None: ``<workdir>/vlm_cache.sqlite`` when labeling
            with a ``workdir``, else in memory.
        progress: show a progress bar.

    Raises:
        ValueError: a bad setting (named).
    """

    name = "vlm"
    needs_frames = True

    def __init__(self, base_url: str, model: str, task: str, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, requests_per_minute: float = 60.0, timeout_s: float = 60.0,
                 max_retries: int = 5, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 swap_check: bool = False, unsure_as: str = "tie", frames_per_segment: int = 1,
                 max_tokens: int = 512, temperature: float = 0.0, cache_path: str | None = None,
                 progress: bool = True):
        super().__init__(base_url, model, api_key_env, concurrency, requests_per_minute, timeout_s, max_retries, backoff_s,
                         backoff_max_s, max_tokens, temperature)
        if frames_per_segment < 1:
            raise ValueError(f"frames_per_segment={frames_per_segment}; expected >= 1")
        if unsure_as not in ("tie", "abstain"):
            raise ValueError(f"unsure_as={unsure_as!r}; expected 'tie' or 'abstain'")
        if not task.strip():
            raise ValueError("task is empty; describe the goal in words for the prompts")
        self.task = task.strip()
        self.swap_check, self.unsure_as, self.frames_per_segment = bool(swap_check), unsure_as, int(frames_per_segment)
        self.cache_path, self.progress = cache_path, progress
        self.prompt_hash = hashlib.sha256((ANALYSIS_PROMPT + "\0" + LABEL_PROMPT).encode()).hexdigest()[:16]

    # -- images ---------------------------------------------------------------------------
    def segment_image(self, episode, start: int, segment_length: int) -> np.ndarray:
        """The image shown for a segment: frames after its steps, ``frames_per_segment`` of them tiled
        (a segment running past a termination shows the episode's last frame)."""
        last = min(start + segment_length, len(episode.frames) - 1)  # frame after the segment's last step
        k = min(self.frames_per_segment, segment_length)
        index = np.linspace(min(start + 1, last), last, k).round().astype(int) if k > 1 else np.array([last])
        return np.concatenate([episode.frames[i] for i in index], axis=1)

    def _prompts(self) -> tuple[str, str]:
        """The stage-1 prompt and the stage-2 template (with an ``{analysis}`` field)."""
        return ANALYSIS_PROMPT.format(task=self.task), LABEL_PROMPT.replace("{task}", self.task)

    def _query(self, client, limiter, cache, image_1: bytes, image_2: bytes) -> int | None:
        """One two-stage query; the parsed label (0, 1, -1) or None (unparseable)."""
        hashes = [hashlib.sha256(image_1).hexdigest(), hashlib.sha256(image_2).hexdigest()]
        analysis_prompt, label_template = self._prompts()
        analysis = self._ask(client, limiter, cache, "analysis", [*hashes, analysis_prompt], analysis_prompt,
                             [image_1, image_2])
        answer = self._ask(client, limiter, cache, "label", [*hashes, analysis, label_template],
                           label_template.replace("{analysis}", analysis), [image_1, image_2])
        return parse_label(answer)

    def _label_pair(self, client, limiter, cache, image_a: bytes, image_b: bytes) -> tuple[float, str] | tuple[float, str, str]:
        try:
            forward = self._query(client, limiter, cache, image_a, image_b)
            backward = self._query(client, limiter, cache, image_b, image_a) if self.swap_check else None
        except _RequestFailed as error:
            return ABSTAIN, "failed", str(error)
        if forward is None or (self.swap_check and backward is None):
            return ABSTAIN, "unparseable"
        if self.swap_check:
            mirrored = {0: 1, 1: 0, -1: -1}[backward]
            if mirrored != forward:
                return ABSTAIN, "swap_inconsistent"
        if forward == -1:
            return (TIE, "unsure") if self.unsure_as == "tie" else (ABSTAIN, "unsure")
        return (FIRST if forward == 0 else SECOND), "answered"

    def settings(self) -> dict:
        """What the answers depend on: model, base URL, prompt hash, task, and how labels are read
        (the API key is never part of it)."""
        return {"model": self.model, "base_url": self.base_url, "prompt_hash": self.prompt_hash, "task": self.task,
                "swap_check": self.swap_check, "unsure_as": self.unsure_as,
                "frames_per_segment": self.frames_per_segment, "temperature": self.temperature,
                "max_tokens": self.max_tokens}

    def run_counts(self) -> dict[str, int]:
        """Requests, retries and cache hits of the last :meth:`answers` call."""
        return {k: int(v) for k, v in self.counts.items()}

    def answers(self, episodes: Sequence, pairs: np.ndarray, segment_length: int, seed: int = 0,
                workdir: Path | None = None) -> Iterator[Answer]:
        """Answers for ``pairs (N, 2, 2)`` of ``(episode, start)`` segments, as the requests
        complete (``concurrency`` in flight). Outcomes: answered, unsure, unparseable,
        swap_inconsistent, and failed (retries exhausted; not stored, asked again on a rerun).
        Request-level answers are also cached in ``cache_path`` (default
        ``<workdir>/vlm_cache.sqlite``).

        Raises:
            ValueError: an episode of a pair has no frames.
            VLMRequestError: the API refused a request for good (400, 401, 404, ...).
        """
        pairs = np.asarray(pairs, dtype=np.int64)
        for e in np.unique(pairs[..., 0]):
            if episodes[e].frames is None:
                raise ValueError(f"episode {e} has no frames; the VLM labeler needs a dataset collected with dataset.frames=true")
        self.counts = Counter()
        path = self.cache_path or (Path(workdir) / "vlm_cache.sqlite" if workdir else None)
        cache = AnswerCache(path)
        limiter = _RateLimiter(self.requests_per_minute)
        png_cache: dict[tuple[int, int], bytes] = {}

        def image(e: int, s: int) -> bytes:
            if (e, s) not in png_cache:
                png_cache[(e, s)] = encode_png(self.segment_image(episodes[e], s, segment_length))
            return png_cache[(e, s)]

        try:
            with self._client() as client, \
                    ThreadPoolExecutor(self.concurrency) as pool:
                futures = {pool.submit(self._label_pair, client, limiter, cache, image(*pair[0]), image(*pair[1])): i
                           for i, pair in enumerate(pairs)}
                try:
                    bar = tqdm(as_completed(futures), total=len(futures), desc="vlm labels", unit="pair",
                               disable=not self.progress)
                    for future in bar:
                        label, outcome, *error = future.result()
                        yield Answer(futures[future], float(label), outcome, {"error": error[0]} if error else {})
                finally:
                    for future in futures:
                        future.cancel()
        finally:
            cache.close()


class VLMAttributeLabeler(VLMPreferenceLabeler):
    """Attribute preference labels (AlignDiff) from a VLM: for two clips, which one shows *more*
    of one attribute ("In which clip does the gripper move faster?"), asked in RL-VLM-F's two
    stages. One labeler asks about one attribute; its settings include the question, so the
    label store keeps each attribute's answers apart. Same client, cache, retries, abstains and
    swap check as :class:`VLMPreferenceLabeler`; label 1 means the second clip is stronger.

    Args:
        question: the attribute question, phrased so that the answer names the clip in which the
            attribute is *stronger* (the task config's ``attributes.<name>.question``).
        frames_per_segment: frames of the clip tiled left to right. Default 4 (speed and
            smoothness need motion).
        **kwargs: :class:`VLMPreferenceLabeler`'s settings.

    Raises:
        ValueError: an empty question, or a bad setting (named).
    """

    name = "vlm_attribute"

    def __init__(self, base_url: str, model: str, task: str, question: str, frames_per_segment: int = 4, **kwargs):
        super().__init__(base_url, model, task, frames_per_segment=frames_per_segment, **kwargs)
        if not str(question).strip():
            raise ValueError("question is empty; ask which clip shows more of the attribute")
        self.question = str(question).strip()
        self.prompt_hash = hashlib.sha256((ATTRIBUTE_ANALYSIS_PROMPT + "\0" + ATTRIBUTE_LABEL_PROMPT).encode()).hexdigest()[:16]

    def _prompts(self) -> tuple[str, str]:
        fields = {"task": self.task, "question": self.question}
        return (ATTRIBUTE_ANALYSIS_PROMPT.format(**fields),
                ATTRIBUTE_LABEL_PROMPT.replace("{task}", self.task).replace("{question}", self.question))

    def settings(self) -> dict:
        """:meth:`VLMPreferenceLabeler.settings` and the question."""
        return {**super().settings(), "question": self.question}
