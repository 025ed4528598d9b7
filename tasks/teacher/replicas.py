"""Several replicas of one teacher (vLLM, llama.cpp, TGI servers serving the same model) for one run.

`OPENAI_BASE_URL` (or `P2M_TEACHER_URLS`) as a comma-separated list of URLs. The LLM client
talks to them as to one endpoint: its pacing, shared limits, retries, request cache (keyed by
model, not URL) and cost accounting are unchanged; what differs is only where each HTTP attempt
goes. That choice is made below the openai client, in an httpx transport
(`ReplicaTransport`), so every attempt, retries included, is routed afresh:
- to the replica with the most free capacity (`max_concurrency` per replica minus its requests in
  flight: a slow replica holds more in flight, so it gets fewer new ones), ties to the one sent
  least;
- a replica that fails (5xx, timeout, dropped or refused connection) is left out for
  `replica_cooldown` seconds, doubling while it keeps failing (up to 8x); after that it gets
  requests again, and one success makes it healthy. A 429 leaves it out for its retry-after,
  without counting as a failure. The LLM client's own retry of the failed attempt goes to
  another replica.
- when every replica is out, the one back first is used (the client's backoff spaces attempts).
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from dataclasses import dataclass

import openai
from p2m.tasks.core.config import LimitsConfig, Settings
from p2m.tasks.core.errors import P2MError
from p2m.tasks.teacher.retry import retry_after_seconds

logger = logging.getLogger(__name__)

WARN_EVERY_S = 60
MAX_COOLDOWN_DOUBLINGS = 3  # a replica that keeps failing waits at most 8x the cooldown before it is tried again


@dataclass
class Replica:
    """One replica's state: where it is, what it holds in flight, how it has done."""

    url: str
    in_flight: int = 0
    sent: int = 0
    failed: int = 0
    rate_limited: int = 0
    consecutive_failures: int = 0
    out_until: float = 0.0
    warned_at: float = -math.inf

    def as_dict(self) -> dict:
        return {"url": self.url, "sent": self.sent, "failed": self.failed, "rate_limited": self.rate_limited}


class ReplicaSet:
    """The replicas of one teacher and the choice among them; shared by every loop and thread of a process."""

    def __init__(self, urls: list[str], capacity_each: int, cooldown: float):
        if not urls:
            raise ValueError("a replica set needs at least one URL")
        self.replicas = [Replica(u.rstrip("/")) for u in urls]
        self.capacity_each = capacity_each
        self.cooldown = cooldown
        self._lock = threading.Lock()

    def pick(self) -> Replica:
        """The replica for the next attempt (counted as in flight until `finished`)."""
        with self._lock:
            now = time.monotonic()
            healthy = [r for r in self.replicas if r.out_until <= now]
            if healthy:
                chosen = max(healthy, key=lambda r: (self.capacity_each - r.in_flight, -r.sent))
            else:
                chosen = min(self.replicas, key=lambda r: r.out_until)
            chosen.in_flight += 1
            chosen.sent += 1
            return chosen

    def finished(self, replica: Replica, outcome: str, retry_after: float | None = None) -> None:
        """Record an attempt's outcome: "ok", "failed" (out for the cooldown), "busy" (a 429:
        out for `retry_after`) or "cancelled" (the caller gave up: says nothing about the replica)."""
        with self._lock:
            replica.in_flight -= 1
            now = time.monotonic()
            if outcome == "ok":
                replica.consecutive_failures = 0
            elif outcome == "failed":
                replica.failed += 1
                replica.consecutive_failures += 1
                wait = self.cooldown * 2 ** min(replica.consecutive_failures - 1, MAX_COOLDOWN_DOUBLINGS)
                replica.out_until = max(replica.out_until, now + wait)
                if now - replica.warned_at > WARN_EVERY_S:  # a flaky replica is said once a minute, not per failure
                    replica.warned_at = now
                    logger.warning(
                        "p2m: teacher replica %s failed (%d failures so far); left out for %.1f s",
                        replica.url,
                        replica.failed,
                        wait,
                    )
            elif outcome == "busy":
                replica.rate_limited += 1
                replica.out_until = max(replica.out_until, now + (retry_after or 1.0))

    def stats(self) -> list[dict]:
        """Per replica: its URL, attempts sent, failures, 429s."""
        with self._lock:
            return [r.as_dict() for r in self.replicas]


def openai_httpx():
    """The httpx package the openai client is built on: `httpx2` since openai 3, `httpx` before.
    The transport below must speak its types (requests, responses, errors)."""
    return importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])


httpx = openai_httpx()


class ReplicaTransport(httpx.AsyncBaseTransport):
    """Sends each request to a replica chosen by `replicas`: requests are built for `primary`
    (the URL the openai client was given) and rewritten to the chosen replica's URL."""

    def __init__(self, replicas: ReplicaSet, primary: str, inner: httpx.AsyncBaseTransport | None = None):
        self.replicas = replicas
        self.primary = primary.rstrip("/")
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        replica = self.replicas.pick()
        url = str(request.url)
        if url.startswith(self.primary):
            request.url = httpx.URL(replica.url + url[len(self.primary) :])
            request.headers["host"] = request.url.netloc.decode("ascii")
        try:
            # Completions are not streamed: the body follows the headers at once, so the attempt
            # ends here for the replica's in-flight count.
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError:  # timeouts, refused and dropped connections
            self.replicas.finished(replica, "failed")
            raise
        except BaseException:
            self.replicas.finished(replica, "cancelled")
            raise
        if response.status_code >= 500:
            self.replicas.finished(replica, "failed")
        elif response.status_code == 429:
            self.replicas.finished(replica, "busy", retry_after_seconds(response))
        else:
            self.replicas.finished(replica, "ok")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


_SETS: dict[tuple, ReplicaSet] = {}
_SETS_LOCK = threading.Lock()


def shared_replicas(urls: tuple[str, ...], limits: LimitsConfig) -> ReplicaSet:
    """One `ReplicaSet` per list of replicas in this process, however many clients and loops use it."""
    key = (urls, limits.max_concurrency, limits.replica_cooldown)
    with _SETS_LOCK:
        if key not in _SETS:
            _SETS[key] = ReplicaSet(list(urls), limits.max_concurrency, limits.replica_cooldown)
        return _SETS[key]


def replica_http_client(urls: tuple[str, ...], limits: LimitsConfig) -> httpx.AsyncClient:
    """An httpx client for the openai client that spreads its requests over `urls` (the first is its base URL)."""
    return openai.DefaultAsyncHttpxClient(transport=ReplicaTransport(shared_replicas(urls, limits), urls[0]))


def resolve_replicas(settings: Settings, api_key: str, check_endpoint) -> tuple[list[str], str]:
    """(the replica URLs, the model they serve), checked: at least one answers, and every one
    that lists models lists this one. Replicas down now are kept (they are tried later).

    `check_endpoint(url, key) -> [model names]` raises P2MError for a replica it cannot reach.
    Raises P2MError when none answers or they serve different models.
    """
    urls = settings.teacher_base_urls()
    listed: dict[str, list[str]] = {}
    errors = []
    for url in urls:
        try:
            listed[url] = check_endpoint(url, api_key)
        except P2MError as e:
            errors.append(str(e))
            logger.warning("p2m: teacher replica %s does not answer now; it will be tried later", url)
    if not listed:
        raise P2MError(f"none of the {len(urls)} teacher replicas answers ({errors[0]})")
    model = settings.teacher_model or next((models[0] for models in listed.values() if models), "")
    if not model:
        raise P2MError(f"the teacher replicas {', '.join(urls)} list no model; set P2M_TEACHER_MODEL")
    for url, models in listed.items():
        if models and model not in models:
            raise P2MError(
                f"teacher replica {url} serves {', '.join(models[:3])}, not {model!r}: every URL in "
                "OPENAI_BASE_URL / P2M_TEACHER_URLS must serve the same model (or set P2M_TEACHER_MODEL)"
            )
    return urls, model
