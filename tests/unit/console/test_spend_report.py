"""Spend reports: /v1/analytics?group_by=team|key|model|tag:NAME (and format=csv) summing
to the requests' costs, team and listed-tag rollups kept through compaction like the key
ones, and client tags that are not listed kept out of the long-kept dimensions."""

from __future__ import annotations

import csv
import io
import json

from flaregate.console.spend_report import report, to_csv
from flaregate.hub.store import DAY, HOUR, HubStore
from tests.support.fakes import MemorySql
from tests.support.security import SecureRig, chat_request

PRICED = {"FLAREGATE_ROUTES": json.dumps({
    "mock-1": [{"provider": "mock", "input_price_per_1m": 1000, "output_price_per_1m": 2000}],
    "mock-2": [{"provider": "mock", "input_price_per_1m": 3000, "output_price_per_1m": 3000}]}),
    "REPORT_TAGS": "project"}


async def analytics(rig: SecureRig, query: str) -> tuple[int, bytes, dict[str, str]]:
    response = await rig.gateway.handle(rig.admin("GET", "/v1/analytics?" + query, sign=False))
    assert isinstance(response.body, bytes)
    return response.status, response.body, response.headers


async def test_group_by_team_key_model_and_tag_sum_to_the_requests_costs():
    rig = SecureRig(PRICED)
    for team_id in ("red", "blue"):
        assert (await rig.call(rig.admin("POST", "/admin/teams", {"id": team_id})))[0] == 201
    red = await rig.create_key(team_id="red")
    blue = await rig.create_key(team_id="blue")
    costs: dict[str, float] = {"red": 0.0, "blue": 0.0}
    by_key: dict[str, float] = {}
    for i, (key, team, model) in enumerate([(red, "red", "mock-1"), (red, "red", "mock-2"),
                                            (blue, "blue", "mock-1"), (blue, "blue", "mock-1")]):
        tags = {"x-flaregate-metadata": json.dumps({"project": f"p{i % 2}", "user": f"u{i}"})}
        status, body, _ = await rig.call(chat_request(key["key"], model, headers=tags, content=f"words {i} here"))
        assert status == 200, body
        price_in, price_out = (1000, 2000) if model == "mock-1" else (3000, 3000)
        cost = (body["usage"]["prompt_tokens"] * price_in + body["usage"]["completion_tokens"] * price_out) / 1e6
        costs[team] += cost
        by_key[key["id"]] = by_key.get(key["id"], 0.0) + cost
    await rig.tasks.drain()
    status, raw, _ = await analytics(rig, "group_by=team&window=1h")
    assert status == 200
    teams = json.loads(raw)["windows"]["1h"]
    assert set(teams["groups"]) == {"red", "blue"}
    for team, cost in costs.items():
        assert abs(teams["groups"][team]["cost_usd"] - cost) < 1e-9
        assert teams["groups"][team]["requests"] == 2 and teams["groups"][team]["errors"] == 0
    assert abs(teams["total"]["cost_usd"] - sum(costs.values())) < 1e-9
    keys = json.loads((await analytics(rig, "group_by=key&window=1h"))[1])["windows"]["1h"]["groups"]
    for key_id, cost in by_key.items():
        assert abs(keys[key_id]["cost_usd"] - cost) < 1e-9
    models = json.loads((await analytics(rig, "group_by=model&window=24h"))[1])["windows"]["24h"]["groups"]
    assert models["mock-1"]["requests"] == 3 and models["mock-2"]["requests"] == 1
    projects = json.loads((await analytics(rig, "group_by=tag:project"))[1])["windows"]
    assert set(projects) == {"1h", "24h", "30d", "1y"}
    assert {name: g["requests"] for name, g in projects["1y"]["groups"].items()} == {"p0": 2, "p1": 2}
    # An unlisted client tag is not a long-kept dimension (it stays in the 7-day tag rows).
    hub = rig.hub._store.dimension_totals("resolution = ?", [60])
    assert set(hub) == {"team", "tag:project"}
    status, raw, headers = await analytics(rig, "group_by=team&window=1h&format=csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert {r["team"] for r in rows} == {"red", "blue"}
    assert abs(sum(float(r["cost_usd"]) for r in rows) - sum(costs.values())) < 1e-9
    # One team's report, for its own admin too (and no other team's admin).
    status, body, _ = await rig.call(rig.admin("GET", "/admin/teams/red/spend?window=1h"))
    assert status == 200, body
    assert abs(body["windows"]["1h"]["team"]["cost_usd"] - costs["red"]) < 1e-9
    assert set(body["windows"]["1h"]["keys"]) == {red["id"]}
    status, made, _ = await rig.call(rig.admin("POST", "/admin/credentials", {"role": "team_admin", "team_id": "blue"}))
    lead = made["credential"]
    assert (await rig.call(rig.admin("GET", "/admin/teams/blue/spend", key=lead, secret=lead)))[0] == 200
    assert (await rig.call(rig.admin("GET", "/admin/teams/red/spend", key=lead, secret=lead)))[0] == 403
    # The all-teams report is the operator's: a team admin's credential does not open it.
    status, body, _ = await rig.call(rig.admin("GET", "/v1/analytics?group_by=key", key=lead, secret=lead))
    assert status in (401, 403), body
    assert (await rig.call(rig.admin("GET", "/admin/teams/nope/spend")))[0] == 404


async def test_the_team_and_key_reports_carry_the_budgets_they_are_spent_against():
    rig = SecureRig(PRICED)
    spec = {"id": "capped", "name": "Capped", "budget_usd_day": 2.5, "budget_tokens_month": 9000}
    assert (await rig.call(rig.admin("POST", "/admin/teams", spec)))[0] == 201
    assert (await rig.call(rig.admin("POST", "/admin/teams", {"id": "idle"})))[0] == 201
    member = await rig.create_key(team_id="capped", name="member", budget_usd=1.5)
    loose = await rig.create_key(name="loose")
    gone = await rig.create_key(name="gone")
    assert (await rig.call(rig.admin("DELETE", f"/admin/keys/{gone['id']}")))[0] == 200
    assert (await rig.call(chat_request(member["key"], "mock-1")))[0] == 200
    await rig.tasks.drain()
    teams = json.loads((await analytics(rig, "group_by=team&window=24h"))[1])
    assert teams["budgets"]["capped"] == {"name": "Capped", "budget_usd_day": 2.5, "budget_usd_month": None,
                                          "budget_tokens_day": None, "budget_tokens_month": 9000}
    assert teams["budgets"]["idle"]["budget_usd_day"] is None  # listed though it spent nothing
    assert set(teams["windows"]["24h"]["groups"]) == {"capped"}
    keys = json.loads((await analytics(rig, "group_by=key"))[1])
    assert keys["budgets"][member["id"]] == {"name": "member", "team_id": "capped", "budget_usd_month": 1.5}
    assert keys["budgets"][loose["id"]]["budget_usd_month"] is None
    assert gone["id"] not in keys["budgets"]  # a revoked key has no budget left to show
    assert "budgets" not in json.loads((await analytics(rig, "group_by=model"))[1])
    status, raw, _ = await analytics(rig, "group_by=team&format=csv")
    assert status == 200 and b"budget" not in raw  # the CSV keeps its one row shape


async def test_bad_report_queries_are_400s():
    rig = SecureRig(PRICED)
    for query, param in (("group_by=colour", "group_by"), ("group_by=tag:", "group_by"),
                         ("format=csv", "group_by"), ("group_by=team&format=xml", "format")):
        status, raw, _ = await analytics(rig, query)
        assert status == 400 and json.loads(raw)["error"]["param"] == param, query


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped():
    spend = report({"windows": {"1h": {"start": 0, "end": 1, "by_tag": {"project": {
        "=HYPERLINK(\"x\")": {"requests": 1}, "-2": {"requests": 1}, "plain": {"requests": 1}}}}}},
        "tag:project", ())
    rows = list(csv.reader(io.StringIO(to_csv(spend))))
    assert [r[3] for r in rows[1:]] == ["'-2", "'=HYPERLINK(\"x\")", "plain"]


def test_team_rollups_survive_compaction_for_a_year():
    store = HubStore(MemorySql())
    start = 1_800_000_000 - 1_800_000_000 % DAY
    store.ensure_watermarks(start)
    events = store.parse([{"ts": start + 10, "key_id": "key_a", "team_id": "red", "model": "m", "status": 200,
                           "cost_usd": 0.25, "tokens_in": 3, "tokens_out": 4, "report_tags": {"project": "x"}}],
                         start + 10)
    store.atomically(lambda: store.ingest(events, start + 10))
    for later in (start + 2 * HOUR, start + DAY + 2 * HOUR, start + 40 * DAY):
        store.compact(later)
        where, params = store.window_filter(start - 1, later)
        found = store.dimension_totals(where, params)
        assert found["team"]["red"]["cost_usd"] == 0.25 and found["team"]["red"]["tokens_out"] == 4, later
        assert found["tag:project"]["x"]["requests"] == 1
    store.compact(start + 367 * DAY)
    where, params = store.window_filter(start - 1, start + 367 * DAY)
    assert store.dimension_totals(where, params) == {}  # past the year
