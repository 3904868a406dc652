"""Log lines in plain and JSON encodings: the seed's content verbatim, with the role's fields."""

from __future__ import annotations

import json
import logging
import os
import re
import sys

import pytest

from me2_scheduler.config import LogConf
from me2_scheduler.errors import ConfigError
from me2_scheduler.logs import JsonFormatter, PlainFormatter, setup_logging

TS_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def _record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.INFO, "executor.py", 88, message, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_plain_log_line_keeps_the_seed_content_verbatim_and_adds_role_fields() -> None:
    record = _record("[TaskExecutor] 开始调度分身: %d", 42, avatar_id=42)
    line = PlainFormatter("worker[3]", None).format(record)
    fields = line.split("\t")
    assert re.fullmatch(TS_RE, fields[0])
    assert fields[1:3] == ["info", "[TaskExecutor] 开始调度分身: 42"]
    pid = f"pid={os.getpid()}"
    assert fields[3:] == ["role=worker[3]", pid, "avatar_id=42", "caller=executor.py:88"]


def test_plain_traceback_follows_the_fields_so_the_first_line_names_the_role() -> None:
    record = _record("worker[3] crashed", exc=True)
    first, *rest = PlainFormatter("worker[3]", None).format(record).splitlines()
    assert first.split("\t")[2:5] == ["worker[3] crashed", "role=worker[3]", f"pid={os.getpid()}"]
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: boom"


def test_json_log_line_has_timestamp_level_content_and_extra_fields() -> None:
    record = _record("分身 %d 调度失败", 7, exc=True, avatar_id=7)
    record.levelno = logging.CRITICAL
    entry = json.loads(JsonFormatter("poller[0]", None).format(record))
    assert re.fullmatch(TS_RE, entry["@timestamp"])
    assert entry["level"] == "severe"
    assert entry["content"].startswith("分身 7 调度失败\nTraceback")
    assert "RuntimeError: boom" in entry["content"]
    assert (entry["role"], entry["pid"], entry["avatar_id"]) == ("poller[0]", os.getpid(), 7)


def test_setup_logging_rejects_an_unknown_level_or_encoding() -> None:
    with pytest.raises(ConfigError, match=r"Log\.Level"):
        setup_logging(LogConf(level="verbose"))
    with pytest.raises(ConfigError, match=r"Log\.Encoding"):
        setup_logging(LogConf(encoding="xml"))
