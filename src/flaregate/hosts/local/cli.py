"""``flaregate serve``: the standalone server, on its embedded defaults unless configured."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

from ... import __version__
from ...config import ConfigError, settings_from_vars

ADMIN_KEY_FILE = "admin-key.txt"
WS_MAX_FRAME_BYTES = 1 << 20  # the protocol layer closes bigger frames (1009); the hub caps lower


def _local_admin_key(settings_key: str | None, data_dir: Path) -> tuple[str, str | None]:
    """The configured admin key, else the data dir's one, created at first start.
    Returns (key, where it is kept: "file", "created" or None when configured).

    Unlike gateway keys (hashed at rest) the admin key is kept in plain, in a 0600 file:
    it is also the default HMAC secret that signed /admin/ requests are verified with,
    and a server holding only its hash could not verify a signature."""
    if settings_key:
        return settings_key, None
    from .files import FILE_MODE, private_dir, private_file

    path = data_dir / ADMIN_KEY_FILE
    if path.exists() and path.read_text().strip():
        path.chmod(FILE_MODE)  # one written by an older version under the umask
        return path.read_text().strip(), "file"
    key = "fga-" + secrets.token_urlsafe(32)
    private_dir(data_dir)
    private_file(path).write_text(key + "\n")
    return key, "created"


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def serve(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    try:  # the server's extras: absent after a plain `pip install flaregate`
        import aiohttp  # noqa: F401  (the upstream client the local host's ports use)
        import uvicorn
    except ImportError as exc:
        print(f"flaregate serve needs the standalone server's dependencies ({exc.name} is missing).\n"
              "Install them with:  pip install 'flaregate[local]'", file=sys.stderr)
        return 2
    from pydantic import SecretStr

    from ...observability.logs import configure_logging
    from ...security.secret_strength import production_secret_problems
    from .app import LocalHost
    from .config_files import load_vars
    from .keys import ensure_first_key, move_to_redis
    from .server import server_config

    config = Path(args.config) if args.config else None
    try:
        settings = settings_from_vars(load_vars(config, args.env))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"flaregate: {exc}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir)
    if args.workers > 1:
        from .replicas import REFUSAL, supervise

        if settings.redis_url is None:
            print(REFUSAL, file=sys.stderr)
            return 2
        if not args.no_admin_key:  # made once here, not raced by the workers
            _local_admin_key(settings.admin_key.get_secret_value() if settings.admin_key else None, data_dir)
        return supervise(_without_workers(sys.argv[1:] if argv is None else argv), args.workers)
    keys = [k.get_secret_value() for k in settings.api_keys]
    admin_key, admin_source = None, None
    if not args.no_admin_key:
        admin_key, admin_source = _local_admin_key(
            settings.admin_key.get_secret_value() if settings.admin_key else None, data_dir)
        settings = settings.model_copy(update={"admin_key": SecretStr(admin_key)})
        # A created admin key is strong, but in production it must not sign requests too.
        weak = production_secret_problems(settings.environment, settings.admin_key,
                                          settings.security.signing_secret, settings.api_keys,
                                          settings.security.observer_key)
        if weak:
            print("flaregate: insecure configuration for production: " + "; ".join(weak), file=sys.stderr)
            return 2
    host = LocalHost(settings, data_dir, keys)
    # Without configured keys the server uses its key store; at first start it makes a key.
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    if redis_url is not None:  # keys and webhooks made before Redis was configured
        move_to_redis(host.security, redis_url)
    created = None if keys else ensure_first_key(host.security, data_dir, redis_url)
    configure_logging(settings, extra_secrets=[*keys, *([created] if created else [])])
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its handshake lines carry URLs
    providers = ", ".join(f"{p.name} ({p.kind})" for p in settings.providers)
    print(f"Flaregate {__version__} on http://{args.host}:{args.port}  env={settings.environment}"
          f"  config={config or 'embedded defaults'}  providers={providers}", flush=True)
    if created:
        print(f"Created a gateway key (shown only now; the server keeps its hash): {created}", flush=True)
    elif not settings.api_keys:
        print("Gateway keys: the server's key store (manage with /admin/keys or `flaregate keys`)", flush=True)
    dashboard = f"http://{args.host}:{args.port}/dashboard#token="
    if admin_source == "created":
        print(f"Created an admin key for /dashboard, /ws, /metrics, /v1/analytics and /admin/ (kept in "
              f"{data_dir / ADMIN_KEY_FILE}, mode 0600).\nDashboard: {dashboard}{admin_key}", flush=True)
    elif admin_source == "file":
        print(f"Dashboard: {dashboard}$(cat {data_dir / ADMIN_KEY_FILE})", flush=True)
    server = uvicorn.Server(server_config(host, args.host, args.port, ws_max_size=WS_MAX_FRAME_BYTES,
                                          log_config=None))
    if args.reuse_port:  # one of --workers N
        from .replicas import reuse_port_socket

        server.run(sockets=[reuse_port_socket(args.host, args.port)])
    else:
        server.run()
    return 0


def _team_spec(args: argparse.Namespace) -> dict[str, object]:
    """The team fields given on the command line (only those: an update keeps the rest)."""
    spec: dict[str, object] = {}
    if args.name is not None:
        spec["name"] = args.name
    if args.models is not None:
        spec["allowed_models"] = [m.strip() for m in args.models.split(",") if m.strip()] or None
    if args.tags is not None:
        pairs = [item.partition("=") for item in args.tags.split(",") if item.strip()]
        spec["tags"] = {k.strip(): v.strip() for k, _, v in pairs} or None
    if args.rate_limit_policy is not None:
        spec["rate_limit_policy"] = args.rate_limit_policy or None
    for field in ("budget_usd_day", "budget_usd_month", "budget_tokens_day", "budget_tokens_month"):
        if getattr(args, field) is not None:
            spec[field] = getattr(args, field)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flaregate", description="Flaregate AI gateway")
    parser.add_argument("--version", action="version", version=f"flaregate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the standalone server")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8787)
    run.add_argument("--data-dir", default=".flaregate", help="folder for the SQLite file and keys")
    run.add_argument("--config", help="a wrangler.toml to read [vars] from (default: embedded defaults)")
    run.add_argument("--env", help="use [env.NAME] of the config, as `wrangler --env NAME`")
    run.add_argument("--no-admin-key", action="store_true",
                     help=f"without FLAREGATE_ADMIN_KEY, do not create {ADMIN_KEY_FILE}: admin views and API closed")
    run.add_argument("--workers", type=int, default=1,
                     help="server processes sharing the port (N > 1 needs FLAREGATE_REDIS_URL)")
    run.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    keys = sub.add_parser("keys", help="create, list or revoke gateway keys in the local key store")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("key_id", nargs="?", default="", help="for revoke: the key id (key_...)")
    keys.add_argument("--data-dir", default=".flaregate")
    keys.add_argument("--name", default="")
    keys.add_argument("--models", default="", help="for create: comma-separated allowed models (default: all)")
    keys.add_argument("--team", default="", help="for create: the team the key belongs to (its id)")
    teams = sub.add_parser("teams", help="create, list, show, update or delete teams in the local key store")
    teams.add_argument("action", choices=["create", "list", "show", "update", "delete"])
    teams.add_argument("team_id", nargs="?", default="", help="the team id (letters, digits, _)")
    teams.add_argument("--data-dir", default=".flaregate")
    teams.add_argument("--name")
    teams.add_argument("--models", help="comma-separated allowed models or globs ('' lifts the restriction)")
    teams.add_argument("--tags", help="default tags, k=v,k=v (winning over the keys' own)")
    teams.add_argument("--rate-limit-policy", help="a FLAREGATE_RATE_LIMITS policy for the team's keys")
    for budget in ("usd-day", "usd-month", "tokens-day", "tokens-month"):
        teams.add_argument(f"--budget-{budget}", type=float if budget.startswith("usd") else int,
                           help=f"the team's budget ({budget.replace('-', ' per ')})")
    args = parser.parse_args(argv)
    if args.command == "keys":
        from .keys import keys_command

        return keys_command(Path(args.data_dir), args.action, args.name, args.models, args.key_id,
                            os.environ.get("FLAREGATE_REDIS_URL") or None, args.team)
    if args.command == "teams":
        from .keys import teams_command

        return teams_command(Path(args.data_dir), args.action, args.team_id, _team_spec(args),
                             os.environ.get("FLAREGATE_REDIS_URL") or None)
    return serve(args, argv)


if __name__ == "__main__":
    sys.exit(main())
