"""Configuration from SKILLCERT_* environment variables."""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKILLCERT_")

    database_url: str | None = Field(None, description="PostgreSQL URL; unset: start the embedded server")
    kafka_bootstrap: str | None = Field(None, description="Kafka bootstrap servers; unset: start embedded Tansu")
    db_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]*$", description="schema for events and read models")
    topic_prefix: str = Field("skillcert.", description="prefix of every Kafka topic name")
    data_dir: Path = Field(Path(".skillcert"), description="embedded PostgreSQL data, kept across runs")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API worker processes; commands from many clients scale with them (each has "
        "its own connections: PostgreSQL's max_connections bounds the product)",
    )
    kafka_port: int = Field(9092, description="port of the embedded broker")
    kafka_session_timeout_ms: int = Field(6000, description="Tansu joins a group after about half of this")
    topic_partitions: int = Field(3, ge=1, le=1000, description="partitions of each topic the relay creates")
    kafka_replication_factor: int = Field(1, ge=1, description="replicas of each topic (production: 3)")
    kafka_min_insync_replicas: int | None = Field(None, ge=1, description="topics' min.insync.replicas (production: 2)")
    kafka_client_config: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka settings every Kafka client gets, as JSON: security.protocol, sasl.*, ssl.*",
    )
    relay_batch_size: int = Field(2000, ge=1, le=10_000, description="events the relay reads and sends at a time")
    relay_message_timeout_ms: int = Field(
        300_000, ge=1000, description="how long the producer retries a message before the relay sends it again"
    )
    pseudonym_key: str | None = Field(
        None,
        pattern=r"^([0-9a-fA-F]{2}){16,}$",
        description="hex key for the ID-number refs on the bus; unset: one generated and kept in the database",
    )
    timezone: str = "Asia/Shanghai"
    signing_key: str | None = Field(
        None,
        pattern=r"^([0-9a-fA-F]{2}){32}$",
        description="hex Ed25519 seed that signs audit exports; unset: one generated and kept in the database",
    )
    master_key: str | None = Field(
        None,
        repr=False,
        description="base64 AES-256 master key that wraps the keys encrypting stored events (skillcert keys new); "
        "unset: the key file master.key in data_dir, made when the store is new",
    )
    old_master_keys: str | None = Field(
        None, repr=False, description="comma-separated previous master keys, needed only while rotating"
    )
    checkpoint_every: float = Field(
        3600, gt=0, description="seconds between the chain checkpoints `skillcert up` records and publishes"
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="where the public reaches the API: certificates' QR codes point here"
    )
    verify_rate_limit: str = Field("60/minute", description="public verifications per client address")
    trusted_proxies: str = Field(
        "", description="proxies whose X-Forwarded-For names the client, comma-separated addresses or networks"
    )
    token_days: int = Field(90, ge=1, le=3650, description="days a new API token is valid")
    esign_ca_cert: Path | None = Field(
        None,
        description="PEM certificate of an existing CA that certifies institutions' signing keys; unset: one "
        "is made and kept in the database (encrypted)",
    )
    esign_ca_key: Path | None = Field(None, description="PEM private key of that CA (with SKILLCERT_ESIGN_CA_CERT)")


class BadSettings(SystemExit):
    """Settings the environment got wrong, said in one line per variable (not a traceback)."""


RUN_FILE = "run.json"


def running(data_dir: Path) -> dict[str, Any] | None:
    """What a live `skillcert up` on this data directory recorded (infra.cli.run): its pid and, once
    its servers are up, where they are. None when none is running (a file left by a killed one is
    ignored)."""
    try:
        run = json.loads((data_dir / RUN_FILE).read_text())
        os.kill(int(run["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run if isinstance(run, dict) else None


@lru_cache
def get_settings() -> Settings:
    try:
        s = Settings()
    except ValidationError as e:
        lines = [
            f"SKILLCERT_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        ]
        print("skillcert: the settings are wrong:\n  " + "\n  ".join(lines), file=sys.stderr)
        raise BadSettings(2) from None
    # Nothing configured, but `skillcert up` runs on this data directory: a second shell's commands
    # reach the servers it started, with no variables to copy.
    if s.database_url is None and (run := running(s.data_dir)) and run.get("database_url"):
        s = s.model_copy(update={"database_url": run["database_url"],
                                 "kafka_bootstrap": s.kafka_bootstrap or run.get("kafka_bootstrap")})  # fmt: skip
    return s
