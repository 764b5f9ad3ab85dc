"""A bare proxy: POST the body to UPSTREAM_URL + the request's path, return the answer as is
(a stream passes through without Python touching its chunks). The bench's edge floor."""

from typing import Any
from urllib.parse import urlsplit

from workers import Response, WorkerEntrypoint, fetch


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Any:
        if request.method != "POST":
            return Response("ok")
        upstream = await fetch(str(self.env.UPSTREAM_URL) + urlsplit(str(request.url)).path, method="POST",
                               headers={"content-type": "application/json",
                                        "authorization": "Bearer " + str(self.env.UPSTREAM_KEY)},
                               body=await request.text())
        return Response(upstream.body, status=upstream.status,
                        headers={"content-type": upstream.headers.get("content-type") or "application/json"})
