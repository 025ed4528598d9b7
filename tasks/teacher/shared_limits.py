"""A teacher's requests and tokens per minute, held across every process and machine that uses it.

The in-process pacer (`p2m.tasks.teacher.client.RequestPacer`) holds the limit within one process; two runs
at once (a run from the UI while the nightly loop regenerates, two workers of the cpu pool) would
each spend the whole budget. With a Prefect server configured (PREFECT_API_URL) and a remote
teacher, every process also takes its requests and tokens from two Prefect global concurrency
limits with slot decay (rate limits), one for requests and one for tokens, named after the teacher:
every process naming the same teacher shares them. The pacer stays in front and smooths requests
within the process; in Prefect's local (ephemeral) mode it is the only limit.

How a budget of B per minute becomes a Prefect limit (`plan_limit`):
- A process takes `chunk` slots at a time (about `chunk_seconds` of the whole budget), so the
  server is asked about once a second per busy process, not once per request. Slots it has not
  used `hold` seconds (2 x chunk_seconds) after asking for them are dropped: a slot used long
  after it was granted would count in a later minute than the limit thinks.
- The limit holds `capacity` = 2 x chunk slots and frees slots at `decay` per second: a token
  bucket, so in any L seconds at most capacity + L x decay slots are granted. A request sent in a
  given minute used a slot granted in that minute or in the `hold` seconds before it, so
  decay = (B - capacity) / (60 + hold) keeps every sliding minute within B (`LimitPlan.bound`);
  the price is a steady rate of about 0.93 B instead of B.
- What Prefect 3.8 does with a rate limit, read in its server code and checked on a test server:
  the slots decayed so far are `floor(decay x seconds since the limit's last update)`, and every
  grant is an update, so a grant made between two whole slots throws away the fraction already
  decayed (for everyone); a refused request changes nothing (its update is rolled back) but costs
  a round trip and a wait chosen by the server. So before asking, a process reads the limit (a
  read changes nothing), works out from its `updated` time when the slots it wants will have
  decayed, sleeps until then, and asks with `rate_limit(..., strict=True)`: granted at once
  unless another process was quicker (then Prefect retries), and an error, not a warning, if the
  limit was deleted under a running process.

Limits are created (or set to this process's numbers, with a warning) on first use and by
`p2m deploy`; only a remote teacher gets them (the local teacher is one per process, with no
account to protect).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import threading
import time
import weakref
from dataclasses import dataclass, field

from p2m.tasks.core.aio import run_sync
from p2m.tasks.core.config import LimitsConfig
from p2m.tasks.core.errors import P2MError

logger = logging.getLogger(__name__)

# Added to the computed wait before asking: the limit's `updated` time is stored to the
# millisecond, so the decayed fraction worked out from it can be a hair ahead of the server's.
ASK_MARGIN_S = 0.005
# The shortest sleep between two reads of a limit that is not ready: when this machine's clock
# and the server's disagree, the wait worked out from `updated` is off and the reads poll instead.
MIN_POLL_S = 0.02


@dataclass(frozen=True)
class LimitPlan:
    """One Prefect rate limit: its `name`, `capacity` (the limit), `decay` (slots freed per
    second), `chunk` (slots a process asks for at once) and `hold` (seconds a process may keep
    granted slots before using them)."""

    name: str
    capacity: int
    decay: float
    chunk: int
    hold: float

    def bound(self, seconds: float) -> float:
        """The most slots that can be used in any window of `seconds` across all processes."""
        return self.capacity + (seconds + self.hold) * self.decay


def limit_names(teacher_key: str) -> tuple[str, str]:
    """The names of the requests and tokens limits for a teacher (`Teacher.identity`: kind, model,
    URL): readable in the UI, unique by a hash of the whole key (Prefect names may not hold '/')."""
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", re.sub(r"https?://", "", teacher_key)).strip("-")[:60]
    slug = f"{readable}-{hashlib.sha256(teacher_key.encode()).hexdigest()[:8]}"
    return f"p2m-teacher-{slug}-requests", f"p2m-teacher-{slug}-tokens"


def plan_limit(name: str, per_minute: float, chunk_seconds: float) -> LimitPlan:
    """The Prefect limit that holds `per_minute` across processes (see the module docstring)."""
    hold = 2 * chunk_seconds
    chunk = max(1, math.ceil(per_minute / 60 * chunk_seconds))
    # Two chunks of room let two processes take one each at the same moment; a very small budget
    # (under 20 a minute) cannot spare them and keeps one.
    capacity = 2 * chunk if 2 * chunk <= per_minute / 10 else chunk
    # Below 2 a minute one slot of capacity is most of the budget: the bound cannot hold exactly,
    # and half the budget still flows.
    decay = max(per_minute - capacity, per_minute / 2) / (60 + hold)
    return LimitPlan(name, capacity, decay, chunk, hold)


def plan_limits(teacher_key: str, limits: LimitsConfig) -> tuple[LimitPlan, LimitPlan]:
    """The requests and tokens limits for `teacher_key` under `limits`."""
    requests_name, tokens_name = limit_names(teacher_key)
    return (
        plan_limit(requests_name, limits.requests_per_minute, limits.shared_chunk_seconds),
        plan_limit(tokens_name, limits.tokens_per_minute, limits.shared_chunk_seconds),
    )


def prefect_server_configured() -> bool:
    """Whether this process talks to a Prefect server (PREFECT_API_URL), not a temporary one of its own."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def limits_are_shared(limits: LimitsConfig) -> bool:
    """Whether requests to a remote teacher go through the shared limits (`limits.shared`)."""
    return limits.shared == "auto" and prefect_server_configured()


async def aensure_limit(plan: LimitPlan) -> str:
    """Create the limit, or set it to `plan` when it differs; returns "created", "updated" or "ok"."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    async with get_client() as client:
        try:
            current = await client.read_global_concurrency_limit_by_name(plan.name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(
                        name=plan.name, limit=plan.capacity, slot_decay_per_second=plan.decay, active=True
                    )
                )
                return "created"
            except ObjectAlreadyExists:  # another process created it a moment ago
                current = await client.read_global_concurrency_limit_by_name(plan.name)
        same_decay = math.isclose(current.slot_decay_per_second, plan.decay, rel_tol=1e-6)
        if current.limit == plan.capacity and same_decay and current.active:
            return "ok"
        # Every process using this teacher should be configured alike; the latest settings win.
        logger.warning(
            "p2m: shared rate limit %s was %s slots, %.4f freed per second; set to %s, %.4f by this process's settings",
            plan.name,
            current.limit,
            current.slot_decay_per_second,
            plan.capacity,
            plan.decay,
        )
        await client.update_global_concurrency_limit(
            plan.name,
            GlobalConcurrencyLimitUpdate(limit=plan.capacity, slot_decay_per_second=plan.decay, active=True),
        )
        return "updated"


def ensure_limits(teacher_key: str, limits: LimitsConfig) -> dict[str, str]:
    """Create or update both limits of a teacher (as `p2m deploy` does); returns name -> what was done."""

    async def both():
        return {plan.name: await aensure_limit(plan) for plan in plan_limits(teacher_key, limits)}

    return run_sync(both())


def seconds_until_free(active: int, limit: int, decay: float, since_update: float, wanted: int) -> float:
    """Seconds from now until `wanted` slots can be granted by a limit that shows `active` of
    `limit` slots taken (already decayed, rounded down), frees `decay` a second and was last
    updated `since_update` seconds ago; 0 when they can be granted now."""
    short = active + wanted - limit
    if short <= 0:
        return 0.0
    # The server has decayed floor(decay x since_update) slots; the fraction beyond it is already
    # on its way to the next whole slot.
    accrued = decay * max(0.0, since_update)
    fraction = accrued - math.floor(accrued)
    return max(MIN_POLL_S, (short - fraction) / decay + ASK_MARGIN_S)


@dataclass
class _Reservoir:
    """Slots granted to this process and not used yet, as [expires_at, count] chunks, oldest first.

    `debt`: slots used beyond what was reserved (a reply longer than its estimate), paid from the
    next slots taken. `wasted`: slots that expired unused.
    """

    chunks: list[list[float]] = field(default_factory=list)
    debt: float = 0.0
    wasted: float = 0.0

    def available(self, now: float) -> float:
        self.wasted += sum(c[1] for c in self.chunks if c[0] <= now)
        self.chunks = [c for c in self.chunks if c[0] > now and c[1] > 0]
        return sum(c[1] for c in self.chunks) - self.debt

    def add(self, expires: float, count: float) -> None:
        self.chunks.append([expires, count])
        self.chunks.sort()

    def take(self, count: float) -> float:
        """Take `count` (plus any debt) from the oldest chunks; returns the earliest expiry touched."""
        want, self.debt, first = count + self.debt, 0.0, math.inf
        for chunk in self.chunks:
            if want <= 0:
                break
            used = min(chunk[1], want)
            if used > 0:
                chunk[1] -= used
                want -= used
                first = min(first, chunk[0])
        self.debt = max(0.0, want)
        return first


@dataclass
class Permit:
    """One request's share: the token slots reserved for it, and when unused ones expire."""

    tokens: int
    expires: float


class SharedRateLimit:
    """Requests and tokens per minute for one teacher, taken from Prefect rate limits in chunks.

    `acquire(est_tokens)` waits until this process holds a request slot and `est_tokens` token
    slots (asking the server for another chunk when it runs out) and returns a `Permit`;
    `settle(permit, used_tokens)` gives back what the reply did not use (or records the excess).
    Safe from several event loops and threads at once. `stats()` counts the server calls, for the
    overhead measurement.
    """

    def __init__(self, requests: LimitPlan, tokens: LimitPlan):
        self.plans = {"requests": requests, "tokens": tokens}
        self._reservoirs = {"requests": _Reservoir(), "tokens": _Reservoir()}
        self._counts = {"reads": 0, "grants": 0, "races": 0, "slept_s": 0.0, "ask_s": 0.0}
        self._lock = threading.Lock()
        self._ensured = False
        # One asyncio lock per event loop (a lock belongs to the loop it first waited in; keyed by
        # the loop itself, not its id, which a later loop may reuse).
        self._refill_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def acquire(self, est_tokens: int) -> Permit:
        """A request slot and `est_tokens` token slots (at most the tokens limit's capacity)."""
        need = {"requests": 1, "tokens": min(max(0, est_tokens), self.plans["tokens"].capacity)}
        while True:
            if (permit := self._take(need)) is not None:
                return permit
            with self._lock:
                lock = self._refill_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
            async with lock:  # one coroutine of this loop asks the server; the others wait for its chunk
                for kind, slots in self._missing(need).items():
                    await self._grant(kind, slots)

    def settle(self, permit: Permit, used_tokens: int) -> None:
        """After the reply: tokens it did not use go back (until the permit expires); extra ones are owed."""
        with self._lock:
            spare = permit.tokens - used_tokens
            if spare > 0:
                self._reservoirs["tokens"].add(permit.expires, spare)
            elif spare < 0:
                self._reservoirs["tokens"].debt += -spare

    def stats(self) -> dict:
        """Server reads, grants and lost races; seconds slept waiting for slots and spent asking; slots
        that expired unused."""
        with self._lock:
            return {**self._counts, **{f"wasted_{kind}": r.wasted for kind, r in self._reservoirs.items()}}

    def _take(self, need: dict[str, int]) -> Permit | None:
        with self._lock:
            now = time.monotonic()
            if any(self._reservoirs[k].available(now) < n for k, n in need.items()):
                return None
            expires = min(self._reservoirs[k].take(n) for k, n in need.items())
            return Permit(need["tokens"], expires if expires != math.inf else now + self.plans["tokens"].hold)

    def _missing(self, need: dict[str, int]) -> dict[str, int]:
        """Slots to ask for: a chunk, or more when one request needs more (up to the capacity)."""
        with self._lock:
            now = time.monotonic()
            missing = {}
            for kind, n in need.items():
                short = n - self._reservoirs[kind].available(now)
                if short > 0:
                    plan = self.plans[kind]
                    missing[kind] = min(plan.capacity, max(plan.chunk, math.ceil(short)))
            return missing

    async def _grant(self, kind: str, slots: int) -> None:
        """Take `slots` from the server's limit, asking only once they have decayed."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        plan = self.plans[kind]
        if not self._ensured:
            for p in self.plans.values():
                await aensure_limit(p)
            self._ensured = True
        async with get_client() as client:
            while True:
                try:
                    current = await client.read_global_concurrency_limit_by_name(plan.name)
                except ObjectNotFound:
                    raise P2MError(self._missing_message(plan)) from None
                self._count(reads=1)
                wait = seconds_until_free(
                    current.active_slots,
                    current.limit,
                    current.slot_decay_per_second,
                    time.time() - current.updated.timestamp(),
                    slots,
                )
                if wait > 0:
                    # Then ask without reading again: the wait is exact when the clocks agree, and a
                    # refusal changes nothing on the server (a read costs as much as the ask).
                    self._count(slept_s=wait)
                    await asyncio.sleep(wait)
                # Slots count from the moment we ask: every use within `hold` of this is in the bound.
                asked = time.monotonic()
                if await self._ask(client, plan, slots):
                    self._count(grants=1, ask_s=time.monotonic() - asked)
                    with self._lock:
                        self._reservoirs[kind].add(asked + plan.hold, slots)
                    return
                self._count(races=1)  # another process took them first: read again

    async def _ask(self, client, plan: LimitPlan, slots: int) -> bool:
        """One request for `slots` of `plan`'s limit: True if granted, False if refused (423).

        The call `prefect.concurrency.asyncio.rate_limit(..., strict=True)` makes, without its
        retry loop: that one sleeps a random interval the server suggests after a refusal (and
        serialises every caller in the process behind it), where reading the limit again says
        exactly when to ask. As with strict=True, a limit that does not exist is an error.
        """
        import httpx

        try:
            response = await client.increment_concurrency_slots(names=[plan.name], slots=slots, mode="rate_limit")
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 423:
                return False
            raise P2MError(f"could not take slots from the shared rate limit {plan.name!r} ({e})") from None
        if not response.json():  # the server skips names it does not know
            raise P2MError(self._missing_message(plan))
        return True

    def _count(self, **counts) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value

    @staticmethod
    def _missing_message(plan: LimitPlan) -> str:
        return (
            f"the shared rate limit {plan.name!r} is missing on the Prefect server (deleted while p2m runs?); "
            "run `p2m deploy` (or this command again) to create it, or set P2M_LIMITS__SHARED=off to pace "
            "this process alone"
        )


_SHARED: dict[tuple, SharedRateLimit] = {}
_SHARED_LOCK = threading.Lock()


def shared_limit(teacher_key: str, limits: LimitsConfig) -> SharedRateLimit:
    """One `SharedRateLimit` per teacher and limits in this process, however many clients use it."""
    plans = plan_limits(teacher_key, limits)
    with _SHARED_LOCK:
        if plans not in _SHARED:
            _SHARED[plans] = SharedRateLimit(*plans)
        return _SHARED[plans]
