"""A throwaway PostgreSQL server for the tests, from the system's server binaries (``initdb``, ``pg_ctl``).

The server lives in a fresh temporary folder (data, log and unix socket), listens on a free port of
127.0.0.1 only, trusts local connections (nothing else can reach it) and is stopped and removed at the end.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` system user (made by
the Debian/Ubuntu package) or else ``nobody``, in a folder it owns.

Install what it needs with ``apt-get install postgresql`` (the binaries: ``/usr/lib/postgresql/<v>/bin``
is searched as well as ``PATH``) and ``make env`` (the driver ``psycopg``, the ``postgres`` extra).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL = ("install the PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql; they are looked for on "
           "PATH and in /usr/lib/postgresql/<version>/bin) and the driver (make env, or pip install -e '.[postgres]')")


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on ``PATH``, else the newest ``/usr/lib/postgresql/<v>/bin``."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing() -> str | None:
    """Why no server can be started here (a sentence with how to install what is absent), or ``None``."""
    absent = []
    if find_bin_dir() is None:
        absent.append("initdb/pg_ctl not found")
    if importlib.util.find_spec("psycopg") is None:
        absent.append("the Python driver psycopg not installed")
    return f"{' and '.join(absent)}: {INSTALL}" if absent else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One PostgreSQL server: :meth:`start`, :meth:`url` of a new empty database, :meth:`stop`."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sts-postgres-"))
        self.data, self.sock, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.port = free_port()
        self.n_databases = 0
        # initdb and the server refuse root: run them as an unprivileged user that owns the folder
        self.user = None
        if os.geteuid() == 0:
            self.user = next(u for u in ("postgres", "nobody") if _user_exists(u))
            os.chown(self.root, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)

    def _run(self, *cmd: str) -> None:
        r = subprocess.run([str(self.bin_dir / cmd[0]), *cmd[1:]], user=self.user, capture_output=True, text=True,
                           timeout=120, cwd=self.root)
        if r.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({r.returncode}): {r.stderr[-2000:]}{log}")

    def start(self) -> "Server":
        """initdb, then start the server and wait until it accepts connections; on failure leave nothing behind."""
        try:
            self.sock.mkdir()
            if self.user is not None:
                shutil.chown(self.sock, self.user)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
            # local only; fsync off: a test server need not survive a power cut
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sock} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        except BaseException:
            self.stop()
            raise
        return self

    def url(self) -> str:
        """A SQLAlchemy URL of a new, empty database on this server (one per test: no study leaks into another)."""
        import psycopg  # here, not at the top: without the driver the module must still say what to install

        self.n_databases += 1
        name = f"sts_test_{self.n_databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
