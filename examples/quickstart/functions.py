"""Quick-start functions for `eventbus up --functions examples/quickstart/functions.py`.

Each `async def name(event)` is served at `{gateway}/{namespace}/{name}`; `event` is a CloudEvent with
`.type`, `.id`, `.source`, `.attributes` and `.data` (bytes). The return value is the answer's body.
"""

from __future__ import annotations

import json
from typing import Any


async def hello(event: Any) -> dict[str, str]:
    """Logs what it gets and answers with a small JSON body."""
    data = event.data.decode("utf-8", "replace") if event.data is not None else None
    print(f"hello: got {event.type} id={event.id} source={event.source} data={data}", flush=True)
    try:
        payload = json.loads(data) if data else None
    except ValueError:
        payload = None
    return {"greeting": f"hello, {payload.get('hello', 'you') if isinstance(payload, dict) else 'you'}"}
