"""go-zero's adaptive breaker: the drop ratio against the formula, the window, open and close."""

from __future__ import annotations

import random
import threading

import grpc
import pytest

from me2_scheduler.clients.breaker import (
    BUCKETS,
    FAILURE_CODES,
    AdaptiveBreaker,
    BreakerOpen,
    WindowStats,
    acceptable,
)
from me2_scheduler.errors import DownstreamError

from .support import FakeClock, run_together

BUCKET_S = 10.0 / BUCKETS


class FixedRng(random.Random):
    """``random()`` answers ``value``: 1 never drops, 0 drops whenever the ratio is above 0."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def never_drop() -> FixedRng:
    return FixedRng(1.0)


def sre_ratio(requests: int, accepts: int) -> float:
    """Google SRE's client-side throttling formula (K = 1.5), with go-zero's protection of 5."""
    return max(0.0, (requests - 5 - 1.5 * accepts) / (requests + 1))


def gozero_ratio(total: int, accepts: int, failing: int, working: int) -> float:
    """go-zero's ``accept``, written out independently of the module under test."""
    weight = max(1.5 - (1.5 - 1.1) * failing / 40, 1.1)
    ratio = (total - 5 - weight * accepts) / (total + 1)
    return 0.0 if ratio <= 0 else ratio * ((40 - working) / 40)


def record(breaker: AdaptiveBreaker, successes: int = 0, failures: int = 0) -> None:
    """Make calls through ``breaker`` that end as given (its rng must not drop)."""
    for _ in range(successes):
        breaker.allow().accept()
    for _ in range(failures):
        breaker.allow().reject()


def record_buckets(
    breaker: AdaptiveBreaker, clock: FakeClock[float], buckets: int, **calls: int
) -> None:
    """``record`` the same ``calls`` in each of ``buckets`` consecutive buckets."""
    for _ in range(buckets):
        record(breaker, **calls)
        clock.advance(BUCKET_S)


def assert_holds_and_drops_as_gozero(breaker: AdaptiveBreaker, stats: WindowStats) -> None:
    """The window holds ``stats``, and the drop ratio is go-zero's for them."""
    assert breaker.stats() == stats
    expected = gozero_ratio(
        stats.total, stats.accepts, stats.failing_buckets, stats.working_buckets
    )
    assert breaker.drop_ratio() == expected


def action_breaker(rng: random.Random | None = None) -> tuple[AdaptiveBreaker, FakeClock[float]]:
    """An Action breaker on a clock of its own; it never drops unless ``rng`` says so."""
    clock = FakeClock(1000.0)
    return AdaptiveBreaker("Action", clock=clock, rng=rng or never_drop()), clock


def breaker_at(
    requests: int, accepts: int, rng: FixedRng
) -> tuple[AdaptiveBreaker, FakeClock[float]]:
    """A breaker whose one bucket holds ``accepts`` successes among ``requests`` calls."""
    breaker, clock = action_breaker(rng)
    saved, rng.value = rng.value, 1.0
    record(breaker, successes=accepts, failures=requests - accepts)
    rng.value = saved
    return breaker, clock


POINTS = [
    (r, a)
    for r in (0, 1, 4, 5, 6, 7, 10, 20, 50, 99, 100, 500)
    for a in range(0, r + 1, 1 + r // 9)
]


@pytest.mark.parametrize(("requests", "accepts"), POINTS)
def test_drop_ratio_is_the_sre_formula_with_gozero_protection(requests: int, accepts: int) -> None:
    breaker, _ = breaker_at(requests, accepts, never_drop())
    # One bucket with both outcomes (or only failures): no working run, K is 1.5.
    if accepts < requests or requests == 0:
        failing = int(accepts == 0 and requests > 0)
        assert breaker.stats() == WindowStats(accepts, requests, failing, 0)
        assert breaker.drop_ratio() == sre_ratio(requests, accepts)
    else:
        assert breaker.drop_ratio() == 0.0  # all accepted: never throttled


@pytest.mark.parametrize(("requests", "accepts"), POINTS)
def test_a_call_is_dropped_exactly_when_the_draw_is_below_the_ratio(
    requests: int, accepts: int
) -> None:
    ratio = gozero_ratio(requests, accepts, int(accepts == 0 and requests > 0), 0)
    if accepts == requests:
        ratio = 0.0
    below, _ = breaker_at(requests, accepts, FixedRng(ratio - 1e-9))
    above, _ = breaker_at(requests, accepts, FixedRng(ratio + 1e-9))
    if ratio > 0:
        with pytest.raises(BreakerOpen):
            below.allow()
    else:
        below.allow().accept()
    above.allow().accept()


def test_sliding_k_weights_accepts_less_as_failing_buckets_pile_up() -> None:
    breaker, clock = action_breaker()
    record_buckets(breaker, clock, 10, successes=20)
    record_buckets(breaker, clock, 10, failures=30)
    assert_holds_and_drops_as_gozero(breaker, WindowStats(200, 500, 10, 0))
    assert breaker.drop_ratio() > sre_ratio(500, 200)  # K 1.4 < 1.5: harder


def test_a_run_of_clean_buckets_eases_the_drop() -> None:
    breaker, clock = action_breaker()
    record_buckets(breaker, clock, 5, failures=100)
    record_buckets(breaker, clock, 3, successes=1)
    assert_holds_and_drops_as_gozero(breaker, WindowStats(3, 503, 0, 3))
    assert breaker.drop_ratio() < sre_ratio(503, 3)


def test_empty_buckets_neither_break_nor_extend_a_failing_run() -> None:
    breaker, clock = action_breaker()
    record(breaker, failures=10)
    clock.advance(5 * BUCKET_S)
    record(breaker, failures=10)
    assert breaker.stats().failing_buckets == 2


def test_calls_older_than_the_ten_second_window_are_forgotten() -> None:
    breaker, clock = action_breaker()
    clock.advance(0.125)  # inside the first bucket (binary-exact steps throughout)
    record(breaker, failures=100)
    clock.advance(2.0)
    record(breaker, successes=7)
    clock.advance(7.75)  # 9.875 s: the first bucket is still in the window
    assert breaker.stats() == WindowStats(7, 107, 0, 1)
    clock.advance(0.125)  # 10 s: the first bucket leaves the window
    assert breaker.stats() == WindowStats(7, 7, 0, 1)
    clock.advance(2.0)
    assert breaker.stats() == WindowStats(0, 0, 0, 0)
    assert breaker.drop_ratio() == 0.0


def test_a_bucket_slot_reused_after_ten_seconds_starts_empty() -> None:
    breaker, clock = action_breaker()
    record(breaker, failures=50)
    clock.advance(10.0)  # the same slot of the ring, one window later
    record(breaker, successes=1)
    assert breaker.stats() == WindowStats(1, 1, 0, 1)


def test_a_dropped_call_counts_as_a_request_and_keeps_the_ratio_up() -> None:
    rng = FixedRng(1.0)
    breaker, _ = breaker_at(100, 0, rng)
    rng.value = 0.0
    for _ in range(10):
        with pytest.raises(BreakerOpen):
            breaker.allow()
    assert breaker.stats() == WindowStats(0, 110, 1, 0)


def test_after_a_second_without_a_pass_one_call_passes_as_a_probe() -> None:
    rng = FixedRng(1.0)
    breaker, clock = breaker_at(100, 0, rng)
    breaker.allow().reject()  # passes while the ratio is positive: a last pass now
    rng.value = 0.0  # from here every draw drops
    with pytest.raises(BreakerOpen):
        breaker.allow()
    clock.advance(1.0)
    with pytest.raises(BreakerOpen):
        breaker.allow()  # not over a second yet
    clock.advance(0.01)
    breaker.allow().reject()  # the probe
    with pytest.raises(BreakerOpen):
        breaker.allow()


def test_no_probe_before_any_call_passed_while_throttling() -> None:
    # go-zero notes a pass only once the ratio is positive; before that, no probe.
    breaker, clock = action_breaker(FixedRng(0.0))
    record(breaker, failures=5)  # the protection: ratio still <= 0, all pass
    breaker.allow().reject()  # ratio 0 before this call: passes without a draw
    clock.advance(2.0)
    with pytest.raises(BreakerOpen):
        breaker.allow()


def simulate(
    breaker: AdaptiveBreaker, clock: FakeClock[float], seconds: float, healthy: bool
) -> list[tuple[int, int]]:
    """Offer 20 calls every 50 ms; per second, (calls made, calls that reached the service)."""
    per_second = []
    for _ in range(round(seconds)):
        offered = reached = 0
        for _ in range(20):
            for _ in range(20):
                offered += 1
                try:
                    ticket = breaker.allow()
                except BreakerOpen:
                    continue
                reached += 1
                ticket.record(None if healthy else grpc.StatusCode.UNAVAILABLE)
            clock.advance(0.05)
        per_second.append((offered, reached))
    return per_second


def test_it_opens_under_a_failing_service_and_closes_once_calls_succeed() -> None:
    clock = FakeClock(1000.0)
    rejections = []
    breaker = AdaptiveBreaker(
        "Action", clock=clock, rng=random.Random(7), on_reject=lambda: rejections.append(1)
    )
    assert simulate(breaker, clock, 2, healthy=True) == [(400, 400), (400, 400)]
    failing = simulate(breaker, clock, 14, healthy=False)
    # The two healthy seconds still in the window keep most calls going at
    # first (K = 1.5 tolerates failures up to half the accepts); the drops rise
    # as they slide out, and once they are gone only the probes reach Action.
    assert failing[2][1] < 300
    assert all(1 <= reached <= 4 for _, reached in failing[10:])
    recovered = simulate(breaker, clock, 15, healthy=True)
    assert recovered[0][1] < 100  # the first successes pass as probes and draws
    closed_from = next(i for i, (_, reached) in enumerate(recovered) if reached == 400)
    assert closed_from <= 11  # at the latest once the failures left the window
    assert all(reached == 400 for _, reached in recovered[closed_from:])
    dropped = sum(o - r for o, r in failing + recovered)
    assert len(rejections) == dropped


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_codes_are_classified_as_go_zero_does(code: grpc.StatusCode) -> None:
    failures = {"DEADLINE_EXCEEDED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNIMPLEMENTED"}
    failures.add("RESOURCE_EXHAUSTED")
    assert acceptable(code) is (code.name not in failures)
    breaker = AdaptiveBreaker("Action", clock=FakeClock(1000.0), rng=never_drop())
    breaker.allow().record(code)
    assert breaker.stats().accepts == int(code not in FAILURE_CODES)


def test_no_code_means_the_call_was_answered() -> None:
    assert acceptable(None)


def test_breaker_open_is_action_unavailable_with_a_clear_reason() -> None:
    rng = FixedRng(1.0)
    breaker, _ = breaker_at(50, 0, rng)
    rng.value = 0.0
    with pytest.raises(DownstreamError) as raised:
        breaker.allow()
    assert isinstance(raised.value, BreakerOpen)
    assert raised.value.unavailable is True
    assert str(raised.value).startswith("Action breaker is open: ")
    assert "0 of 50 Action calls accepted" in str(raised.value)


def test_a_ticket_counts_only_its_first_settlement() -> None:
    breaker = AdaptiveBreaker("Diary", clock=FakeClock(1000.0), rng=never_drop())
    ticket = breaker.allow()
    ticket.accept()
    ticket.reject()
    ticket.record(grpc.StatusCode.INTERNAL)
    assert breaker.stats() == WindowStats(1, 1, 0, 1)


def test_counts_stay_exact_under_many_threads() -> None:
    breaker = AdaptiveBreaker("Action", clock=FakeClock(1000.0), rng=never_drop())

    def calls() -> None:
        for i in range(2000):
            ticket = breaker.allow()
            if i % 2:
                ticket.accept()
            else:
                ticket.reject()

    assert len(run_together(*[calls] * 16, deadline_s=60)) == 16
    assert breaker.stats() == WindowStats(16_000, 32_000, 0, 0)


def test_every_drop_is_counted_once_under_many_threads() -> None:
    lock, raised, rejections = threading.Lock(), [0], [0]

    def on_reject() -> None:
        with lock:
            rejections[0] += 1

    rng = FixedRng(1.0)
    breaker = AdaptiveBreaker("Action", clock=FakeClock(1000.0), rng=rng, on_reject=on_reject)
    record(breaker, failures=100)
    rng.value = 0.0  # from here every call is dropped

    def calls() -> None:
        for _ in range(1000):
            try:
                breaker.allow()
            except BreakerOpen:
                with lock:
                    raised[0] += 1

    assert len(run_together(*[calls] * 8, deadline_s=60)) == 8
    assert raised[0] == rejections[0] == 8000
    assert breaker.stats().total == 100 + 8000


def test_the_defaults_work_without_injection() -> None:
    breaker = AdaptiveBreaker("Action")
    breaker.allow().accept()
    assert breaker.stats().accepts == 1
    assert breaker.drop_ratio() == 0.0
