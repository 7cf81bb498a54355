"""For auditors, from the store: what the system knew about one aggregate at a moment (its state rebuilt
from its own events up to a time or a position of the notification log), and what the audit trail's
events say."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
import psycopg
from psycopg import sql
from pydantic_core import to_jsonable_python

from domain.errors import InvalidInput, NotFound
from domain.ranges import Ranges
from infra.bus.envelope import cloud_event
from infra.store.eventstore import SkillcertApplication
from projections.store import NUL, without_nul


def as_of(
    app: SkillcertApplication, aggregate_id: UUID, at: datetime | None = None, position: int | None = None
) -> dict[str, Any]:
    """The aggregate as its events up to `at` (their recorded time) or up to `position` (the
    notification log) made it; with neither, as it is now. Says which event was the last applied."""
    if at is not None and position is not None:
        raise InvalidInput([("at", "give a time or a position, not both")])
    if at is not None and at.tzinfo is None:
        raise InvalidInput([("at", "give the time with its offset, e.g. 2026-06-30T23:59:59+08:00")])
    table = sql.Identifier(app.schema, app.recorder.events_table_name)  # type: ignore[attr-defined]
    with app.recorder.datastore.transaction(commit=False) as cur:  # type: ignore[attr-defined]
        cur.execute(
            sql.SQL("SELECT originator_version, notification_id FROM {} WHERE originator_id = %s "
                    "ORDER BY originator_version").format(table),
            (aggregate_id,),
        )  # fmt: skip
        rows = [(r["originator_version"], r["notification_id"]) for r in cur.fetchall()]
    if not rows:
        raise NotFound(f"no aggregate {aggregate_id} in the event store")
    events = {e.originator_version: e for e in app.recorder.select_events(aggregate_id)}
    known = []
    for version, notification_id in rows:
        event = app.mapper.to_domain_event(events[version])
        if (at is not None and event.timestamp > at) or (position is not None and notification_id > position):
            # The first event past the moment ends the history: the later ones may carry an earlier time (stamped
            # by another worker's clock before it waited for the store), and kept, they left a version out.
            break
        known.append((version, notification_id, event))
    if not known:
        when = f"at {at.isoformat()}" if at is not None else f"at position {position}"
        raise NotFound(f"aggregate {aggregate_id} did not exist yet {when}")
    version, notification_id, last = known[-1]
    aggregate = None
    for _, _, event in known:  # the events already decoded: replay them rather than read them again
        aggregate = event.mutate(aggregate)
    state = {k: v for k, v in vars(aggregate).items() if not k.startswith("_")}
    return {
        "aggregate_id": aggregate_id,
        "type": type(aggregate).__name__,
        "version": version,
        "current_version": rows[-1][0],
        "as_of": {"at": at, "position": position},
        "last_event": {
            "type": type(last).__name__,
            "position": notification_id,
            "at": last.timestamp,
            "actor_id": last.actor.id,
            "actor_role": last.actor.role.value,
        },  # fmt: skip
        "state": to_jsonable_python(state, fallback=_plain),
    }


def _plain(value: object) -> object:
    """What pydantic does not know how to write: a blank stock's serials (domain.ranges.Ranges) as their runs, as the
    stock's snapshot holds them. Without it an auditor rebuilding a blank stock got a 500."""
    if isinstance(value, Ranges):
        return value.pairs()
    raise TypeError(f"{type(value).__name__} has no JSON form")


def published_data(
    app: SkillcertApplication, conn: psycopg.Connection[Any], positions: list[int], key: bytes
) -> dict[int, dict[str, Any]]:
    """The data of the events at these log positions as the bus published them (pseudonymised, NUL-free,
    as the read models hold it): what the audit trail shows beside its own columns, read from the
    store, which the trail indexes rather than copies (projections/audit.py)."""
    table = sql.Identifier(app.schema, app.recorder.events_table_name)  # type: ignore[attr-defined]
    query = sql.SQL("SELECT notification_id, topic, state FROM {} WHERE notification_id = ANY(%s)").format(table)
    with conn.cursor(binary=True) as cur:
        rows = cur.execute(query, (positions,)).fetchall()
    out = {}
    for position, topic, state in rows:
        plain = app.mapper.plaintext(state)
        data = cloud_event(topic, position, orjson.loads(plain), key)[1]["data"]
        out[position] = without_nul(data) if NUL in plain else data
    return out
