"""The dashboard in headless Chromium (Debian ``chromium``), driven over the DevTools
protocol: it connects to /ws with the admin key from the URL fragment, and after traffic
the numbers on the page change. A screenshot is saved to artifacts/dashboard.png."""

import asyncio
import base64
import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support import processes

from .conftest import ADMIN_KEY, GATEWAY_KEY, run_gateway, upstream_env

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian chromium is not installed (apt-get install -y chromium)")


class DevTools:
    """The smallest Chrome DevTools Protocol client: commands by id, events ignored."""

    def __init__(self, ws):
        self._ws = ws
        self._ids = itertools.count(1)

    async def send(self, method, **params):
        ident = next(self._ids)
        await self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self._ws.recv(), 30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def js(self, expression):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression, attempts=100):
        """Poll a JS expression until it is truthy (bounded: about 20 s)."""
        for _ in range(attempts):
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"never true in the page: {expression}")


def _start_chromium(profile: Path) -> tuple[subprocess.Popen, int | None]:
    """Chromium with its DevTools endpoint on a free port; the port is None when it exited or
    did not write it within 30 s (its stderr is in the profile's chromium.log)."""
    profile.mkdir(parents=True)
    with (profile.parent / f"{profile.name}-chromium.log").open("wb") as log:
        process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1400,1100", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            return process, None
        time.sleep(0.1)
    return process, int(port_file.read_text().split()[0])


@pytest.fixture
def chromium(tmp_path):
    # A second try with a fresh profile: a browser that dies at start-up (seen once in a CI
    # run, never reproduced) is the machine's hiccup, not the dashboard's.
    for attempt in (1, 2):
        process, port = _start_chromium(tmp_path / f"profile{attempt}")
        if port is not None:
            break
        processes.stop(process)
    else:
        log = (tmp_path / "profile2-chromium.log").read_text(errors="replace")[-500:]
        pytest.fail(f"chromium did not start its DevTools endpoint (twice): {log}")
    try:
        yield port
    finally:
        processes.stop(process)


async def test_the_dashboard_shows_live_numbers_that_change_with_traffic(chromium, upstream, tmp_path):
    with run_gateway(tmp_path / "dash", upstream_env(upstream.base_url, LOAD_SHEDDING="true",
                                                      SHED_INITIAL_LIMIT="40")) as server:
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{chromium}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(page_url, max_size=None) as ws:
            cdp = DevTools(ws)
            await cdp.send("Emulation.setDeviceMetricsOverride", width=1400, height=1100, deviceScaleFactor=1,
                           mobile=False)
            await cdp.send("Page.navigate", url=f"{server.base_url}/dashboard#token={ADMIN_KEY}")
            await cdp.wait_for("document.getElementById('status')?.textContent === 'live'")
            assert await cdp.js("location.hash") == ""  # the key left the address bar
            # 'live' is the socket open; the first snapshot's figures come with its first message.
            await cdp.wait_for("document.getElementById('requests-total').textContent === '0'")
            assert await cdp.js("document.getElementById('rps').textContent") == "0.00"

            async with httpx.AsyncClient(headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=20) as api:
                sent = 0
                for wave in range(10):  # waves over a few seconds, so the charts get several points
                    for i in range(1 + wave % 4 * 2):
                        model = "gpt-failover" if (wave, i) == (2, 0) else "mock-1"
                        content = f"w{wave} q{i % 3}"  # repeats: cache hits
                        body = {"model": model, "messages": [{"role": "user", "content": content}]}
                        assert (await api.post(server.base_url + "/v1/chat/completions", json=body)).status_code == 200
                        sent += 1
                    await asyncio.sleep(0.5)
            await cdp.wait_for(f"document.getElementById('requests-total').textContent === '{sent}'")
            shown = await cdp.js("""Object.fromEntries(['rps', 'p50', 'p95', 'error-rate', 'cache-hit-rate',
                'health-score', 'memory', 'subscribers'].map(id => [id, document.getElementById(id).textContent]))""")
            assert float(shown["rps"]) > 0
            assert shown["p50"].endswith("ms") and shown["p95"].endswith("ms")
            assert shown["error-rate"] == "0.00 %"
            assert shown["cache-hit-rate"] != "–" and float(shown["cache-hit-rate"].split()[0]) > 0
            assert shown["health-score"] != "–" and shown["memory"].endswith("MiB")
            assert shown["subscribers"] == "1"
            limit = await cdp.js("document.getElementById('shed-limit').textContent")
            assert limit.isdigit() and int(limit) >= 1  # the adaptive limit, from /health
            providers = await cdp.js("[...document.querySelectorAll('#providers tr td:first-child')].map(td => td.textContent)")
            assert {"mock", "upstream", "dead"} <= set(providers)
            events = await cdp.wait_for("document.getElementById('events').textContent.includes('failover')")
            assert events
            drawn = await cdp.js("""(() => { const c = document.getElementById('chart-rps');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()""")
            assert drawn > 1000  # axes, grid and the line: the canvas was painted
            await asyncio.sleep(1.0)  # one more tick on the charts before the picture
            shot = await cdp.send("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    assert path.read_bytes().startswith(b"\x89PNG")
