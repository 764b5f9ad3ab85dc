"""The dashboard's Requests view in headless Chromium: after faults, filtering by status
502 shows exactly the failed requests; a click opens the detail panel (with the request's
body: LOG_BODIES is on here). Screenshot:
artifacts/dashboard-requests.png."""

import base64

import httpx
import websockets

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env
from .test_dashboard_browser import ARTIFACTS, DevTools, chromium  # noqa: F401  (the fixture)

ROWS = "[...document.querySelectorAll('#log-rows tr.log-row')].map(tr => tr.dataset.id)"


async def test_requests_view_filters_by_status_and_opens_one_request(chromium, upstream, tmp_path):  # noqa: F811
    env = upstream_env(upstream.base_url, RETRY_BACKOFF_BASE_SECONDS="0.01", RETRY_BACKOFF_MAX_SECONDS="0.02",
                       LOG_BODIES="both")
    with run_gateway(tmp_path / "gw", env) as server:
        async with httpx.AsyncClient(timeout=10) as http:
            targets = (await http.get(f"http://127.0.0.1:{chromium}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(page_url, max_size=None) as ws:
            cdp = DevTools(ws)
            await cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=1800, deviceScaleFactor=1,
                           mobile=False)
            await cdp.send("Page.navigate", url=f"{server.base_url}/dashboard#token={ADMIN_KEY}")
            await cdp.wait_for("document.getElementById('status')?.textContent === 'live'")
            api = {"authorization": f"Bearer {GATEWAY_KEY}"}
            failed = []
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                for i in range(4):
                    body = {"model": "gpt-test", "messages": [{"role": "user", "content": f"ok {i}"}]}
                    assert (await client.post("/v1/chat/completions", json=body, headers=api)).status_code == 200
                for i in range(2):
                    body = {"model": "gpt-dead", "messages": [{"role": "user", "content": f"dead {i}"}]}
                    response = await client.post("/v1/chat/completions", json=body, headers=api)
                    assert response.status_code == 502
                    failed.append(response.headers["x-request-id"])
            # Live: the rows arrive with the hub's next push, without a reload.
            await cdp.wait_for(f"{ROWS}.length === 6")
            await cdp.js("document.querySelector('#log-filters [name=status]').value = '502';"
                         "document.querySelector('#log-filters button').click()")
            await cdp.wait_for(f"{ROWS}.length === 2")
            assert sorted(await cdp.js(ROWS)) == sorted(failed)
            await cdp.js("document.querySelector('#log-rows tr.log-row').click()")
            detail = await cdp.wait_for("!document.getElementById('log-detail').hidden &&"
                                        " document.getElementById('log-detail').textContent")
            assert "502" in detail and "attempt dead: failed" in detail
            kept = await cdp.wait_for("document.querySelector('#log-detail pre[data-body=request_body]')"
                                      "?.textContent")
            assert "dead " in kept  # the failed request's own message
            # The History view's 1-year archive (weekly buckets) counts the same six requests.
            await cdp.js("document.querySelector('#history-windows [data-window=\\'1y\\']').click()")
            await cdp.wait_for("document.getElementById('history-summary').dataset.window === '1y' &&"
                               " document.getElementById('history-summary').dataset.requests === '6'")
            assert "buckets of 7 d" in await cdp.js("document.getElementById('history-summary').textContent")
            shot = await cdp.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard-requests.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    assert path.read_bytes().startswith(b"\x89PNG")
