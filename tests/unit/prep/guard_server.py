"""A local OpenAI-compatible ``/v1/chat/completions`` server for tests, scriptable per request.

By default it answers like a guard model, computing the verdict from the assistant turn (the segment):
trigger words in ``TRIGGERS`` make it unsafe or controversial. A test can replace ``handler`` to answer
with garbage text, sleep past the client's timeout, return an HTTP error or a malformed body, and can
read back every request, how often each (context, segment) pair was asked and the most requests that
were in flight at once. Other tests import it with ``from guard_server import GuardServer`` (pytest puts
this directory on ``sys.path``).

    with GuardServer("qwen3guard") as server:
        server.handler = lambda req: garbage("???") if req.attempt == 1 else answer()
        ... OpenAILabeler(OpenAILabelerConfig(base_url=server.url, ...)) ...
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: trigger word in a segment -> (level, Qwen3Guard category, Llama Guard 3 code).
TRIGGERS: dict[str, tuple[str, str, str]] = {
    "[violent]": ("unsafe", "Violent", "S1"),
    "[pii]": ("unsafe", "PII", "S7"),
    "[selfharm]": ("unsafe", "Suicide & Self-Harm", "S11"),
    "[controversial]": ("controversial", "Politically Sensitive Topics", "S13"),
}


@dataclass
class Request:
    """One request as the server saw it."""

    index: int
    """Arrival order, from 0."""
    attempt: int
    """How many times this (context, segment) pair has been asked, from 1."""
    body: dict

    @property
    def context(self) -> str:
        """Content of the first (user) message."""
        return self.body["messages"][0]["content"]

    @property
    def segment(self) -> str:
        """Content of the last message (the assistant turn under moderation)."""
        return self.body["messages"][-1]["content"]


@dataclass
class Action:
    """What the server does with a request."""

    kind: str  # answer | text | status | malformed
    content: str = ""
    status: int = 200
    sleep: float = 0.0
    finish_reason: str = "stop"
    headers: dict = field(default_factory=dict)


def answer(sleep: float = 0.0) -> Action:
    """A well-formed guard answer computed from the request (after ``sleep`` seconds)."""
    return Action("answer", sleep=sleep)


def garbage(text: str = "I cannot help with that.", finish_reason: str = "stop") -> Action:
    """A completion whose content is ``text`` verbatim."""
    return Action("text", content=text, finish_reason=finish_reason)


def http_error(status: int, retry_after: float | None = None) -> Action:
    """An HTTP error status with an OpenAI-style error body."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Action("status", status=status, headers=headers)


def malformed_json() -> Action:
    """A 200 response whose JSON body is cut off."""
    return Action("malformed")


def guard_answer(fmt: str, segment: str) -> str:
    """The answer a guard of format ``fmt`` gives for ``segment`` under the ``TRIGGERS`` rules."""
    hits = [v for w, v in TRIGGERS.items() if w in segment]
    levels = {h[0] for h in hits}
    if fmt == "llamaguard3":
        return "unsafe\n" + ",".join(h[2] for h in hits) if hits else "safe"
    level = "Unsafe" if "unsafe" in levels else "Controversial" if levels else "Safe"
    cats = ", ".join(h[1] for h in hits) or "None"
    return f"Safety: {level}\nCategories: {cats}\nRefusal: No"


class _HTTPServer(ThreadingHTTPServer):
    """A listen backlog for a client's default concurrency (socketserver's 5 refuses bursts of connections)."""

    request_queue_size = 128
    daemon_threads = True


class GuardServer:
    """Threaded HTTP server on 127.0.0.1 with an ephemeral port; use as a context manager."""

    def __init__(self, fmt: str = "qwen3guard", handler: Callable[[Request], Action] | None = None):
        self.fmt = fmt
        self.handler: Callable[[Request], Action] = handler or (lambda req: answer())
        self.requests: list[Request] = []
        self.attempts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        """The API root to give clients as ``base_url``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> GuardServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _register(self, body: dict) -> Request:
        with self._lock:
            key = (body["messages"][0]["content"], body["messages"][-1]["content"])
            self.attempts[key] += 1
            req = Request(len(self.requests), self.attempts[key], body)
            self.requests.append(req)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return req

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _make_handler(server: GuardServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": {"message": "not found"}}')
                return
            req = server._register(body)
            try:
                action = server.handler(req)
                time.sleep(action.sleep)
                self._respond(action, req)
            finally:
                server._done()

        def _respond(self, action: Action, req: Request) -> None:
            if action.kind == "status":
                err = {
                    "error": {"message": f"scripted {action.status}", "type": "server_error", "code": action.status}
                }
                self._send(action.status, json.dumps(err).encode(), action.headers)
                return
            if action.kind == "malformed":
                self._send(200, b'{"id": "x", "choices": [{"message": ')
                return
            content = guard_answer(server.fmt, req.segment) if action.kind == "answer" else action.content
            completion = {
                "id": f"chatcmpl-{req.index}",
                "object": "chat.completion",
                "created": 0,
                "model": req.body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": action.finish_reason,
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
            self._send(200, json.dumps(completion).encode())

    return Handler
