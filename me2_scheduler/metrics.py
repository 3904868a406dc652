"""Every Prometheus metric of the service, defined in one place (DESIGN §7).

Processes share them through prometheus_client's multiprocess mode: the
supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before anything imports
prometheus_client (see ``supervisor.http``), so importing this module in a
child writes to that dir and the supervisor's ``/metrics`` sums every process.
Counters of a dead child stay in the dir, so a restart never sends a sum back.

Gauges of state only the poller knows (avatars by status, paused, queues) use
the ``mostrecent`` mode: the value the poller set last, kept across a poller
restart instead of dropping to the zero every other process holds. Label
values known in advance are created at import, so their series exist (at 0)
before the first event and ``rate()`` over them is 0 rather than empty.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from me2_scheduler.states import DiaryRunResult, Outcome

# Lag of a dispatch behind its planned time: from 10 ms to 1 h.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

DISPATCHES = Counter(
    "scheduler_dispatch_total", "Dispatches by result (success, failure, skipped).", ["result"]
)
DISPATCH_LAG = Histogram(
    "scheduler_dispatch_lag_seconds", "Dispatch start minus planned time.", buckets=LAG_BUCKETS
)
ACTION_DURATION = Histogram(
    "scheduler_action_duration_seconds",
    "Action.ScheduleAction call duration.",
    buckets=RPC_BUCKETS,
)
AVATARS = Gauge(
    "scheduler_avatars", "Schedules by status.", ["status"], multiprocess_mode="mostrecent"
)
AUTO_PAUSED = Gauge(
    "scheduler_auto_paused_avatars",
    "Avatars paused after consecutive failures.",
    multiprocess_mode="mostrecent",
)
PAUSED_AVATARS = Gauge(
    "scheduler_paused_avatars",
    "Paused schedules by reason: user (Pause RPC) or failures (auto-paused).",
    ["reason"],
    multiprocess_mode="mostrecent",
)
QUEUE_SIZE = Gauge(
    "scheduler_queue_size",
    "Index sizes: due, overdue, inflight, ready.",
    ["queue"],
    multiprocess_mode="mostrecent",
)
LEASES_EXPIRED = Counter(
    "scheduler_lease_expired_total", "In-flight leases that expired (a worker died)."
)
INDEX_REPAIRED = Counter(
    "scheduler_index_repaired_total", "Active avatars the sweep found missing from Redis."
)
INDEX_REBUILDS = Counter("scheduler_index_rebuilds_total", "Full rebuilds of the Redis index.")
HISTORY_PRUNED = Counter(
    "scheduler_history_pruned_total", "Dispatch history rows deleted by History.RetentionDays."
)
CHILD_RESTARTS = Counter(
    "scheduler_child_restarts_total", "Child processes restarted, by role.", ["role"]
)
ERRORS = Counter(
    "scheduler_errors_total",
    "Errors handled without crashing, by role and kind.",
    ["role", "kind"],
)
RPC_REQUESTS = Counter(
    "scheduler_rpc_requests_total", "gRPC requests by method and result code.", ["method", "code"]
)
RPC_DURATION = Histogram(
    "scheduler_rpc_duration_seconds", "gRPC request duration.", ["method"], buckets=RPC_BUCKETS
)

# Diary runs (DESIGN §5): from a second to a day.
DIARY_RUN_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)

BREAKER_REJECTIONS = Counter(
    "scheduler_breaker_rejections_total",
    "Calls dropped locally by the adaptive breaker (go-zero's Google SRE throttling).",
    ["service"],
)
CHANNEL_RESETS = Counter(
    "scheduler_channel_resets_total",
    "gRPC channels closed and opened again after deadlines in a row, by service.",
    ["service"],
)
ACTION_INFLIGHT = Gauge(
    "scheduler_action_inflight",
    "Action calls in flight, summed over live workers.",
    multiprocess_mode="livesum",
)
ACTION_INFLIGHT_LIMIT = Gauge(
    "scheduler_action_inflight_limit",
    "Action calls allowed in flight (the AIMD limit), summed over live workers.",
    multiprocess_mode="livesum",
)
DIARY_RUNS = Counter(
    "scheduler_diary_runs_total",
    "Diary runs (or this process's part of one) by result: done, skipped, stopped, lost, failed.",
    ["result"],
)
DIARY_AVATARS = Counter(
    "scheduler_diary_avatars_total", "Diary.GenerateAvatarDiary calls by result.", ["result"]
)
DIARY_RUN_DURATION = Histogram(
    "scheduler_diary_run_duration_seconds",
    "Wall time of a diary run that reached its end.",
    buckets=DIARY_RUN_BUCKETS,
)
DIARY_LAST_SUCCESS = Gauge(
    "scheduler_diary_last_success_timestamp_seconds",
    "Unix time at which the last diary run finished (0: none recorded yet).",
    multiprocess_mode="max",
)

# A bucketed counter, not a histogram: 24 series whatever the load, one inc() per success.
DISPATCH_LOCAL_HOUR = Counter(
    "scheduler_dispatch_local_hour_total",
    "Successful dispatches by hour of day (0-23) at their start, in the avatar's policy zone.",
    ["hour"],
)
POLICIES_UNREADABLE = Counter(
    "scheduler_policy_unreadable_total",
    "Stored scheduling policies that did not parse (the default policy was used instead).",
)

for _outcome in Outcome:
    DISPATCHES.labels(result=_outcome)
for _hour in range(24):
    DISPATCH_LOCAL_HOUR.labels(hour=str(_hour))
for _run_result in DiaryRunResult:
    DIARY_RUNS.labels(result=_run_result)
for _outcome in (Outcome.SUCCESS, Outcome.FAILURE):
    DIARY_AVATARS.labels(result=_outcome)
for _service in ("Action", "Diary"):
    BREAKER_REJECTIONS.labels(service=_service)
for _service in ("Action", "Diary", "etcd"):
    CHANNEL_RESETS.labels(service=_service)
