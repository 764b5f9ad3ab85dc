"""The dashboard's Teams view in headless Chromium: after priced traffic over two teams, each
team's spend is shown against its day and month budgets (USD and tokens) and each key's
against its own, the figures the spend report answers, a team past 80% of its day budget
drawn as near it, a team name holding markup shown as text; under the page's CSP, with no
violation reported. Screenshot:
artifacts/dashboard-teams.png."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import websockets

from .conftest import ADMIN_KEY, run_gateway
from .test_dashboard_browser import ARTIFACTS, DevTools, chromium  # noqa: F401  (the fixture)
from .test_teams import MAX_TOKENS, WORDS, make_key, make_team, priced_env

CSP_WATCH = ("window.cspViolations = [];"
             "document.addEventListener('securitypolicyviolation',"
             " e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));")


HOSTILE_NAME = "<img src=x onerror=window.pwned=1>"  # shown as text, never markup


def cell(row: str, field: str) -> str:
    return f"document.querySelector('{row} td[data-field={field}]')"


def report(base: str, dimension: str) -> dict:
    reply = httpx.get(base + "/v1/analytics", params={"group_by": dimension},
                      headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


def priced_traffic(base: str) -> tuple[dict, dict, dict, int]:
    """Two teams, three keys, four priced requests; the alpha team's tokens once the hub has them."""
    make_team(base, id="alpha_team", name="Alpha", budget_usd_day=0.1, budget_usd_month=1, budget_tokens_month=1000)
    make_team(base, id="beta_team", name=HOSTILE_NAME, budget_usd_day=1)
    a1 = make_key(base, team_id="alpha_team", name="alpha-one", budget_usd=0.5)
    a2 = make_key(base, team_id="alpha_team", name="alpha-two")
    b1 = make_key(base, team_id="beta_team", name="beta-one")
    body = {"model": "gpt-team", "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": WORDS}]}
    for key in (a1, a1, a2, b1):  # alpha: 0.09 of its 0.10 day budget; beta: 0.03 of 1
        reply = httpx.post(base + "/v1/chat/completions", json=body,
                           headers={"authorization": f"Bearer {key['key']}"}, timeout=30)
        assert reply.status_code == 200, reply.text
    teams: dict = {}
    for _ in range(150):  # the events reach the hub in batches; the view reads what the report says
        teams = report(base, "team")
        if teams["windows"]["30d"]["groups"].get("alpha_team", {}).get("requests") == 3:
            break
        time.sleep(0.1)
    alpha_tokens = teams["windows"]["30d"]["groups"]["alpha_team"]["tokens"]
    assert alpha_tokens > 3 * MAX_TOKENS  # prompt and completion tokens
    return a1, a2, b1, alpha_tokens


async def test_the_teams_view_shows_spend_against_team_and_key_budgets(chromium, upstream, tmp_path):  # noqa: F811
    with run_gateway(tmp_path / "gw", priced_env(upstream.base_url)) as server:
        base = server.base_url
        a1, a2, b1, alpha_tokens = priced_traffic(base)
        async with httpx.AsyncClient(timeout=10) as http:
            targets = (await http.get(f"http://127.0.0.1:{chromium}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(page_url, max_size=None) as ws:
            cdp = DevTools(ws)
            await cdp.send("Page.enable")  # (events it sends are read past by DevTools.send)
            await cdp.send("Page.addScriptToEvaluateOnNewDocument", source=CSP_WATCH)
            await cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=2400, deviceScaleFactor=1,
                           mobile=False)
            await cdp.send("Page.navigate", url=f"{base}/dashboard#token={ADMIN_KEY}")
            await cdp.wait_for("document.getElementById('status')?.textContent === 'live'")
            alpha, beta = "#team-rows tr[data-team=alpha_team]", "#team-rows tr[data-team=beta_team]"
            day = await cdp.wait_for(f"{cell(alpha, 'usd_day')}?.textContent")
            assert day.strip() == "$0.0900 of $0.1000"
            assert await cdp.js(f"{cell(alpha, 'usd_day')}.dataset.share") == "0.9000"
            assert await cdp.js(f"{cell(alpha, 'usd_day')}.querySelector('.bar').className") == "bar budget near"
            assert await cdp.js(f"{cell(alpha, 'usd_day')}.querySelector('.bar b').style.width") == "90%"
            assert (await cdp.js(f"{cell(alpha, 'usd_month')}.textContent")).strip() == "$0.0900 of $1.00"
            assert (await cdp.js(f"{cell(alpha, 'tokens_month')}.textContent")).strip() == f"{alpha_tokens} of 1000"
            assert await cdp.js(f"{cell(alpha, 'tokens_day')}.querySelector('.bar')") is None  # no such budget
            assert await cdp.js(f"{cell(alpha, 'keys')}.textContent") == "2"
            assert await cdp.js(f"document.querySelector('{alpha}').firstChild.textContent") == "alpha_team · Alpha"
            assert (await cdp.js(f"{cell(beta, 'usd_day')}.textContent")).strip() == "$0.0300 of $1.00"
            assert await cdp.js(f"{cell(beta, 'usd_day')}.querySelector('.bar').className") == "bar budget"
            shown_name = await cdp.js(f"document.querySelector('{beta}').firstChild.textContent")
            assert shown_name == f"beta_team · {HOSTILE_NAME}"
            assert await cdp.js("document.querySelector('#teams-view img') === null && window.pwned === undefined")
            # Heaviest spender first.
            order = await cdp.js("[...document.querySelectorAll('#team-rows tr.team-row')].map(tr => tr.dataset.team)")
            assert order == ["alpha_team", "beta_team"]

            one = f"#team-key-rows tr[data-key={a1['id']}]"
            assert (await cdp.js(f"{cell(one, 'usd_month')}.textContent")).strip() == "$0.0600 of $0.5000"
            assert await cdp.js(f"{cell(one, 'team')}.textContent") == "alpha_team"
            assert await cdp.js(f"document.querySelector('{one}').children[1].textContent") == "alpha-one"
            two = f"#team-key-rows tr[data-key={a2['id']}]"
            assert (await cdp.js(f"{cell(two, 'usd_month')}.textContent")).strip() == "$0.0300"  # no key budget
            shown = await cdp.js("[...document.querySelectorAll('#team-key-rows tr.team-key-row')]"
                                 ".map(tr => tr.dataset.key)")
            assert set(shown) == {a1["id"], a2["id"], b1["id"]}
            assert "against day budgets" in await cdp.js("document.getElementById('teams-note').textContent")
            await asyncio.sleep(0.5)
            violations = await cdp.js("window.cspViolations")
            assert violations == [], json.dumps(violations)
            # The watch sees what the CSP refuses: a style attribute set as markup is one.
            await cdp.js("document.getElementById('teams-note').setAttribute('style', 'color: red')")
            assert await cdp.wait_for("window.cspViolations.length && window.cspViolations[0]")
            await cdp.js("document.getElementById('teams-note').removeAttribute('style')")
            await cdp.js("document.getElementById('teams-view').scrollIntoView()")
            shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard-teams.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    assert path.read_bytes().startswith(b"\x89PNG")
