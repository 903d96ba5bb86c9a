"""What the SDK scripts share: their settings from the environment, the tool
they offer, and printing what they saw as one JSON object on stdout."""

import json
import os
import sys

URL = os.environ["TOLLGATE_URL"]  # http://127.0.0.1:PORT
KEY = os.environ["TOLLGATE_KEY"]
MODEL = os.environ["MODEL"]
MODE = os.environ.get("MODE", "create")
MAX_TOKENS = int(os.environ.get("MAX_TOKENS", "256"))
# Extra headers on every call, a JSON object (e.g. {"x-api-key": …} to talk to
# an Anthropic-shaped server that wants the key there).
HEADERS = json.loads(os.environ.get("HEADERS", "{}"))

HELLO = "Say hello"
WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_DESCRIPTION = "The current weather in a city"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def dump(obj):
    """An SDK object as a dict, extra fields (`_usage_info`) included."""
    if obj is None:
        return None
    return obj.model_dump()


def run(modes):
    """Runs the function named by MODE and prints its result as JSON."""
    if MODE not in modes:
        sys.exit(f"unknown MODE {MODE!r}; known: {sorted(modes)}")
    result = modes[MODE]()
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")
