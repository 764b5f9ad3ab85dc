"""``flaregate serve``: the standalone server, on its embedded defaults unless configured."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError, settings_from_vars


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .hosts.local.app import LocalHost
    from .hosts.local.config_files import load_vars
    from .hosts.local.keys import ensure_local_key

    config = Path(args.config) if args.config else None
    try:
        settings = settings_from_vars(load_vars(config, args.env))
    except (ConfigError, ValueError, OSError) as exc:
        print(f"flaregate: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The environment's level applies to the gateway's own loggers, not to libraries'.
    logging.getLogger("flaregate").setLevel("WARNING" if settings.log_level == "warn" else settings.log_level.upper())
    data_dir = Path(args.data_dir)
    keys = [k.get_secret_value() for k in settings.api_keys]
    host = LocalHost(settings, data_dir, keys)
    # Without configured keys the server uses its key store; at first start it makes a key.
    created = None if keys else ensure_local_key(host.security, data_dir)
    providers = ", ".join(f"{p.name} ({p.kind})" for p in settings.providers)
    print(f"Flaregate {__version__} on http://{args.host}:{args.port}  env={settings.environment}"
          f"  config={config or 'embedded defaults'}  providers={providers}", flush=True)
    if created:
        print(f"Created a gateway key (shown only now; the server keeps its hash): {created}", flush=True)
    elif not settings.api_keys:
        print("Gateway keys: the server's key store (manage with /admin/keys or `flaregate keys`)", flush=True)
    server = uvicorn.Server(uvicorn.Config(host, host=args.host, port=args.port, log_level="warning",
                                           lifespan="on", ws="websockets-sansio", ws_ping_interval=20))
    server.run()
    return 0


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
    keys = sub.add_parser("keys", help="create, list or revoke gateway keys in the local key store")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("key_id", nargs="?", default="", help="for revoke: the key id (key_...)")
    keys.add_argument("--data-dir", default=".flaregate")
    keys.add_argument("--name", default="")
    keys.add_argument("--models", default="", help="for create: comma-separated allowed models (default: all)")
    args = parser.parse_args(argv)
    if args.command == "keys":
        from .hosts.local.keys import keys_command

        return keys_command(Path(args.data_dir), args.action, args.name, args.models, args.key_id)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
