"""Helpers for tests that run the relay and read the broker: real processes, real topics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from domain.certificate import Correction
from domain.registration import AttachmentKind
from infra.bus.envelope import event_id, published, topic_names
from infra.store.eventstore import SkillcertApplication
from infra.store.recorder import DATA_DELETED
from tests.builders import attachment, resident_id, working_years_form
from tests.lifecycle import World, approve_correction, queryable_certificates, staff


def eventually(check: Callable[[], Any], timeout: float = 60.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(every)


@dataclass
class Bus:
    database_url: str
    schema: str
    bootstrap: str
    logs: Path
    prefix: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = self.prefix or f"{self.schema}."

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SKILLCERT_DATABASE_URL": self.database_url,
            "SKILLCERT_KAFKA_BOOTSTRAP": self.bootstrap,
            "SKILLCERT_DB_SCHEMA": self.schema,
            "SKILLCERT_TOPIC_PREFIX": self.prefix,
            "SKILLCERT_TOPIC_PARTITIONS": "3",
        }

    def relay(self, batch_size: int = 500, **settings: str) -> subprocess.Popen[bytes]:
        return self.start("relay", "run", SKILLCERT_RELAY_BATCH_SIZE=str(batch_size), **settings)

    def consumers(self) -> subprocess.Popen[bytes]:
        """The faust worker that keeps the read models current."""
        return self.start("consumers", SKILLCERT_KAFKA_SESSION_TIMEOUT_MS="6000")

    def start(self, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        """A long-running skillcert command, its output in a log of its own, stopped with the rest."""
        log = self.logs / f"{args[0]}-{len(self.processes)}.log"
        p = subprocess.Popen([sys.executable, "-m", "infra.cli", *args], env={**self.env, **settings},
                             stdout=log.open("wb"), stderr=subprocess.STDOUT)  # fmt: skip
        p.log_path = log  # type: ignore[attr-defined]
        self.processes.append(p)
        return p

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", *args], env=self.env, capture_output=True, text=True)

    def topic(self, context: str) -> str:
        return self.prefix + context

    def stop_all(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def log_of(p: subprocess.Popen[bytes]) -> str:
    return p.log_path.read_text()  # type: ignore[attr-defined]


def position(app: SkillcertApplication, schema: str) -> int:
    """The relay's recorded position; 0 before a relay has started."""
    with app.recorder.datastore.transaction(commit=False) as cur:
        cur.execute("SELECT to_regclass(%s) AS t", (f'"{schema}".relay_position',))
        if cur.fetchone()["t"] is None:
            return 0
        cur.execute(f'SELECT position FROM "{schema}".relay_position WHERE name = %s', ("relay",))
        row = cur.fetchone()
    return int(row["position"]) if row else 0


def expected(app: SkillcertApplication, upto: int | None = None) -> dict[str, tuple[str, str]]:
    """Every public event in the store: event id -> (context, type). Not a certificate's events stored before the
    deletion of its data (infra.bus.relay.Erased): those are published only while the deletion is not yet stored."""
    stored = []
    start = 1
    while True:
        batch = app.recorder.select_notifications(start=start, limit=1000, stop=upto)
        stored += batch
        if len(batch) < 1000:
            break
        start = batch[-1].id + 1
    deleted = {n.originator_id: n.id for n in stored if n.topic == DATA_DELETED}
    out: dict[str, tuple[str, str]] = {}
    for n in stored:
        p = published(n.topic)
        if p is not None and n.id >= deleted.get(n.originator_id, 0):
            out[event_id(n.originator_id, n.originator_version)] = (p.context, p.type)
    return out


def read_topic(bootstrap: str, topic: str, quiet: float = 1.0) -> list[Any]:
    """Every message on the topic, partition by partition (no consumer group: no join wait),
    read until none arrives for `quiet` seconds. Not by high watermark: Tansu reports the
    last batch's first offset + 1 there, not the last offset + 1."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-reader", "enable.auto.commit": False})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, 0) for p in sorted(meta.partitions)])
        got: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            batch = [m for m in c.consume(500, 0.2) if m.error() is None]
            if batch:
                got += batch
                last = time.monotonic()
        return got
    finally:
        c.close()


def kcat(args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Debian's kcat, run on the librdkafka that confluent-kafka's wheel bundles: bookworm's
    librdkafka 2.0.2 cannot read Tansu's ApiVersions answer ("Read underflow"). Against
    Apache Kafka the packaged library is fine."""
    import confluent_kafka

    bundled = next(Path(confluent_kafka.__file__).parent.parent.glob("confluent_kafka.libs/librdkafka*.so*"))
    (workdir / "librdkafka.so.1").unlink(missing_ok=True)
    (workdir / "librdkafka.so.1").symlink_to(bundled)
    env = {**os.environ, "LD_LIBRARY_PATH": str(workdir)}
    return subprocess.run(["kcat", *args], capture_output=True, text=True, timeout=60, env=env, check=True)


def anything_on(bootstrap: str, topic: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-size"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return any(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] > 0 for p in meta.partitions)
    finally:
        c.close()


def topic_size(bootstrap: str, topic: str) -> int:
    return len(read_topic(bootstrap, topic))


def everything(bus: Bus) -> list[dict[str, Any]]:
    """Every message on every topic, parsed."""
    return [json.loads(m.value()) for t in topic_names(bus.prefix) for m in read_topic(bus.bootstrap, t)]


def world_with_personal_data(w: World, n: int) -> list[str]:
    """n certificates on the query platform, one of them with its holder's ID number
    corrected. Returns every ID number and phone number the store now holds."""
    iid, cids = queryable_certificates(w, n)
    forms = [working_years_form(i) for i in range(1, n + 1)]
    second = next(c for c in cids if w.certificates.certificate(c).holder.id_number == forms[1].id_number)
    corrected = resident_id("440305", date(1990, 1, 15), 4)  # candidate 2's birth date; even: female, as she is
    evidence = attachment(AttachmentKind.CORRECTION_EVIDENCE)
    w.certificates.apply_for_correction(
        staff(iid), second, Correction(id_number=corrected), "身份证号录入错误", evidence
    )
    approve_correction(w.certificates, second)
    return [f.id_number for f in forms] + [corrected] + [f.phone for f in forms if f.phone]
