"""The anthropic SDK against the gateway's Messages API. MODE: create,
stream (raw events with stream=True, then the messages.stream helper),
tool (a tool call, then its result sent back), tool_stream."""

import anthropic
from harness import (HEADERS, HELLO, KEY, MAX_TOKENS, MODEL, URL, WEATHER_DESCRIPTION,
                     WEATHER_QUESTION, WEATHER_SCHEMA, dump, run)

client = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0, timeout=30,
                             default_headers=HEADERS)
WEATHER = {"name": "get_weather", "description": WEATHER_DESCRIPTION,
           "input_schema": WEATHER_SCHEMA}
ASK = [{"role": "user", "content": HELLO}]
WEATHER_ASK = [{"role": "user", "content": WEATHER_QUESTION}]


def text_of(content):
    return "".join(b.text for b in content if b.type == "text")


def tool_uses(content):
    return [{"id": b.id, "name": b.name, "input": b.input}
            for b in content if b.type == "tool_use"]


def raw_stream(**kw):
    """Every event of a stream=True call, as dicts."""
    with client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, stream=True, **kw) as s:
        return [dump(ev) for ev in s]


def helper_stream(**kw):
    """The event types of the messages.stream helper and its final message."""
    with client.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, **kw) as s:
        types = [ev.type for ev in s]
        final = s.get_final_message()
    return {"types": types, "final": dump(final), "text": text_of(final.content),
            "tool_uses": tool_uses(final.content), "stop_reason": final.stop_reason}


def summary(events):
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    return {
        "types": [e["type"] for e in events],
        "events": events,
        "text": "".join(d["text"] for d in deltas if d["type"] == "text_delta"),
        "partial_json": "".join(d["partial_json"] for d in deltas
                                if d["type"] == "input_json_delta"),
    }


def create():
    m = client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=ASK)
    return {"text": text_of(m.content), "stop_reason": m.stop_reason,
            "usage": dump(m.usage), "raw": dump(m)}


def stream():
    return {"raw": summary(raw_stream(messages=ASK)), "helper": helper_stream(messages=ASK)}


def tool():
    first = client.messages.create(model=MODEL, max_tokens=MAX_TOKENS,
                                   messages=WEATHER_ASK, tools=[WEATHER])
    uses = tool_uses(first.content)
    # Sent back as an agent writes its history: the answer's blocks, then
    # the result of each tool call.
    history = [{"type": "text", "text": b.text} if b.type == "text" else
               {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
               for b in first.content]
    second = client.messages.create(
        model=MODEL, max_tokens=MAX_TOKENS, tools=[WEATHER],
        messages=WEATHER_ASK + [
            {"role": "assistant", "content": history},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": u["id"], "content": "sunny"}
                for u in uses]},
        ])
    return {"first": dump(first), "tool_uses": uses, "stop_reason": first.stop_reason,
            "second": dump(second), "second_text": text_of(second.content),
            "second_stop_reason": second.stop_reason}


def tool_stream():
    return {"raw": summary(raw_stream(messages=WEATHER_ASK, tools=[WEATHER])),
            "helper": helper_stream(messages=WEATHER_ASK, tools=[WEATHER])}


run({"create": create, "stream": stream, "tool": tool, "tool_stream": tool_stream})
