"""A provider that echoes the request's Authorization header (or an exception that carries
it) never shows the provider key to the client: not in a relayed 4xx, not in the 502/504
of a call whose every attempt failed, streaming or not, nor in the health report."""

from __future__ import annotations

import json

import pytest

from flaregate.ports import UpstreamError
from flaregate.providers.mock import StaticResponse
from tests.support.security import CONFIG_KEY, UPSTREAM_KEY, SecureRig, chat_request


class EchoAuthUpstream:
    """Answers every call with ``status`` and an error message repeating the key it was sent."""

    def __init__(self, status: int = 500, raise_instead: bool = False) -> None:
        self.status = status
        self.raise_instead = raise_instead
        self.hook_bodies: list[bytes] = []

    async def send(self, method, url, headers, body, timeout):
        if url.startswith("https://hooks.example.com/"):  # a webhook delivery
            self.hook_bodies.append(body)
            return StaticResponse(200, {}, [b""])
        auth = headers.get("authorization") or headers.get("x-api-key")
        if self.raise_instead:
            raise UpstreamError(f"TLS handshake failed for {url} with 'Authorization: {auth}'")
        message = f"invalid credentials: {auth} was refused (key {UPSTREAM_KEY[-12:]} ... {UPSTREAM_KEY})"
        return StaticResponse(self.status, {"content-type": "application/json"},
                              [json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()])


def leaked(text: str) -> bool:
    return UPSTREAM_KEY in text or "Bearer sk-" in text


@pytest.mark.parametrize(("upstream", "stream", "status"), [
    (EchoAuthUpstream(500), False, 502), (EchoAuthUpstream(500), True, 502), (EchoAuthUpstream(503), False, 502),
    (EchoAuthUpstream(429), False, 503), (EchoAuthUpstream(401), False, 401), (EchoAuthUpstream(401), True, 401),
    (EchoAuthUpstream(raise_instead=True), False, 502),
])
async def test_an_echoed_provider_key_is_redacted_in_what_the_client_gets(upstream, stream, status):
    rig = SecureRig({"UPSTREAM_MAX_ATTEMPTS": "2", "RETRY_BACKOFF_BASE_SECONDS": "0"}, transport=upstream)
    request = chat_request(CONFIG_KEY, "a")
    if stream:
        request.body = json.dumps({**json.loads(request.body), "stream": True}).encode()
    response = await rig.gateway.handle(request)
    body = response.body if isinstance(response.body, bytes) else b"".join([c async for c in response.body])
    text = body.decode() + json.dumps(response.headers)
    assert response.status == status, text
    assert not leaked(text), text
    assert "[redacted]" in text


async def test_the_health_report_and_the_webhook_reason_are_redacted_too():
    upstream = EchoAuthUpstream(500)
    rig = SecureRig({"UPSTREAM_MAX_ATTEMPTS": "1"}, transport=upstream)
    status, _, _ = await rig.call(rig.admin("POST", "/admin/webhooks", {"url": "https://hooks.example.com/x",
                                                                        "events": ["provider.down"]}))
    assert status == 201
    for _ in range(3):
        await rig.gateway.handle(chat_request(CONFIG_KEY, "a"))
    await rig.tasks.drain()
    health = rig.gateway.upstream.health.get("a", "a")
    assert health.recent_errors and not any(leaked(e["message"]) for e in health.recent_errors)
    report = rig.gateway.upstream.report(rig.gateway.router.routes(), {}, detail=True)
    assert "[redacted]" in json.dumps(report) and not leaked(json.dumps(report))
    [down] = [json.loads(b) for b in upstream.hook_bodies]
    assert down["type"] == "provider.down" and "[redacted]" in down["data"]["last_error"]
    assert not leaked(json.dumps(down))
