"""The teacher LLM as the stages see it: resolved lazily, started only when a stage needs it.

A fully cached re-run never calls the teacher, so it must not pay the local teacher's start-up
(about 10 s) or fail because a remote endpoint is down: the endpoint is resolved, checked and
(offline) started on first use, once per process, and stopped by `close()`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from p2m.tasks.core.config import LimitsConfig, Settings
from p2m.tasks.teacher.client import DEFAULT_OPENAI_MODEL, Endpoint, LLMClient, load_prices, resolve_endpoint
from p2m.tasks.teacher.local import running_local_teacher
from p2m.tasks.teacher.models import DEFAULT_TEACHER, TEACHER_MODELS, teacher_title
from p2m.tasks.teacher.shared_limits import limits_are_shared, shared_limit

if TYPE_CHECKING:
    from p2m.tasks.teacher.shared_limits import SharedRateLimit


class Teacher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._endpoint: Endpoint | None = None
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """Who answers, without contacting anyone: part of every cache key that depends on the teacher."""
        kind = self.settings.teacher_kind()
        if kind == "local":
            choice = self.settings.teacher_model or DEFAULT_TEACHER
            if choice in TEACHER_MODELS:
                return f"local:{choice}"  # checked by sha256 when assembled: the name is the content
            path = Path(choice).expanduser()
            return f"local:{path.resolve()}:{path.stat().st_size if path.is_file() else 0}"
        model = self.settings.teacher_model or (DEFAULT_OPENAI_MODEL if kind == "openai" else "")
        return f"{kind}:{model}@{self.settings.openai_base_url or 'openai'}"

    def endpoint(self) -> Endpoint:
        """The endpoint, checked reachable (and, offline, the local teacher started). Raises P2MError."""
        with self._lock:
            if self._endpoint is None:
                s = self.settings
                if s.teacher_kind() == "local":
                    local = self._stack.enter_context(
                        running_local_teacher(
                            s.home,
                            s.teacher_model,
                            s.local_teacher_port,
                            s.local_teacher_slots,
                            s.local_teacher_threads,
                            s.local_teacher_gpu_layers,
                        )
                    )
                    self._endpoint = Endpoint(local.base_url, local.api_key, local.model, "local")
                else:
                    self._endpoint = resolve_endpoint(s)
            return self._endpoint

    def limits(self) -> LimitsConfig:
        """The limits requests to this teacher keep. The local teacher costs nothing and has no
        account to protect: as many requests in flight as it has slots (so concurrent batches are
        decoded together), no pace, and patience for slow CPUs."""
        s = self.settings
        if s.teacher_kind() != "local":
            return s.limits
        return s.limits.model_copy(
            update={
                "max_concurrency": s.local_teacher_slots,
                "requests_per_minute": 1e6,
                "tokens_per_minute": 1e9,
                "request_timeout": max(s.limits.request_timeout, 900),
            }
        )

    def title(self) -> str:
        """Who the teacher is, for people: 'Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.5B, 1117 MB)', 'gpt-4o-mini'."""
        model = self.identity.split(":", 1)[1]
        return (
            teacher_title(model)
            if self.settings.teacher_kind() == "local"
            else model.split("@")[0] or "the endpoint's model"
        )

    def client(self, log_path: Path | None = None) -> LLMClient:
        """A client for this teacher that logs every request to `log_path`."""
        s = self.settings
        remote = f"{s.storage_url.rstrip('/')}/request-cache" if s.storage_url else None
        return LLMClient(
            self.endpoint(),
            self.limits(),
            s.home / "llm-cache.sqlite",
            log_path=log_path,
            prices=load_prices(s.prices_file),
            remote_cache_url=remote,
            structured_output=s.teacher_json_schema,
            shared_limit=self.shared_limit(),
        )

    def shared_limit(self) -> SharedRateLimit | None:
        """The requests and tokens per minute every process using this teacher shares
        (`p2m.tasks.teacher.shared_limits`): for a remote teacher when a Prefect server is configured; None
        otherwise (the local teacher is this process's own, with no account to protect)."""

        if self.settings.teacher_kind() == "local" or not limits_are_shared(self.settings.limits):
            return None
        return shared_limit(self.identity, self.limits())

    def lazy_client(self, log_path: Path | None = None) -> LazyClient:
        """A client that contacts (or starts) the teacher only if a request is actually made."""
        return LazyClient(self, log_path)

    def close(self) -> None:
        """Stop the local teacher if it runs; the next request starts it again (in 2-3 s)."""
        with self._lock:
            self._stack.close()
            self._endpoint = None


class LazyClient:
    """`LLMClient.complete` on demand: for stages that need the teacher only in rare cases."""

    def __init__(self, teacher: Teacher, log_path: Path | None):
        self._teacher, self._log_path, self._client = teacher, log_path, None

    def complete(self, messages: list[dict], **kwargs) -> list[str]:
        if self._client is None:
            self._client = self._teacher.client(self._log_path)
        return self._client.complete(messages, **kwargs)
