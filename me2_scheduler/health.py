"""What the children know about the service's dependencies, handed to the supervisor's /healthz.

Why small files and not a probe in the supervisor: the supervisor holds no
MySQL, Redis or gRPC object (DESIGN §1; children are forked from it at any
time, and a socket open in the parent at a fork would live on in the child),
so only the children can say how MySQL, Redis, Action, Diary and etcd answer
them. Why not a Prometheus gauge in the multiprocess dir: a gauge carries a
number, and an operator needs the reason (``mysql: (2003) Can't connect``).

So a child with something to say keeps a ``Board`` (one per process, made on
first use after the fork) and writes ``<dir>/<pid>.json`` atomically (a temp
file renamed over it) when what it reports changes, and again every
``REFRESH_S`` while a problem lasts. ``/healthz`` reads the files of the live
children (a dozen files of a few hundred bytes: the same cost whatever the
load), ignores a problem nobody confirmed within ``STALE_S`` (say, a client
that is no longer called), and the supervisor deletes a reaped child's file.
The dir is ``$ME2_SCHEDULER_HEALTH_DIR``, set by the supervisor before it
forks; without it (a CLI command, a test) a board keeps its state in memory.

``down`` is for what the service cannot work without (MySQL, Redis): it makes
``/healthz`` answer 503. ``degraded`` (Action, Diary, etcd in trouble) is
listed under a 200: the service still serves its API and keeps every avatar.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

HEALTH_DIR_ENV = "ME2_SCHEDULER_HEALTH_DIR"
REFRESH_S = 5.0  # a lasting problem is written again this often, so it never looks stale
STALE_S = 60.0  # a problem not confirmed for this long is no longer shown
MAX_REASON = 300
MAX_LABELS = 3  # reporters named on one line; the rest are counted

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    """How a dependency answers, best first."""

    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def rank(self) -> int:
        """0 for ok, 1 degraded, 2 down: the worse the higher."""
        return list(State).index(self)


@dataclass(frozen=True)
class Status:
    """A dependency's state, why, since when and when last confirmed (epoch seconds)."""

    state: State
    reason: str = ""
    since: float = 0.0
    seen: float = 0.0


@dataclass(frozen=True)
class ChildReport:
    """What one child wrote: the address it listens on ("" if none) and its dependencies."""

    listening: str
    dependencies: dict[str, Status]


def one_line(reason: str) -> str:
    """``reason`` on one line of at most ``MAX_REASON`` characters."""
    text = " ".join(reason.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class Board:
    """This process's view of its dependencies; thread-safe.

    Several sources (two clients of one service, say) may report on one
    dependency; the worst of them is what the process reports.
    """

    def __init__(self, directory: Path | None) -> None:
        self._path = None if directory is None else directory / f"{os.getpid()}.json"
        self._lock = threading.Lock()
        self._sources: dict[tuple[str, str], Status] = {}
        self._listening = ""
        self._written: object = None
        self._written_at = 0.0

    def report(self, dependency: str, source: str, state: State, reason: str = "") -> None:
        """Note ``dependency``'s state as ``source`` sees it; write the file if that changes."""
        now = time.time()
        reason = one_line(reason) if state is not State.OK else ""
        with self._lock:
            old = self._sources.get((dependency, source))
            since = old.since if old is not None and old.state is state else now
            self._sources[(dependency, source)] = Status(state, reason, since, now)
            self._write(now)

    def announce_listening(self, address: str) -> None:
        """Say that this process serves on ``address`` (the rpc_server, once started)."""
        with self._lock:
            self._listening = address
            self._write(time.time())

    def snapshot(self) -> ChildReport:
        """The worst state per dependency and the address listened on, as written."""
        with self._lock:
            return ChildReport(self._listening, self._worst())

    def _worst(self) -> dict[str, Status]:
        worst: dict[str, Status] = {}
        for (dependency, _source), status in sorted(self._sources.items()):
            held = worst.get(dependency)
            if held is None or status.state.rank > held.state.rank:
                worst[dependency] = status
        return worst

    def _write(self, now: float) -> None:
        """Write the file when what it says changed, or to refresh a lasting problem."""
        if self._path is None:
            return
        worst = self._worst()
        said = (self._listening, {name: (s.state, s.reason) for name, s in worst.items()})
        lasting = any(s.state is not State.OK for s in worst.values())
        if said == self._written and not (lasting and now - self._written_at >= REFRESH_S):
            return
        self._written, self._written_at = said, now
        content = {
            "listening": self._listening,
            "dependencies": {
                name: {**asdict(status), "state": status.state.value}
                for name, status in worst.items()
            },
        }
        temp = self._path.with_suffix(".tmp")
        try:
            temp.write_text(json.dumps(content))
            os.replace(temp, self._path)
        except OSError as exc:  # the supervisor is gone, or removed the dir at its exit
            log.debug("cannot write %s: %s", self._path, exc)


_board: tuple[int, Board] | None = None
_board_lock = threading.Lock()


def board() -> Board:
    """This process's board (a board inherited through fork is the parent's: start afresh)."""
    global _board
    with _board_lock:
        if _board is None or _board[0] != os.getpid():
            directory = os.environ.get(HEALTH_DIR_ENV, "")
            _board = (os.getpid(), Board(Path(directory) if directory else None))
        return _board[1]


def report(dependency: str, source: str, state: State, reason: str = "") -> None:
    """``board().report``: never raises."""
    board().report(dependency, source, state, reason)


# --- the supervisor's side ------------------------------------------------------------


def prepare_dir(base: Path) -> Path:
    """Make ``<base>/health`` empty and export it to the children; return it.

    Raises OSError when the dir cannot be made or emptied.
    """
    directory = base / "health"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in (*directory.glob("*.json"), *directory.glob("*.tmp")):
        stale.unlink()
    os.environ[HEALTH_DIR_ENV] = str(directory)
    return directory


def forget(directory: Path, pid: int) -> None:
    """Delete a reaped child's file."""
    with contextlib.suppress(OSError):
        (directory / f"{pid}.json").unlink()


def read_report(directory: Path, pid: int) -> ChildReport | None:
    """What child ``pid`` wrote, or None when it wrote nothing (or a file that does not parse)."""
    try:
        content = json.loads((directory / f"{pid}.json").read_text())
        dependencies = {
            name: Status(State(raw["state"]), str(raw["reason"]), raw["since"], raw["seen"])
            for name, raw in content["dependencies"].items()
        }
        return ChildReport(str(content["listening"]), dependencies)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def dependency_lines(reports: Mapping[str, ChildReport], now: float) -> list[str]:
    """One line per dependency in trouble, down first: ``down: mysql: <reason> (rpc_server[0])``.

    ``reports`` maps a child's label to its report. Per dependency the worst
    state any child reports is shown, with its reason and who reports it.
    """
    worst: dict[str, tuple[Status, list[str]]] = {}
    for label, report_ in sorted(reports.items()):
        for name, status in report_.dependencies.items():
            if status.state is State.OK or now - status.seen > STALE_S:
                continue
            held = worst.get(name)
            if held is None or status.state.rank > held[0].state.rank:
                worst[name] = (status, [label])
            elif status.state is held[0].state:
                held[1].append(label)
    ordered = sorted(worst.items(), key=lambda item: (-item[1][0].state.rank, item[0]))
    return [
        f"{status.state.value}: {name}: {status.reason} ({_who(labels)})"
        for name, (status, labels) in ordered
    ]


def _who(labels: list[str]) -> str:
    shown = ", ".join(labels[:MAX_LABELS])
    more = len(labels) - MAX_LABELS
    return f"{shown} and {more} more" if more > 0 else shown
