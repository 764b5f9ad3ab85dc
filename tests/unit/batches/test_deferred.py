"""The Files and Batches APIs are declared at start-up and built on their first request: a
gateway (the Worker's included) that never sees one does not import their modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import asyncio, dataclasses, json, pathlib, sys, tempfile
from flaregate.batches.store import JobStore
from flaregate.gateway import Gateway
from flaregate.hosts.local.blob_dir import DirectoryBlobStore
from flaregate.http import Headers, Request
from tests.support.fakes import MemorySql
from tests.support.security import CONFIG_KEY, SecureRig



class Jobs:  # the job store's client (the local host's own imports the APIs: it builds them at once)
    def __init__(self, store):
        self._store = store

    async def call(self, owner, op, args):
        return self._store.call(op, args)


rig = SecureRig()
ports = dataclasses.replace(rig.gateway.ports, blobs=DirectoryBlobStore(pathlib.Path(tempfile.mkdtemp())),
                            jobs=Jobs(JobStore(MemorySql())))
gateway = Gateway(rig.settings, ports)
paths = {route.path for route in gateway.routes}
loaded_at_start = sorted(m for m in sys.modules if m in ("flaregate.batches.api", "flaregate.batches.files",
                                                         "flaregate.batches.runner", "flaregate.batches.jsonl"))
auth = Headers([("authorization", "Bearer " + CONFIG_KEY)])
listed = asyncio.run(gateway.handle(Request("GET", "/v1/batches", auth, b"")))
print(json.dumps({"paths": sorted(p for p in paths if p.startswith(("/v1/files", "/v1/batches"))),
                  "loaded_at_start": loaded_at_start, "status": listed.status,
                  "body": json.loads(listed.body), "loaded_after": "flaregate.batches.api" in sys.modules}))
"""


def test_the_batch_modules_load_on_the_first_batch_request_not_at_start():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["paths"] == ["/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/cancel",
                               "/v1/files", "/v1/files/{file_id}", "/v1/files/{file_id}/content"]
    assert result["loaded_at_start"] == []
    assert result["status"] == 200 and result["body"]["object"] == "list"
    assert result["loaded_after"] is True
