"""Real MariaDB and Redis servers on free loopback ports, in temp dirs.

Used by the test fixtures, the demo, the benchmark and the chaos suite. Each
server is started from the system binaries (Debian's ``mariadb-server`` and
``redis-server``), listens on 127.0.0.1 only and is stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from me2_scheduler.errors import SchedulerError


class ServerStartError(SchedulerError):
    """A test server could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str:
    """Locate a server binary on PATH or in /usr/sbin; raise ServerStartError if absent."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise ServerStartError(f"{name} not found: install it (scripts/ensure-system.sh)")
    return found


def wait_for_port(port: int, proc: subprocess.Popen, deadline_s: float, log: Path) -> None:
    """Poll until ``port`` accepts connections; raise if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise ServerStartError(f"server did not listen on {port} in {deadline_s}s: {_tail(log)}")


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class _Server:
    """Common lifecycle: a child process in its own session, stopped by PID."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def address(self) -> str:
        """``host:port`` of this server on loopback."""
        return f"127.0.0.1:{self.port}"

    def _launch(self, argv: list[str], ready_s: float) -> None:
        """Run ``argv`` as this server, logging to ``log_path``; wait until its port answers.

        Raises ServerStartError when it exits or is not listening in ``ready_s``.
        """
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, self.proc, ready_s, self.log_path)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server, wait, then SIGKILL if it is still there."""
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the server (a crash, for fault tests)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class RedisServer(_Server):
    """A redis-server without persistence unless ``appendonly`` is asked for."""

    extra_args: tuple[str, ...] = ()

    def start(self) -> RedisServer:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            find_binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            *self.extra_args,
        ]
        self._launch(argv, 20)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def root_query(port: int, database: str | None, sql: str, args: object = None) -> list[tuple]:
    """One statement as root on a loopback MariaDB, on a connection of its own
    (autocommit); the rows. Raises ``pymysql.MySQLError``."""
    import pymysql  # local: only the servers that need it pay for it

    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        database=database,
        connect_timeout=5,
        autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


@dataclass
class MariaDBServer(_Server):
    """A mariadbd with its own datadir; root has no password on loopback.

    Tests write the redo log to disk once a second (``durable=False``); the
    benchmark flushes it at every commit, as a production server does.
    """

    durable: bool = False

    def start(self) -> MariaDBServer:
        datadir = self.root / "data"
        if not datadir.exists():
            self._install(datadir)
        argv = [
            find_binary("mariadbd"),
            "--no-defaults",
            f"--datadir={datadir}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            f"--pid-file={self.root / 'mariadb.pid'}",
            *(["--user=root"] if os.geteuid() == 0 else []),
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=256M",
            f"--innodb-flush-log-at-trx-commit={1 if self.durable else 2}",
            "--innodb-log-file-size=128M",
            "--max-connections=500",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--default-time-zone=+00:00",
            f"--log-error={self.log_path}",
        ]
        self._launch(argv, 60)
        return self

    def _install(self, datadir: Path) -> None:
        argv = [
            find_binary("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerStartError(f"mariadb-install-db failed: {done.stderr[-500:]}")

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def dsn(self, database: str, loc: str = "") -> str:
        """A go-sql-driver DSN for ``database`` as root."""
        params = "charset=utf8mb4&parseTime=true" + (f"&loc={loc}" if loc else "")
        return f"root@tcp(127.0.0.1:{self.port})/{database}?{params}"

    def query(self, database: str | None, sql: str, args: object = None) -> list[tuple]:
        """Run one statement as root on a connection of its own (autocommit); return the rows."""
        return root_query(self.port, database, sql, args)

    def create_database(self, name: str) -> None:
        self.query(None, f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")

    def drop_database(self, name: str) -> None:
        self.query(None, f"DROP DATABASE IF EXISTS `{name}`")


def temp_root(prefix: str) -> Path:
    """A fresh temp dir for one server."""
    return Path(tempfile.mkdtemp(prefix=prefix))
