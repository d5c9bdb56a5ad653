"""Budget reservations: a submission holds its estimated cost until it settles.

Checking a budget only when a request is planned lets every request in flight pass
the same check: 64 requests near a limit all see the same spend and all spend. So
each submission to a provider first *reserves* its estimated cost against every
budget that covers that provider, atomically: the reservation is refused when

    spend + reservations held + estimate > limit_usd

(an estimate that is unknown reserves nothing and is refused only once
``spend + reservations held >= limit_usd``). When the attempt ends the reservation
*settles*: a success adds its cost (the actual cost when the provider reports one,
``Cost.estimated=False``, else the estimate) to spend and drops the hold in one step;
a failure, a cancel or a lost hedge drops the hold and adds nothing. A job submitted
with ``submit()`` keeps its hold until ``result()`` or ``cancel()`` of this router.

So concurrent requests spend at most the limit plus what actual costs exceed their
estimates by; with estimates that hold, never more than the limit.

Where reservations live follows the state store: in this process for ``memory``;
in Redis for a ``redis://`` store, next to the shared spend, checked and taken by
one Lua script so that processes sharing the store cannot both take the last dollar.
A process that dies leaves its holds behind; each hold expires
``RESERVATION_TTL_S`` after it was last renewed, and a live process renews its holds
every ``RESERVATION_TTL_S / 4``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from genrouter.errors import BudgetExceededError, GenRouterError
from genrouter.types import GenerationResult

if TYPE_CHECKING:
    from genrouter.routing.budgets import BudgetGuard
    from genrouter.routing.store import StateStore

__all__ = [
    "RESERVATION_TTL_S",
    "BudgetLine",
    "Hold",
    "Ledger",
    "MemoryLedger",
    "RedisLedger",
    "budget_refusal",
]

log = logging.getLogger("genrouter.state")

RESERVATION_TTL_S = 120.0
"""How long a hold outlives the last renewal of the process that took it.

A live process renews its holds every quarter of this, so a hold expires only after
four renewals in a row were missed: its process died (or lost Redis for two
minutes). Short enough that a crashed router's share of a budget comes back within
two minutes, long enough that an event-loop stall or a Redis failover does not drop
the holds of requests still running. It is not tied to the request deadline: jobs
submitted with ``submit()`` are collected whenever the caller asks.
"""

REDIS_CALLS_IN_FLIGHT = 32
"""Reservation scripts one process runs in Redis at once; the rest wait their turn.

redis-py's pool refuses a 101st connection ("Too many connections") rather than wait,
and a burst of 200 submissions would otherwise ask for 200. Each script takes tens of
microseconds in Redis, so 32 at a time is thousands a second and leaves the pool room
for the store's sync and writes."""

_NANOS = Decimal(10) ** 9
"""Redis keeps holds in whole nano-dollars (integers, so sums do not drift)."""


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget a hold counts against: its spend key and limit."""

    scope: str
    period: str
    limit_usd: Decimal
    label: str


class Ledger(Protocol):
    """Where reservations are kept (this process, or Redis)."""

    async def reserve(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal) -> str | None:
        """Take a hold of ``amount`` on every line, or none: the refusal reason, or None."""
        ...

    def settle(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal | None) -> None:
        """Drop the hold and add ``amount`` (when known) to each line's spend, in one step."""
        ...

    def held(self, scope: str, period: str) -> Decimal:
        """Dollars this process holds on ``scope`` in ``period`` now."""
        ...

    async def aclose(self) -> None:
        """Stop any background work."""
        ...


def _refusal(line: BudgetLine, spent: Decimal, held: Decimal, amount: Decimal) -> str | None:
    if amount > 0 and spent + held + amount > line.limit_usd:
        return (
            f"budget would be exceeded: ${spent} spent + ${held} reserved + est. ${amount} "
            f"> ${line.limit_usd} for {line.label}"
        )
    if amount <= 0 and spent + held >= line.limit_usd:
        return f"budget reached: ${spent} spent + ${held} reserved of ${line.limit_usd} for {line.label}"
    return None


class MemoryLedger:
    """Holds kept in this process, next to a store's spend (atomic: no await inside)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._holds: dict[str, tuple[tuple[str, str], ...]] = {}
        self._amounts: dict[str, Decimal] = {}
        self._totals: dict[tuple[str, str], Decimal] = {}

    async def reserve(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal) -> str | None:
        """Check every line and take the hold on all of them, or refuse."""
        return self.reserve_now(hold_id, lines, amount)

    def reserve_now(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal) -> str | None:
        """:meth:`reserve`, synchronously."""
        for line in lines:
            spent = self._store.spend(line.scope, line.period)
            reason = _refusal(line, spent, self.held(line.scope, line.period), amount)
            if reason is not None:
                return reason
        keys = tuple(dict.fromkeys((line.scope, line.period) for line in lines))
        self._holds[hold_id] = keys
        self._amounts[hold_id] = amount
        for key in keys:
            self._totals[key] = self._totals.get(key, Decimal(0)) + amount
        return None

    def drop(self, hold_id: str) -> None:
        """Forget a hold (no spend)."""
        keys = self._holds.pop(hold_id, ())
        amount = self._amounts.pop(hold_id, Decimal(0))
        for key in keys:
            left = self._totals.get(key, Decimal(0)) - amount
            if left > 0:
                self._totals[key] = left
            else:
                self._totals.pop(key, None)

    def settle(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal | None) -> None:
        """Drop the hold and add ``amount`` to spend (one step: nothing awaits between)."""
        self.drop(hold_id)
        if amount is not None and amount > 0:
            for scope, period in dict.fromkeys((line.scope, line.period) for line in lines):
                self._store.add_spend(scope, period, amount)

    def held(self, scope: str, period: str) -> Decimal:
        """Dollars held on ``scope`` in ``period``."""
        return self._totals.get((scope, period), Decimal(0))

    async def aclose(self) -> None:
        """Nothing to stop."""


# KEYS: per line, its spend key then its holds hash. ARGV: hold id, amount (nano-dollars),
# ttl (ms), then each line's limit (nano-dollars). A hold is "<nanos> <expires_ms>".
# Redis's own clock decides expiry, so processes need not agree on the time.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[2])
local n = #KEYS / 2
for i = 1, n do
  local spent = math.floor(tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0') * 1e9 + 0.5)
  local held = 0
  local holds = redis.call('HGETALL', KEYS[2 * i])
  for j = 1, #holds, 2 do
    local nanos, expires = string.match(holds[j + 1], '(%d+) (%d+)')
    if tonumber(expires) <= now then
      redis.call('HDEL', KEYS[2 * i], holds[j])
    else
      held = held + tonumber(nanos)
    end
  end
  local limit = tonumber(ARGV[3 + i])
  if (amount > 0 and spent + held + amount > limit) or (amount <= 0 and spent + held >= limit) then
    return {i, string.format('%d', spent), string.format('%d', held)}
  end
end
local value = string.format('%d %d', amount, now + tonumber(ARGV[3]))
for i = 1, n do
  redis.call('HSET', KEYS[2 * i], ARGV[1], value)
  -- Every live hold is renewed within a TTL: a hash untouched for two holds only dead ones.
  redis.call('PEXPIRE', KEYS[2 * i], 2 * tonumber(ARGV[3]))
end
return {0}
"""

# KEYS: per line, spend key then holds hash. ARGV: hold id, amount in dollars (or '').
_SETTLE = """
local totals = {}
for i = 1, #KEYS / 2 do
  redis.call('HDEL', KEYS[2 * i], ARGV[1])
  if ARGV[2] ~= '' then
    totals[i] = redis.call('INCRBYFLOAT', KEYS[2 * i - 1], ARGV[2])
  else
    totals[i] = redis.call('GET', KEYS[2 * i - 1]) or '0'
  end
end
return totals
"""

# KEYS: holds hashes. ARGV: ttl (ms), then the hold ids of this process.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  for j = 2, #ARGV do
    local value = redis.call('HGET', KEYS[i], ARGV[j])
    if value then
      local nanos = string.match(value, '(%d+) ')
      redis.call('HSET', KEYS[i], ARGV[j], string.format('%s %d', nanos, now + tonumber(ARGV[1])))
    end
  end
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[1]))
  end
end
return 0
"""


def _unique(lines: Sequence[BudgetLine]) -> list[BudgetLine]:
    """One line per spend key: the tightest limit when two budgets share scope and period."""
    tightest: dict[tuple[str, str], BudgetLine] = {}
    for line in lines:
        key = (line.scope, line.period)
        if key not in tightest or line.limit_usd < tightest[key].limit_usd:
            tightest[key] = line
    return list(tightest.values())


def _nanos(amount: Decimal, rounding: str) -> int:
    return int((amount * _NANOS).to_integral_value(rounding=rounding))


class RedisLedger:
    """Holds kept in Redis beside the shared spend (see the module docstring)."""

    def __init__(
        self,
        redis: Any,
        key: Callable[..., str],
        mirror: StateStore,
        publish: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
        *,
        ttl_s: float = RESERVATION_TTL_S,
    ) -> None:
        self._redis = redis
        self._key = key
        self._mirror = mirror
        self._publish = publish
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._ttl_s = ttl_s
        self._local = MemoryLedger(mirror)
        """This process's own holds (exact), which the planner adds to spend."""
        self._mine: dict[str, list[str]] = {}
        self._renewing: asyncio.Task[None] | None = None
        self._closed = False
        self._calls = asyncio.Semaphore(REDIS_CALLS_IN_FLIGHT)
        self._reserve: Any = redis.register_script(_RESERVE)
        self._settle: Any = redis.register_script(_SETTLE)
        self._renew: Any = redis.register_script(_RENEW)

    def _keys(self, unique: Sequence[BudgetLine]) -> list[str]:
        keys: list[str] = []
        for line in unique:
            keys += [
                self._key("spend", line.scope, line.period),
                self._key("reserved", line.scope, line.period),
            ]
        return keys

    async def reserve(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal) -> str | None:
        """Check and take the hold in Redis in one script; refused when a line would overflow.

        Redis unreachable: the hold is checked against this process's view instead
        (spend seen here and its own holds), as the rest of the shared state degrades.
        """
        unique = _unique(lines)
        limits = [_nanos(line.limit_usd, ROUND_FLOOR) for line in unique]
        keys = self._keys(unique)
        try:
            async with self._calls:
                answer = await self._reserve(
                    keys=keys, args=[hold_id, _nanos(amount, ROUND_CEILING), self._ttl_ms, *limits]
                )
        except Exception as exc:  # the shared store failing never fails a request by itself
            log.warning("genrouter: redis budget reservation failed, using this process's view: %s", exc)
            return self._local.reserve_now(hold_id, lines, amount)
        index = int(answer[0])
        if index:
            line = unique[index - 1]
            spent, held = Decimal(int(answer[1])) / _NANOS, Decimal(int(answer[2])) / _NANOS
            return _refusal(line, spent, held, amount) or (f"budget would be exceeded for {line.label}")
        self._local_hold(hold_id, unique, amount)
        self._mine[hold_id] = keys[1::2]
        self._start_renewing()
        return None

    def _local_hold(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal) -> None:
        unlimited = [BudgetLine(line.scope, line.period, Decimal("Infinity"), line.label) for line in lines]
        self._local.reserve_now(hold_id, unlimited, amount)

    def settle(self, hold_id: str, lines: Sequence[BudgetLine], amount: Decimal | None) -> None:
        """Drop the hold and add the spend locally now, and in Redis (one script) in the background."""
        self._local.settle(hold_id, lines, amount)
        self._mine.pop(hold_id, None)
        unique = _unique(lines)
        keys = self._keys(unique)
        spend = "" if amount is None or amount <= 0 else str(amount)

        async def write() -> None:
            async with self._calls:
                totals = await self._settle(keys=keys, args=[hold_id, spend])
            for line, total in zip(unique, totals, strict=False):
                shared = Decimal(repr(float(total)))
                local = self._mirror.spend(line.scope, line.period)
                if shared > local:
                    # The mirror takes Redis's total (other processes' spend included).
                    self._mirror.add_spend(line.scope, line.period, shared - local)

        self._publish(write)

    def held(self, scope: str, period: str) -> Decimal:
        """Dollars this process holds on ``scope`` in ``period``."""
        return self._local.held(scope, period)

    def _start_renewing(self) -> None:
        if self._closed or (self._renewing is not None and not self._renewing.done()):
            return
        self._renewing = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._mine and not self._closed:
            await asyncio.sleep(self._ttl_s / 4)
            mine = dict(self._mine)
            if not mine:
                break
            keys = sorted({key for hashes in mine.values() for key in hashes})
            try:
                async with self._calls:
                    await self._renew(keys=keys, args=[self._ttl_ms, *mine])
            except Exception as exc:
                log.warning("genrouter: renewing budget reservations in redis failed: %s", exc)

    async def aclose(self) -> None:
        """Stop renewing (holds still open expire on their own)."""
        self._closed = True
        task = self._renewing
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait({task}, timeout=2.0)


class Hold:
    """One submission's reservation; :meth:`settle` or :meth:`release` it exactly once."""

    __slots__ = ("_done", "_guard", "amount", "id", "lines", "provider")

    def __init__(
        self, guard: BudgetGuard, provider: str, lines: Sequence[BudgetLine], amount: Decimal
    ) -> None:
        self._guard = guard
        self.id = uuid.uuid4().hex
        self.provider = provider
        self.lines = tuple(lines)
        self.amount = amount
        self._done = False

    def settle(self, outcome: Any, *, keep_s: float) -> None:
        """A result adds its cost to spend; jobs only submitted keep the hold until collected
        (for at most ``keep_s``, see :meth:`BudgetGuard.keep`)."""
        if isinstance(outcome, GenerationResult):
            self.settle_cost(outcome.cost.amount_usd)
            return
        jobs = getattr(outcome, "jobs", None) or ()
        if jobs:
            self._guard.keep(self, jobs[0].provider_request_id, keep_s)
        else:  # pragma: no cover - a submission always has a job
            self.release()

    def settle_cost(self, amount: Decimal | None) -> None:
        """Add ``amount`` to spend and drop the hold."""
        if not self._done:
            self._done = True
            self._guard.ledger.settle(self.id, self.lines, amount)

    def release(self) -> None:
        """Drop the hold without spending (failed, cancelled, lost a hedge)."""
        self.settle_cost(None)


def budget_refusal(errors: Sequence[BaseException]) -> BudgetExceededError | None:
    """The error to raise when every attempt of a request was refused by a budget."""
    if errors and all(isinstance(e, BudgetExceededError) for e in errors):
        reasons = "; ".join(dict.fromkeys(str(e) for e in errors))
        return BudgetExceededError(f"no budget left: {reasons}")
    return None


def refused(provider: str, reason: str) -> GenRouterError:
    """A submission refused by a budget (not retried there; the next provider is tried)."""
    return BudgetExceededError(f"{provider}: {reason}", provider=provider, retryable=False)
