"""What the Hydra entry points share: the task check, the run folder and its console log."""

from __future__ import annotations

import abc
import datetime as _dt
import logging
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from embodied.config import available_tasks

_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--version", "--cfg", "-c", "--shell-completion", "-sc"}


def task_given(argv: Sequence[str]) -> bool:
    """Whether the command line selects a task (``+task=NAME`` or ``task=NAME``)."""
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == "task" and "=" in arg:
            return True
    return False


def require_task(job: str, argv: Sequence[str] | None = None) -> None:
    """Exit with status 2 and a message naming ``+task=`` and the tasks when none is selected.

    Help and info flags pass through to Hydra.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if task_given(argv) or _HELP_FLAGS.intersection(a.split("=", 1)[0] for a in argv):
        return
    tasks = available_tasks()
    example = tasks[0] if tasks else "NAME"
    print(
        f"error: no task selected. Choose one with +task=NAME, for example\n"
        f"  python -m embodied.{job} +task={example}\n"
        f"available tasks: {', '.join(tasks)}",
        file=sys.stderr,
    )
    raise SystemExit(2)


def run_dir() -> Path:
    """This run's folder (Hydra's ``runtime.output_dir``), created if missing."""
    path = Path(HydraConfig.get().runtime.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


_python_formatwarning = warnings.formatwarning
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _visible(line: str) -> str:
    """What a terminal shows of ``line`` after its carriage returns: the last part with text."""
    for part in reversed(line.split("\r")):
        if part.strip():
            return part
    return ""


class _Tee:
    """A text stream that writes to the console stream and feeds a :class:`ConsoleLog`."""

    def __init__(self, stream: TextIO, log: ConsoleLog, name: str):
        self._stream, self._log, self._name = stream, log, name

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._log.feed(self._name, text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ... of the console stream
        return getattr(self._stream, name)


class ConsoleLog:
    """Copies what the console shows (stdout and stderr) into ``path`` while active.

    The file holds the console's final text, not its keystrokes: of a progress bar's redraws
    (carriage returns) only the last state of each line is written, and ANSI escape sequences
    (cursor moves of nested bars, colours) are dropped. Lines are appended and flushed as they
    end, so a killed job's log holds everything up to the kill; a rerun appends after a header
    line with the time and the command. A line that keeps being redrawn (a progress bar) is also
    written every ``snapshot_s`` seconds, so the log of a long or killed job shows its progress.
    """

    def __init__(self, path: str | Path, snapshot_s: float = 60.0):
        self.path = Path(path)
        self.snapshot_s = float(snapshot_s)
        self._snapshot: dict[str, float] = {}
        self._written: dict[str, str] = {}  # the last snapshot of each stream's pending line
        self._lines: dict[str, str] = {}
        self._file: TextIO | None = None
        self._saved: tuple[TextIO, TextIO] | None = None

    def __enter__(self) -> ConsoleLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        command = " ".join(getattr(sys, "orig_argv", sys.argv))
        self._file.write(f"# {stamp} pid {os.getpid()}: {command}\n")
        self._file.flush()
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self, "stdout"), _Tee(sys.stderr, self, "stderr")
        return self

    def feed(self, name: str, text: str) -> None:
        """Add console text of stream ``name``; complete lines go to the file."""
        if self._file is None:
            return
        pending = self._lines.get(name, "") + _ANSI.sub("", text)
        *complete, rest = pending.split("\n")
        for line in complete:
            if _visible(line) != self._written.pop(name, None):  # not already written as a snapshot
                self._file.write(_visible(line).rstrip() + "\n")
        if "\r" in rest:  # a redraw: keep only its last state, and write it every snapshot_s
            rest = _visible(rest) + ("\r" if rest.endswith("\r") else "")
            now = time.monotonic()
            if now - self._snapshot.setdefault(name, now) >= self.snapshot_s:
                self._file.write(_visible(rest).rstrip() + "\n")
                complete.append(rest)
                self._snapshot[name] = now
                self._written[name] = _visible(rest)
        if complete:
            self._file.flush()
        self._lines[name] = rest

    def write_exception(self, error: BaseException) -> None:
        """Append ``error``'s traceback to the file (the console gets it from Hydra)."""
        if self._file is not None:
            self._flush_partial()
            self._file.write("".join(traceback.format_exception(error)))
            self._file.flush()

    def _flush_partial(self) -> None:
        assert self._file is not None
        for name, rest in self._lines.items():
            if _visible(rest).strip() and _visible(rest) != self._written.get(name):
                self._file.write(_visible(rest).rstrip() + "\n")
        self._lines.clear()

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._file is not None:
            self._flush_partial()
            self._file.close()
            self._file = None


#: What a run folder holds before a job has made anything worth keeping.
_BOOKKEEPING = {".hydra", ".lock", "run_identity.json"}


def _holds_results(folder: Path, log_name: str) -> bool:
    """Whether ``folder`` holds a file other than the bookkeeping and the job's log."""
    if not folder.is_dir():
        return False
    return any(p.is_file() or (p.is_dir() and any(q.is_file() for q in p.rglob("*")))
               for p in folder.iterdir() if p.name not in _BOOKKEEPING | {log_name})


def _explicit_run_dir() -> bool:
    """Whether the command line set ``hydra.run.dir`` (then the folder is the user's choice)."""
    try:
        overrides = HydraConfig.get().overrides.hydra
    except ValueError:
        return True
    return any(str(o).split("=", 1)[0].lstrip("+~") == "hydra.run.dir" for o in overrides)


def _check_overrides(cfg: Any) -> None:
    """Refuse ``key={}`` on the command line where ``key`` is a non-empty dict of the config:
    Hydra merges a dict override into the existing one, so it would change nothing, silently.

    Raises:
        ValueError: names the key, its entries and how to change them.
    """
    try:
        config = HydraConfig.get()
        overrides = list(config.overrides.task)
    except ValueError:
        return
    import yaml
    from omegaconf import OmegaConf

    for override in overrides:
        key, _, value = str(override).partition("=")
        if key.startswith(("~", "+")) or not value.strip().startswith("{") or cfg is None:
            continue
        current = OmegaConf.select(cfg, key, default=None)
        try:
            given = yaml.safe_load(value)
        except yaml.YAMLError:
            continue
        if not OmegaConf.is_dict(current) or not isinstance(given, dict):
            continue
        kept = {k: v for k, v in OmegaConf.to_container(current).items() if k not in given}
        if not given and kept:
            raise ValueError(f"{key}={{}} changes nothing: Hydra merges a dict given on the command line into "
                             f"{key} ({kept}); set its entries instead ({key}.NAME=VALUE, ~{key}.NAME to remove one)")
        if kept:
            print(f"warning: {key}={value} also keeps {kept} from the config (Hydra merges a dict given on the "
                  f"command line into the config's); ~{key}.NAME removes an entry", file=sys.stderr)


@contextmanager
def run_folder(job: str, cfg: Any = None, redirect: Callable[[Path], Path | None] | None = None) -> Iterator[Path]:
    """The job's run folder, with the console copied into ``<folder>/<job>.log``.

    Args:
        job: the entry point's name (``train``, ``collect``, ...): names the log file.
        cfg: the job's config, to refuse command-line overrides that would change nothing
            (``key={}`` on a non-empty dict, see :func:`_check_overrides`).
        redirect: for a new folder that Hydra named (not ``hydra.run.dir``), ``redirect(folder)``
            may return another run folder to work in instead (``resume=auto`` continuing an
            unfinished run of the same identity); the new folder's ``.hydra/`` moves there and the
            new folder is removed.

    A job that fails before writing anything into a new folder (a config error, a missing
    dataset) removes that folder, and its date folder when empty: failed commands leave no run
    folders behind. The console got the error; the log is gone with the folder.
    """
    folder = run_dir()
    log_name = f"{job}.log"
    new = not _holds_results(folder, log_name)
    continued = None
    if new and redirect is not None and not _explicit_run_dir():
        other = redirect(folder)
        if other is not None and other.resolve() != folder.resolve():
            if (folder / ".hydra").is_dir():
                shutil.copytree(folder / ".hydra", other / ".hydra", dirs_exist_ok=True)
            _remove_run_folder(folder)
            for handler in logging.getLogger().handlers:  # Hydra's job log follows the job
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
                    handler.close()
                    handler.baseFilename = str(other / Path(handler.baseFilename).name)
            folder, new, continued = other, False, other
    log = ConsoleLog(folder / log_name)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        with log:
            if continued is not None:
                print(f"continuing the unfinished run {continued} (resume=auto: the same settings; resume=false "
                      "starts a new run)")
            try:
                _check_overrides(cfg)
                yield folder
            except BaseException as error:
                log.write_exception(error)
                if _clear_error(error) and os.environ.get("HYDRA_FULL_ERROR") != "1":
                    # The message names what was wrong and the fix; a traceback would bury it.
                    print(f"error: {_error_message(error)}", file=sys.stderr)
                    raise SystemExit(2) from error
                if isinstance(error, KeyboardInterrupt):
                    print(f"interrupted; rerun the same command to continue {folder}", file=sys.stderr)
                raise
    except BaseException:
        if new and not _holds_results(folder, log_name):
            _remove_run_folder(folder)
        raise
    finally:
        warnings.formatwarning = formatwarning


_OUR_PACKAGES = ("embodied", "policies", "reward_models", "envs", "real_robot")


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:
    """Our own warnings (a checkpoint fallback, ...) as one ``warning: message`` line; the others
    as Python shows them."""
    if category.__module__.split(".")[0] in _OUR_PACKAGES:
        return f"warning: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


#: Errors whose message is the whole story (a bad setting, file or answer): printed as
#: ``error: message`` with exit status 2, without a traceback (``HYDRA_FULL_ERROR=1`` keeps it; the
#: job log has it).
_CLEAR_ERRORS = (("embodied.checkpoint", "CheckpointError"), ("embodied.pipeline", "LabelingError"),
                 ("embodied.pipeline", "RunFolderError"), ("reward_models.vlm", "VLMRequestError"),
                 ("reward_models.clip", "CLIPWeightsError"), ("hydra.errors", "InstantiationException"))


def _clear_error(error: BaseException) -> bool:
    if isinstance(error, (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    return any(isinstance(error, cls) for cls in (getattr(sys.modules.get(module), name, None)
                                                  for module, name in _CLEAR_ERRORS) if isinstance(cls, type))


def _error_message(error: BaseException) -> str:
    """The message to print: a config section that failed to build (Hydra's
    ``InstantiationException``) as ``<key>: <the section's own message>``."""
    cause = error.__cause__
    if type(error).__name__ == "InstantiationException" and cause is not None and _clear_error(cause):
        key = re.search(r"full_key: (\S+)", str(error))
        if key is None or str(cause).startswith(key.group(1)):
            return str(cause)
        return f"{key.group(1)}: {cause}"
    return str(error)


def _remove_run_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # the date folder, when this was its only run
    except OSError:
        pass


class SweepCallback(Callback, abc.ABC):
    """Hydra callback of a sweep entry point (benchmark, continual): times the multirun and, when
    all its jobs have finished, calls :meth:`finish` in the launching process."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self.finish(config, time.time() - getattr(self, "started", time.time()))

    @abc.abstractmethod
    def finish(self, config: Any, wall_time_s: float) -> None:
        """Write the sweep's tables; ``wall_time_s`` is the whole sweep's."""


class TablesCallback(SweepCallback):
    """A sweep callback that, at the end, writes the sweep's tables with :meth:`aggregate`
    (``aggregate(sweep_dir, wall_time_s) -> summary``) and prints :meth:`render` of them.
    Subclasses set both as static methods (the entry point's functions)."""

    aggregate: Callable[[str, float], Any]
    render: Callable[[Any], str]

    def finish(self, config: Any, wall_time_s: float) -> None:
        summary = type(self).aggregate(config.hydra.sweep.dir, wall_time_s)
        print(type(self).render(summary))
        print(f"results: {Path(config.hydra.sweep.dir) / 'results.md'}")


def aggregate_command(job: str, aggregate: Callable[[str], Any], render: Callable[[Any], str],
                      argv: Sequence[str] | None = None) -> bool:
    """``python -m embodied.<job> aggregate <sweep folder>``: redo a sweep's tables and print them.

    Returns False when the command line is not an ``aggregate`` command (the entry point runs
    Hydra then); exits with status 2 on a wrong argument count.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "aggregate":
        return False
    if len(argv) != 2:
        print(f"usage: python -m embodied.{job} aggregate <sweep folder>", file=sys.stderr)
        raise SystemExit(2)
    print(render(aggregate(argv[1])))
    return True
