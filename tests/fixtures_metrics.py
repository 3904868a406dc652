"""Reading what the service exposes: scrapes parsed into samples, HTTP GETs, Python subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from me2_scheduler.supervisor.http import MULTIPROC_ENV

REPO = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def get(url: str) -> tuple[int, str]:
    """GET ``url``: (status, body), also for an error status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_metrics(directory: Path, code: str) -> int:
    """Run ``code`` in a process writing to the multiprocess ``directory``; return its pid."""
    done = run_python(
        "import os\nfrom me2_scheduler import metrics\n" + textwrap.dedent(code) + "\n"
        "print(os.getpid())",
        env={MULTIPROC_ENV: str(directory)},
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])
