"""The operator's index commands: rebuild the index from MySQL, verify (and repair) it.

The work itself is ``storage/reconcile.py``, shared with the service's sweep
and the benchmarks; this module gives it to the CLI and renders its report.
"""

from __future__ import annotations

from me2_scheduler.storage.reconcile import EXTRA, KINDS, MISSING, WRONG_SCORE, Report
from me2_scheduler.storage.reconcile import Verifier as Verifier
from me2_scheduler.storage.reconcile import rebuild as rebuild

_LABELS = {MISSING: "missing", EXTRA: "extra", WRONG_SCORE: "wrong score"}


def render_report(report: Report) -> str:
    """The report as text: what was checked, one line per kind, then the verdict."""
    lines = [
        f"checked {report.checked_active} active avatars in MySQL"
        f" and {report.checked_members} members of due/inflight in Redis"
    ]
    for kind in KINDS:
        finding = report.findings[kind]
        line = f"  {_LABELS[kind]:<12} {finding.count}"
        if finding.sample:
            line += "  e.g. " + ", ".join(str(avatar_id) for avatar_id in finding.sample)
        if report.repair and finding.count:
            line += f"  (repaired {finding.repaired})"
        lines.append(line)
    lines.append(_verdict(report))
    return "\n".join(lines)


def _verdict(report: Report) -> str:
    if report.differences == 0:
        return "the index matches MySQL"
    if not report.repair:
        return f"{report.differences} difference(s); run with --repair to fix them"
    if report.clean:
        return f"{report.differences} difference(s) repaired"
    return f"{report.remaining} of {report.differences} difference(s) remain after repair"
