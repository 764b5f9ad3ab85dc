"""Teams over the real SQL security store and rate limiter: CRUD, keys narrowing (never
widening) their team, tags, budgets counted in the team's partition, moving keys."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from flaregate.http import Request
from tests.support.security import SecureRig, chat_request

PRICED = {"FLAREGATE_ROUTES": json.dumps({
    "mock-1": [{"provider": "mock", "input_price_per_1m": 1000, "output_price_per_1m": 1000}],
    "mock-2": [{"provider": "mock", "input_price_per_1m": 1000, "output_price_per_1m": 1000}],
    "free": ["mock"]})}


async def team(rig: SecureRig, **spec: object) -> dict:
    status, body, _ = await rig.call(rig.admin("POST", "/admin/teams", spec))
    assert status == 201, body
    return body


def chat_body(key: str, model: str = "mock-1", content: str = "hello", max_tokens: int = 20) -> Request:
    """A chat request with ``max_tokens`` (an upper bound on the completion: budgets then
    reserve no less than the call can cost)."""
    request = chat_request(key, model, content=content)
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]}
    return replace(request, body=json.dumps(body).encode())


async def chat(rig: SecureRig, key: str, model: str = "mock-1", content: str = "hello") -> tuple[int, dict]:
    status, body, _ = await rig.call(chat_body(key, model, content))
    return status, body


async def test_team_crud_and_its_keys():
    rig = SecureRig()
    made = await team(rig, id="research", name="Research", allowed_models=["mock-*"], budget_usd_month=5)
    assert made["id"] == "research" and made["allowed_models"] == ["mock-*"] and made["budget_usd_month"] == 5
    assert (await rig.call(rig.admin("POST", "/admin/teams", {"id": "research"})))[0] == 409
    key = await rig.create_key(name="r1", team_id="research")
    status, shown, _ = await rig.call(rig.admin("GET", "/admin/teams/research"))
    assert status == 200 and shown["keys"] == [key["id"]]
    status, listed, _ = await rig.call(rig.admin("GET", "/admin/teams"))
    assert [t["id"] for t in listed["data"]] == ["research"]
    status, changed, _ = await rig.call(rig.admin("PATCH", "/admin/teams/research", {"name": "R&D"}))
    assert status == 200 and changed["name"] == "R&D" and changed["allowed_models"] == ["mock-*"]
    # A team with active keys stays; once they are gone it can be deleted.
    status, refused, _ = await rig.call(rig.admin("DELETE", "/admin/teams/research"))
    assert (status, refused["error"]["code"]) == (409, "team_has_keys")
    assert (await rig.call(rig.admin("DELETE", f"/admin/keys/{key['id']}")))[0] == 200
    assert (await rig.call(rig.admin("DELETE", "/admin/teams/research")))[0] == 200
    assert (await rig.call(rig.admin("GET", "/admin/teams/research")))[0] == 404


@pytest.mark.parametrize(("path", "body", "param", "code"), [
    ("/admin/keys", {"team_id": "nope"}, "team_id", "team_not_found"),
    ("/admin/keys", {"team_id": "t", "allowed_models": ["mock-1", "gpt-4"]}, "allowed_models", "widens_team"),
    ("/admin/keys", {"team_id": "t", "allowed_models": ["*"]}, "allowed_models", "widens_team"),
    ("/admin/keys", {"team_id": "t", "allowed_mcp_tools": ["github.*"]}, "allowed_mcp_tools", "widens_team"),
    ("/admin/keys", {"team_id": "t", "budget_usd": 11}, "budget_usd", "widens_team"),
    ("/admin/keys", {"team_id": "bad id"}, "team_id", "invalid_value"),
    ("/admin/teams", {"budget_usd_day": -1}, "budget_usd_day", "invalid_value"),
    ("/admin/teams", {"budget_tokens_month": -5}, "budget_tokens_month", "invalid_value"),
    ("/admin/teams", {"id": "a/b"}, "id", "invalid_value"),
    ("/admin/teams", {"allowed_models": "mock-1"}, "allowed_models", "invalid_value"),
    ("/admin/teams", {"rate_limit_policy": "missing"}, "rate_limit_policy", "invalid_value"),
    ("/admin/teams", {"surprise": 1}, "surprise", "invalid_value"),
])
async def test_bad_team_input_is_a_400_naming_the_field(path, body, param, code):
    rig = SecureRig()
    await team(rig, id="t", allowed_models=["mock-*"], allowed_mcp_tools=["docs.*"], budget_usd_month=10)
    status, answer, _ = await rig.call(rig.admin("POST", path, body))
    assert (status, answer["error"]["code"], answer["error"]["param"]) == (400, code, param), answer


async def test_a_key_narrower_than_its_team_is_held_to_both():
    rig = SecureRig()
    await team(rig, id="t", allowed_models=["mock-*"])
    narrow = await rig.create_key(team_id="t", allowed_models=["mock-1"])
    inherits = await rig.create_key(team_id="t")
    assert (await chat(rig, narrow["key"], "mock-1"))[0] == 200
    status, body = await chat(rig, narrow["key"], "mock-2")
    assert (status, body["error"]["code"]) == (403, "model_not_allowed")
    assert (await chat(rig, inherits["key"], "mock-2"))[0] == 200
    # The team narrows later: its keys are bound at once (this process forgets its cache).
    assert (await rig.call(rig.admin("PATCH", "/admin/teams/t", {"allowed_models": ["mock-2"]})))[0] == 200
    assert (await chat(rig, inherits["key"], "mock-1"))[0] == 403
    assert (await chat(rig, narrow["key"], "mock-1"))[0] == 403  # the key allows it, the team no longer


async def test_a_teams_mcp_tools_narrow_the_principals_check():
    rig = SecureRig()
    await team(rig, id="t", allowed_mcp_tools=["docs.*"])
    key = await rig.create_key(team_id="t")
    principal = await rig.gateway.access.principal_by_id(key["id"], "/v1/chat/completions")
    assert principal is not None and principal.team_id == "t"
    assert principal.allows_mcp_tool("docs", "search") and not principal.allows_mcp_tool("github", "push")


async def test_team_tags_win_and_key_tags_fill_the_gaps():
    rig = SecureRig()
    await team(rig, id="t", tags={"cost_center": "research", "env": "prod"})
    key = await rig.create_key(team_id="t", tags={"env": "dev", "owner": "ana"})
    principal = await rig.gateway.access.principal_by_id(key["id"], "/v1/chat/completions")
    assert principal is not None
    assert principal.tags == {"env": "prod", "owner": "ana", "cost_center": "research"}


async def test_a_key_whose_team_is_gone_is_refused():
    rig = SecureRig()
    await team(rig, id="t")
    key = await rig.create_key(team_id="t")
    rig.store.call("teams.delete", {"id": "t"})  # behind the admin API's back (a racing delete)
    rig.gateway.access.forget()
    status, body = await chat(rig, key["key"])
    assert (status, body["error"]["code"]) == (403, "team_not_found")


async def usage(rig: SecureRig, team_id: str) -> dict[str, dict]:
    status, body, _ = await rig.call(rig.admin("GET", f"/admin/teams/{team_id}/usage"))
    assert status == 200, body
    return {row["policy"]: row for row in body["limits"]}


async def test_a_team_budget_is_shared_by_its_keys_and_refuses_with_insufficient_quota():
    rig = SecureRig(PRICED)
    await team(rig, id="t", budget_usd_day=0.1)
    keys = [(await rig.create_key(team_id="t"))["key"] for _ in range(3)]
    statuses = []
    for i in range(60):
        status, body = await chat(rig, keys[i % 3], content=f"spend {i}")
        statuses.append(status)
        if status == 429:
            assert body["error"]["code"] == "budget_exceeded" and body["error"]["type"] == "insufficient_quota"
            assert "team_usd_day" in body["error"]["message"]
    assert 200 in statuses and 429 in statuses
    spent = (await usage(rig, "t"))["team_usd_day"]["used"]
    assert 0.1 * 0.5 < spent <= 0.1
    # Unpriced routes are outside money budgets.
    assert (await chat(rig, keys[0], "free"))[0] == 200


async def test_a_team_token_budget_counts_the_real_usage():
    rig = SecureRig()
    await team(rig, id="t", budget_tokens_month=10_000)
    key = await rig.create_key(team_id="t")
    status, body, _ = await rig.call(chat_body(key["key"], content="one two three", max_tokens=50))
    assert status == 200
    assert (await usage(rig, "t"))["team_tokens_month"]["used"] == body["usage"]["total_tokens"]


async def test_a_key_budget_lower_than_its_teams_refuses_first_and_gives_the_team_back():
    rig = SecureRig(PRICED)
    await team(rig, id="t", budget_usd_month=1.0)
    small = await rig.create_key(team_id="t", budget_usd=0.05)
    refused = None
    for i in range(40):
        status, body = await chat(rig, small["key"], content=f"spend {i}")
        if status == 429:
            refused = body
            break
    assert refused is not None and "key_budget" in refused["error"]["message"]
    team_spent = (await usage(rig, "t"))["team_usd_month"]["used"]
    status, key_usage, _ = await rig.call(rig.admin("GET", f"/admin/ratelimits/{small['id']}"))
    key_spent = {r["policy"]: r for r in key_usage["limits"]}["key_budget"]["used"]
    assert team_spent == pytest.approx(key_spent)  # the refused request's reservation came back


async def test_a_key_moved_to_another_team_leaves_its_spend_with_the_first():
    rig = SecureRig(PRICED)
    await team(rig, id="a", budget_usd_month=1.0)
    await team(rig, id="b", budget_usd_month=1.0, allowed_models=["mock-1"])
    key = await rig.create_key(team_id="a")
    for i in range(3):
        assert (await chat(rig, key["key"], content=f"in a {i}"))[0] == 200
    spent_in_a = (await usage(rig, "a"))["team_usd_month"]["used"]
    assert spent_in_a > 0
    status, moved, _ = await rig.call(rig.admin("PATCH", f"/admin/keys/{key['id']}", {"team_id": "b"}))
    assert status == 200 and moved["policy"]["team_id"] == "b"
    assert (await chat(rig, key["key"], content="in b"))[0] == 200
    assert (await chat(rig, key["key"], "mock-2"))[0] == 403  # b's permissions now
    assert (await usage(rig, "a"))["team_usd_month"]["used"] == pytest.approx(spent_in_a)
    assert 0 < (await usage(rig, "b"))["team_usd_month"]["used"] < spent_in_a
    # Moving into a team the key would widen is refused; so is an unknown one.
    status, body, _ = await rig.call(rig.admin("PATCH", f"/admin/keys/{key['id']}",
                                               {"team_id": "b", "allowed_models": ["mock-2"]}))
    assert (status, body["error"]["param"]) == (400, "allowed_models")
    status, body, _ = await rig.call(rig.admin("PATCH", f"/admin/keys/{key['id']}", {"team_id": "zzz"}))
    assert (status, body["error"]["code"]) == (400, "team_not_found")
    status, body, _ = await rig.call(rig.admin("PATCH", f"/admin/keys/{key['id']}", {"name": "x"}))
    assert (status, body["error"]["code"]) == (400, "unknown_parameter")
    status, body, _ = await rig.call(rig.admin("PATCH", f"/admin/keys/{key['id']}", {"team_id": None}))
    assert status == 200 and body["policy"]["team_id"] is None


class Receiver:
    """The upstream-transport port as webhooks use it: every delivery kept, answered 200."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def send(self, method, url, headers, body, timeout):
        from flaregate.providers.mock import StaticResponse

        self.events.append(json.loads(body))
        return StaticResponse(200, {}, [b"ok"])


async def test_the_80_percent_webhook_and_hub_event_are_sent_once_per_period_across_isolates():
    receiver = Receiver()
    rig = SecureRig(PRICED, transport=receiver)
    status, _, _ = await rig.call(rig.admin("POST", "/admin/webhooks", {"url": "https://h.example.com/budget",
                                                                       "events": ["budget.threshold"]}))
    assert status == 201
    await team(rig, id="t", budget_usd_day=0.1)
    key = (await rig.create_key(team_id="t"))["key"]
    other_isolate = rig.make_gateway()  # its own caches and memo, the same stores
    results = []
    for i in range(40):
        gateway = rig.gateway if i % 2 else other_isolate
        response = await gateway.handle(chat_body(key, content=f"spend {i}"))
        results.append(response.status)
        await rig.tasks.drain()
    assert 429 in results
    alerts = [e for e in receiver.events if e["type"] == "budget.threshold"]
    assert len(alerts) == 1, alerts
    data = alerts[0]["data"]
    assert (data["scope"], data["team_id"], data["budget"], data["threshold"]) == ("team", "t", "team_usd_day", 0.8)
    assert data["used"] >= 0.8 * data["limit"]
    told = [json.loads(text) for text in rig.hub_broadcaster.sent]
    hub = [m for m in told if m.get("type") == "budget_threshold"]
    assert len(hub) == 1 and hub[0]["team_id"] == "t"  # the hub (and its /ws viewers) told once too


async def test_budget_alerts_can_be_turned_off():
    receiver = Receiver()
    rig = SecureRig({**PRICED, "BUDGET_ALERT_AT": "off"}, transport=receiver)
    await rig.call(rig.admin("POST", "/admin/webhooks", {"url": "https://h.example.com/b"}))
    await team(rig, id="t", budget_usd_day=0.1)
    key = (await rig.create_key(team_id="t"))["key"]
    for i in range(12):
        await chat(rig, key, content=f"spend {i}")
    await rig.tasks.drain()
    assert not [e for e in receiver.events if e["type"] == "budget.threshold"]


async def test_a_configured_policy_scoped_by_team_is_shared_by_the_teams_keys():
    policy = {"name": "team-rpm", "algorithm": "fixed_window", "limit": 3, "window_seconds": 3600,
              "scope": "team", "lease": 0}
    rig = SecureRig({"FLAREGATE_RATE_LIMITS": json.dumps([policy])})
    await team(rig, id="t")
    keys = [(await rig.create_key(team_id="t"))["key"] for _ in range(2)]
    loner = (await rig.create_key())["key"]
    statuses = [(await chat(rig, keys[i % 2], content=f"n{i}"))[0] for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # three for the whole team, whichever key
    assert [(await chat(rig, loner, content=f"l{i}"))[0] for i in range(4)] == [200, 200, 200, 429]  # alone


async def test_a_client_tag_or_header_claiming_another_team_changes_nothing():
    rig = SecureRig({**PRICED, "REPORT_TAGS": "team"})
    await team(rig, id="small", budget_usd_day=1.0)
    await team(rig, id="big", allowed_models=["mock-*"], budget_usd_day=100.0)
    member = await rig.create_key(team_id="small", allowed_models=["mock-1"])
    loner = await rig.create_key()  # in no team
    claims = {"x-flaregate-metadata": json.dumps({"team": "big", "team_id": "big"}),
              "x-flaregate-team": "big", "x-flaregate-team-id": "big"}
    for key in (member, loner):
        request = chat_body(key["key"])
        request = replace(request, headers={**request.headers, **claims})
        status, body, _ = await rig.call(request)
        assert status == 200, body
        wider = chat_body(key["key"], "mock-2")  # the claimed team allows it; the member's key does not
        status, body, _ = await rig.call(replace(wider, headers={**wider.headers, **claims}))
        assert status == (403 if key is member else 200), body
    await rig.tasks.drain()
    big = (await usage(rig, "big")).get("team_usd_day", {"used": 0})
    assert big["used"] == 0  # the claimed team was charged nothing
    small = (await usage(rig, "small"))["team_usd_day"]["used"]
    assert small > 0
    response = await rig.gateway.handle(rig.admin("GET", "/v1/analytics?group_by=team&window=1h", sign=False))
    groups = json.loads(response.body)["windows"]["1h"]["groups"]
    assert set(groups) == {"small"}  # the loner's requests are in no team's
    assert abs(groups["small"]["cost_usd"] - small) < 1e-9
    # Listed as a report tag, the client's "team" tag is its own dimension, never the team's.
    response = await rig.gateway.handle(rig.admin("GET", "/v1/analytics?group_by=tag:team&window=1h", sign=False))
    assert set(json.loads(response.body)["windows"]["1h"]["groups"]) == {"big"}
