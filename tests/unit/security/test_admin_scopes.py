"""Scoped admin credentials (team admin, read-only) beside the full admin key, and the
audit log of admin changes, over the real SQL store."""

from __future__ import annotations

import pytest

from tests.support.security import SecureRig


async def credential(rig: SecureRig, **spec: object) -> str:
    status, body, _ = await rig.call(rig.admin("POST", "/admin/credentials", spec))
    assert status == 201, body
    assert body["credential"].startswith("fgc-") and body["id"].startswith("cred_")
    return body["credential"]


async def as_(rig: SecureRig, token: str, method: str, path: str, body: object = None) -> tuple[int, dict]:
    status, answer, _ = await rig.call(rig.admin(method, path, body, key=token, secret=token))
    return status, answer


@pytest.fixture
async def teams():
    rig = SecureRig()
    for team_id in ("red", "blue"):
        status, _, _ = await rig.call(rig.admin("POST", "/admin/teams", {"id": team_id, "allowed_models": ["mock-*"]}))
        assert status == 201
    blue_key = await rig.create_key(team_id="blue")
    lone_key = await rig.create_key()
    red_admin = await credential(rig, role="team_admin", team_id="red", name="red lead")
    reader = await credential(rig, role="read_only")
    return rig, red_admin, reader, blue_key, lone_key


async def test_a_team_admin_manages_its_teams_keys_only(teams):
    rig, red_admin, _, blue_key, lone_key = teams
    status, made = await as_(rig, red_admin, "POST", "/admin/keys", {"name": "mine"})
    assert status == 201 and made["policy"]["team_id"] == "red"  # its team's, without saying so
    status, listed = await as_(rig, red_admin, "GET", "/admin/keys")
    assert [k["id"] for k in listed["data"]] == [made["id"]]
    assert (await as_(rig, red_admin, "POST", f"/admin/keys/{made['id']}/rotate", {"grace_seconds": 0}))[0] == 200
    assert (await as_(rig, red_admin, "PATCH", f"/admin/keys/{made['id']}", {"allowed_models": ["mock-1"]}))[0] == 200
    assert (await as_(rig, red_admin, "GET", "/admin/teams/red"))[0] == 200
    assert (await as_(rig, red_admin, "GET", "/admin/teams/red/usage"))[0] == 200
    status, teams_seen = await as_(rig, red_admin, "GET", "/admin/teams")
    assert [t["id"] for t in teams_seen["data"]] == ["red"]
    # Another team's (or no team's) keys, another team, the team's own bounds: 403.
    forbidden = [
        ("POST", "/admin/keys", {"team_id": "blue"}),
        ("GET", f"/admin/keys/{blue_key['id']}", None),
        ("DELETE", f"/admin/keys/{blue_key['id']}", None),
        ("PATCH", f"/admin/keys/{blue_key['id']}", {"team_id": "red"}),
        ("POST", f"/admin/keys/{blue_key['id']}/rotate", {}),
        ("DELETE", f"/admin/keys/{lone_key['id']}", None),
        ("PATCH", f"/admin/keys/{made['id']}", {"team_id": "blue"}),
        ("PATCH", f"/admin/keys/{made['id']}", {"team_id": None}),
        ("GET", "/admin/teams/blue", None),
        ("GET", "/admin/teams/blue/usage", None),
        ("PATCH", "/admin/teams/red", {"budget_usd_month": 1000}),
        ("DELETE", "/admin/teams/red", None),
        ("POST", "/admin/teams", {"id": "green"}),
        ("GET", "/admin/webhooks", None),
        ("POST", "/admin/credentials", {"role": "read_only"}),
        ("GET", "/admin/audit", None),
        ("DELETE", f"/admin/ratelimits/{blue_key['id']}", None),
        ("POST", "/admin/cache/purge", {}),
    ]
    for method, path, body in forbidden:
        status, answer = await as_(rig, red_admin, method, path, body)
        assert status == 403, (method, path, answer)
    assert (await rig.call(rig.admin("GET", f"/admin/keys/{blue_key['id']}")))[1]["revoked_at"] is None


async def test_a_read_only_credential_reads_and_changes_nothing(teams):
    rig, _, reader, blue_key, _ = teams
    for path in ("/admin/keys", f"/admin/keys/{blue_key['id']}", "/admin/teams", "/admin/teams/blue",
                 "/admin/teams/blue/usage", "/admin/webhooks", "/admin/audit"):
        status, answer = await as_(rig, reader, "GET", path)
        assert status == 200, (path, answer)
    for method, path, body in [("POST", "/admin/keys", {}), ("DELETE", f"/admin/keys/{blue_key['id']}", None),
                               ("POST", "/admin/teams", {"id": "x"}), ("PATCH", "/admin/teams/blue", {"name": "b"}),
                               ("POST", "/admin/webhooks", {"url": "https://h.example.com/"}),
                               ("GET", "/admin/credentials", None)]:
        status, answer = await as_(rig, reader, method, path, body)
        assert (status, answer["error"]["code"]) == (403, "admin_scope_forbidden"), (method, path)


async def test_a_revoked_or_unknown_credential_is_a_401_and_bad_credentials_are_400s(teams):
    rig, red_admin, _, _, _ = teams
    status, listed, _ = await rig.call(rig.admin("GET", "/admin/credentials"))
    red = next(c for c in listed["data"] if c["role"] == "team_admin")
    assert "digest" not in red and red["team_id"] == "red"
    assert (await rig.call(rig.admin("DELETE", f"/admin/credentials/{red['id']}")))[0] == 200
    assert (await as_(rig, red_admin, "GET", "/admin/keys"))[0] == 401
    assert (await as_(rig, "fgc-" + "A" * 43, "GET", "/admin/keys"))[0] == 401
    for bad in ({"role": "team_admin"}, {"role": "read_only", "team_id": "red"}, {"role": "owner"},
                {"role": "team_admin", "team_id": "nope"}):
        status, body, _ = await rig.call(rig.admin("POST", "/admin/credentials", bad))
        assert status == 400, (bad, body)


async def test_every_admin_change_is_audited_with_its_credential(teams):
    rig, red_admin, reader, blue_key, _ = teams
    await as_(rig, red_admin, "POST", "/admin/keys", {"name": "audited"})
    await as_(rig, red_admin, "DELETE", f"/admin/keys/{blue_key['id']}")  # refused: audited as such
    await as_(rig, reader, "GET", "/admin/keys")  # a read: not a change
    await rig.tasks.drain()
    status, audit, _ = await rig.call(rig.admin("GET", "/admin/audit?limit=50"))
    assert status == 200
    rows = audit["data"]
    red_id = next(c["id"] for c in (await rig.call(rig.admin("GET", "/admin/credentials")))[1]["data"]
                  if c["role"] == "team_admin")
    mine = [(r["credential"], r["method"], r["path"], r["status"]) for r in rows if r["credential"] == red_id]
    assert mine == [(red_id, "DELETE", f"/admin/keys/{blue_key['id']}", 403), (red_id, "POST", "/admin/keys", 201)]
    assert any(r["credential"] == "admin" and r["path"] == "/admin/teams" and r["status"] == 201 for r in rows)
    assert not any(r["method"] == "GET" for r in rows)
    assert all(r["ts"] <= rig.clock.now() for r in rows)
    status, only, _ = await rig.call(rig.admin("GET", f"/admin/audit?credential={red_id}"))
    assert [r["credential"] for r in only["data"]] == [red_id, red_id]
    assert (await rig.call(rig.admin("GET", "/admin/audit?limit=0")))[0] == 400


async def test_audit_records_expire_with_the_error_logs():
    rig = SecureRig({"LOG_RETENTION_ERROR_SECONDS": "100"})
    await rig.call(rig.admin("POST", "/admin/teams", {"id": "old"}))
    await rig.tasks.drain()
    rig.clock.advance(101)
    await rig.call(rig.admin("POST", "/admin/teams", {"id": "new"}))
    await rig.tasks.drain()
    rows = (await rig.call(rig.admin("GET", "/admin/audit")))[1]["data"]
    assert [r["path"] for r in rows] == ["/admin/teams"] and rows[0]["ts"] == rig.clock.now()
