"""The teacher LLM client: any OpenAI-compatible endpoint, paced, retried, cached per request.

- Pacing (`RequestPacer`) holds requests AND tokens per minute across the whole process: every
  client for the same endpoint shares one pacer, so separate batches (separate Prefect tasks)
  cannot add up to more than the limit. A 429 pauses everyone for its `retry-after` and lowers
  the pace; successes raise it back towards the configured limit. Across processes and machines
  (a Prefect server configured), each attempt also takes a slot from the teacher's shared limit
  (`p2m.tasks.teacher.shared_limits`).
- Several replicas of one teacher (`Endpoint.replicas`) are one endpoint here: an httpx transport
  picks the replica for each attempt (`p2m.tasks.teacher.replicas`); pacing, cache and limits cover all.
- Retries are ours alone (the openai client's own are switched off) so that every attempt is
  paced and counted, and they are bounded by time, not by count: 429s honour `retry-after-ms` /
  `retry-after` (stretched by backoff when very short); 5xx, timeouts, dropped connections and
  replies that are not a chat completion back off exponentially with jitter, each request for
  at most `retry_budget` seconds; a bad key or an unknown model (other 4xx) is never retried.
  A reply without any choice is retried like a broken body (and never cached). An endpoint that
  answers nothing at all for `give_up_after` seconds stops the stage with the counts
  (`EndpointHealth`); one whose first three replies are like no OpenAI server's (a web page, JSON
  of another shape, completions without choices) stops it then.
- Every answered request is stored in a SQLite cache keyed by a hash of model, messages and
  sampling settings (plus a caller-chosen `salt` to ask for distinct samples). A run killed at
  any moment and started again replays answered requests from disk: no request is paid twice.
  With `P2M_STORAGE_URL` set, every answer is also written to STORAGE_URL/request-cache/ and a
  local miss is looked up there first, so a run resumed on another machine (or a teammate's
  run) does not pay again for what was answered elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
from p2m.tasks.core.aio import run_sync
from p2m.tasks.core.config import LimitsConfig, Settings
from p2m.tasks.core.errors import P2MError
from p2m.tasks.core.run_store import append_jsonl
from p2m.tasks.storage.remote import filesystem
from p2m.tasks.teacher.replicas import replica_http_client, resolve_replicas, shared_replicas
from p2m.tasks.teacher.retry import backoff_seconds, retry_after_seconds

if TYPE_CHECKING:
    from p2m.tasks.teacher.shared_limits import SharedRateLimit

OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"

# USD per million tokens (input, output). Extend or override with a JSON file named by
# P2M_PRICES_FILE: {"model-name": [input_price, output_price]}. Unknown models cost 0 and are flagged.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}


@dataclass(frozen=True)
class Endpoint:
    """Where the teacher lives. `identity` (not the URL, whose port may change) goes into cache keys."""

    base_url: str
    api_key: str
    model: str
    kind: str = "custom"
    # Several servers of this model (p2m.tasks.teacher.replicas): requests are spread over them; base_url is the first.
    replicas: tuple[str, ...] = ()

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.model}"


def resolve_endpoint(settings: Settings) -> Endpoint:
    """The remote endpoint the settings select (OpenAI or another server), checked reachable.

    Raises P2MError for api.openai.com without a key, and for an endpoint that cannot be reached.
    """
    kind = settings.teacher_kind()
    check_teacher_settings(settings)
    base_url = (settings.openai_base_url or OPENAI_URL).rstrip("/")
    api_key = settings.openai_api_key or "none"
    if len(settings.teacher_base_urls()) > 1:
        urls, model = resolve_replicas(settings, api_key, check_endpoint)
        return Endpoint(urls[0], api_key, model, kind, replicas=tuple(urls))
    served = check_endpoint(base_url, api_key)
    model = settings.teacher_model or (DEFAULT_OPENAI_MODEL if kind == "openai" or "api.openai.com" in base_url else "")
    if not model and not served:
        raise P2MError(f"{base_url} lists no model; set P2M_TEACHER_MODEL")
    return Endpoint(base_url, api_key, model or served[0], kind)


def check_teacher_settings(settings: Settings) -> None:
    """Raise P2MError for teacher settings that cannot work, without contacting anyone."""
    base_url = settings.openai_base_url or (OPENAI_URL if settings.openai_api_key else "")
    if "api.openai.com" in base_url and not settings.openai_api_key:
        raise P2MError("api.openai.com needs a key: set OPENAI_API_KEY in .env or the environment")
    for url in settings.teacher_base_urls() or [base_url]:  # one URL, or replicas separated by commas
        if url and not url.startswith(("http://", "https://")):
            raise P2MError(f"OPENAI_BASE_URL {url!r} is not an http(s) URL; write it like http://127.0.0.1:8000/v1")


def check_endpoint(base_url: str, api_key: str, timeout: float = 10.0) -> list[str]:
    """The model names the endpoint lists (GET /models). Raises P2MError when it cannot be reached."""
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
    except httpx.HTTPError as e:
        raise P2MError(
            f"cannot reach the LLM endpoint {base_url} ({e.__class__.__name__}); start the server, fix "
            "OPENAI_BASE_URL, or unset it (and OPENAI_API_KEY) to use p2m's local teacher"
        ) from None
    if r.status_code in (401, 403):
        raise P2MError(f"the LLM endpoint {base_url} rejected the API key (HTTP {r.status_code}); check OPENAI_API_KEY")
    if r.status_code >= 400:
        return []  # some servers do not implement /models; requests will tell
    try:
        listed = r.json().get("data")
        return [m["id"] for m in listed if isinstance(m, dict) and isinstance(m.get("id"), str)]
    except (ValueError, AttributeError, TypeError):
        raise P2MError(
            f"{base_url} does not answer like an OpenAI-compatible server (GET /models: {r.text[:60]!r}); "
            "check OPENAI_BASE_URL (it usually ends in /v1)"
        ) from None


def load_prices(prices_file: Path | None) -> dict[str, tuple[float, float]]:
    prices = dict(PRICES)
    if prices_file:
        prices.update({k: tuple(v) for k, v in json.loads(Path(prices_file).read_text()).items()})
    return prices


class RequestCache:
    """Answered requests on disk (SQLite, WAL): safe across processes and across kill -9.

    With `remote_url` (s3://bucket/prefix/request-cache), answers are also written there as one
    small JSON object per key, and a local miss is looked up there before the endpoint is asked.
    The remote calls block: async callers run `get`/`put` in a thread (see LLMClient).
    """

    def __init__(self, path: Path, remote_url: str | None = None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, created REAL)")
        self._lock = threading.Lock()
        self.remote = remote_url.rstrip("/") if remote_url else None

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        if row:
            return json.loads(row[0])
        if self.remote:
            reply = self._remote_get(key)
            if reply is not None:
                self._put_local(key, reply)
                return reply
        return None

    def put(self, key: str, reply: dict) -> None:
        self._put_local(key, reply)
        if self.remote:
            # A failed upload is not swallowed: the run would pay again elsewhere without knowing.
            filesystem().pipe(f"{self.remote}/{key}.json", json.dumps(reply).encode())

    def _put_local(self, key: str, reply: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?)", (key, json.dumps(reply), time.time()))

    def _remote_get(self, key: str) -> dict | None:
        try:
            return json.loads(filesystem().cat(f"{self.remote}/{key}.json"))
        except FileNotFoundError:
            return None


class RequestPacer:
    """Spaces requests evenly at the configured rate and keeps a token bucket for tokens/minute.

    Reservations are arithmetic under a thread lock (no awaiting inside), so concurrent
    coroutines and threads each get their own slot; the caller then sleeps until its slot.
    """

    def __init__(self, requests_per_minute: float, tokens_per_minute: float):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.pace = 1.0  # fraction of the configured rate, lowered by 429s
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._tokens = tokens_per_minute
        self._tokens_at = time.monotonic()

    def reserve(self, est_tokens: int) -> float:
        """Reserve a slot for one request of about `est_tokens`; returns seconds to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_slot, self._paused_until)
            rate = self.tpm / 60.0
            self._tokens = min(self.tpm, self._tokens + rate * (start - self._tokens_at))
            need = min(est_tokens, self.tpm)
            if self._tokens < need:
                start += (need - self._tokens) / rate
                self._tokens = need
            self._tokens -= need
            self._tokens_at = start
            # 1% under the limit: a server counting a sliding minute never sees rpm + 1.
            self._next_slot = start + 60.0 / (self.rpm * self.pace) * 1.01
            return start - now

    def settle(self, est_tokens: int, used_tokens: int) -> None:
        """Correct the token bucket once the reply says how many tokens were really used."""
        with self._lock:
            self._tokens += min(est_tokens, self.tpm) - used_tokens

    def back_off(self, seconds: float) -> None:
        """A 429: nobody sends for `seconds`, and the pace drops (multiplicative decrease)."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self.pace = max(0.25, self.pace * 0.8)

    def succeeded(self) -> None:
        with self._lock:
            self.pace = min(1.0, self.pace * 1.02)


_PACERS: dict[tuple, RequestPacer] = {}
_PACERS_LOCK = threading.Lock()


def shared_pacer(endpoint: Endpoint, limits: LimitsConfig) -> RequestPacer:
    """One pacer per endpoint and limits in this process, however many clients and tasks use it."""
    key = (endpoint.base_url, endpoint.model, limits.requests_per_minute, limits.tokens_per_minute)
    with _PACERS_LOCK:
        if key not in _PACERS:
            _PACERS[key] = RequestPacer(limits.requests_per_minute, limits.tokens_per_minute)
        return _PACERS[key]


@dataclass
class UsageMeter:
    """What the teacher cost so far: requests sent, replayed from cache, failures, tokens, dollars."""

    requests: int = 0  # logical requests, answered from the endpoint or the cache
    sent: int = 0  # HTTP attempts, retries included
    cached: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    bad_replies: int = 0  # bodies that are not a chat completion (HTML, broken JSON, no choices)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # of those, what the server took from its prompt cache (llama.cpp, OpenAI report it)
    completion_tokens: int = 0
    cost_usd: float = 0.0
    price_known: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def failures(self) -> str:
        """The failures so far, in words, for error messages."""
        parts = [
            f"{n} {what}"
            for n, what in (
                (self.rate_limited, "429s"),
                (self.timeouts, "timeouts"),
                (self.connection_errors, "dropped connections"),
                (self.server_errors, "server errors"),
                (self.bad_replies, "bad replies"),
            )
            if n
        ]
        return ", ".join(parts) or "no failures"

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class EndpointHealth:
    """Whether an endpoint still answers at all; one per endpoint in the process, like the pacer.

    A request that keeps failing on its own is bounded by its retry budget; this bounds a whole
    stage against an endpoint that answers nothing (a hung or stopped server): once no request
    has succeeded for `give_up_after` seconds while attempts keep failing, every request gives up.
    429s do not count: a server that says "slow down" is alive.
    """

    def __init__(self, give_up_after: float):
        self.give_up_after = give_up_after
        self.answered = False  # has it ever sent a real chat completion?
        self._foreign = 0  # replies like no OpenAI server sends, while it has never answered
        self._last_success: float | None = None
        self._lock = threading.Lock()

    def attempt_started(self) -> None:
        with self._lock:
            if self._last_success is None:
                self._last_success = time.monotonic()  # the clock starts with the first attempt

    def succeeded(self) -> None:
        with self._lock:
            self.answered = True
            self._last_success = time.monotonic()

    def foreign_reply(self) -> int:
        """Count a reply that no OpenAI server would send; returns how many there were."""
        with self._lock:
            self._foreign += 1
            return self._foreign

    def silent_for(self) -> float:
        """Seconds since the last success (or the first attempt)."""
        with self._lock:
            return time.monotonic() - (self._last_success or time.monotonic())

    def dead(self) -> bool:
        return self.silent_for() > self.give_up_after


_HEALTH: dict[str, EndpointHealth] = {}


def shared_health(endpoint: Endpoint, limits: LimitsConfig) -> EndpointHealth:
    with _PACERS_LOCK:
        key = f"{endpoint.base_url}|{limits.give_up_after}"
        if key not in _HEALTH:
            _HEALTH[key] = EndpointHealth(limits.give_up_after)
        return _HEALTH[key]


def request_key(
    model: str,
    messages: list[dict],
    temperature: float,
    max_tokens: int,
    n: int,
    salt: str,
    response_format: dict | None = None,
    top_logprobs: int = 0,
) -> str:
    parts = (
        [model, messages, round(temperature, 4), max_tokens, n, salt]
        + ([response_format] if response_format else [])
        + ([{"top_logprobs": top_logprobs}] if top_logprobs else [])
    )
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class _Retry(Exception):
    """One failed attempt that may be retried after `wait` seconds."""

    def __init__(self, reason: str, wait: float):
        super().__init__(reason)
        self.reason, self.wait = reason, wait


BAD_REPLIES_BEFORE_GIVING_UP = 3  # from an endpoint that never sent a real completion: it is not an OpenAI server


class LLMClient:
    """Chat completions against one endpoint, with pacing, retries, a request cache and a log."""

    def __init__(
        self,
        endpoint: Endpoint,
        limits: LimitsConfig,
        cache_path: Path,
        log_path: Path | None = None,
        prices: dict[str, tuple[float, float]] | None = None,
        remote_cache_url: str | None = None,
        structured_output: bool = True,
        shared_limit: SharedRateLimit | None = None,
    ):
        """`structured_output`: send the JSON schemas callers give (`response_format`); off for
        servers that refuse them (the prompts ask for JSON in words too). `shared_limit`: the
        requests and tokens per minute every process using this teacher shares
        (`p2m.tasks.teacher.shared_limits`); each attempt takes its slot there after the in-process pacer."""
        self.shared_limit = shared_limit
        self.endpoint = endpoint
        self.limits = limits
        self.cache = RequestCache(cache_path, remote_cache_url)
        self.log_path = log_path
        self.structured_output = structured_output
        self.pacer = shared_pacer(endpoint, limits)
        self.health = shared_health(endpoint, limits)
        self.meter = UsageMeter()
        price = (prices or PRICES).get(endpoint.model)
        if endpoint.kind == "local":
            price = (0.0, 0.0)
        self.meter.price_known = price is not None
        self._price = price or (0.0, 0.0)
        self._per_loop: dict[int, tuple[openai.AsyncOpenAI, asyncio.Semaphore]] = {}
        self._refuses_logprobs = False  # set once the endpoint answers a request for them with HTTP 400

    def _client(self) -> tuple[openai.AsyncOpenAI, asyncio.Semaphore]:
        # httpx async clients and semaphores belong to one event loop; Prefect may use several.
        loop = asyncio.get_running_loop()
        if id(loop) not in self._per_loop:
            replicas = self.endpoint.replicas
            client = openai.AsyncOpenAI(
                base_url=self.endpoint.base_url,
                api_key=self.endpoint.api_key,
                max_retries=0,  # ours, paced and counted
                timeout=httpx.Timeout(self.limits.request_timeout, connect=10.0),
                http_client=replica_http_client(replicas, self.limits) if replicas else None,
            )
            # With replicas, max_concurrency is per replica: the transport fills the freest one.
            in_flight = self.limits.max_concurrency * max(1, len(replicas))
            self._per_loop[id(loop)] = (client, asyncio.Semaphore(in_flight))
        return self._per_loop[id(loop)]

    async def acomplete(
        self,
        messages: list[dict],
        *,
        temperature: float = 0.0,
        max_tokens: int = 256,
        n: int = 1,
        salt: str = "",
        purpose: str = "",
        response_format: dict | None = None,
    ) -> list[str]:
        """The reply texts (one per choice) for `messages`, from the cache or the endpoint.

        Raises P2MError when the retry budget is spent, the endpoint has answered nothing for too long,
        or it refuses the request (a bad key, an unknown model).
        """
        reply = await self._reply(messages, temperature, max_tokens, n, salt, purpose, response_format, top_logprobs=0)
        return reply["texts"]

    async def acomplete_scored(
        self,
        messages: list[dict],
        *,
        top_logprobs: int,
        temperature: float = 0.0,
        max_tokens: int = 256,
        salt: str = "",
        purpose: str = "",
        response_format: dict | None = None,
    ) -> tuple[list[str], list[dict] | None]:
        """(the reply texts, the first choice's token log-probabilities: OpenAI's
        `logprobs.content`, each {token, logprob, top_logprobs: [{token, logprob}...]}, or None
        where the endpoint gives none), asking for the `top_logprobs` likeliest tokens at each place.

        An endpoint that refuses the request for asking (HTTP 400) is asked without, from then on.
        """
        if not self._refuses_logprobs:
            try:
                reply = await self._reply(
                    messages, temperature, max_tokens, 1, salt, purpose, response_format, top_logprobs
                )
                return reply["texts"], reply.get("logprobs")
            except P2MError as e:
                if "HTTP 400" not in str(e):
                    raise
                self._refuses_logprobs = True
        reply = await self._reply(messages, temperature, max_tokens, 1, salt, purpose, response_format, 0)
        return reply["texts"], None

    async def _reply(
        self,
        messages: list[dict],
        temperature: float,
        max_tokens: int,
        n: int,
        salt: str,
        purpose: str,
        response_format: dict | None,
        top_logprobs: int,
    ) -> dict:
        """The cache entry for a request ({"texts", "usage", "logprobs"}), asking the endpoint on a miss."""
        if not self.structured_output:
            response_format = None  # the prompt asks for JSON in words as well
        key = request_key(
            self.endpoint.model, messages, temperature, max_tokens, n, salt, response_format, top_logprobs
        )
        self.meter.add(requests=1)
        hit = await asyncio.to_thread(self.cache.get, key) if self.cache.remote else self.cache.get(key)
        if hit is not None:
            self.meter.add(cached=1)
            self._log(purpose, key, cached=True, texts=hit["texts"], attempts=0, usage=hit.get("usage"))
            return hit

        client, semaphore = self._client()
        est_tokens = sum(len(m["content"]) for m in messages) // 3 + max_tokens * n
        request = {
            "model": self.endpoint.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "n": n,
        }
        if response_format:
            request["response_format"] = response_format
        if top_logprobs:
            request |= {"logprobs": True, "top_logprobs": top_logprobs}
        deadline = time.monotonic() + self.limits.retry_budget
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                texts, usage, logprobs = await self._attempt(client, semaphore, request, est_tokens, attempt)
                break
            except _Retry as retry:
                attempt += 1
                if self.health.dead():
                    self._log(purpose, key, cached=False, texts=None, attempts=attempt, error=retry.reason)
                    raise P2MError(
                        f"the LLM endpoint {self.endpoint.base_url} has answered nothing "
                        f"for {self.health.silent_for():.0f} s "
                        f"({self.meter.failures()}); check that it is up, or raise P2M_LIMITS__GIVE_UP_AFTER; "
                        "answered requests are cached, so the same command resumes"
                    ) from None
                if time.monotonic() + retry.wait > deadline:
                    self._log(purpose, key, cached=False, texts=None, attempts=attempt, error=retry.reason)
                    raise P2MError(
                        f"the LLM endpoint {self.endpoint.base_url} kept failing "
                        f"({retry.reason}; {self.meter.failures()}) for "
                        f"{self.limits.retry_budget:.0f} s of retries (P2M_LIMITS__RETRY_BUDGET); "
                        "answered requests are cached, so run the same command again to resume"
                    ) from None
                await asyncio.sleep(retry.wait)
        self.pacer.settle(est_tokens, usage["prompt_tokens"] + usage["completion_tokens"])
        self.pacer.succeeded()
        self.meter.add(
            prompt_tokens=usage["prompt_tokens"],
            cached_prompt_tokens=usage.get("cached_prompt_tokens", 0),
            completion_tokens=usage["completion_tokens"],
            cost_usd=(usage["prompt_tokens"] * self._price[0] + usage["completion_tokens"] * self._price[1]) / 1e6,
        )
        entry = {"texts": texts, "usage": usage} | ({"logprobs": logprobs} if logprobs else {})
        if self.cache.remote:
            await asyncio.to_thread(self.cache.put, key, entry)
        else:
            self.cache.put(key, entry)
        self._log(
            purpose,
            key,
            cached=False,
            texts=texts,
            attempts=attempt + 1,
            usage=usage,
            seconds=round(time.monotonic() - started, 3),
        )
        return entry

    async def _attempt(
        self, client, semaphore, request: dict, est_tokens: int, attempt: int
    ) -> tuple[list[str], dict, list[dict] | None]:
        """One HTTP attempt at `request` (chat-completion arguments): (texts, usage, the first
        choice's log-probabilities or None), or _Retry with how long to wait; P2MError when
        retrying cannot help."""
        async with semaphore:
            await asyncio.sleep(self.pacer.reserve(est_tokens))
            # Other processes' requests to this teacher count too: a slot from the shared limit.
            permit = await self.shared_limit.acquire(est_tokens) if self.shared_limit else None
            self.health.attempt_started()
            self.meter.add(sent=1)
            try:
                resp = await client.chat.completions.create(**request)
            except openai.RateLimitError as e:
                # The server is alive and says when to come back; a very short Retry-After is
                # stretched by our own backoff, so a 429 storm slows us down instead of failing.
                wait = max(retry_after_seconds(e.response) or 0.0, backoff_seconds(attempt, base=0.5))
                self.pacer.back_off(wait)
                self.pacer.settle(est_tokens, 0)
                self.meter.add(rate_limited=1)
                raise _Retry(f"429, waited {wait:.1f} s", wait) from None
            except openai.APITimeoutError:
                self._failed(est_tokens, timeouts=1)
                raise _Retry(
                    f"no answer within {self.limits.request_timeout:.0f} s", backoff_seconds(attempt)
                ) from None
            except openai.APIConnectionError as e:
                self._failed(est_tokens, connection_errors=1)
                raise _Retry(
                    f"connection failed ({e.__cause__.__class__.__name__ if e.__cause__ else 'closed'})",
                    backoff_seconds(attempt),
                ) from None
            except openai.APIStatusError as e:
                if e.status_code >= 500 or e.status_code in (408, 409):
                    self._failed(est_tokens, server_errors=1)
                    raise _Retry(f"HTTP {e.status_code}", backoff_seconds(attempt)) from None
                raise P2MError(self._explain_status(e)) from None
            except (
                ValueError,
                openai.APIResponseValidationError,
            ):  # a body that is not JSON (JSONDecodeError is a ValueError)
                resp = None
        choices = getattr(resp, "choices", None)
        answers = choices if isinstance(choices, list) else []
        texts = [(c.message.content or "") for c in answers if getattr(c, "message", None) is not None]
        if not texts:
            self._bad_reply(resp, est_tokens)
            raise _Retry(
                "a reply without choices" if isinstance(choices, list) else "a reply that is not a chat completion",
                backoff_seconds(attempt),
            )
        self.health.succeeded()
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        if getattr(resp, "usage", None) is not None:
            usage = {
                "prompt_tokens": resp.usage.prompt_tokens or 0,
                "completion_tokens": resp.usage.completion_tokens or 0,
                "cached_prompt_tokens": getattr(getattr(resp.usage, "prompt_tokens_details", None), "cached_tokens", 0)
                or 0,
            }
        if permit is not None:  # a server that reports no usage keeps the whole estimate spent
            self.shared_limit.settle(permit, usage["prompt_tokens"] + usage["completion_tokens"] or permit.tokens)
        content = getattr(getattr(answers[0], "logprobs", None), "content", None)
        logprobs = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in content] if content else None
        return texts, usage, logprobs

    def usage(self) -> dict:
        """What this client spent (`UsageMeter`), with, when they apply, each replica's attempts and
        failures (since the process started) and the shared limit's server calls."""
        usage = self.meter.as_dict()
        if self.endpoint.replicas:
            usage["replicas"] = shared_replicas(self.endpoint.replicas, self.limits).stats()
        if self.shared_limit is not None:
            usage["shared_limit"] = self.shared_limit.stats()
        return usage

    def _bad_reply(self, resp, est_tokens: int) -> None:
        """Count a reply that holds no answer; raise P2MError when the endpoint has never answered
        like an OpenAI server: its first replies were all web pages, JSON of another shape, or
        completions without choices. A broken body (`resp` None: JSON cut off in transit) never
        counts towards that: a working server sends those too, and a retry gets a whole one."""
        self._failed(est_tokens, bad_replies=1)
        if resp is None or self.health.answered:
            return
        if isinstance(resp, str):
            kind = f"a page that is not JSON ({resp[:80]!r})"
        elif isinstance(getattr(resp, "choices", None), list):
            kind = "chat completions without any choice"
        else:
            kind = f"JSON that is not a chat completion ({str(resp)[:80]!r})"
        if self.health.foreign_reply() >= BAD_REPLIES_BEFORE_GIVING_UP:
            raise P2MError(
                f"{self.endpoint.base_url} does not answer like an OpenAI chat-completions server "
                f"({BAD_REPLIES_BEFORE_GIVING_UP} replies, none with an answer: {kind}); check OPENAI_BASE_URL "
                "(it usually ends in /v1) and P2M_TEACHER_MODEL"
            )

    def _failed(self, est_tokens: int, **counts) -> None:
        self.pacer.settle(est_tokens, 0)
        self.meter.add(**counts)

    def complete(self, messages: list[dict], **kwargs) -> list[str]:
        """Synchronous `acomplete`, usable from plain code and sync Prefect tasks."""
        return run_sync(self.acomplete(messages, **kwargs))

    def _explain_status(self, e: openai.APIStatusError) -> str:
        where = self.endpoint.base_url
        if e.status_code in (401, 403):
            return f"the LLM endpoint {where} rejected the API key (HTTP {e.status_code}); check OPENAI_API_KEY"
        if e.status_code == 404:
            return f"the LLM endpoint {where} does not know model {self.endpoint.model!r}; set P2M_TEACHER_MODEL"
        return f"the LLM endpoint {where} refused the request (HTTP {e.status_code}: {str(e)[:200]})"

    def _log(self, purpose: str, key: str, **record) -> None:
        if self.log_path is not None:
            append_jsonl(self.log_path, {"time": time.time(), "purpose": purpose, "key": key[:16], **record})
