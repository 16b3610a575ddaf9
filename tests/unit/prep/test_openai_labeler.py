"""The ``openai`` labeler against a local OpenAI-compatible guard server (guard_server.py)."""

from __future__ import annotations

import multiprocessing
import pickle
import random
import sys

import pytest
from guard_server import GuardServer, answer, garbage, http_error, malformed_json

from srp_megatron.config import ConfigError, load_config
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.llm.endpoint import EndpointUnavailableError
from srp_megatron.prep.label.labelers.base import LABELERS, LabelFailure, SegmentedDocument
from srp_megatron.prep.label.labelers.guard_formats import DEFAULT_EMPTY_CONTEXT
from srp_megatron.prep.label.labelers.openai import OpenAILabeler, OpenAILabelerConfig

# What each trigger means in each format, written out independently of the server's table.
EXPECTED = {
    "qwen3guard": {
        "[violent]": (Label.unsafe, "Violent"),
        "[pii]": (Label.unsafe, "PII"),
        "[controversial]": (Label.controversial, "Politically Sensitive Topics"),
    },
    "llamaguard3": {
        "[violent]": (Label.unsafe, "Violent Crimes"),
        "[pii]": (Label.unsafe, "Privacy"),
        "[controversial]": (Label.unsafe, "Elections"),
    },
}


def make_labeler(server: GuardServer, **overrides) -> OpenAILabeler:
    """A labeler with tiny backoff (through the config loader, like the CLI); timeout tests shorten the timeout."""
    values = dict(base_url=server.url, model="guard", format=server.fmt, timeout=5.0, max_retries=2)
    values.update(backoff_initial=0.001, backoff_max=0.005, concurrency=8)
    values.update(overrides)
    return LABELERS.get("openai")(load_config(OpenAILabelerConfig, values=values))


def docs_with(triggers: list[list[str]]) -> list[SegmentedDocument]:
    """Documents whose segment j carries the trigger words ``triggers[d][j]`` (``""``: none)."""
    return [
        SegmentedDocument(f"d{d}", [f"Doc {d} sentence {j} {t}. " for j, t in enumerate(segs)])
        for d, segs in enumerate(triggers)
    ]


def expected_label(fmt: str, trigger: str) -> SegmentLabel:
    if not trigger:
        return SegmentLabel(Label.safe)
    level, category = EXPECTED[fmt][trigger]
    return SegmentLabel(level, (category,))


def test_all_safe_one_request_per_segment():
    docs = docs_with([[""] * 3, [""] * 5, []])
    with GuardServer() as server:
        labeler = make_labeler(server)
        out = labeler.label_documents(docs)
        assert out == [[SegmentLabel(Label.safe)] * 3, [SegmentLabel(Label.safe)] * 5, []]
        assert len(server.requests) == 8
        stats = labeler.stats()
        labeler.close()
    assert stats["requests"] == 8 and stats["segments"] == 8 and stats["documents"] == 3
    assert not any(k.startswith(("retried", "failed")) for k in stats)


@pytest.mark.parametrize("fmt", ["qwen3guard", "llamaguard3"])
def test_mixed_unsafe_with_categories(fmt):
    triggers = [["", "[violent]", "", "[pii]"], ["[controversial]"], ["", ""]]
    with GuardServer(fmt) as server:
        labeler = make_labeler(server)
        out = labeler.label_documents(docs_with(triggers))
        labeler.close()
    assert out == [[expected_label(fmt, t) for t in segs] for segs in triggers]
    assert labeler.identity == f"openai:{fmt}:guard"


def test_request_carries_context_and_sampling():
    segments = ["Alpha beta gamma. ", "Delta epsilon. ", "Zeta [violent] eta. ", "Theta."]
    with GuardServer() as server:
        labeler = make_labeler(server, context_chars=20, max_tokens=40)
        labeler.label_documents([SegmentedDocument("d", segments)])
        labeler.close()
    by_segment = {r.segment: r for r in server.requests}
    assert set(by_segment) == set(segments)
    for i, seg in enumerate(segments):
        body = by_segment[seg].body
        before = "".join(segments[:i])[-20:]
        assert body["messages"] == [
            {"role": "user", "content": before or DEFAULT_EMPTY_CONTEXT},
            {"role": "assistant", "content": seg},
        ]
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("guard", 0.0, 40)


def test_garbage_is_retried_then_label_error_never_safe():
    docs = docs_with([["", "[violent]"], [""]])
    bad_segment = docs[0].segments[1]
    with GuardServer() as server:
        server.handler = lambda req: garbage("Sure! It's fine.") if req.segment == bad_segment else answer()
        labeler = make_labeler(server, max_retries=2)
        out = labeler.label_documents(docs)
        stats = labeler.stats()
        labeler.close()
    assert isinstance(out[0], LabelFailure) and out[0].reason == "label_error"
    assert "segment 1" in out[0].detail and "Sure!" in out[0].detail
    assert out[1] == [SegmentLabel(Label.safe)]
    assert server.attempts[(docs[0].segments[0], bad_segment)] == 3  # first try + 2 retries
    assert stats["retried_parse"] == 2 and stats["failed_parse"] == 1 and stats["documents_label_error"] == 1


def test_garbage_then_good_answer_is_used():
    triggers = [["[pii]", "", "[violent]"]]
    with GuardServer() as server:
        server.handler = lambda req: garbage("Safety: Maybe") if req.attempt == 1 else answer()
        labeler = make_labeler(server)
        out = labeler.label_documents(docs_with(triggers))
        stats = labeler.stats()
        labeler.close()
    assert out == [[expected_label("qwen3guard", t) for t in triggers[0]]]
    assert stats["retried_parse"] == 3 and "failed_parse" not in stats and len(server.requests) == 6


@pytest.mark.parametrize(
    "first, kind",
    [(malformed_json(), "parse"), (garbage("Safety: Unsafe\nCateg", "length"), "parse"), (http_error(429), "http"),
     (http_error(500), "http"), (http_error(503, retry_after=0.01), "http"), (answer(sleep=1.0), "timeout")],
)  # fmt: skip
def test_transient_failure_then_success(first, kind):
    with GuardServer() as server:
        server.handler = lambda req: first if req.attempt == 1 else answer()
        labeler = make_labeler(server, timeout=0.3)
        out = labeler.label_documents(docs_with([["", "[violent]"]]))
        stats = labeler.stats()
        labeler.close()
    assert out == [[SegmentLabel(Label.safe), SegmentLabel(Label.unsafe, ("Violent",))]]
    assert stats[f"retried_{kind}"] == 2


@pytest.mark.parametrize(
    "action, reason",
    [(answer(sleep=1.0), "label_timeout"), (http_error(500), "label_http_error"), (malformed_json(), "label_error")],
)
def test_persistent_failure_fails_the_document(action, reason):
    with GuardServer() as server:
        server.handler = lambda req: action
        labeler = make_labeler(server, max_retries=1, timeout=0.3)
        out = labeler.label_documents(docs_with([[""]]))
        labeler.close()
        assert out == [LabelFailure(reason, out[0].detail)]
        assert len(server.requests) == 2


def test_client_error_is_not_retried():
    with GuardServer() as server:
        server.handler = lambda req: http_error(400)
        labeler = make_labeler(server)
        out = labeler.label_documents(docs_with([["", ""]]))
        labeler.close()
    assert out[0].reason == "label_http_error" and "HTTP 400" in out[0].detail
    assert len(server.requests) == 2  # one per segment, no retries


def test_concurrency_is_bounded_and_used():
    with GuardServer() as server:
        server.handler = lambda req: answer(sleep=0.05)
        labeler = make_labeler(server, concurrency=3)
        out = labeler.label_documents(docs_with([[""] * 6, [""] * 6]))
        labeler.close()
    assert all(isinstance(o, list) and len(o) == 6 for o in out)
    assert server.max_in_flight == 3


def test_order_preserved_under_random_latency():
    rng = random.Random(0)
    triggers = [[rng.choice(["", "", "[violent]", "[pii]", "[controversial]"]) for _ in range(rng.randint(1, 6))]
                for _ in range(12)]  # fmt: skip
    delays = {}
    with GuardServer() as server:
        server.handler = lambda req: answer(sleep=delays.setdefault(req.segment, rng.uniform(0, 0.02)))
        labeler = make_labeler(server, concurrency=16)
        out = labeler.label_documents(docs_with(triggers))
        labeler.close()
    assert out == [[expected_label("qwen3guard", t) for t in segs] for segs in triggers]


def test_unreachable_endpoint_raises():
    with GuardServer() as server:
        url = server.url
    labeler = LABELERS.get("openai")(
        OpenAILabelerConfig(base_url=url, model="guard", max_retries=1, backoff_initial=0.001, backoff_max=0.001)
    )
    with pytest.raises(EndpointUnavailableError, match="cannot reach"):
        labeler.label_documents(docs_with([["", ""]]))
    labeler.close()


def _label_in_child(labeler, docs, queue):
    queue.put(labeler.label_documents(docs))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_usable_after_fork_and_pickle():
    docs = docs_with([["[pii]", ""]])
    expected = [[expected_label("qwen3guard", "[pii]"), SegmentLabel(Label.safe)]]
    with GuardServer() as server:
        labeler = make_labeler(server)
        assert labeler.label_documents(docs) == expected  # parent's client and loop exist now
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_label_in_child, args=(labeler, docs, queue))
        child.start()
        result = queue.get(timeout=30)
        child.join(timeout=30)
        assert result == expected and child.exitcode == 0
        clone = pickle.loads(pickle.dumps(labeler))
        assert clone.label_documents(docs) == expected
        clone.close()
        labeler.close()


@pytest.mark.parametrize(
    "override, match",
    [("base_url=localhost:8000", "base_url"), ("model=''", "model is empty"), ("concurrency=0", "concurrency"),
     ("timeout=0", "timeout"), ("max_retries=-1", "max_retries"), ("backoff_max=0.1", "backoff_initial"),
     ("context_chars=-1", "context_chars"), ("empty_context=' '", "empty_context"), ("max_tokens=4", "max_tokens"),
     ("format=llamaguard2", "format")],
)  # fmt: skip
def test_config_rules(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(OpenAILabelerConfig, overrides=[override])


@pytest.mark.parametrize(
    "preset, fmt, model",
    [("openai-qwen3guard", "qwen3guard", "Qwen3Guard"), ("openai-llamaguard3", "llamaguard3", "Llama-Guard-3")],
)
def test_presets_drive_the_label_stage_config(preset, fmt, model):
    from srp_megatron.config import resolve_preset
    from srp_megatron.prep.label.stage import LabelConfig, build_labeler

    with GuardServer(fmt) as server:
        cfg = load_config(
            LabelConfig,
            [resolve_preset(preset, "label")],
            [f"openai.base_url={server.url}"],
            {"inputs": ["x"], "out": "y"},
        )
        labeler = build_labeler(cfg)
        assert isinstance(labeler, OpenAILabeler) and model in labeler.identity
        out = labeler.label_documents(docs_with([["", "[violent]"]]))
        labeler.close()
    assert out == [[expected_label(fmt, ""), expected_label(fmt, "[violent]")]]


def test_backoff_is_jittered_exponential_capped_and_honours_retry_after():
    from srp_megatron.llm.endpoint import EndpointClient, EndpointConfig

    client = EndpointClient(EndpointConfig(model="m", backoff_initial=0.5, backoff_max=3.0))
    for attempt in range(6):
        waits = [client._backoff(attempt, None) for _ in range(200)]
        cap = min(3.0, 0.5 * 2**attempt)
        assert 0.0 <= min(waits) and max(waits) <= cap and max(waits) > 0.5 * cap  # spread over [0, cap]
    assert all(client._backoff(0, 2.0) >= 2.0 for _ in range(50))  # Retry-After raises the wait ...
    assert client._backoff(0, 60.0) == 3.0  # ... up to backoff_max
