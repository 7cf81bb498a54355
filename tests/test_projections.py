"""Projections as plain code over PostgreSQL: each message applies exactly once in effect."""

from __future__ import annotations

from infra.bus.envelope import context_of, envelope
from projections import PROJECTIONS
from projections.catalogue import Catalogue, get_plan
from projections.store import apply_message, connect, create_tables
from tests.builders import candidate, setup_plan, working_years_form

KEY = bytes(32)


def messages(service) -> list[dict]:
    """The bus messages the relay would publish for the store's history."""
    out = []
    for n in service.recorder.select_notifications(start=1, limit=1000):
        state = service.mapper.decode_state(n)
        if context_of(n.topic) is not None:  # as the relay does: internal guards stay home
            out.append(envelope(n.topic, n.id, state, KEY))
    return out


def test_a_redelivered_or_republished_message_applies_once(service, database_url, schema, clock):
    _, pid, code = setup_plan(service, seats=10)
    service.register(candidate(1), code, working_years_form(1))
    service.register(candidate(2), code, working_years_form(2))
    conn = connect(database_url, schema)
    create_tables(conn, PROJECTIONS)
    catalogue = Catalogue()
    msgs = messages(service)
    for offset, m in enumerate(msgs):
        assert apply_message(conn, catalogue, "t", 0, offset, m)
    assert get_plan(conn, str(pid), clock())["seats_left"] == 8

    # Kafka redelivers after a consumer crash: same offsets, skipped.
    assert not any(apply_message(conn, catalogue, "t", 0, o, m) for o, m in enumerate(msgs))
    # The relay republishes after its own crash: new offsets, the version guards hold.
    for offset, m in enumerate(msgs, start=len(msgs)):
        apply_message(conn, catalogue, "t", 0, offset, m)
    assert get_plan(conn, str(pid), clock())["seats_left"] == 8
    conn.close()


def test_every_aggregate_is_assigned_a_topic_or_kept_internal_on_purpose():
    import importlib
    import pkgutil

    import domain
    from domain.model import Aggregate
    from infra.bus.envelope import CONTEXTS

    for m in pkgutil.iter_modules(domain.__path__):
        importlib.import_module(f"domain.{m.name}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    found = {f"{c.__module__}:{c.__qualname__}" for c in subclasses(Aggregate)}
    assert found == set(CONTEXTS)
