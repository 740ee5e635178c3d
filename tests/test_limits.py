"""The rate limiter: GCRA spacing for qps / rpm, fairness, cancellation, and AIMD."""

from __future__ import annotations

import itertools
import math

import anyio
import anyio.lowlevel
import pytest

from baiduwx_async._errors import ValidationError
from baiduwx_async._limits import (
    MIN_RATE,
    SAFETY,
    AdaptiveRateLimiter,
    NoLimit,
    RateLimiter,
)
from baiduwx_async._models import RateLimitInfo

from .support import FakeClock

pytestmark = pytest.mark.anyio


def limiter(clock: FakeClock, **kw: object) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def most_in_window(times: list[float], width: float) -> int:
    """The most starts any closed window [t, t + width] holds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


async def starts(lim: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    out = []
    for _ in range(n):
        await lim.acquire()
        out.append(clock())
    return out


async def throttled(lim: RateLimiter) -> None:
    await lim.feedback(throttled=True, ratelimit=None)


async def succeeded(lim: RateLimiter) -> None:
    await lim.feedback(throttled=False, ratelimit=None)


def test_protocol_and_validation() -> None:
    assert isinstance(AdaptiveRateLimiter(), RateLimiter)
    assert isinstance(NoLimit(), RateLimiter)
    for bad in [0, -1, math.inf, math.nan, True, "5"]:
        with pytest.raises(ValidationError):
            AdaptiveRateLimiter(qps=bad)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            AdaptiveRateLimiter(rpm=bad)  # type: ignore[arg-type]
    lim = AdaptiveRateLimiter(qps=10, rpm=300)
    assert lim.rate == 5.0 and lim.ceiling == 5.0
    assert repr(lim) == "AdaptiveRateLimiter(qps=10, rpm=300, adaptive=True, rate=5/s)"
    assert "rate=unlimited" in repr(AdaptiveRateLimiter())
    assert repr(NoLimit()) == "NoLimit()"


async def test_qps_spacing_and_sliding_windows() -> None:
    clock = FakeClock(0.0)
    times = await starts(limiter(clock, qps=10), clock, 50)
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(49 / (10 * SAFETY))
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {round(1 / (10 * SAFETY), 9)}
    assert most_in_window(times, 1.0) == 10
    # even with 19 ms of jitter on every start, no 1-s window holds 11
    jittered = [t + (0.019 if i % 10 == 0 else 0.0) for i, t in enumerate(times)]
    assert most_in_window(jittered, 1.0) <= 10


async def test_rpm_over_sixty_second_windows() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, rpm=120)
    assert lim.rate == 2.0
    times = await starts(lim, clock, 300)
    assert most_in_window(times, 60.0) <= 120
    assert times[-1] == pytest.approx(299 / (2 * SAFETY))


async def test_qps_and_rpm_together() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=5, rpm=600)  # 10/s by rpm, so qps rules
    times = await starts(lim, clock, 200)
    assert most_in_window(times, 1.0) <= 5 and most_in_window(times, 60.0) <= 600
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=5, rpm=120)  # 2/s by rpm, so rpm rules
    times = await starts(lim, clock, 300)
    assert most_in_window(times, 1.0) <= 2 and most_in_window(times, 60.0) <= 120


async def test_concurrent_acquirers_are_fair_and_respect_the_rate() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=20)
    entered: list[int] = []
    left: list[tuple[int, float]] = []

    async def one(i: int) -> None:
        entered.append(i)
        await lim.acquire()
        left.append((i, clock()))

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(one, i)
    assert [i for i, _ in left] == entered  # first come, first served
    times = [t for _, t in left]
    assert most_in_window(times, 1.0) <= 20
    assert max(times) == pytest.approx(99 / (20 * SAFETY))


async def test_a_cancelled_waiter_does_not_block_the_others() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=10)
    interval = 1 / (10 * SAFETY)
    entered: list[int] = []
    times: dict[int, float] = {}
    scopes = [anyio.CancelScope() for _ in range(5)]

    async def one(i: int) -> None:
        with scopes[i]:
            entered.append(i)
            await lim.acquire()
            times[i] = clock()

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(one, i)
        await clock.sleep(0.05)  # all five have reserved their slots by now
        assert len(entered) == 5 and len(times) == 1
        scopes[entered[2]].cancel()  # in the middle: its slot is wasted, nobody waits longer
        scopes[entered[4]].cancel()  # the last: its slot is handed back
    assert sorted(times) == sorted(entered[i] for i in (0, 1, 3))
    got = [times[entered[i]] for i in (0, 1, 3)]
    assert got == pytest.approx([0, interval, 3 * interval])
    await lim.acquire()
    assert clock() == pytest.approx(4 * interval)


async def test_cancelling_a_whole_queue_frees_its_slots() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=1)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(lim.acquire)
            await clock.sleep(1.5)  # two got through, 28 wait for up to 29 s
            scope.cancel()
    assert clock() == 1.5
    await lim.acquire()  # the next free slot, not 29 s away
    assert clock() == pytest.approx(2 / SAFETY)


async def test_throttled_feedback_halves_once_per_burst() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=10)
    for _ in range(50):  # answers that were in flight together
        await throttled(lim)
    assert lim.rate == 5.0
    clock.now += 0.5
    await throttled(lim)
    assert lim.rate == 5.0
    clock.now += 0.6
    await throttled(lim)
    assert lim.rate == 2.5
    for _ in range(20):
        clock.now += 1.1
        await throttled(lim)
    assert lim.rate == MIN_RATE


async def test_cut_respaces_queued_waiters() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=10)
    times: list[float] = []

    async def one() -> None:
        await lim.acquire()
        times.append(clock())

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)
        await anyio.lowlevel.checkpoint()
        await throttled(lim)
    assert most_in_window(times, 1.0) <= 5
    assert max(times) == pytest.approx(5 / (5 * SAFETY))


async def test_additive_recovery_up_to_the_ceiling_and_not_above() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=10)
    await throttled(lim)
    seen = []
    for _ in range(40):
        clock.now += 0.5
        await succeeded(lim)
        assert lim.rate is not None
        seen.append(lim.rate)
    assert seen == sorted(seen) and seen[0] == pytest.approx(5.25)
    assert seen[18] < 10.0 and seen[19] == pytest.approx(10.0)  # half to full in 10 s
    assert max(seen) == 10.0 == lim.rate
    clock.now += 1000  # a long idle period does not make a leap
    await throttled(lim)
    clock.now += 1000
    await succeeded(lim)
    assert lim.rate == pytest.approx(6.0)


async def test_header_lowers_a_configured_ceiling_only() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=10)
    await lim.feedback(throttled=False, ratelimit=RateLimitInfo(limit_requests=300))
    assert lim.rate == lim.ceiling == 5.0
    await lim.feedback(throttled=False, ratelimit=RateLimitInfo(limit_requests=6000))
    assert lim.rate == lim.ceiling == 5.0  # never raised again
    await lim.feedback(throttled=False, ratelimit=RateLimitInfo(limit_requests=0))
    assert lim.rate == 5.0
    times = await starts(lim, clock, 20)
    assert most_in_window(times, 60.0) <= 300 and most_in_window(times, 1.0) <= 5
    # recovery after a cut climbs to the lowered ceiling, not to qps
    await throttled(lim)
    for _ in range(30):
        clock.now += 1
        await succeeded(lim)
    assert lim.rate == 5.0

    rigid = limiter(clock, rpm=600, adaptive=False)
    await rigid.feedback(throttled=True, ratelimit=RateLimitInfo(limit_requests=120))
    assert rigid.rate == 2.0  # the header applies; the cut does not

    free = limiter(clock)
    await free.feedback(throttled=False, ratelimit=RateLimitInfo(limit_requests=60))
    assert free.rate is None and free.ceiling is None


async def test_unlimited_by_default_never_waits() -> None:
    clock = FakeClock(0.0)
    lims: list[AdaptiveRateLimiter | NoLimit] = [limiter(clock), limiter(clock, adaptive=False)]
    for lim in [*lims, NoLimit()]:
        for _ in range(1000):
            await lim.acquire()
            await lim.feedback(throttled=False, ratelimit=RateLimitInfo(limit_requests=60))
        assert lim.rate is None
    assert clock.sleeps == [] and clock.now == 0.0
    rigid = limiter(clock, adaptive=False)
    await throttled(rigid)
    assert rigid.rate is None


async def test_unlimited_then_throttled_limits_at_half_the_observed_rate() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock)
    for _ in range(60):  # 20 req/s for 3 s, unhindered
        await lim.acquire()
        clock.now += 0.05
    assert clock.sleeps == []
    await throttled(lim)
    cut = clock.now
    assert lim.rate == pytest.approx(10.0)
    times = await starts(lim, clock, 30)
    assert most_in_window(times, 1.0) <= 10
    assert times[0] >= 2.95 + 1 / (10 * SAFETY) - 1e-9  # spaced from the last free start
    # climbs back to the observed rate, then unlimited after a quiet minute
    while clock.now + 1 < cut + 60:
        clock.now += 1
        await succeeded(lim)
        assert lim.rate is not None and lim.rate <= 20.0 + 1e-9
    assert lim.rate == pytest.approx(20.0)
    clock.now = cut + 60
    await succeeded(lim)
    assert lim.rate is None


async def test_a_trickle_then_throttled_gets_the_floor() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock)
    await lim.acquire()
    clock.now += 5
    await throttled(lim)
    assert lim.rate == MIN_RATE


async def test_real_time_spacing() -> None:
    lim = AdaptiveRateLimiter(qps=20)
    times = []
    start = anyio.current_time()
    for _ in range(10):
        await lim.acquire()
        times.append(anyio.current_time())
    elapsed = times[-1] - start
    # Real time: never faster than the spacing; slower only by what a busy machine adds.
    assert 9 / (20 * SAFETY) - 0.005 <= elapsed < 9 / (20 * SAFETY) + 10
    assert most_in_window(times, 1.0) <= 20


async def test_cancelled_waiters_give_their_slots_back() -> None:
    clock = FakeClock(0.0)
    lim = limiter(clock, qps=20)
    times: list[float] = []

    async def one() -> None:
        await lim.acquire()
        times.append(clock.now)

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as waiting:
            async with anyio.create_task_group() as waiters:
                for _ in range(20):
                    waiters.start_soon(one)

                async def cancel_at(when: float) -> None:
                    await clock.sleep(when)
                    waiting.cancel()  # the waiters queued behind the first few

                tg.start_soon(cancel_at, 0.1)
    spacing = 1 / (20 * SAFETY)
    assert len(times) == 1 + int(0.1 / spacing)
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(one)
    assert len(times) == 10 + 1 + int(0.1 / spacing)
    # The cancelled waiters' slots were freed: the next ten follow at once, not after them.
    assert times[-1] == pytest.approx(times[-11] + 10 * spacing)
    assert most_in_window(times, 1.0) <= 20
