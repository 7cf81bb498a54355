"""Leases on batch print jobs: whether the process making a job's PDF is still alive.

The process printing holds a session-level advisory lock on its job while it renders, on a connection of its own.
PostgreSQL gives the lock back the moment that session ends: the process finished, or it died (a SIGKILLed client's
socket is closed by the kernel and its backend exits). A table lists the jobs whose lease was taken and not given back
in order, so that a sweeper can find them: a job listed whose lock it can take belongs to no live process.

After PostgreSQL itself restarts, every lease is gone while their processes may still be rendering: a sweeper may then
abandon a live job. The job's own versions decide between the two (domain.printing.PrintJob): the printer finishing it
is told its forms were given back, and no PDF leaves it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

LEASES = 0x7072696E  # "prin": the first key of a job's lock


def lease_key(job: UUID) -> tuple[int, int]:
    return LEASES, int.from_bytes(job.bytes[:4], "big", signed=True)


class PrintLeases:
    def __init__(self, database_url: str, datastore: Any, schema: str) -> None:
        self.database_url, self.datastore = database_url, datastore
        self.table = sql.Identifier(schema, "print_leases")
        with datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (job uuid PRIMARY KEY, since timestamptz NOT NULL "
                                "DEFAULT now())").format(self.table))  # fmt: skip

    def _connect(self, purpose: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.database_url, autocommit=True, application_name=f"skillcert-{purpose}",
                               connect_timeout=10)  # fmt: skip

    @contextmanager
    def held(self, job: UUID) -> Iterator[None]:
        """Hold the job's lease while the block runs (booking and rendering): listed, and locked by this session.
        A block that fails leaves the job listed, its lease ended: the sweeper settles it (gives back what it
        booked, if anything is still booked, or just takes it off the list)."""
        conn = self._connect("print")
        try:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", lease_key(job))
            conn.execute(sql.SQL("INSERT INTO {} (job) VALUES (%s)").format(self.table), (job,))
            yield
            with suppress(psycopg.Error):  # a lost session gave the lock back; the sweeper clears the row
                conn.execute(sql.SQL("DELETE FROM {} WHERE job = %s").format(self.table), (job,))
        finally:
            conn.close()

    @contextmanager
    def abandoned(self) -> Iterator[Iterator[UUID]]:
        """The listed jobs whose process is gone, one at a time, each with its lock held here while the caller deals
        with it (the caller's `clear` then takes it off the list)."""
        conn = self._connect("print-sweeper")

        def jobs() -> Iterator[UUID]:
            listed = [row[0] for row in conn.execute(sql.SQL("SELECT job FROM {} ORDER BY since").format(self.table))]
            for job in listed:
                if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lease_key(job)).fetchone()[0]:
                    continue  # its process is alive and printing
                try:
                    yield job
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", lease_key(job))

        try:
            yield jobs()
        finally:
            conn.close()

    def clear(self, job: UUID) -> None:
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE job = %s").format(self.table), (job,))
