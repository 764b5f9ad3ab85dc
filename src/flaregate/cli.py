"""``flaregate serve``: the standalone server, on its embedded defaults unless configured."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError, settings_from_vars

KEY_FILE = "gateway-keys.txt"


def _local_keys(settings_keys: list[str], data_dir: Path) -> tuple[list[str], str | None]:
    """Configured keys, else the data dir's key file, created with a fresh key at first start.
    Returns (keys, newly created key or None)."""
    if settings_keys:
        return settings_keys, None
    path = data_dir / KEY_FILE
    if path.exists():
        keys = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if keys:
            return keys, None
    key = "fg-" + secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return [key], key


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .hosts.local.app import LocalHost
    from .hosts.local.config_files import load_vars

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
    keys, created = _local_keys([k.get_secret_value() for k in settings.api_keys], data_dir)
    host = LocalHost(settings, data_dir, keys)
    providers = ", ".join(f"{p.name} ({p.kind})" for p in settings.providers)
    print(f"Flaregate {__version__} on http://{args.host}:{args.port}  env={settings.environment}"
          f"  config={config or 'embedded defaults'}  providers={providers}", flush=True)
    if created:
        print(f"Created a gateway key (kept in {data_dir / KEY_FILE}): {created}", flush=True)
    elif not settings.api_keys:
        print(f"Gateway keys: {data_dir / KEY_FILE}", flush=True)
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
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
