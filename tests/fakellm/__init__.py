"""A fake OpenAI-compatible server for tests and the bench: `python -m tests.fakellm --port 0`.

Chat Completions (`POST /v1/chat/completions`) with SSE streaming (`stream_options.include_usage`), tool calls,
JSON answers, usage, scripted errors (any status with headers, e.g. 429 + Retry-After), redirects, a stream
cut mid-way, and slowness (a delay per token). Scripted per model name through a control endpoint:

    POST /_script {"model": "m1", "steps": [{"status": 429, "headers": {"retry-after": "1"}}, {"text": "hi"}]}

Each call for model `m1` takes the next step; the last one repeats. A model with no script echoes the last
user message word by word; `stream-<N>x<MS>ms` streams N tokens `t<i>@<unix time sent> ` MS milliseconds
apart (the bench). Every call is logged for assertions: `GET /_requests` (model, arrival time, messages,
tools, response_format).
"""

from tests.fakellm.server import FakeLlmServer, Step

__all__ = ("FakeLlmServer", "Step")
