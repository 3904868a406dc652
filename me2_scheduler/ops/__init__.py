"""Operator tasks behind ``me2-scheduler``'s operations commands (see ``ops_cli``).

Plain functions over a ``MysqlStore``, a ``DelayIndex`` or a gRPC target,
with no click in them: ``index_ops`` (rebuild, verify, repair), ``status``,
``prune`` and ``avatar``. Long work reports progress through a callback that
gets the number of items just done.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int], None]
"""Called with how many items were just done (not a running total)."""
