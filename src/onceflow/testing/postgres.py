"""A throwaway PostgreSQL server for tests and benchmarks of the PostgreSQL sinks.

It runs the ``initdb`` and ``pg_ctl`` of an installed PostgreSQL (the Debian
``postgresql`` package puts them in /usr/lib/postgresql/VERSION/bin) on a private data
dir and port, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresNotInstalled(RuntimeError):
    """No PostgreSQL server binaries were found."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A private PostgreSQL cluster; ``new_database()`` gives each user its own DB."""

    def __init__(self, bindir: Path, root: Path, port: int, as_user: list[str]) -> None:
        self.bindir, self.root, self.port, self.as_user = bindir, root, port, as_user
        self.data = root / "data"
        self._count = 0

    @classmethod
    def create(cls) -> PostgresServer:
        """A server (not yet started) in a new temporary directory, on a free port."""
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise PostgresNotInstalled("PostgreSQL is not installed: apt-get install postgresql")
        root = Path(tempfile.mkdtemp(prefix="onceflow-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root: run the server as the postgres OS user.
            shutil.chown(root, user="postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        return cls(Path(found[-1]).parent, root, _free_port(), as_user)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; returns once it accepts connections."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        return self

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def new_database(self) -> str:
        """Create an empty database and return its conninfo string."""
        import psycopg  # the postgres extra; only who starts a server needs it

        self._count += 1
        name = f"db_{os.getpid()}_{self._count}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return self.dsn(name)
