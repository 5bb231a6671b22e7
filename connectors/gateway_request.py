"""The request class of the gateway's session: a dispatch's headers are copied into the request in one call.

aiohttp's `ClientRequest.update_headers` adds the headers the session prepared one at a time, in Python. A
dispatch carries a dozen (the CloudEvent's attributes and the session's own), so that loop was 3-4% of the
instructions of an event's whole dispatch (callgrind, `bench/dispatch_instructions.py`). The headers sent
are the same, in the same order; a caller's own Host header takes the library's path unchanged.
"""

from __future__ import annotations

import aiohttp
from aiohttp import hdrs
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict


class CopiedHeadersRequest(aiohttp.ClientRequest):
    """`ClientRequest` with the session's prepared headers extended in C after the Host header."""

    def update_headers(self, headers: LooseHeaders | None) -> None:
        # The session always hands over a fresh CIMultiDict; anything else, or one that names its own
        # Host (which replaces the computed one), goes the library's way.
        if type(headers) is not CIMultiDict or hdrs.HOST in headers:
            super().update_headers(headers)
            return
        super().update_headers(None)  # the Host header alone, computed as the installed aiohttp does
        self.headers.extend(headers)
