"""A team over sharded stores (SECURITY_SHARDS=3, HUB_SHARDS=3) through a real server: on the
Worker the team's keys (one of them rotated, its old secret still in its grace period) are
spread over three SecurityStore objects by digest and the team is placed by its id, while
the team's budget stays in its one ``team:ID`` limiter partition, so 200 concurrent requests
over four secrets spend no more than the budget and within one request's cost of it; the
spend report, merged from three MetricsHub shards, sums to what was admitted. The local host
keeps one store and one hub: the same requests, the same answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .conftest import ADMIN_KEY, run_gateway
from .test_teams import (
    COST,
    MAX_TOKENS,
    REQUESTS,
    admin,
    assert_budget_held,
    burst,
    make_key,
    make_team,
    priced_env,
    team_spent,
)

BUDGET = 1.0


def test_a_team_budget_stays_exact_over_sharded_security_stores_and_hubs(upstream, tmp_path):
    env = priced_env(upstream.base_url, SECURITY_SHARDS="3", HUB_SHARDS="3", ANALYTICS_BATCH_SIZE="5")
    with run_gateway(tmp_path / "teams-shards", env) as server:
        base = server.base_url
        make_team(base, id="sharded", budget_usd_day=BUDGET)
        keys = [make_key(base, team_id="sharded", name=f"s{i}") for i in range(3)]
        rotated = admin(base, "POST", f"/admin/keys/{keys[0]['id']}/rotate", {"grace_seconds": 600})
        assert rotated.status_code == 200, rotated.text
        secrets = [rotated.json()["key"], *(k["key"] for k in keys)]  # the new secret and the old, in its grace
        statuses = asyncio.run(burst([base], secrets, REQUESTS))
        spent = team_spent(base, "sharded")
        assert_budget_held(statuses, spent)
        admitted = statuses.count(200)

        listed = [k for k in admin(base, "GET", "/admin/keys").json()["data"] if k["policy"].get("team_id") == "sharded"]
        assert sorted(k["id"] for k in listed) == sorted(k["id"] for k in keys)  # a rotated key is still one key
        assert [t["id"] for t in admin(base, "GET", "/admin/teams").json()["data"]].count("sharded") == 1

        one: dict = {}
        for _ in range(150):  # events reach the hub shards in batches
            reply = admin(base, "GET", "/admin/teams/sharded/spend?window=1h")
            assert reply.status_code == 200, reply.text
            one = reply.json()["windows"]["1h"]
            if (one.get("team") or {}).get("requests", 0) >= admitted:
                break
            time.sleep(0.1)
        assert one["team"]["cost_usd"] == pytest.approx(admitted * COST)
        assert one["team"]["tokens_out"] == admitted * MAX_TOKENS
        assert sum(k["cost_usd"] for k in one["keys"].values()) == pytest.approx(admitted * COST)
        by_team = httpx.get(base + "/v1/analytics", params={"group_by": "team", "window": "1h"},
                            headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).json()
        assert by_team["windows"]["1h"]["groups"]["sharded"]["cost_usd"] == pytest.approx(admitted * COST)
