"""The openai SDK against the gateway's Responses API. MODE: create, stream
(raw events with stream=True, then the responses.stream helper), tool (a
function call, then its output sent back), tool_stream."""

import json

import openai
from harness import (HEADERS, HELLO, KEY, MAX_TOKENS, MODEL, URL, WEATHER_DESCRIPTION,
                     WEATHER_QUESTION, WEATHER_SCHEMA, dump, run)

client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=30,
                       default_headers=HEADERS)
WEATHER = {"type": "function", "name": "get_weather", "description": WEATHER_DESCRIPTION,
           "parameters": WEATHER_SCHEMA}


def calls_of(response):
    return [dump(o) for o in response.output if o.type == "function_call"]


def summary(events):
    by_type = lambda t: [e for e in events if e["type"] == t]
    completed = by_type("response.completed")
    return {
        "types": [e["type"] for e in events],
        "events": events,
        "text": "".join(e["delta"] for e in by_type("response.output_text.delta")),
        "arguments": "".join(e["delta"] for e in
                             by_type("response.function_call_arguments.delta")),
        "completed": completed[-1]["response"] if completed else None,
    }


def raw_stream(**kw):
    with client.responses.create(model=MODEL, max_output_tokens=MAX_TOKENS, stream=True,
                                 **kw) as s:
        return summary([dump(ev) for ev in s])


def create():
    r = client.responses.create(model=MODEL, input=HELLO, max_output_tokens=MAX_TOKENS)
    return {"output_text": r.output_text, "status": r.status, "usage": dump(r.usage),
            "raw": dump(r)}


def stream():
    raw = raw_stream(input=HELLO)
    with client.responses.stream(model=MODEL, input=HELLO,
                                 max_output_tokens=MAX_TOKENS) as s:
        types = [ev.type for ev in s]
        final = s.get_final_response()
    return {"raw": raw, "helper": {"types": types, "final": dump(final),
                                   "text": final.output_text}}


def tool():
    first = client.responses.create(model=MODEL, input=WEATHER_QUESTION, tools=[WEATHER],
                                    max_output_tokens=MAX_TOKENS)
    call = next(o for o in first.output if o.type == "function_call")
    second = client.responses.create(
        model=MODEL, tools=[WEATHER], max_output_tokens=MAX_TOKENS,
        input=[
            {"role": "user", "content": WEATHER_QUESTION},
            call,
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ])
    return {"first": dump(first), "calls": calls_of(first),
            "arguments": json.loads(call.arguments),
            "second": dump(second), "second_text": second.output_text}


def tool_stream():
    return raw_stream(input=WEATHER_QUESTION, tools=[WEATHER])


run({"create": create, "stream": stream, "tool": tool, "tool_stream": tool_stream})
