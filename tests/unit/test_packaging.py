"""What `pip install flaregate` ships: every data file under the package (the dashboard's
static files) is matched by a package-data glob, and the console script is the local host's."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_data_file_in_the_package_is_shipped_in_the_wheel():
    package_data = PROJECT["tool"]["setuptools"]["package-data"]
    src = ROOT / "src"
    unshipped = []
    for path in (src / "flaregate").rglob("*"):
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        package = ".".join(path.parent.relative_to(src).parts)
        # setuptools matches a package's globs against paths relative to that package
        owners = {name: globs for name, globs in package_data.items()
                  if package == name or package.startswith(name + ".")}
        if not any(fnmatch.fnmatch(str(path.relative_to(src / name.replace(".", "/"))), glob)
                   for name, globs in owners.items() for glob in globs):
            unshipped.append(str(path.relative_to(src)))
    assert not unshipped, f"add these to [tool.setuptools.package-data]: {unshipped}"


def test_the_console_script_is_the_local_hosts_cli_and_the_core_stays_minimal():
    assert PROJECT["project"]["scripts"]["flaregate"] == "flaregate.hosts.local.cli:main"
    # The base install is what the Worker vendors: the server's packages live in the extra.
    assert [d.split(">")[0].split("=")[0] for d in PROJECT["project"]["dependencies"]] == ["pydantic"]
    assert any(d.startswith("uvicorn") for d in PROJECT["project"]["optional-dependencies"]["local"])


def test_tests_and_the_worker_shims_are_not_packages_of_the_wheel():
    find = PROJECT["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["src"] and find["include"] == ["flaregate*"]
