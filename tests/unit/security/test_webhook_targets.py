"""Webhook targets an attacker might register to reach the gateway's own network: numeric
shorthand for loopback and link-local addresses, IPv6 forms of them, and public-looking
names that resolve to private addresses (refused at delivery by the local host's resolver,
which then connects to the addresses it checked)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from flaregate.hosts.local import public_dns
from flaregate.hosts.local.transport import AiohttpTransport
from flaregate.ports import UpstreamError
from flaregate.providers.mock import StaticResponse
from flaregate.security.webhooks import TargetRefused, check_target, ipv4_shorthand, refused_ip
from tests.support.security import SecureRig

NUMERIC_ATTACKS = [
    "https://127.1/", "https://169.254.43518/latest/meta-data", "https://2130706433/", "https://0x7f.1/",
    "https://0177.0.0.1/", "https://[::ffff:127.0.0.1]/", "https://[::1]/", "https://0.0.0.0/", "https://0/",
    "https://0x7f000001/", "https://10.1/", "https://192.168.257/", "https://127.0.0.1./",
    "https://%31%32%37.0.0.1/", "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",  # percent-encoded, full-width
    "https://[::ffff:7f00:1]/", "https://[::127.0.0.1]/", "https://[64:ff9b::a9fe:a9fe]/",  # NAT64 -> 169.254.169.254
    "https://[2002:a00:1::]/", "https://[fe80::1%25eth0]/", "https://[ff02::1]/", "https://224.0.0.1/",
    "https://1.2.3.4.5/", "https://256.0.0.1/", "https://1.16777216/", "https://a.b.1/", "https://127.0.0.1 x/",
]


@pytest.mark.parametrize("url", NUMERIC_ATTACKS)
def test_numeric_and_mapped_forms_of_private_addresses_are_refused(url):
    with pytest.raises(TargetRefused):
        check_target(url, allow_private=False)


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("169.254.43518", "169.254.169.254"), ("2130706433", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x8.0x8.0x8.0x8", "8.8.8.8"), ("1.2.3", "1.2.0.3"),
    ("example.com", None), ("0xg.example", None), ("1e3", None),
])
def test_hosts_are_read_as_url_parsers_and_inet_aton_read_them(host, address):
    parsed = ipv4_shorthand(host)
    assert (str(parsed) if parsed else None) == address
    if address:  # the C library agrees
        assert socket.inet_ntoa(socket.inet_aton(host)) == address


def test_public_forms_pass_and_the_development_switch_lifts_the_rule():
    for url in ("https://hooks.example.com/x", "https://134744072/", "https://0x8.0x8.0x8.0x8/",
                "https://[2606:4700:4700::1111]/", "https://b\u00fccher.example/", "https://hooks.example.com./"):
        assert check_target(url, allow_private=False) == url
    for url in ("http://127.1:9000/", "https://2130706433/", "http://[::1]/"):
        assert check_target(url, allow_private=True) == url


def test_resolved_addresses_are_judged_by_the_same_rule():
    for ip in ("127.0.0.1", "10.0.0.7", "169.254.169.254", "::1", "fe80::1%eth0", "::ffff:192.168.0.1",
               "0.0.0.0", "not-an-address"):
        assert refused_ip(ip), ip
    for ip in ("8.8.8.8", "2606:4700:4700::1111"):
        assert not refused_ip(ip), ip


def fake_dns(monkeypatch, answers: dict[str, str]) -> list[str]:
    """loop.getaddrinfo answering from ``answers``; returns the names asked, in order."""
    asked: list[str] = []
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        asked.append(host)
        name = host.rstrip(".")
        if name not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[name], port))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return asked


async def test_the_local_transport_refuses_a_name_that_resolves_to_a_private_address(monkeypatch):
    asked = fake_dns(monkeypatch, {"hooks.example.com": "127.0.0.1", "meta.example.com": "169.254.169.254"})
    transport = AiohttpTransport()
    try:
        for name in ("hooks.example.com", "meta.example.com"):
            assert check_target(f"https://{name}/hook", allow_private=False)  # passes: a public-looking name
            with pytest.raises(TargetRefused, match="resolves to a private"):
                await transport.send_public("POST", f"https://{name}/hook", {}, b"{}", 2)
        assert [a.rstrip(".") for a in asked] == ["hooks.example.com", "meta.example.com"]  # at delivery
        with pytest.raises(TargetRefused):
            await transport.send_public("POST", "https://127.0.0.1/hook", {}, b"{}", 2)
    finally:
        await transport.aclose()


async def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch):
    """With the rule relaxed for loopback (standing in for a public address), a delivery to
    a name reaches the address the resolver checked, under the name's Host header."""
    seen: list[bytes] = []

    async def receiver(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(receiver, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    asked = fake_dns(monkeypatch, {"pinned.example.com": "127.0.0.1"})
    monkeypatch.setattr(public_dns, "refused_ip", lambda ip: ip != "127.0.0.1")
    transport = AiohttpTransport()
    try:
        response = await transport.send_public("POST", f"http://pinned.example.com:{port}/hook", {}, b"{}", 2)
        await response.read()
        await response.aclose()
        assert response.status == 204 and len(asked) == 1
        assert b"host: pinned.example.com" in seen[0].lower()
    finally:
        await transport.aclose()
        server.close()


class Receiver:
    """The upstream-transport port of a host that resolves names (``send_public``)."""

    def __init__(self):
        self.public, self.plain = [], []

    async def send(self, method, url, headers, body, timeout):
        if "invalid/v1" in url:
            raise UpstreamError("connection refused")
        self.plain.append(url)
        return StaticResponse(200, {}, [b"ok"])

    async def send_public(self, method, url, headers, body, timeout):
        self.public.append(url)
        raise TargetRefused("host 'h.example.com' resolves to a private, loopback or reserved address (10.0.0.9)")


async def test_deliveries_use_the_public_only_send_and_log_the_refusal():
    receiver = Receiver()
    rig = SecureRig({"WEBHOOK_MAX_ATTEMPTS": "1"}, transport=receiver)
    status, hook, _ = await rig.call(rig.admin("POST", "/admin/webhooks", {"url": "https://h.example.com/x"}))
    assert status == 201
    await rig.call(rig.admin("POST", f"/admin/webhooks/{hook['id']}/test"))
    await rig.tasks.drain()
    assert receiver.public == ["https://h.example.com/x"] and receiver.plain == []
    log = (await rig.call(rig.admin("GET", f"/admin/webhooks/{hook['id']}/deliveries")))[1]["data"]
    assert [(e["delivered"], e["status"]) for e in log] == [(False, None)]
    assert log[0]["error"].startswith("refused: ") and "10.0.0.9" in log[0]["error"]
    # The development switch delivers through the ordinary send.
    relaxed = SecureRig({"WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"}, transport=receiver)
    status, hook, _ = await relaxed.call(relaxed.admin("POST", "/admin/webhooks", {"url": "http://127.1:9/x"}))
    assert status == 201
    await relaxed.call(relaxed.admin("POST", f"/admin/webhooks/{hook['id']}/test"))
    await relaxed.tasks.drain()
    assert receiver.plain == ["http://127.1:9/x"]
