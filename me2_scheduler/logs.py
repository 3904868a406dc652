"""Logging for every process of the service: one line per record on stderr.

Two encodings, as go-zero's ``Log.Encoding`` (default ``json``, as go-zero's
logx; the demo and test configs set ``plain`` for people to read):

- ``plain``: ``<timestamp>\\t<level>\\t<content>\\t<key>=<value>...``, for example
  ``2026-11-27T17:00:00.123+08:00\\tinfo\\t[TaskExecutor] 开始调度分身: 42\\trole=worker[3]``
  ``\\tpid=1234\\tcaller=executor.py:88`` (one line).
  The content comes first and stays verbatim (the seed's Chinese lines included);
  ``role``, ``pid``, any ``extra={...}`` fields and ``caller`` follow as
  tab-separated ``key=value`` fields, which is how go-zero writes its own fields,
  so ``grep 'role=worker'`` picks out one role. A traceback follows on the
  next lines.
- ``json``: one object per line with ``@timestamp``, ``level``, ``content``,
  ``role``, ``pid``, ``caller`` and the ``extra`` fields (``avatar_id`` ...).

Levels are go-zero's: ``debug``, ``info``, ``error``, ``severe`` (Python's
CRITICAL). Python's WARNING is written as ``warn`` and shown from ``info`` up.
``setup_logging`` is called by the supervisor and again in each child after
fork with the child's role; it replaces only the handler it installed before.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from me2_scheduler.config import LogConf
from me2_scheduler.errors import ConfigError

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "error": logging.ERROR,
    "severe": logging.CRITICAL,
}
LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "severe",
}
ENCODINGS = ("plain", "json")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class _ServiceFormatter(logging.Formatter):
    """Shared parts of both encodings: timestamp, level name, content, fields."""

    def __init__(self, role: str, tz: tzinfo | None) -> None:
        super().__init__()
        self.role = role
        self.tz = tz

    def timestamp(self, record: logging.LogRecord) -> str:
        """The record's time as go-zero writes it: ISO 8601, milliseconds, UTC offset."""
        moment = datetime.fromtimestamp(record.created, self.tz)
        if self.tz is None:
            moment = moment.astimezone()  # attach the local offset
        return moment.isoformat(timespec="milliseconds")

    def content(self, record: logging.LogRecord) -> str:
        """The message with its arguments, then the traceback if there is one."""
        return record.getMessage() + self.trace(record)

    def trace(self, record: logging.LogRecord) -> str:
        """The traceback and stack of a record, each after a newline; "" if none."""
        text = ""
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """``role``, ``pid`` (taken at emit time, so right after a fork), extras, ``caller``."""
        found: dict[str, Any] = {"role": self.role, "pid": record.process}
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                found[key] = value
        found["caller"] = f"{record.filename}:{record.lineno}"
        return found


class PlainFormatter(_ServiceFormatter):
    """go-zero's plain encoding: tab-separated, content first, then ``key=value`` fields.

    A traceback follows on the next lines, after the fields, so the first line
    of a crash report still carries ``role=`` and ``pid=`` for grep.
    """

    def format(self, record: logging.LogRecord) -> str:
        head = [self.timestamp(record), level_name(record.levelno), record.getMessage()]
        tail = [f"{key}={value}" for key, value in self.fields(record).items()]
        return "\t".join(head + tail) + self.trace(record)


class JsonFormatter(_ServiceFormatter):
    """go-zero's json encoding: one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "@timestamp": self.timestamp(record),
            "level": level_name(record.levelno),
            "content": self.content(record),
        }
        entry.update(self.fields(record))
        return json.dumps(entry, ensure_ascii=False, default=str)


class _ServiceHandler(logging.StreamHandler):
    """Marks the handler ``setup_logging`` owns, so a second call replaces only it."""


def level_name(levelno: int) -> str:
    """The go-zero level name for a Python level number (in-between levels round down)."""
    for threshold in sorted(LEVEL_NAMES, reverse=True):
        if levelno >= threshold:
            return LEVEL_NAMES[threshold]
    return "debug"


def make_formatter(conf: LogConf, role: str, timezone: str = "") -> logging.Formatter:
    """Build the formatter for ``conf.encoding``; raise ``ConfigError`` for an unknown one."""
    tz = ZoneInfo(timezone) if timezone else None
    if conf.encoding == "plain":
        return PlainFormatter(role, tz)
    if conf.encoding == "json":
        return JsonFormatter(role, tz)
    raise ConfigError(
        "Log.Encoding", f"must be one of {', '.join(ENCODINGS)}, not {conf.encoding!r}"
    )


def setup_logging(conf: LogConf, role: str = "supervisor", *, timezone: str = "") -> None:
    """Send the root logger to stderr in ``conf``'s encoding and level, labelled ``role``.

    ``timezone`` is the service ``Timezone`` (IANA name; "" = the server's local
    zone) the timestamps are written in. Safe to call again after a fork: the
    handler from a previous call is closed and replaced by one on this
    process's ``sys.stderr``. Raises ``ConfigError`` for an unknown
    ``Log.Level`` or ``Log.Encoding``.
    """
    if conf.level not in LEVELS:
        raise ConfigError("Log.Level", f"must be one of {', '.join(LEVELS)}, not {conf.level!r}")
    handler = _ServiceHandler(sys.stderr)
    handler.setFormatter(make_formatter(conf, role, timezone))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS[conf.level])
    # No formatter here prints a thread or multiprocessing name: don't look
    # them up for every record (a worker writes two records per dispatch).
    logging.logThreads = False
    logging.logMultiprocessing = False
