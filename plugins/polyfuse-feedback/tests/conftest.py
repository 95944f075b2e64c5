"""One torch thread; the RL test tasks of polyfuse.rl.testing (a text bandit) as helpers; the helper modules
beside this file importable (pytest runs with --import-mode=importlib, which does not add test folders)."""

import sys
from pathlib import Path

import torch
from polyfuse.rl.testing import helpers  # noqa: F401 (pytest fixture)

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))


# -- a throwaway PostgreSQL server for the label store's tests --------------------------------------

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

INSTALL_SERVER = ("PostgreSQL's server (initdb, pg_ctl) is not installed: run `make setup` as root on Debian, "
                  "or `apt-get install postgresql`")


def find_postgres_binary(name, path=None, roots="/usr/lib/postgresql/*/bin"):
    """``name`` (initdb, pg_ctl) on ``path`` (default: PATH), else in Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name, path=path)
    if found:
        return found
    candidates = [os.path.join(folder, name) for folder in glob.glob(roots)]
    candidates = [c for c in candidates if os.access(c, os.X_OK)]
    version = lambda c: [int(p) if p.isdigit() else 0 for p in c.split(os.sep)[-3].split(".")]
    return max(candidates, key=version, default=None)


@pytest.fixture(name="find_postgres_binary")
def find_postgres_binary_fixture():
    return find_postgres_binary


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgresql_server():
    """``postgresql+psycopg://postgres@127.0.0.1:PORT`` of a server in a temporary folder, stopped at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'polyfuse-feedback[postgresql]'")
    initdb, pg_ctl = find_postgres_binary("initdb"), find_postgres_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip(INSTALL_SERVER)
    as_user = []
    folder = tempfile.mkdtemp(prefix="polyfuse-pg-")  # not under pytest's tmp: that is private to root
    if os.geteuid() == 0:  # initdb refuses root: run the server as postgres
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser to start PostgreSQL as the postgres user")
        try:
            shutil.chown(folder, user="postgres", group=None)
        except LookupError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as: apt-get install postgresql")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), _free_port()
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)
    try:
        run(initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        run(pg_ctl, "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {' '.join(exc.cmd)}\n{exc.stdout}\n{exc.stderr}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def new_postgresql_url(postgresql_server):
    """Makes fresh, empty databases on the throwaway server: ``new_postgresql_url()`` is one's URL."""
    import psycopg

    def create():
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{postgresql_server.replace('+psycopg', '')}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{postgresql_server}/{name}"

    return create


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The URL of an empty label store, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    return request.getfixturevalue("new_postgresql_url")()
