"""The servers a benchmark runs against: those it is given, or embedded ones for the length of the run."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.embedded import Broker, free_port


@contextmanager
def servers(database_url: str, bootstrap: str | None = None) -> Iterator[tuple[str, str]]:
    """(PostgreSQL URL, Kafka bootstrap): an empty URL starts an embedded PostgreSQL, an empty bootstrap
    an embedded Tansu (None: no broker wanted); each is stopped at the end."""
    server = broker = None
    try:
        if not database_url:
            from infra.embedded import start_postgres

            server, database_url = start_postgres(Path(tempfile.mkdtemp(prefix="skillcert-bench-")))
        if bootstrap == "":
            broker = Broker(free_port())
            bootstrap = broker.bootstrap
        yield database_url, bootstrap or ""
    finally:
        if broker is not None:
            broker.stop()
        if server is not None:
            server.cleanup()
