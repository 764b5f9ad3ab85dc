"""One real attempt to start the Worker under `wrangler dev`: where the Python runtime can
start, /health answers; here it skips with the reason wrangler printed.

The whole integration suite runs against the Worker with scripts/e2e."""

import httpx

from tests.integration.conftest import run_edge_gateway


def test_worker_answers_health_under_wrangler_dev(tmp_path):
    with run_edge_gateway(tmp_path, {"FLAREGATE_API_KEYS": "fg-e2e-key"}) as server:
        health = httpx.get(server.base_url + "/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
