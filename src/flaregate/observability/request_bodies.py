"""Request and response bodies in the request-log record (``LOG_BODIES``; off by default).

On the request's path this only copies: the request body as the endpoint parsed it (after
the guardrails' redactions, so a policy that masks e-mail addresses masks them here too)
and the answer's bytes as they are relayed, each capped at ``LOG_BODY_MAX_BYTES``. The
secrets (provider, gateway and admin keys, and anything shaped like a key) are taken out
in the metrics hub when the record is written (``RequestLogStore``), off the path.
Nothing is kept for a key whose policy says ``private`` or a route in ``LOG_PRIVATE_ROUTES``
(model aliases or API paths, globs allowed).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..http import Response
from ..request_event import RequestEvent
from .logs import secrets_of

if TYPE_CHECKING:
    from ..config import Settings

REQUEST_BODY, RESPONSE_BODY = "request_body", "response_body"
BODY_FIELDS = (REQUEST_BODY, RESPONSE_BODY)


def log_secrets(settings: Settings) -> list[str]:
    """Every configured secret a body might echo (the same list the log redactor gets:
    :func:`flaregate.observability.logs.secrets_of`, every ``SecretStr`` of the settings)."""
    return secrets_of(settings)


def _capped(data: bytes, limit: int) -> tuple[str, bool]:
    return data[:limit].decode("utf-8", "ignore"), len(data) > limit


class BodyLog:
    def __init__(self, mode: str, max_bytes: int, private_routes: tuple[str, ...] = ()) -> None:
        self.request = mode in ("request", "both")
        self.response = mode in ("response", "both")
        self._max = max_bytes
        self._private = private_routes

    def _private_request(self, path: str, model: Any, private_key: bool) -> bool:
        names = [path, model] if isinstance(model, str) else [path]
        return private_key or any(fnmatch.fnmatchcase(n, p) for n in names for p in self._private)

    def keep_request(self, body: dict[str, Any], event: RequestEvent, private_key: bool) -> bytearray | None:
        """Called once the key is known and the guardrails have run on ``body``; returns the
        buffer the answer's bytes are to be collected in (None: the answer is not kept)."""
        if not (self.request or self.response) or self._private_request(str(event.get("path")), body.get("model"),
                                                                       private_key):
            return None
        if self.request:
            text, cut = _capped(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), self._max)
            event["request_body"] = text
            if cut:
                event["request_body_truncated"] = True
        return bytearray() if self.response else None

    def keep_response(self, collected: bytearray | None, response: Response) -> None:
        """A whole answer is copied now; a stream's bytes as they pass (see :meth:`finish`)."""
        if collected is None:
            return
        if isinstance(response.body, bytes):
            collected += response.body[:self._max + 1]
        else:
            response.body = self._collect(response.body, collected)

    async def _collect(self, stream: AsyncIterator[bytes], collected: bytearray) -> AsyncIterator[bytes]:
        async for chunk in stream:
            room = self._max + 1 - len(collected)
            if room > 0:
                collected += chunk[:room]
            yield chunk

    def finish(self, event: RequestEvent, collected: bytearray | None) -> None:
        """Turn the collected bytes into the record's text (the stream's end calls this
        after its last chunk passed the collector)."""
        if collected is None:
            return
        text, cut = _capped(bytes(collected), self._max)
        event["response_body"] = text
        if cut:
            event["response_body_truncated"] = True
