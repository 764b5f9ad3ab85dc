"""The security store: gateway keys (hashes only), signing nonces, webhooks and their
delivery log, written once over the SQL-storage port.

Locally it is an in-process instance over the server's SQLite file; on the edge it is meant
to live in one Durable Object (``SecurityStore`` binding) so that key revocation and
nonce checks are strongly consistent; the Worker reaches it through
:class:`flaregate.ports.SecurityStoreClient`, whose ``call(op, args)`` takes and returns
JSON-able values only. No plain gateway key ever reaches this object: callers hash first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..ports import Clock, SqlStorage

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS gateway_keys ("
    " id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, name TEXT NOT NULL,"
    " policy TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL)",
    "CREATE TABLE IF NOT EXISTS signing_nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS webhooks ("
    " id TEXT PRIMARY KEY, url TEXT NOT NULL, events TEXT NOT NULL, secret TEXT NOT NULL,"
    " created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, webhook_id TEXT NOT NULL, delivery_id TEXT NOT NULL,"
    " event TEXT NOT NULL, attempt INTEGER NOT NULL, status INTEGER, error TEXT,"
    " ts REAL NOT NULL, delivered INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, id)",
    # MCP tool pinning (mcp_gateway/pinning.py): the approved and the last seen definition hash.
    "CREATE TABLE IF NOT EXISTS mcp_tool_pins ("
    " tool TEXT PRIMARY KEY, approved TEXT NOT NULL, seen TEXT NOT NULL, first_seen REAL NOT NULL,"
    " changed_at REAL)",
    # A rotated key's previous secret, valid until its grace ends (one per key: a second
    # rotation ends the first one's grace at once). Tables of their own, not new columns, so
    # a store made by an earlier version needs no migration.
    "CREATE TABLE IF NOT EXISTS key_previous_secrets ("
    " digest TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, valid_until REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS key_last_used (id TEXT PRIMARY KEY, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS admin_credentials ("
    " id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL, team_id TEXT,"
    " created_at REAL NOT NULL, revoked_at REAL)",
    "CREATE TABLE IF NOT EXISTS admin_audit ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, credential TEXT NOT NULL, method TEXT NOT NULL,"
    " path TEXT NOT NULL, status INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS admin_audit_by_time ON admin_audit (ts)",
    "CREATE TABLE IF NOT EXISTS teams ("
    " id TEXT PRIMARY KEY, name TEXT NOT NULL, policy TEXT NOT NULL, created_at REAL NOT NULL)",
)
DELIVERY_LOG_LIMIT = 1000  # rows kept per webhook
_SWEEP_EVERY = 256


def _key_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "prefix": row["prefix"], "name": row["name"],
            "policy": json.loads(row["policy"]), "created_at": row["created_at"],
            "expires_at": row["expires_at"], "revoked_at": row["revoked_at"]}


# The security port's operations by name, and the store method that answers each: every
# store (SQLite here, Redis for replicas) offers the same ones.
OPERATIONS = {
    "keys.create": "create_key", "keys.list": "list_keys", "keys.revoke": "revoke_key",
    "keys.find": "find_key", "keys.count_active": "count_active_keys", "nonces.use": "use_nonce",
    "webhooks.create": "create_webhook", "webhooks.list": "list_webhooks", "webhooks.delete": "delete_webhook",
    "webhooks.for_event": "webhooks_for_event", "deliveries.log": "log_delivery", "deliveries.list": "list_deliveries",
    "mcp_pins.observe": "observe_mcp_tools", "mcp_pins.list": "list_mcp_pins", "mcp_pins.approve": "approve_mcp_tool",
    "keys.update": "update_key", "keys.rotate": "rotate_key", "keys.touch": "touch_keys", "keys.adopt": "adopt_key",
    "teams.create": "create_team", "teams.get": "get_team", "teams.list": "list_teams",
    "teams.update": "update_team", "teams.delete": "delete_team",
    "credentials.create": "create_credential", "credentials.list": "list_credentials",
    "credentials.find": "find_credential", "credentials.revoke": "revoke_credential",
    "audit.log": "log_audit", "audit.list": "list_audit",
}
AUDIT_LIST_LIMIT = 1000


def credential_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "name", "role", "team_id", "created_at", "revoked_at")}


def team_row(row: dict[str, Any]) -> dict[str, Any]:
    """A team as every store answers it: its policy's fields beside its id, name and time."""
    return {**json.loads(row["policy"]), "id": row["id"], "name": row["name"], "created_at": row["created_at"]}


def operations(store: Any) -> dict[str, Callable[..., Any]]:
    """The operation table of ``store``: name -> bound method."""
    return {name: getattr(store, method) for name, method in OPERATIONS.items()}


class SecurityStore:
    def __init__(self, sql: SqlStorage, clock: Clock) -> None:
        self._sql = sql
        self._clock = clock
        self._nonce_writes = 0
        for statement in SCHEMA:
            sql.exec(statement)
        self._ops = operations(self)
        self._realtime_loaded = False

    def call(self, op: str, args: dict[str, Any]) -> Any:
        """The one entry point a host forwards to (a Durable Object RPC on the edge)."""
        method = self._ops.get(op)
        if method is None and op.startswith("realtime.") and not self._realtime_loaded:
            self._load_realtime()
            method = self._ops.get(op)
        if method is None:
            raise ValueError(f"unknown security-store operation {op!r}")
        return method(**args)

    def _load_realtime(self) -> None:
        """The Realtime slots and client secrets live in the same object (realtime/store.py),
        their module and tables made on the first Realtime operation."""
        from ..realtime.store import RealtimeStore
        from ..realtime.store import operations as realtime_operations

        self._ops.update(realtime_operations(RealtimeStore(self._sql, self._clock)))
        self._realtime_loaded = True

    # -- gateway keys --------------------------------------------------------------------
    def create_key(self, id: str, digest: str, prefix: str, name: str, policy: dict[str, Any],
                   expires_at: float | None) -> dict[str, Any]:
        self._sql.exec(
            "INSERT INTO gateway_keys (id, digest, prefix, name, policy, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            id, digest, prefix, name, json.dumps(policy), self._clock.now(), expires_at)
        return _key_row(self._sql.exec("SELECT * FROM gateway_keys WHERE id = ?", id)[0])

    def list_keys(self) -> list[dict[str, Any]]:
        used = {r["id"]: r["at"] for r in self._sql.exec("SELECT id, at FROM key_last_used")}
        return [{**_key_row(r), "last_used_at": used.get(r["id"])}
                for r in self._sql.exec("SELECT * FROM gateway_keys ORDER BY created_at, id")]

    def rotate_key(self, id: str, digest: str, prefix: str, valid_until: float) -> dict[str, Any] | None:
        """Give key ``id`` the secret of ``digest``; its current secret stays valid until
        ``valid_until`` (a previous one's grace ends now). None when no such usable key."""
        rows = self._sql.exec("SELECT * FROM gateway_keys WHERE id = ? AND revoked_at IS NULL", id)
        if not rows:
            return None
        self._sql.exec("DELETE FROM key_previous_secrets WHERE key_id = ?", id)
        if valid_until > self._clock.now():
            self._sql.exec("INSERT INTO key_previous_secrets (digest, key_id, valid_until) VALUES (?, ?, ?)",
                           rows[0]["digest"], id, valid_until)
        self._sql.exec("UPDATE gateway_keys SET digest = ?, prefix = ? WHERE id = ?", digest, prefix, id)
        return _key_row(self._sql.exec("SELECT * FROM gateway_keys WHERE id = ?", id)[0])

    def adopt_key(self, record: dict[str, Any]) -> bool:
        """A key as another store holds it (its digest, times and revocation included): the
        sharded store's copy where a rotated key's new secret places it. False when a key with
        its id or digest is here already (the one here stands)."""
        return bool(self._sql.exec(
            "INSERT INTO gateway_keys (id, digest, prefix, name, policy, created_at, expires_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            record["id"], record["digest"], record["prefix"], record["name"], json.dumps(record["policy"]),
            float(record["created_at"]), record.get("expires_at"), record.get("revoked_at")))

    def touch_keys(self, used: dict[str, float], digest: str | None = None) -> None:
        """Record when keys were last used (coarse: callers send one time per key and minute;
        ``digest``, the secret the key was found by, only places the write among shards)."""
        for key_id, at in used.items():
            self._sql.exec("INSERT INTO key_last_used (id, at) VALUES (?, ?)"
                           " ON CONFLICT(id) DO UPDATE SET at = max(at, excluded.at)", key_id, float(at))

    def revoke_key(self, id: str) -> dict[str, Any] | None:
        self._sql.exec("UPDATE gateway_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                       self._clock.now(), id)
        rows = self._sql.exec("SELECT * FROM gateway_keys WHERE id = ?", id)
        return _key_row(rows[0]) if rows else None

    def update_key(self, id: str, policy: dict[str, Any]) -> dict[str, Any] | None:
        """Replace a key's policy (moving it to another team, say); None when no such key."""
        rows = self._sql.exec("UPDATE gateway_keys SET policy = ? WHERE id = ? RETURNING *", json.dumps(policy), id)
        return _key_row(rows[0]) if rows else None

    def find_key(self, digest: str) -> dict[str, Any] | None:
        """The key of a secret: its current one, or the previous one of a rotated key while
        its grace lasts (then with ``secret_expires_at``: callers refuse it after that)."""
        rows = self._sql.exec("SELECT * FROM gateway_keys WHERE digest = ?", digest)
        if rows:
            return {**_key_row(rows[0]), "digest": rows[0]["digest"]}
        rows = self._sql.exec(
            "SELECT k.*, p.valid_until FROM key_previous_secrets p JOIN gateway_keys k ON k.id = p.key_id"
            " WHERE p.digest = ? AND p.valid_until > ?", digest, self._clock.now())
        if not rows:
            return None
        return {**_key_row(rows[0]), "digest": digest, "secret_expires_at": rows[0]["valid_until"]}

    def count_active_keys(self) -> int:
        rows = self._sql.exec(
            "SELECT COUNT(*) AS n FROM gateway_keys WHERE revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?)", self._clock.now())
        return int(rows[0]["n"])

    # -- teams ---------------------------------------------------------------------------
    def create_team(self, id: str, name: str, policy: dict[str, Any]) -> dict[str, Any] | None:
        """A new team, or None when one with that id exists."""
        rows = self._sql.exec("INSERT INTO teams (id, name, policy, created_at) VALUES (?, ?, ?, ?)"
                              " ON CONFLICT(id) DO NOTHING RETURNING *", id, name, json.dumps(policy), self._clock.now())
        return team_row(rows[0]) if rows else None

    def get_team(self, id: str) -> dict[str, Any] | None:
        rows = self._sql.exec("SELECT * FROM teams WHERE id = ?", id)
        return team_row(rows[0]) if rows else None

    def list_teams(self) -> list[dict[str, Any]]:
        return [team_row(r) for r in self._sql.exec("SELECT * FROM teams ORDER BY created_at, id")]

    def update_team(self, id: str, name: str, policy: dict[str, Any]) -> dict[str, Any] | None:
        rows = self._sql.exec("UPDATE teams SET name = ?, policy = ? WHERE id = ? RETURNING *",
                              name, json.dumps(policy), id)
        return team_row(rows[0]) if rows else None

    def delete_team(self, id: str) -> bool:
        return bool(self._sql.exec("DELETE FROM teams WHERE id = ? RETURNING id", id))

    # -- scoped admin credentials (admin_scopes.py) and the audit log --------------------
    def create_credential(self, id: str, digest: str, name: str, role: str, team_id: str | None) -> dict[str, Any]:
        rows = self._sql.exec("INSERT INTO admin_credentials (id, digest, name, role, team_id, created_at)"
                              " VALUES (?, ?, ?, ?, ?, ?) RETURNING *", id, digest, name, role, team_id,
                              self._clock.now())
        return credential_row(rows[0])

    def list_credentials(self) -> list[dict[str, Any]]:
        return [credential_row(r) for r in self._sql.exec("SELECT * FROM admin_credentials ORDER BY created_at, id")]

    def find_credential(self, digest: str) -> dict[str, Any] | None:
        rows = self._sql.exec("SELECT * FROM admin_credentials WHERE digest = ?", digest)
        return credential_row(rows[0]) if rows else None

    def revoke_credential(self, id: str) -> dict[str, Any] | None:
        self._sql.exec("UPDATE admin_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                       self._clock.now(), id)
        rows = self._sql.exec("SELECT * FROM admin_credentials WHERE id = ?", id)
        return credential_row(rows[0]) if rows else None

    def log_audit(self, credential: str, method: str, path: str, status: int, keep_seconds: float) -> None:
        """One admin change; records older than ``keep_seconds`` go as it is written."""
        now = self._clock.now()
        self._sql.exec("INSERT INTO admin_audit (ts, credential, method, path, status) VALUES (?, ?, ?, ?, ?)",
                       now, credential, method, path, int(status))
        self._sql.exec("DELETE FROM admin_audit WHERE ts < ?", now - keep_seconds)

    def list_audit(self, limit: int = 100, credential: str | None = None) -> list[dict[str, Any]]:
        limit = max(1, min(int(limit), AUDIT_LIST_LIMIT))
        if credential is None:
            rows = self._sql.exec("SELECT ts, credential, method, path, status FROM admin_audit"
                                  " ORDER BY id DESC LIMIT ?", limit)
        else:
            rows = self._sql.exec("SELECT ts, credential, method, path, status FROM admin_audit"
                                  " WHERE credential = ? ORDER BY id DESC LIMIT ?", credential, limit)
        return rows

    # -- signing nonces ------------------------------------------------------------------
    def use_nonce(self, nonce: str, expires_at: float) -> bool:
        """Record a nonce; False when it was already used (a replay) and has not expired."""
        now = self._clock.now()
        self._nonce_writes += 1
        if self._nonce_writes % _SWEEP_EVERY == 0:
            self._sql.exec("DELETE FROM signing_nonces WHERE expires_at <= ?", now)
        rows = self._sql.exec(
            "INSERT INTO signing_nonces (nonce, expires_at) VALUES (?, ?)"
            " ON CONFLICT(nonce) DO UPDATE SET expires_at = excluded.expires_at"
            " WHERE signing_nonces.expires_at <= ? RETURNING nonce", nonce, expires_at, now)
        return bool(rows)

    # -- webhooks ------------------------------------------------------------------------
    def create_webhook(self, id: str, url: str, events: list[str], secret: str) -> dict[str, Any]:
        self._sql.exec("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?)",
                       id, url, json.dumps(events), secret, self._clock.now())
        return self._public_webhook(self._sql.exec("SELECT * FROM webhooks WHERE id = ?", id)[0])

    @staticmethod
    def _public_webhook(row: dict[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "url": row["url"], "events": json.loads(row["events"]),
                "created_at": row["created_at"]}

    def list_webhooks(self) -> list[dict[str, Any]]:
        return [self._public_webhook(r) for r in self._sql.exec("SELECT * FROM webhooks ORDER BY created_at, id")]

    def delete_webhook(self, id: str) -> bool:
        return bool(self._sql.exec("DELETE FROM webhooks WHERE id = ? RETURNING id", id))

    def webhooks_for_event(self, event: str, webhook_id: str | None = None) -> list[dict[str, Any]]:
        """Targets of an event (or the one webhook named), with their signing secrets (these
        never leave the gateway)."""
        hooks = []
        for row in self._sql.exec("SELECT * FROM webhooks ORDER BY created_at, id"):
            events = json.loads(row["events"])
            if row["id"] == webhook_id or (webhook_id is None and ("*" in events or event in events)):
                hooks.append({"id": row["id"], "url": row["url"], "secret": row["secret"]})
        return hooks

    def log_delivery(self, webhook_id: str, delivery_id: str, event: str, attempt: int,
                     status: int | None, error: str | None, delivered: bool) -> None:
        self._sql.exec(
            "INSERT INTO webhook_deliveries (webhook_id, delivery_id, event, attempt, status, error, ts, delivered)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            webhook_id, delivery_id, event, attempt, status, error, self._clock.now(), int(delivered))
        self._sql.exec(
            "DELETE FROM webhook_deliveries WHERE webhook_id = ? AND id <= ("
            " SELECT id FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            webhook_id, webhook_id, DELIVERY_LOG_LIMIT)

    def list_deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._sql.exec(
            "SELECT delivery_id, event, attempt, status, error, ts, delivered FROM webhook_deliveries"
            " WHERE webhook_id = ? ORDER BY id DESC LIMIT ?", webhook_id, max(1, min(limit, DELIVERY_LOG_LIMIT)))
        return [{**r, "delivered": bool(r["delivered"])} for r in rows]

    # -- MCP tool pins --------------------------------------------------------------------
    def observe_mcp_tools(self, tools: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Record the definition hashes a server lists (``server.tool`` -> hash). A tool
        seen for the first time is approved as it is (trust on first use). Returns the tools
        whose hash is not the approved one, each with ``changed``: first seen now."""
        now = self._clock.now()
        held: dict[str, dict[str, Any]] = {}
        for tool, digest in tools.items():
            rows = self._sql.exec("SELECT approved, seen FROM mcp_tool_pins WHERE tool = ?", tool)
            if not rows:
                self._sql.exec("INSERT INTO mcp_tool_pins (tool, approved, seen, first_seen) VALUES (?, ?, ?, ?)",
                               tool, digest, digest, now)
                continue
            approved, seen = rows[0]["approved"], rows[0]["seen"]
            if seen != digest:
                self._sql.exec("UPDATE mcp_tool_pins SET seen = ?, changed_at = ? WHERE tool = ?", digest, now, tool)
            if approved != digest:
                held[tool] = {"approved": approved, "seen": digest, "changed": seen != digest}
        return held

    def list_mcp_pins(self) -> list[dict[str, Any]]:
        return self._sql.exec("SELECT tool, approved, seen, first_seen, changed_at FROM mcp_tool_pins ORDER BY tool")

    def approve_mcp_tool(self, tool: str, seen: str) -> bool:
        """Approve the definition last seen (named by its hash, so an approval never covers
        a definition that changed again since the admin looked)."""
        return bool(self._sql.exec("UPDATE mcp_tool_pins SET approved = seen WHERE tool = ? AND seen = ?"
                                   " RETURNING tool", tool, seen))

    # -- moving to a shared store (the local host's SQLite file -> Redis) ---------------
    def export_records(self) -> dict[str, list[dict[str, Any]]]:
        """Every key (with its digest) and webhook (with its secret), for another store to
        adopt; not an operation callers reach (it is not in ``call``)."""
        keys = [{**_key_row(r), "digest": r["digest"]}
                for r in self._sql.exec("SELECT * FROM gateway_keys ORDER BY created_at, id")]
        hooks = [{"id": r["id"], "url": r["url"], "events": json.loads(r["events"]), "secret": r["secret"],
                  "created_at": r["created_at"]} for r in self._sql.exec("SELECT * FROM webhooks ORDER BY created_at, id")]
        return {"keys": keys, "webhooks": hooks, "teams": self.list_teams()}

    def forget_records(self, key_ids: list[str], webhook_ids: list[str], team_ids: tuple[str, ...] = ()) -> None:
        """Drop keys, webhooks and teams another store has adopted (so none comes back from here)."""
        for team_id in team_ids:
            self._sql.exec("DELETE FROM teams WHERE id = ?", team_id)
        for key_id in key_ids:
            self._sql.exec("DELETE FROM gateway_keys WHERE id = ?", key_id)
        for hook_id in webhook_ids:
            self._sql.exec("DELETE FROM webhooks WHERE id = ?", hook_id)
