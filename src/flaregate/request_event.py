"""The analytics record of one API request, as the stages fill it in and the hub reads it.

A ``TypedDict``: the type checker knows every field a stage may write (a misspelt or
unknown one is an error), while the record stays the plain JSON object the metrics hub,
the request log and the exporters take, with no conversion per request (the Worker pays
CPU for each). Only analytics fields live here: what the stages pass to each other is the
pipeline's request context.
"""

from __future__ import annotations

from typing import Any, TypedDict


class RequestEvent(TypedDict, total=False):
    # Who and what (set only once the request is authenticated and routed).
    ts: float
    request_id: str
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    path: str
    status: int
    model: str | None  # the alias the client named
    route: str  # the route a conditional alias resolved to (when another)
    route_branch: int | str
    key_id: str | None
    team_id: str  # the key's team (stored keys in a team only)
    tags: dict[str, str]
    metric_tags: dict[str, str]
    report_tags: dict[str, str]  # the tags listed in REPORT_TAGS (spend-report dimensions)
    client: str | None  # the (anonymised) client address: the access log only, never the hub
    stream: bool
    # The cache and the limits.
    cache: str | None
    cache_tier: str
    cache_collapsed: bool
    bytes_saved: int
    tokens_saved: int
    kv_write_avoided: bool
    # The semantic cache (cache/semantic): the entry that answered and how close its prompt
    # was; the embedding's cost (the gateway's own, never charged to the key's budget).
    semantic_similarity: float
    semantic_entry: str
    semantic_guard: str  # the guard rule that turned the nearest candidate away
    semantic_embed_ms: float
    semantic_embed_tokens: int
    semantic_embed_model: str
    rate_limited: bool
    ratelimit_limit: float
    ratelimit_remaining: float
    shed: bool
    guardrails: list[dict[str, Any]]
    # The upstream.
    provider: str | None
    upstream_model: str
    upstream_status: int
    attempts: int
    failovers: int
    upstream_failures: list[str]
    failed_providers: list[str]
    tokens_in: Any  # as the provider reported them (validated where they are priced)
    tokens_out: Any
    ttft_ms: float
    stream_outcome: str
    response_bytes: int  # a binary answer passed through: the bytes the client was sent
    # An MCP message (mcp_gateway/): its method, the server and tool of a tools/call, the
    # JSON-RPC error code it was answered with, the bytes it brought.
    mcp_method: str
    mcp_server: str
    mcp_tool: str
    jsonrpc_error: int
    request_bytes: int
    realtime: dict[str, Any]  # a Realtime session's summary, or one response's (realtime/)
    # How it ended.
    error: str
    error_code: str | None
    latency_ms: float
    phases: dict[str, float]
    upstream_ms: float
    # The request log's optional bodies (LOG_BODIES).
    request_body: str
    request_body_truncated: bool
    response_body: str
    response_body_truncated: bool
    # Completed by Analytics.complete before the hub sees it.
    error_class: str
    upstream_attempts: list[list[Any]]
    overhead_ms: float
    cost_usd: float
