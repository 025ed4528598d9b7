"""The teacher LLM as the stages see it: resolved lazily, started only when a stage needs it.

A fully cached re-run never calls the teacher, so it must not pay the local teacher's start-up
(about 10 s) or fail because a remote endpoint is down: the endpoint is resolved, checked and
(offline) started on first use, once per process, and stopped by `close()`.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from p2m.tasks.config import Settings
from p2m.tasks.embedded import SMOLLM2_NAME
from p2m.tasks.llm import DEFAULT_OPENAI_MODEL, Endpoint, LLMClient, load_prices, resolve_endpoint
from p2m.tasks.local_teacher import running_local_teacher


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
            return f"local:{SMOLLM2_NAME}"
        model = self.settings.teacher_model or (DEFAULT_OPENAI_MODEL if kind == "openai" else "")
        return f"{kind}:{model}@{self.settings.openai_base_url or 'openai'}"

    def endpoint(self) -> Endpoint:
        """The endpoint, checked reachable (and, offline, the local teacher started). Raises P2MError."""
        with self._lock:
            if self._endpoint is None:
                s = self.settings
                if s.teacher_kind() == "local":
                    url = self._stack.enter_context(running_local_teacher(s.home, s.local_teacher_port))
                    self._endpoint = resolve_endpoint(s, local_base_url=url)
                else:
                    self._endpoint = resolve_endpoint(s)
            return self._endpoint

    def client(self, log_path: Path | None = None) -> LLMClient:
        """A client for this teacher that logs every request to `log_path`."""
        s = self.settings
        remote = f"{s.storage_url.rstrip('/')}/request-cache" if s.storage_url else None
        return LLMClient(self.endpoint(), s.limits, s.home / "llm-cache.sqlite", log_path=log_path, prices=load_prices(s.prices_file),
                         remote_cache_url=remote)

    def lazy_client(self, log_path: Path | None = None) -> "LazyClient":
        """A client that contacts (or starts) the teacher only if a request is actually made."""
        return LazyClient(self, log_path)

    def close(self) -> None:
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
