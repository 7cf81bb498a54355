"""The mapper reads a stored event back by validating its JSON directly (pydantic-core), not a dict
parsed first: every kind of event and snapshot a lifecycle stores must read back the same both ways,
and an aggregate loaded from a snapshot must equal the one replayed from its events."""

from __future__ import annotations

from typing import Any

import orjson
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import resolve_topic

from domain.certificate import SerialCounter
from domain.exam import ExamSession
from domain.plan import EvaluationPlan
from domain.stock import BlankStock
from tests.test_read_models import certificates_in_every_state


def _both_ways(mapper: Any, stored: StoredEvent) -> tuple[Any, Any]:
    by_json = mapper.to_domain_event(stored)
    by_dict = resolve_topic(stored.topic).model_validate(orjson.loads(mapper.plaintext(stored.state)))
    return by_json, by_dict


def test_every_stored_event_and_snapshot_reads_the_same_from_json_as_from_a_dict(world):
    certificates_in_every_state(world)
    app = world.certificates
    kinds: set[str] = set()
    for n in app.recorder.select_notifications(start=1, limit=100_000):
        by_json, by_dict = _both_ways(app.mapper, n)
        assert by_json == by_dict, n.topic
        assert orjson.loads(app.mapper.plaintext(app.mapper.to_stored_event(by_json).state)) == orjson.loads(
            app.mapper.plaintext(n.state)
        ), n.topic
        kinds.add(n.topic)
    assert len(kinds) >= 40, sorted(kinds)  # the lifecycle stores most kinds of event, not a few

    # Snapshots go through the same mapper: take one of each aggregate that gets them, and load from it.
    ids = {}
    for n in app.recorder.select_notifications(start=1, limit=100_000):
        for cls in (EvaluationPlan, ExamSession, BlankStock, SerialCounter):
            if n.topic.startswith(f"{cls.__module__}:{cls.__qualname__}."):
                ids[cls] = n.originator_id
    assert set(ids) == {EvaluationPlan, ExamSession, BlankStock, SerialCounter}
    for cls, aggregate_id in ids.items():
        replayed = app.repository.get(aggregate_id)
        app.take_snapshot(aggregate_id)
        [stored] = app.snapshots.recorder.select_events(aggregate_id, desc=True, limit=1)
        by_json, by_dict = _both_ways(app.snapshots.mapper, stored)
        assert by_json == by_dict, cls
        from_snapshot = app.repository.get(aggregate_id)
        assert type(from_snapshot) is cls
        # A snapshot dates the aggregate by when it was taken (domain.model.Snapshot); nothing reads those
        # dates. Everything else must be equal.
        dated = {"_created_on", "_modified_on"}
        assert {k: v for k, v in vars(from_snapshot).items() if k not in dated} == {
            k: v for k, v in vars(replayed).items() if k not in dated
        }, cls
