"""The semantic cache's steps, called by the cache layer after the exact lookup misses:
:meth:`SemanticCache.plan` (is the route on, the partition, the prompt's guard features),
:meth:`lookup` (embed, search the partition, the guard, the exact entry that answered) and
:meth:`index_later` (a stored answer joins the index). Any failure of the embeddings or the
index makes the request a plain miss: the semantic cache never turns an answer into an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...http import Headers
from ...ports import BackgroundTasks, Clock, KeyValueStore, SemanticIndexClient
from ...request_event import RequestEvent
from ..store import CacheEntry, ResponseCache, Tier, store_key
from .guard import PromptFeatures, disagreement, features
from .prompt import has_tool_calls, split_prompt
from .settings import OPT_OUT_HEADER, USER_HEADER, SemanticCacheSettings
from .vectors import normalise, quantise, sign_code

log = logging.getLogger("flaregate.cache")

HIT_RECORD_PREFIX = "fg:semhit:"  # request id -> the entry that answered it (for feedback)
HIT_RECORD_SECONDS = 86400
FALSE_HIT_EVENT = "semantic_false_hit"

# Embeds one text for a route: (vector, tokens the embedding cost), raising on any failure.
Embed = Callable[[str, str, RequestEvent], Awaitable[tuple[list[float], int]]]


class EmbeddingFailed(Exception):
    """The embeddings route could not embed the prompt: the request is a plain miss."""


class SemanticPlan:
    """A request's semantic step. The partition and the guard features are computed on first
    use, so a request the exact cache answers pays for neither."""

    __slots__ = ("_features", "_material", "_partition", "_rest", "_user", "code", "settings", "text", "vector")

    def __init__(self, settings: SemanticCacheSettings, text: str, rest: dict[str, Any],
                 material: Callable[[dict[str, Any]], str], user: str | None) -> None:
        self.settings = settings
        self.text = text
        self._rest, self._material, self._user = rest, material, user
        self._partition: str | None = None
        self._features: PromptFeatures | None = None
        self.vector: bytes | None = None  # quantised, once embedded
        self.code: int | None = None

    @property
    def partition(self) -> str:
        if self._partition is None:
            self._partition = partition_of(self._material(self._rest), self._user)
        return self._partition

    @property
    def features(self) -> PromptFeatures:
        if self._features is None:
            self._features = features(self.text)
        return self._features


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry: CacheEntry
    tier: Tier
    entry_id: str  # the key hash of the request whose answer this is
    similarity: float


def partition_of(material: str, user: str | None) -> str:
    """The partition: a hash of the exact key's material without the prompt (and the end
    user, when the route scopes by user)."""
    scoped = material if user is None else material + "\u0000user:" + user
    return hashlib.sha256(scoped.encode()).hexdigest()


class SemanticCache:
    def __init__(self, routes: dict[str, SemanticCacheSettings], index: SemanticIndexClient, embed: Embed,
                 store: KeyValueStore, clock: Clock, tasks: BackgroundTasks) -> None:
        self.routes = routes
        self._index = index
        self._embed = embed
        self._store = store
        self._clock = clock
        self._tasks = tasks
        self.counts: Counter[str] = Counter()

    def plan(self, alias: str, headers: Headers, body: dict[str, Any], operation: str,
             material: Callable[[dict[str, Any]], str]) -> SemanticPlan | None:
        """The request's semantic plan, or None: its route is off, it opted out, or it has no
        last user text to match on (``material``: the exact key's material of a body)."""
        settings = self.routes.get(alias)
        if settings is None:
            return None
        if (headers.get(OPT_OUT_HEADER) or "").strip().lower() in ("off", "0", "false", "no", "no-store"):
            self.counts["opted_out"] += 1
            return None
        split = split_prompt(body, operation)
        if split is None:
            self.counts["not_eligible"] += 1
            return None
        text, rest = split
        user = None
        if settings.scope_by_user:
            user = (headers.get(USER_HEADER) or "").strip()
            if not user:  # scoped by user, and no user named: no partition to share
                self.counts["no_user"] += 1
                return None
        return SemanticPlan(settings, text, rest, material, user)

    async def _vector(self, plan: SemanticPlan, event: RequestEvent) -> bool:
        if plan.vector is not None:
            return True
        started = self._clock.monotonic()
        try:
            raw, tokens = await self._embed(plan.settings.embeddings, plan.text, event)
        except Exception as exc:  # the embeddings route failed: a plain miss, never an error
            self.counts["embedding_errors"] += 1
            log.warning("semantic cache: embedding failed (%s); plain miss", exc)
            return False
        finally:
            event["semantic_embed_ms"] = round((self._clock.monotonic() - started) * 1000, 3)
        # The gateway's own cost, shown per key in analytics, never charged to the key's budget.
        event["semantic_embed_tokens"] = tokens
        unit = normalise(raw)
        if unit is None:
            self.counts["embedding_errors"] += 1
            return False
        plan.vector, plan.code = quantise(unit), sign_code(unit)
        return True

    async def lookup(self, plan: SemanticPlan, cache: ResponseCache, ttl: float, event: RequestEvent
                     ) -> SemanticHit | None:
        self.counts["lookups"] += 1
        if not await self._vector(plan, event):
            return None
        assert plan.vector is not None and plan.code is not None
        try:
            found = await self._index.call("search", {"partition": plan.partition, "code": format(plan.code, "x"),
                                                      "vector": plan.vector.hex(), "limit": plan.settings.shortlist,
                                                      "threshold": plan.settings.threshold})
        except Exception:
            self.counts["index_errors"] += 1
            log.warning("semantic cache: index search failed; plain miss", exc_info=True)
            return None
        for match in found.get("matches", []) if isinstance(found, dict) else []:
            similarity = float(match.get("similarity", 0.0))
            if similarity < plan.settings.threshold:
                break  # best first: the rest are below too
            try:
                theirs = PromptFeatures.from_json(match.get("features") or {})
            except ValueError:
                continue
            rule = disagreement(plan.features, theirs)
            if rule is not None:
                self.counts[f"guard_{rule}"] += 1
                event["semantic_guard"] = rule
                continue
            entry_id = str(match.get("id"))
            key = store_key(entry_id)
            got = await cache.get(key, ttl) if key is not None else None
            if got is None:  # purged or expired as an exact entry: gone from the index too
                self._tasks.run(self._delete(plan.partition, entry_id))
                continue
            entry, tier = got
            self.counts["hits"] += 1
            return SemanticHit(entry, tier, entry_id, similarity)
        self.counts["misses"] += 1
        return None

    def record_hit(self, plan: SemanticPlan, entry_id: str, similarity: float, request_id: str) -> None:
        """Remember which entry answered this request, for ``/admin/cache/feedback``."""
        if not request_id:
            return
        record = json.dumps({"partition": plan.partition, "id": entry_id, "similarity": similarity})
        self._tasks.run(self._put(HIT_RECORD_PREFIX + request_id, record))

    async def _put(self, key: str, value: str) -> None:
        try:
            await self._store.put(key, value, HIT_RECORD_SECONDS)
        except Exception:
            log.warning("semantic cache: could not record a hit for feedback", exc_info=True)

    def index_later(self, plan: SemanticPlan, entry_id: str, completion: dict[str, Any], expires_at: float) -> None:
        """A stored answer joins the partition's index (in the background); a tool call never does."""
        if has_tool_calls(completion):
            self.counts["tool_calls_not_indexed"] += 1
            return
        self._tasks.run(self._add(plan, entry_id, expires_at))

    async def _add(self, plan: SemanticPlan, entry_id: str, expires_at: float) -> None:
        scratch: Any = {}  # a REFRESH embeds here, after its answer: no event left to note it in
        if not await self._vector(plan, scratch):
            return
        assert plan.vector is not None and plan.code is not None
        try:
            await self._index.call("add", {"partition": plan.partition, "id": entry_id,
                                           "code": format(plan.code, "x"), "vector": plan.vector.hex(),
                                           "features": json.dumps(plan.features.to_json()),
                                           "expires_at": expires_at, "max_entries": plan.settings.max_entries})
            self.counts["indexed"] += 1
        except Exception:
            self.counts["index_errors"] += 1
            log.warning("semantic cache: could not index an answer", exc_info=True)

    async def _delete(self, partition: str, entry_id: str) -> None:
        try:
            await self._index.call("delete", {"partition": partition, "id": entry_id})
        except Exception:
            log.warning("semantic cache: could not delete an index entry", exc_info=True)

    async def feedback(self, request_id: str, cache: ResponseCache) -> dict[str, Any] | None:
        """A semantic hit reported wrong: its entry leaves the index and the exact cache;
        None when no semantic hit answered that request (or its record has expired)."""
        raw = await self._store.get(HIT_RECORD_PREFIX + request_id)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            partition, entry_id = str(record["partition"]), str(record["id"])
        except (ValueError, KeyError, TypeError):
            return None
        await self._index.call("delete", {"partition": partition, "id": entry_id})
        key = store_key(entry_id)
        if key is not None:
            await cache.delete(key)
        await self._store.delete(HIT_RECORD_PREFIX + request_id)
        self.counts["false_hits"] += 1
        return {"request_id": request_id, "entry": entry_id, "similarity": record.get("similarity")}

    def stats(self) -> dict[str, Any]:
        return {"routes": sorted(self.routes), **dict(self.counts)}
