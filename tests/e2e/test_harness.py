"""The wrangler-dev harness's own logic, with stand-in processes: start, readiness, skip
reason, teardown. (The real runtime cannot start here; see test_wrangler_dev.py.)"""

import sys
import textwrap

import pytest

from tests.integration.conftest import free_port
from tests.support import wrangler_dev

READY_SERVER = """
import http.server, sys
port = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", port), H)
print("[wrangler:info] \\x1b[32mReady on http://127.0.0.1:%d\\x1b[0m" % port, flush=True)
server.serve_forever()
"""


def stand_in(tmp_path, source):
    script = tmp_path / "stand_in.py"
    script.write_text(textwrap.dedent(source))
    return script


def test_ready_line_and_health_make_it_ready_and_stop_ends_it(tmp_path):
    port = free_port()
    dev = wrangler_dev.start([sys.executable, str(stand_in(tmp_path, READY_SERVER)), str(port)],
                             log_path=tmp_path / "log", ready_timeout=20)
    assert dev.base_url == f"http://127.0.0.1:{port}"
    assert dev.process.poll() is None
    wrangler_dev.stop(dev.process)
    assert dev.process.poll() is not None


def test_a_runtime_that_exits_gives_the_reason_it_printed(tmp_path):
    failing = stand_in(tmp_path, """
        import sys
        print("\\x1b[31m✘ [ERROR]\\x1b[0m *** Uncaught exception ***")
        print("workerd/server/bridge.rs:843: failed: Request for Pyodide bundle failed; url = https://x")
        sys.exit(1)
    """)
    with pytest.raises(wrangler_dev.RuntimeUnavailable, match="^Pyodide bundle failed; url = https://x"):
        wrangler_dev.start([sys.executable, str(failing)], log_path=tmp_path / "log", ready_timeout=20)


def test_a_runtime_that_never_gets_ready_times_out_and_is_stopped(tmp_path):
    hanging = stand_in(tmp_path, """
        import time
        print("starting...", flush=True)
        time.sleep(60)
    """)
    with pytest.raises(wrangler_dev.RuntimeUnavailable, match="not ready within 1s"):
        wrangler_dev.start([sys.executable, str(hanging)], log_path=tmp_path / "log", ready_timeout=1)


def test_failure_reason_falls_back_to_the_last_lines():
    assert wrangler_dev.failure_reason("a\nb\nsomething odd\n", 3) == "exited with code 3: a | b | something odd"


def test_env_file_holds_the_variables(tmp_path):
    path = wrangler_dev.write_env_file(tmp_path / "e.env", {"A": '{"x": "http://y"}', "B": "1"})
    assert path.read_text() == """A='{"x": "http://y"}'\nB='1'\n"""
