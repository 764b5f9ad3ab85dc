"""The cache step of a chat request: plan it, answer hits, share and record misses.

The gateway calls four things: :meth:`CacheLayer.plan` (read the controls, compute the
key), :meth:`lookup` and :meth:`hit_response` (answer from either tier, in the shape the
client asked for), and :meth:`fetch` (the upstream call, shared by identical concurrent
requests, recorded as it passes and stored when complete).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..http import Headers, Response
from ..ports import Ports, UpstreamResponse
from ..request_event import RequestEvent
from ..routing.routes import Target, route_signature
from ..routing.settings import WILDCARD_ROUTE
from .controls import (
    BYPASS,
    HIT,
    KEY_HEADER,
    MISS,
    REFRESH,
    STATUS_HEADER,
    cache_status,
    parse_directives,
)
from .lru import MemoryLRU
from .namespaces import NamespaceGenerations, NamespaceStoreError
from .single_flight import FlightRecorder, SharedResponse, SingleFlight
from .sse_completion import StreamAssembler, render_sse, storable_problem
from .store import (
    DEFAULT_NAMESPACE,
    CacheEntry,
    Origin,
    ResponseCache,
    Tier,
    TierLifetimes,
    cache_key,
    completion_tokens,
    key_hash,
    key_material,
)

if TYPE_CHECKING:
    from ..config import Settings
    from .semantic.layer import SemanticCache, SemanticPlan

log = logging.getLogger("flaregate.cache")

SIMILARITY_HEADER = "x-flaregate-semantic-similarity"  # a semantic hit: the cosine of the two prompts
ENTRY_HEADER = "x-flaregate-semantic-entry"  # a semantic hit: the key hash of the entry that answered


@dataclass(slots=True)
class CachePlan:
    status: str  # MISS (read, then write), REFRESH (write only) or BYPASS (neither)
    key: str | None
    ttl: int
    namespace: str
    debug: bool
    stream: bool
    include_usage: bool
    operation: str = "chat"  # "chat" or "responses": entries of one never answer the other
    semantic: SemanticPlan | None = None  # set: the route's semantic cache is on for this request

    @property
    def flight_key(self) -> str:
        # Only requests whose answers have the same shape share a flight.
        return f"{self.key}|{'sse' if self.stream else 'json'}|{int(self.include_usage)}"


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    entry: CacheEntry
    tier: Tier
    body: bytes  # rendered in the requested shape (JSON, or SSE ending in [DONE])
    similarity: float | None = None  # set: a semantic hit, answered by another prompt's entry
    entry_id: str | None = None


class _Recorder:
    """Sees one flight's bytes; at the end, stores the answer when it may be cached."""

    def __init__(self, layer: CacheLayer, plan: CachePlan) -> None:
        self._layer = layer
        self._plan = plan
        self._limit = layer.settings.cache.max_entry_bytes
        self._assembler = StreamAssembler(self._limit) if plan.stream else None
        self._parts: list[bytes] = []
        self._size = 0
        self.stored = False
        self.cold_write_avoided = False  # stored without a write to KV / the cold store
        self.tokens = 0
        self.problem: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self._assembler is not None:
            self._assembler.feed(chunk)
        elif self._size <= self._limit:
            self._parts.append(chunk)
            self._size += len(chunk)

    def finish(self, target: Target | None, status: int, ok: bool) -> None:
        self.problem = self._store(target, status, ok)
        if self.problem:
            log.info("answer not cached: %s", self.problem)

    def _store(self, target: Target | None, status: int, ok: bool) -> str | None:
        if target is None or status != 200:
            return f"upstream status {status}"
        origin: Origin
        if self._assembler is not None:  # a stream after [DONE] is complete even if cut later
            completion = self._assembler.completion()
            if completion is None:
                return self._assembler.problem
            body, origin = json.dumps(completion, separators=(",", ":")), "sse"
        else:
            if not ok:
                return "the body did not arrive whole"
            if self._size > self._limit:
                return "the answer is larger than the cache's entry limit"
            try:
                body = b"".join(self._parts).decode()
                completion = json.loads(body)
            except (ValueError, RecursionError):
                return "the answer is not JSON"
            origin = "json"
        if isinstance(completion, dict):
            self.tokens = completion_tokens(completion)
        problem = storable_problem(completion, self._layer.settings.cache.skip_length_finish)
        if problem:
            return problem
        tiers = self._layer.store(self._plan, target.provider.name, completion, origin, body)
        if tiers is None:
            return "the answer is larger than the cache's entry limit"
        self.stored = True
        self.cold_write_avoided = self._layer.cold_write_avoided(tiers)
        return None


class CacheLayer:
    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.settings = settings
        self.clock = ports.clock
        policy = settings.cache
        memory: MemoryLRU[CacheEntry] = MemoryLRU(ports.clock, policy.memory_max_entries, policy.memory_max_bytes)
        lifetimes = TierLifetimes(policy.hot_ttl_seconds, policy.warm_ttl_seconds, policy.cold_ttl_seconds,
                                  policy.hot_promote_hits)
        self.cache = ResponseCache(ports.cache, ports.clock, ports.tasks, memory, lifetimes, ports.warm_cache)
        self.namespaces = NamespaceGenerations(ports.cache, ports.clock, policy.max_ttl_seconds + 86400)
        self.flights = SingleFlight(poll=not ports.cross_request_waits,
                                    max_bytes=settings.resilience.single_flight_max_bytes)
        self._solo = 0
        self.statuses: Counter[str] = Counter()
        self.semantic: SemanticCache | None = None  # set by the gateway when a route turns it on

    def _default_ttl(self, model: str) -> int:
        ttls = self.settings.cache.route_ttl_seconds
        alias = model if model in self.settings.routes else WILDCARD_ROUTE
        return ttls.get(alias, self.settings.cache_ttl_seconds)

    def _key_tags(self, model: str, tags: dict[str, str] | None) -> dict[str, str] | None:
        """The request tags the route puts in its cache key (None: the route keys on none)."""
        alias = model if model in self.settings.routes else WILDCARD_ROUTE
        names = self.settings.cache.route_key_tags.get(alias)
        if not names:
            return None
        return {name: tags[name] for name in names if tags and name in tags}

    async def plan(self, headers: Headers, tenant: str, body: dict[str, Any], targets: list[Target], *,
                   operation: str = "chat", tags: dict[str, str] | None = None, semantic: bool = True) -> CachePlan:
        """Read the request's cache controls (a malformed one is a 400) and compute the key."""
        directives = parse_directives(headers, self.settings.cache.max_ttl_seconds)
        ttl = directives.ttl if directives.ttl is not None else min(self._default_ttl(body["model"]),
                                                                   self.settings.cache.max_ttl_seconds)
        namespace = directives.namespace or DEFAULT_NAMESPACE
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        plan = CachePlan(BYPASS, None, ttl, namespace, directives.debug, stream, include_usage, operation)
        if directives.no_store or ttl <= 0:
            return self._count(plan)
        try:
            generation = await self.namespaces.current(namespace)
        except NamespaceStoreError:
            log.warning("cache store unreachable; request not cached")
            return self._count(plan)
        try:
            route, key_tags = route_signature(targets), self._key_tags(body["model"], tags)
            plan.key = cache_key(tenant, route, body, namespace, generation, operation=operation, tags=key_tags)
            if self.semantic is not None and semantic:  # the partition: the exact key's material without the prompt
                plan.semantic = self.semantic.plan(
                    body["model"], headers, body, operation,
                    lambda rest: key_material(tenant, route, rest, namespace, generation, operation=operation,
                                              tags=key_tags))
        except RecursionError:  # absurdly deep JSON: served, but not cached
            log.warning("request body too deeply nested to key; request not cached")
            return self._count(plan)
        plan.status = REFRESH if directives.no_cache else MISS
        return self._count(plan)

    def _count(self, plan: CachePlan) -> CachePlan:
        self.statuses[plan.status] += 1
        return plan

    async def lookup(self, plan: CachePlan, render: Callable[[CacheEntry, CachePlan], bytes] | None = None,
                     event: RequestEvent | None = None) -> CachedAnswer | None:
        """The stored answer, already in the shape the request asked for (``render``: for
        other answer kinds than chat's), or None. Exact first; then, where the route has a
        semantic cache, the entry of a paraphrase."""
        if plan.status != MISS or plan.key is None:
            return None
        found = await self.cache.get(plan.key, plan.ttl)  # only the tiers this request's TTL writes
        similarity = entry_id = None
        if found is None and plan.semantic is not None and self.semantic is not None:
            semantic = await self.semantic.lookup(plan.semantic, self.cache, plan.ttl,
                                                  event if event is not None else {})
            if semantic is not None:
                found, similarity, entry_id = (semantic.entry, semantic.tier), semantic.similarity, semantic.entry_id
        if found is None:
            return None
        entry, tier = found
        try:
            if render is not None:
                body = render(entry, plan)
            else:
                body = render_sse(entry.completion, plan.include_usage) if plan.stream else entry.body.encode()
        except (RecursionError, ValueError, TypeError):  # cannot be replayed: serve it fresh
            log.warning("cache entry %s cannot be rendered; treating as a miss", key_hash(plan.key))
            return None
        self.statuses[MISS] -= 1
        self.statuses[HIT] += 1
        return CachedAnswer(entry, tier, body, similarity, entry_id)

    def _debug(self, plan: CachePlan) -> dict[str, str]:
        return {KEY_HEADER: key_hash(plan.key)} if plan.debug and plan.key else {}

    def hit_response(self, plan: CachePlan, hit: CachedAnswer, out: dict[str, str],
                     event: RequestEvent) -> Response:
        entry, body, now = hit.entry, hit.body, self.clock.now()
        if plan.stream:
            shape = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        else:
            shape = {"content-type": "application/json"}
        semantic = hit.similarity is not None
        headers = {**out, **shape, STATUS_HEADER: HIT, "x-flaregate-provider": entry.provider,
                   "cache-status": cache_status(HIT, tier="semantic" if semantic else hit.tier,
                                                ttl=entry.expires_at - now),
                   "age": str(max(0, int(now - entry.stored_at))), **self._debug(plan)}
        if hit.similarity is not None and hit.entry_id is not None:
            headers[SIMILARITY_HEADER] = f"{hit.similarity:.4f}"
            headers[ENTRY_HEADER] = hit.entry_id
            event["semantic_similarity"], event["semantic_entry"] = hit.similarity, hit.entry_id
            if plan.semantic is not None and self.semantic is not None:
                self.semantic.record_hit(plan.semantic, hit.entry_id, hit.similarity, out.get("x-request-id", ""))
        event["cache"], event["cache_tier"], event["provider"] = HIT, hit.tier, entry.provider
        event["bytes_saved"], event["tokens_saved"] = len(body), entry.tokens
        if plan.stream:
            event["stream_outcome"] = "replayed"
        return Response(200, headers, body)

    def store(self, plan: CachePlan, provider: str, completion: dict[str, Any], origin: Origin,
              body: str | None = None) -> tuple[Tier, ...] | None:
        """Store an answer under the plan's key (``body``: its JSON text when verbatim); the
        tiers written, or None when it is over the entry limit."""
        text = body if body is not None else json.dumps(completion, separators=(",", ":"), ensure_ascii=False)
        if len(text) > self.settings.cache.max_entry_bytes or plan.key is None:
            return None
        entry = CacheEntry.create(provider, text, completion, origin, self.clock.now(), plan.ttl)
        tiers = self.cache.put(plan.key, entry)
        if plan.semantic is not None and self.semantic is not None:
            self.semantic.index_later(plan.semantic, key_hash(plan.key), completion, entry.expires_at)
        return tiers

    def cold_write_avoided(self, tiers: tuple[Tier, ...]) -> bool:
        """Stored without a write to KV / the cold store (the entry dies before it would matter)."""
        return "cold" not in tiers and self.cache.lifetimes.cold > 0

    async def fetch(self, plan: CachePlan, call: Callable[[], Awaitable[tuple[Target, UpstreamResponse]]],
                    event: RequestEvent, recorder: Callable[[CacheLayer, CachePlan], FlightRecorder] | None = None
                    ) -> tuple[Target, UpstreamResponse]:
        """The upstream call: shared and recorded (by ``recorder``, chat's by default) when
        the answer may be stored."""
        if plan.status == BYPASS or plan.key is None:
            return await call()

        def on_close(reader: SharedResponse) -> None:
            if not reader.follower and getattr(reader.recorder, "cold_write_avoided", False):
                event["kv_write_avoided"] = True  # counted by the hub: writes KV never paid for
            if reader.follower:  # served without paying the provider
                event["bytes_saved"] = reader.delivered
                event["tokens_saved"] = getattr(reader.recorder, "tokens", 0)

        flight_key = plan.flight_key
        if not self.settings.cache.single_flight:  # a flight of one: recorded, never shared
            self._solo += 1
            flight_key += f"|solo{self._solo}"
        make = recorder or _Recorder
        target, reader = await self.flights.join(flight_key, call, lambda: make(self, plan), on_close)
        if reader.follower:
            event["cache_collapsed"] = True
        return target, reader

    def miss_headers(self, plan: CachePlan, upstream: UpstreamResponse) -> dict[str, str]:
        collapsed = isinstance(upstream, SharedResponse) and upstream.follower
        return {STATUS_HEADER: plan.status, "cache-status": cache_status(plan.status, collapsed=collapsed),
                **self._debug(plan)}

    @staticmethod
    def mark_stored(headers: dict[str, str], upstream: UpstreamResponse) -> None:
        """After a whole (non-streamed) body: say in Cache-Status whether it was stored."""
        if isinstance(upstream, SharedResponse) and getattr(upstream.recorder, "stored", False):
            headers["cache-status"] += "; stored"

    def stats(self) -> dict[str, Any]:
        lookups = self.statuses[HIT] + self.statuses[MISS]
        return {
            "requests": {s: self.statuses[s] for s in (HIT, MISS, REFRESH, BYPASS)},
            "hit_rate": round(self.statuses[HIT] / lookups, 4) if lookups else None,
            **self.cache.stats(),
            "flights": self.flights.stats(),
            **({"semantic": self.semantic.stats()} if self.semantic is not None else {}),
        }
