"""`flaregate serve` after a plain `pip install flaregate` (no server extras) says how to
install them and exits non-zero, never with a traceback."""

import os
import subprocess
import sys


def test_serve_without_the_server_extras_prints_the_install_command(tmp_path):
    blocked = tmp_path / "blocked"
    for name in ("uvicorn", "aiohttp"):  # stand-ins that fail to import, as a missing package does
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "flaregate", "serve", "--data-dir", str(tmp_path / "data")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pip install 'flaregate[local]'" in result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
