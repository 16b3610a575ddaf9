"""Bounded, retrying chat requests to an OpenAI-compatible endpoint (vLLM, SGLang, OpenAI).

Retry policy (ours, not the SDK's: the SDK's own retries are off so that every failure kind follows
one policy): a request is retried up to ``max_retries`` times after a timeout, an HTTP 408/409/429/5xx,
a connection error, a malformed response body or an answer the caller's parser rejects (including an
answer cut off at ``max_tokens``). Waits grow exponentially from ``backoff_initial`` to ``backoff_max``
seconds with full jitter; a ``Retry-After`` header from the server is honoured up to ``backoff_max``.
Other HTTP statuses (400, 401, 404, ...) fail at once: retrying cannot help.

When the retries are used up the request fails with a kind (``parse``, ``timeout``, ``http``), except for
connection errors, which raise :class:`EndpointUnavailableError`: when the server cannot be reached
at all, failing every document would silently empty the output, so the stage stops and can resume later.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from srp_megatron.errors import SRPError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: HTTP statuses worth retrying (overload, rate limit, transient server errors).
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass
class EndpointConfig:
    """Where the OpenAI-compatible endpoint is and how requests to it are bounded and retried."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """API root (vLLM and SGLang: ``http://HOST:PORT/v1``)."""
    model: str = ""
    """Model name as the endpoint serves it (vLLM: the ``--served-model-name`` or the model path)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key; when it is unset a dummy key is sent (local vLLM)."""
    concurrency: int = 32
    """Requests in flight at once (per process)."""
    timeout: float = 60.0
    """Seconds one request may take before it counts as a timeout."""
    max_retries: int = 3
    """Retries after the first attempt (timeouts, HTTP 429/5xx, connection errors, malformed answers)."""
    backoff_initial: float = 1.0
    """Seconds of the first retry wait (upper bound of the jittered wait); doubles on each retry."""
    backoff_max: float = 30.0
    """Cap of any retry wait, in seconds."""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Extra JSON fields sent with every request, e.g. vLLM's
    ``{chat_template_kwargs: {enable_thinking: false}}`` for Qwen3 chat models."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url={self.base_url!r} must start with http:// or https:// (e.g. http://HOST:8000/v1)"
            )
        if not self.model:
            raise ValueError("model is empty: set it to the model name the endpoint serves")
        for name in ("concurrency", "timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0 (0 disables retries)")
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_initial={self.backoff_initial}, backoff_max={self.backoff_max}: "
                "need 0 <= backoff_initial <= backoff_max"
            )


class AnswerError(ValueError):
    """An answer the caller cannot use (malformed, empty, cut off); retried like a transient error."""


class EndpointUnavailableError(SRPError):
    """The endpoint could not be reached after all retries."""


@dataclass(frozen=True)
class RequestFailure:
    """A request that failed after its retries: ``kind`` is ``parse``, ``timeout`` or ``http``."""

    kind: str
    detail: str


class EndpointClient:
    """Sends chat requests with bounded concurrency, retries and counters; usable from any process.

    The async client and its event loop are created lazily in the process that sends requests (and
    re-created after a fork), so an owner object can be built in a parent and used in workers.
    """

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.counters: collections.Counter[str] = collections.Counter()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None

    def __getstate__(self) -> dict:
        return {"config": self.config, "counters": collections.Counter(), "_pid": None, "_loop": None, "_client": None}

    # -- running -----------------------------------------------------------------------------------
    def run(self, coros: Sequence[Awaitable[T]]) -> list[T]:
        """Run coroutines (made with :meth:`request`) concurrently on this process's loop, in order."""
        loop = self._ensure_loop()
        semaphore = asyncio.Semaphore(self.config.concurrency)

        async def bounded(coro: Awaitable[T]) -> T:
            async with semaphore:
                return await coro

        async def gather() -> list[T]:
            tasks = [asyncio.ensure_future(bounded(c)) for c in coros]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:  # e.g. EndpointUnavailableError: stop the rest before leaving the loop
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

        return loop.run_until_complete(gather())

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._pid != os.getpid() or self._loop is None or self._loop.is_closed():
            from openai import AsyncOpenAI

            self._loop = asyncio.new_event_loop()
            self._client = AsyncOpenAI(
                base_url=self.config.base_url,
                api_key=os.environ.get(self.config.api_key_env) or "EMPTY",
                timeout=self.config.timeout,
                max_retries=0,
            )
            self._pid = os.getpid()
        return self._loop

    def close(self) -> None:
        """Close the HTTP client and the event loop of this process."""
        if self._loop is not None and not self._loop.is_closed() and self._pid == os.getpid():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()
        self._loop = self._client = self._pid = None

    # -- one request -------------------------------------------------------------------------------
    async def request(
        self, messages: list[dict], parse: Callable[[str], T], max_tokens: int, temperature: float = 0.0
    ) -> T | RequestFailure:
        """One chat completion parsed by ``parse`` (which raises ``ValueError`` on a bad answer), with retries."""
        import openai

        for attempt in range(self.config.max_retries + 1):
            retry_after = None
            self.counters["requests"] += 1
            try:
                response = await self._client.chat.completions.create(
                    model=self.config.model,
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    extra_body=self.config.extra_body or None,
                )
                return parse(_answer_text(response))
            except openai.APITimeoutError as exc:
                kind, detail = "timeout", f"no answer within {self.config.timeout} s ({exc})"
            except openai.APIConnectionError as exc:
                kind, detail = "connection", f"cannot reach {self.config.base_url}: {exc}"
            except openai.APIStatusError as exc:
                kind, detail = "http", f"HTTP {exc.status_code}: {_short(str(exc))}"
                retry_after = _retry_after(exc)
                if exc.status_code not in RETRYABLE_STATUS:
                    self.counters["failed_http"] += 1
                    return RequestFailure("http", detail)
            except (ValueError, openai.APIResponseValidationError) as exc:  # our parsers, bad JSON bodies
                kind, detail = "parse", _short(str(exc))
            if attempt < self.config.max_retries:
                self.counters[f"retried_{kind}"] += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
        self.counters[f"failed_{kind}"] += 1
        if kind == "connection":
            raise EndpointUnavailableError(f"{detail} (after {self.config.max_retries} retries)")
        logger.debug("request failed after %d retries: %s", self.config.max_retries, detail)
        return RequestFailure(kind, detail)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential wait, at least the server's Retry-After, capped at ``backoff_max``."""
        cap = min(self.config.backoff_max, self.config.backoff_initial * 2**attempt)
        wait = random.uniform(0.0, cap)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.config.backoff_max)


def _answer_text(response: Any) -> str:
    """The text of the first choice; raises :class:`AnswerError` for bodies that are not a usable completion."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise AnswerError(f"response without choices: {_short(repr(response))}")
    choice = choices[0]
    text = choice.message.content if choice.message is not None else None
    if text is None:
        raise AnswerError("response message has no content")
    if choice.finish_reason == "length":
        raise AnswerError(f"answer cut off at max_tokens: {_short(text)!r}")
    return text


def _retry_after(exc: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (numeric form), if any."""
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
