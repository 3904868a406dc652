"""The AIMD in-flight limit: growth, halving once per burst, floor, cap, blocking acquire."""

from __future__ import annotations

import threading

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from me2_scheduler.clients.limiter import AimdLimiter, Permit, Signal, signal_for


def fill(limiter: AimdLimiter) -> list[Permit]:
    """Every permit the limit allows now, without waiting."""
    permits = []
    while (permit := limiter.acquire(0)) is not None:
        permits.append(permit)
    return permits


def test_it_starts_at_the_maximum_unless_told_otherwise() -> None:
    assert AimdLimiter(40).limit == 40
    assert AimdLimiter(40, initial=8).limit == 8
    assert AimdLimiter(40).in_flight == 0


@pytest.mark.parametrize(
    ("max_limit", "initial", "min_limit"), [(0, None, 1), (10, 0, 1), (10, 11, 1), (10, 3, 4)]
)
def test_impossible_limits_are_refused_with_the_numbers(
    max_limit: int, initial: int | None, min_limit: int
) -> None:
    with pytest.raises(ValueError, match=r"1 <= min <= initial <= max, not min"):
        AimdLimiter(max_limit, initial=initial, min_limit=min_limit)


@pytest.mark.parametrize("backoff", [0.0, 1.0, -0.5, 2.0])
def test_a_backoff_outside_zero_one_is_refused(backoff: float) -> None:
    with pytest.raises(ValueError, match="backoff must be between 0 and 1"):
        AimdLimiter(10, backoff=backoff)


def test_no_more_permits_than_the_limit() -> None:
    limiter = AimdLimiter(5)
    assert len(fill(limiter)) == 5
    assert limiter.in_flight == 5
    assert limiter.acquire(0) is None


def test_each_success_at_the_limit_adds_one_over_the_limit() -> None:
    limiter = AimdLimiter(20, initial=4)
    permits = fill(limiter)
    expected = 4.0
    for _ in range(60):
        permits.pop().release(Signal.SUCCESS)
        expected = min(20.0, expected + 1 / expected)
        assert limiter.limit == int(expected)
        permits.extend(fill(limiter))  # keep the limit fully used
    assert limiter.limit == int(expected) > 4


def test_the_limit_never_grows_past_the_maximum() -> None:
    limiter = AimdLimiter(6, initial=5)
    permits = fill(limiter)
    for _ in range(200):
        permits.pop().release(Signal.SUCCESS)
        permits.extend(fill(limiter))
    assert limiter.limit == 6
    assert limiter.in_flight == 6


def test_the_limit_does_not_grow_while_less_than_half_is_used() -> None:
    limiter = AimdLimiter(100, initial=10)
    for _ in range(500):
        limiter.acquire(0).release(Signal.SUCCESS)  # type: ignore[union-attr]
    assert limiter.limit == 10


def test_an_overload_halves_the_limit_and_the_floor_is_one() -> None:
    seen: list[int] = []
    limiter = AimdLimiter(10, on_limit=seen.append)
    for expected in (5, 2, 1, 1):
        permits = fill(limiter)
        permits[0].release(Signal.OVERLOAD)
        assert limiter.limit == expected
        for permit in permits[1:]:
            permit.release(Signal.IGNORED)
    assert seen == [5, 2, 1]
    assert limiter.in_flight == 0


def test_one_burst_of_overload_answers_halves_the_limit_once() -> None:
    limiter = AimdLimiter(16)
    burst = fill(limiter)
    for permit in burst[:10]:
        permit.release(Signal.OVERLOAD)
    assert limiter.limit == 8
    # A call started after the decrease is a new round trip: it may halve again.
    later = fill(limiter)
    assert len(later) == 8 - 6  # 6 of the burst are still in flight
    for permit in burst[10:]:
        permit.release(Signal.OVERLOAD)
    assert limiter.limit == 8
    later[0].release(Signal.OVERLOAD)
    assert limiter.limit == 4


def test_other_failures_leave_the_limit_alone() -> None:
    limiter = AimdLimiter(8, initial=4)
    for permit in fill(limiter):
        permit.release(Signal.IGNORED)
    assert limiter.limit == 4
    assert limiter.in_flight == 0


def test_a_permit_is_released_once() -> None:
    limiter = AimdLimiter(4)
    permit = limiter.acquire(0)
    assert permit is not None
    permit.release(Signal.OVERLOAD)
    permit.release(Signal.OVERLOAD)
    assert limiter.in_flight == 0
    assert limiter.limit == 2


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_only_resource_exhausted_and_unavailable_mean_overload(code: grpc.StatusCode) -> None:
    if code is grpc.StatusCode.OK:
        assert signal_for(code) is Signal.SUCCESS
    elif code.name in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        assert signal_for(code) is Signal.OVERLOAD
    else:
        assert signal_for(code) is Signal.IGNORED


def test_a_response_is_a_success() -> None:
    assert signal_for(None) is Signal.SUCCESS


def test_a_blocked_acquire_gets_the_slot_a_release_frees() -> None:
    limiter = AimdLimiter(2)
    held = fill(limiter)
    waiting, got = threading.Event(), []

    def wait_for_slot() -> None:
        waiting.set()
        got.append(limiter.acquire(timeout_s=60))

    thread = threading.Thread(target=wait_for_slot)
    thread.start()
    assert waiting.wait(timeout=10)
    assert not got  # still blocked: no slot yet
    held[0].release(Signal.SUCCESS)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert isinstance(got[0], Permit)
    assert limiter.in_flight == 2


def test_an_acquire_gives_up_at_its_deadline() -> None:
    limiter = AimdLimiter(1)
    fill(limiter)
    assert limiter.acquire(timeout_s=0.05) is None
    assert limiter.acquire(timeout_s=-1) is None
    assert limiter.in_flight == 1


def test_a_lowered_limit_keeps_waiters_out_until_in_flight_drops_below_it() -> None:
    limiter = AimdLimiter(4)
    held = fill(limiter)
    held[0].release(Signal.OVERLOAD)  # limit 2, three still in flight
    held[1].release(Signal.IGNORED)
    assert limiter.acquire(0) is None  # two in flight, limit two
    held[2].release(Signal.IGNORED)
    assert limiter.acquire(0) is not None


ops = st.lists(
    st.one_of(
        st.just(("acquire", 0, Signal.SUCCESS)),
        st.tuples(st.just("release"), st.integers(0, 63), st.sampled_from(list(Signal))),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(max_limit=st.integers(1, 24), ops=ops)
def test_in_flight_never_exceeds_the_limit_when_a_permit_is_given(
    max_limit: int, ops: list[tuple[str, int, Signal]]
) -> None:
    limiter = AimdLimiter(max_limit)
    held: list[Permit] = []
    for op, index, signal in ops:
        if op == "acquire":
            permit = limiter.acquire(0)
            if permit is not None:
                held.append(permit)
                assert limiter.in_flight <= limiter.limit
        elif held:
            held.pop(index % len(held)).release(signal)
        assert limiter.in_flight == len(held) <= max_limit
        assert 1 <= limiter.limit <= max_limit


def test_many_threads_never_hold_more_than_the_limit() -> None:
    limiter = AimdLimiter(6)
    lock, holding, peak = threading.Lock(), [0], [0]

    def calls() -> None:
        for _ in range(300):
            permit = limiter.acquire(timeout_s=60)
            assert permit is not None
            with lock:
                holding[0] += 1
                peak[0] = max(peak[0], holding[0])
            with lock:
                holding[0] -= 1
            permit.release(Signal.SUCCESS)

    threads = [threading.Thread(target=calls) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert 1 <= peak[0] <= 6
    assert limiter.in_flight == 0
    assert limiter.limit == 6
