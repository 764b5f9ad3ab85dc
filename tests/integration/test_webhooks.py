"""A real webhook receiver (an HTTP server in this test process) behind the real gateway:
every delivery's signature verifies, a 500 answer brings retries, and a receiver that
hangs does not hold up the API request that caused the event."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from flaregate.security.signing import sign_request, verify_webhook

from .conftest import GATEWAY_KEY, run_gateway, upstream_env

ADMIN_KEY = "fg-admin-webhook-test-0123456789abcdef"


class Receiver:
    """Records every delivery. Answers from ``statuses`` in order (then 200); the first
    delivery can be held until ``release`` is set."""

    def __init__(self, statuses: list[int], hold_first: bool = False) -> None:
        self.statuses = list(statuses)
        self.deliveries: list[dict] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                first = not receiver.deliveries
                receiver.deliveries.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                            "at": time.monotonic()})
                receiver.arrived.set()
                if first:
                    receiver.release.wait(20)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.deliveries) >= count, f"{len(self.deliveries)} deliveries, expected {count}"


def admin(server, method: str, path: str, body=None) -> httpx.Response:
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json",
               **sign_request(ADMIN_KEY, method, path, raw)}
    return httpx.request(method, server.base_url + path, content=raw, headers=headers, timeout=10)


def env(upstream, **extra):
    return upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY, WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
                        WEBHOOK_RETRY_BASE_SECONDS="0.2", WEBHOOK_MAX_ATTEMPTS="4", **extra)


def test_signed_deliveries_retried_after_500_and_logged(upstream, tmp_path):
    with Receiver([500, 500], hold_first=True) as receiver, run_gateway(tmp_path / "wh", env(upstream)) as server:
        hook = admin(server, "POST", "/admin/webhooks", {"url": receiver.url, "events": ["failover"]})
        assert hook.status_code == 201, hook.text
        hook = hook.json()
        # A request that fails over (dead provider, then the mock upstream) raises the event.
        answer = httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                            headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                            json={"model": "gpt-failover", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200 and answer.headers["x-flaregate-provider"] == "upstream"
        # The API answered while the receiver still holds the first delivery open.
        assert receiver.arrived.wait(10) and not receiver.release.is_set()
        receiver.release.set()
        receiver.wait_for(3)
        events = [json.loads(d["body"]) for d in receiver.deliveries]
        assert {e["type"] for e in events} == {"failover"} and len({e["id"] for e in events}) == 1
        assert events[0]["data"]["from"] == "dead" and events[0]["data"]["to"] == "upstream"
        for delivery in receiver.deliveries:
            assert verify_webhook(hook["secret"], delivery["headers"], delivery["body"])
            assert not verify_webhook(hook["secret"] + "x", delivery["headers"], delivery["body"])
            assert delivery["headers"]["x-flaregate-event"] == "failover"
        gaps = [b["at"] - a["at"] for a, b in zip(receiver.deliveries[1:], receiver.deliveries[2:], strict=False)]
        print(f"retry gaps after the held first delivery: {[round(g, 2) for g in gaps]} s (base 0.2 s, doubling)")
        deadline = time.monotonic() + 10
        while True:
            log = admin(server, "GET", f"/admin/webhooks/{hook['id']}/deliveries").json()["data"]
            if any(entry["delivered"] for entry in log) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [(e["attempt"], e["status"], e["delivered"]) for e in reversed(log)] == [
            (1, 500, False), (2, 500, False), (3, 200, True)]
        assert len(receiver.deliveries) == 3  # no more attempts after the 2xx


def test_test_event_and_refused_private_target_without_the_development_switch(upstream, tmp_path):
    with Receiver([]) as receiver:
        strict = upstream_env(upstream.base_url, FLAREGATE_ADMIN_KEY=ADMIN_KEY)
        with run_gateway(tmp_path / "strict", strict) as server:
            refused = admin(server, "POST", "/admin/webhooks", {"url": receiver.url})
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "webhook_target_refused"
        with run_gateway(tmp_path / "dev", env(upstream)) as server:
            hook = admin(server, "POST", "/admin/webhooks", {"url": receiver.url, "secret": "s" * 32}).json()
            assert admin(server, "POST", f"/admin/webhooks/{hook['id']}/test").status_code == 202
            receiver.wait_for(1)
            delivery = receiver.deliveries[0]
            assert json.loads(delivery["body"])["type"] == "webhook.test"
            assert verify_webhook("s" * 32, delivery["headers"], delivery["body"])
            assert admin(server, "DELETE", f"/admin/webhooks/{hook['id']}").status_code == 200
            assert admin(server, "GET", "/admin/webhooks").json()["data"] == []
