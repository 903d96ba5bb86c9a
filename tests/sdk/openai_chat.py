"""The openai SDK's chat completions with tools. MODE: tool (a whole tool
call, then its result sent back), tool_stream (streamed, with usage)."""

import openai
from harness import (HEADERS, KEY, MAX_TOKENS, MODEL, URL, WEATHER_DESCRIPTION,
                     WEATHER_QUESTION, WEATHER_SCHEMA, dump, run)

client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=30,
                       default_headers=HEADERS)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": WEATHER_DESCRIPTION, "parameters": WEATHER_SCHEMA}}
ASK = [{"role": "user", "content": WEATHER_QUESTION}]


def tool():
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                           max_tokens=MAX_TOKENS)
    msg = first.choices[0].message
    results = [{"role": "tool", "tool_call_id": c.id, "content": "sunny"}
               for c in msg.tool_calls or []]
    second = client.chat.completions.create(
        model=MODEL, tools=[WEATHER], max_tokens=MAX_TOKENS,
        messages=ASK + [msg.model_dump(exclude_none=True)] + results)
    return {"first": dump(first), "second": dump(second),
            "second_text": second.choices[0].message.content}


def tool_stream():
    calls, text, finish, usage, chunks = {}, "", None, None, []
    with client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER],
                                        max_tokens=MAX_TOKENS, stream=True,
                                        stream_options={"include_usage": True}) as s:
        for chunk in s:
            chunks.append(dump(chunk))
            if chunk.usage is not None:
                usage = dump(chunk.usage)
            for choice in chunk.choices:
                d = choice.delta
                text += d.content or ""
                for tc in d.tool_calls or []:
                    c = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                    c["id"] = c["id"] or tc.id
                    if tc.function is not None:
                        c["name"] += tc.function.name or ""
                        c["arguments"] += tc.function.arguments or ""
                finish = choice.finish_reason or finish
    return {"calls": [calls[i] for i in sorted(calls)], "text": text,
            "finish_reason": finish, "usage": usage, "chunks": chunks}


run({"tool": tool, "tool_stream": tool_stream})
