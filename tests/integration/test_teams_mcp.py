"""A team's MCP permissions narrow its keys' on ``/mcp`` as they narrow models on the API,
on either host, with the official ``mcp`` SDK as the client and real MCP servers: a key in a
team that allows one server and two of its tools sees and calls only those (tools, resources
and prompts alike), a key narrower than its team narrows further, and a key that would widen
its team is a 400 when it is made."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.support.mcp_server import McpServerProcess

from .conftest import run_gateway
from .test_mcp_gateway import ALPHA_TOKEN, admin, mcp, mcp_env, run, stored_key, text


@pytest.fixture(scope="module")
def gateway(upstream, tmp_path_factory):
    with McpServerProcess("alpha", ALPHA_TOKEN) as alpha, McpServerProcess("beta", "", "--tools", "3") as beta:
        with run_gateway(tmp_path_factory.mktemp("teams-mcp"), mcp_env(upstream.base_url, alpha, beta)) as server:
            yield server


def make_team(server, **spec: Any) -> None:
    made = admin(server, "POST", "/admin/teams", spec)
    assert made.status_code == 201, made.text


def test_a_teams_mcp_servers_and_tools_narrow_its_keys(gateway):
    make_team(gateway, id="mcp_team", allowed_mcp_servers=["beta"], allowed_mcp_tools=["beta.echo", "beta.add"])
    member = stored_key(gateway, team_id="mcp_team")  # sets nothing: the team's bounds are its own
    narrower = stored_key(gateway, team_id="mcp_team", allowed_mcp_tools=["beta.echo"])

    async def scenario(key: str) -> dict[str, Any]:
        async with mcp(gateway, key) as session:
            tools = sorted(t.name for t in (await session.list_tools()).tools)
            resources = [str(r.uri) for r in (await session.list_resources()).resources]
            prompts = [p.name for p in (await session.list_prompts()).prompts]
            refused = {}
            for name, arguments in (("alpha.add", {"a": 1, "b": 2}), ("beta.count", {"to": 2}),
                                    ("beta.add", {"a": 1, "b": 2})):
                try:
                    refused[name] = text(await session.call_tool(name, arguments))
                except MCPError as error:
                    refused[name] = f"refused: {error}"
            echoed = text(await session.call_tool("beta.echo", {"text": "in team"}))
            return {"tools": tools, "resources": resources, "prompts": prompts, "calls": refused, "echo": echoed}

    got = run(scenario(member))
    assert got["tools"] == ["beta.add", "beta.echo"]  # alpha's server and beta's other tools are outside the team
    assert got["resources"] and all(uri.startswith("flaregate://beta/") for uri in got["resources"])
    assert got["prompts"] and all(name.startswith("beta.") for name in got["prompts"])
    assert "not allowed" in got["calls"]["alpha.add"] and "not allowed" in got["calls"]["beta.count"]
    assert got["calls"]["beta.add"] == "3" and '"in team"' in got["echo"]

    narrowed = run(scenario(narrower))
    assert narrowed["tools"] == ["beta.echo"]
    assert "not allowed" in narrowed["calls"]["beta.add"]  # the team allows it, the key does not
    assert '"in team"' in narrowed["echo"]


def test_a_key_cannot_widen_its_teams_mcp_permissions(gateway):
    make_team(gateway, id="mcp_bounded", allowed_mcp_servers=["beta"], allowed_mcp_tools=["beta.*"])
    for widening in ({"allowed_mcp_servers": ["alpha"]}, {"allowed_mcp_servers": ["*"]},
                     {"allowed_mcp_tools": ["alpha.add"]}):
        made = admin(gateway, "POST", "/admin/keys", {"team_id": "mcp_bounded", **widening})
        assert made.status_code == 400, made.text
        error = made.json()["error"]
        assert error["code"] == "widens_team" and error["param"] == next(iter(widening)), error


def test_priced_tool_calls_of_a_teams_keys_share_the_teams_budget(gateway):
    # 0.001 USD a call: the team's 0.0025 a day admits two calls, whichever of its keys makes them.
    make_team(gateway, id="mcp_paying", allowed_mcp_servers=["priced", "beta"], budget_usd_day=0.0025)
    keys = [stored_key(gateway, team_id="mcp_paying") for _ in range(2)]

    async def call(key: str, tool: str) -> str:
        async with mcp(gateway, key) as session:
            try:
                return text(await session.call_tool(tool, {"a": 1, "b": 1}))
            except MCPError as error:
                return f"refused: {error}"

    answers = [run(call(keys[i % 2], "priced.add")) for i in range(3)]
    assert answers[:2] == ["2", "2"]
    assert answers[2].startswith("refused") and "Budget" in answers[2] and "team_usd_day" in answers[2]
    assert run(call(keys[0], "beta.add")) == "2"  # unpriced: outside money budgets
    usage = admin(gateway, "GET", "/admin/teams/mcp_paying/usage").json()
    spent = {row["policy"]: row for row in usage["limits"]}["team_usd_day"]["used"]
    assert spent == pytest.approx(0.002)
