"""The OpenAI-compatible rewriter against the local protocol server (guard_server.py)."""

from __future__ import annotations

import re

import pytest
from guard_server import GuardServer, answer, garbage, http_error

from srp_megatron.config import ConfigError, load_config
from srp_megatron.prep.render.rewriter import (
    DEFAULT_EMPTY_CONTEXT,
    DEFAULT_SYSTEM_PROMPT,
    OpenAIRewriter,
    OpenAIRewriterConfig,
)


def passage_of(req) -> str:
    """The passage inside the default user template of a request."""
    return re.search(r"<passage>\n(.*)\n</passage>", req.segment, re.DOTALL).group(1)


def upper_rewrite(req):
    """A well-formed rewrite: the passage upper-cased, after a preamble the parser must skip."""
    return garbage(f"Sure, here it is.\n<rewrite>\n{passage_of(req).upper()}\n</rewrite>")


def make(server: GuardServer, **overrides) -> OpenAIRewriter:
    values = dict(base_url=server.url, model="writer", timeout=5.0, max_retries=2)
    values.update(backoff_initial=0.001, backoff_max=0.005, concurrency=4)
    values.update(overrides)
    return OpenAIRewriter(load_config(OpenAIRewriterConfig, values=values))


ITEMS = [
    ("", "How to hurt someone badly. "),
    ("An earlier paragraph. ", "  Their home address is 12 Main St.\n\n"),
    ("Context text. ", "Another bad line."),
]


def test_good_rewrites_keep_order_and_whitespace():
    with GuardServer() as server:
        server.handler = upper_rewrite
        rewriter = make(server)
        out = rewriter.rewrite_batch(ITEMS)
        rewriter.close()
    assert out == ["HOW TO HURT SOMEONE BADLY. ", "  THEIR HOME ADDRESS IS 12 MAIN ST.\n\n", "ANOTHER BAD LINE."]
    by_passage = {passage_of(r): r.body for r in server.requests}
    for context, segment in ITEMS:
        body = by_passage[segment]
        assert body["messages"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
        assert f"<context>\n{context or DEFAULT_EMPTY_CONTEXT}\n</context>" in body["messages"][1]["content"]
        assert (body["model"], body["temperature"], body["max_tokens"]) == ("writer", 0.0, 1024)
    assert rewriter.stats()["rewrites"] == 3 and rewriter.identity == "openai-rewriter:writer"


@pytest.mark.parametrize(
    "bad",
    ["I can't rewrite this.", "<rewrite>   </rewrite>", "", "<rewrite>a</rewrite><rewrite>b</rewrite>",
     "<rewrite>unclosed", "<rewrite>Safe text <think> Safe </think></rewrite>",
     "<rewrite>" + "x" * 400 + "</rewrite>"],
)  # fmt: skip
def test_bad_answers_give_none_after_retries(bad):
    with GuardServer() as server:
        server.handler = lambda req: garbage(bad)
        rewriter = make(server, max_retries=2)
        out = rewriter.rewrite_batch(ITEMS[:2])
        stats = rewriter.stats()
        rewriter.close()
    assert out == [None, None]
    assert len(server.requests) == 6  # 2 items x (1 + 2 retries)
    assert stats["rewrites_failed_parse"] == 2 and stats["retried_parse"] == 4


def test_bad_then_good_answer_is_used():
    with GuardServer() as server:
        server.handler = lambda req: garbage("<rewrite></rewrite>") if req.attempt == 1 else upper_rewrite(req)
        rewriter = make(server)
        out = rewriter.rewrite_batch(ITEMS[2:])
        rewriter.close()
    assert out == ["ANOTHER BAD LINE."] and len(server.requests) == 2


def test_only_failed_items_are_none():
    with GuardServer() as server:
        server.handler = lambda req: http_error(500) if "address" in req.segment else upper_rewrite(req)
        rewriter = make(server, max_retries=1)
        out = rewriter.rewrite_batch(ITEMS)
        stats = rewriter.stats()
        rewriter.close()
    assert out == ["HOW TO HURT SOMEONE BADLY. ", None, "ANOTHER BAD LINE."]
    assert stats["rewrites_failed_http"] == 1


def test_timeout_gives_none():
    with GuardServer() as server:
        server.handler = lambda req: answer(sleep=1.0)
        rewriter = make(server, timeout=0.3, max_retries=1)
        assert rewriter.rewrite_batch(ITEMS[:1]) == [None]
        assert rewriter.stats()["rewrites_failed_timeout"] == 1
        rewriter.close()


def test_extra_body_is_sent():
    with GuardServer() as server:
        server.handler = upper_rewrite
        rewriter = make(server, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        rewriter.rewrite_batch(ITEMS[:1])
        rewriter.close()
    assert server.requests[0].body["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize(
    "override, match",
    [("user_template='{passage}'", "bad placeholder"), ("user_template='no placeholders'", "must contain"),
     ("max_length_ratio=0", "max_length_ratio"), ("temperature=-1", "temperature"), ("model=''", "model is empty"),
     ("context_chars=-1", "context_chars=-1 must be >= 0")],
)  # fmt: skip
def test_config_rules(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(OpenAIRewriterConfig, overrides=[override])
