"""The LM server's pieces without a model: text deltas from token bytes with stop strings, and the request
bodies of the OpenAI-compatible API and KServe v2 generate."""
import pytest

from edgekit.serve.lm_protocol import BadBody, parse_chat, parse_completion, parse_generate
from edgekit.serve.lm_scheduler import TextStream


def feed_all(stream, pieces):
    out, stopped = [], False
    for p in pieces:
        delta, stopped = stream.feed(p)
        out.append(delta)
        if stopped:
            return out, True
    out.append(stream.flush())
    return out, stopped


def test_utf8_split_across_tokens_waits_for_its_bytes():
    euro = "€".encode()
    out, stopped = feed_all(TextStream(()), [b"a", euro[:1], euro[1:], b"b"])
    assert out == ["a", "", "€b"[:1], "b", ""] and not stopped


def test_a_stop_string_across_tokens_is_held_back_then_cut():
    out, stopped = feed_all(TextStream(("END",)), [b"one E", b"N", b"D two"])
    assert stopped and "".join(out) == "one " and out[0] == "one "  # "E" waited: it could start "END"
    out, stopped = feed_all(TextStream(("END",)), [b"one E", b"x"])
    assert not stopped and "".join(out) == "one Ex" and out[0] == "one "
    out, stopped = feed_all(TextStream(("\n\n", "###")), [b"a\n", b"\nb"])
    assert stopped and "".join(out) == "a"


def test_openai_defaults_and_refusals():
    g = parse_chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    assert (g.temperature, g.top_p, g.max_tokens, g.stream, g.messages[0]["content"]) == (1.0, 1.0, None, False,
                                                                                        "hi")
    assert parse_completion({"prompt": "x"}).max_tokens == 16  # OpenAI's completion default
    assert parse_completion({"prompt": [5, 6]}).ids == (5, 6)
    assert parse_chat({"messages": [{"role": "developer", "content": "x"}], "n": 1, "logprobs": False,
                       "stop": "##", "seed": 3}).stop == ("##",)
    for body, words in [({"messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5},
                         "presence_penalty=0.5 is not supported"),
                        ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p"),
                        ({"messages": [{"role": "user", "content": "x"}], "seed": "1"}, "seed"),
                        ({"messages": [{"role": "user", "content": {"a": 1}}]}, "content"),
                        ({"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, "stop")]:
        with pytest.raises(BadBody, match=words):
            parse_chat(body)
    g = parse_generate({"text_input": "x", "parameters": {"temperature": 0, "max_tokens": 5}}, True)
    assert (g.temperature, g.max_tokens, g.stream, g.kind) == (0.0, 5, True, "generate")
    assert g.sampling(5).greedy
