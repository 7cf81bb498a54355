"""Kafka security settings reach every client the project makes: the relay (producer and admin),
the consumers (faust over aiokafka, which takes them in another form) and the reference subscriber.

A recording proxy sits between each client and the broker and reads what the client sends on the
wire: with SASL configured, every connection must ask for SASL (PLAIN, the configured mechanism)
before anything else; with TLS configured, every connection must open with a TLS ClientHello.
Tansu here speaks neither, so the clients get no further; what matters is what they asked for.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SASL_HANDSHAKE, API_VERSIONS = 17, 18


class RecordingProxy:
    """Accepts connections, forwards them to the broker, and records for each the first bytes and
    the Kafka requests (api key, and the SASL mechanism asked for) the client sent."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[dict] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            record = {"first": b"", "requests": []}
            with self.lock:
                self.connections.append(record)
            threading.Thread(target=self._serve, args=(client, record), daemon=True).start()

    def _serve(self, client: socket.socket, record: dict) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        buffer = b""
        try:
            while data := client.recv(65536):
                if not record["first"]:
                    record["first"] = data[:8]
                buffer += data
                while len(buffer) >= 4 and len(buffer) >= 4 + (size := struct.unpack(">i", buffer[:4])[0]):
                    frame, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                    api_key = struct.unpack(">h", frame[:2])[0]
                    mechanism = None
                    if api_key == SASL_HANDSHAKE:  # header: key, version, correlation id, client id
                        at = 8 + 2 + max(struct.unpack(">h", frame[8:10])[0], 0)
                        length = struct.unpack(">h", frame[at : at + 2])[0]
                        mechanism = frame[at + 2 : at + 2 + length].decode(errors="replace")
                    record["requests"].append((api_key, mechanism))
                server.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def seen(self) -> list[dict]:
        with self.lock:
            return [dict(c) for c in self.connections]

    def clear(self) -> None:
        with self.lock:
            self.connections.clear()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def proxy(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    p = RecordingProxy((host, int(port)))
    yield p
    p.close()


def _run_until_seen(proxy: RecordingProxy, command: list[str], env: dict[str, str], enough) -> list[dict]:
    """Run a client until the proxy has seen what `enough` wants (or 30 s), then stop it."""
    proxy.clear()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not enough(proxy.seen()):
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    time.sleep(0.2)
    return proxy.seen()


def _clients(tmp_path: Path, bootstrap: str, subscriber_flags: list[str]) -> dict[str, list[str]]:
    return {
        "relay": [sys.executable, "-m", "infra.cli", "relay", "run"],
        "consumers": [sys.executable, "-m", "infra.cli", "consumers"],
        "subscriber": [sys.executable, "-m", "consumers.subscriber", "--bootstrap", bootstrap,
                       "--store", str(tmp_path / "received.sqlite"), "--quiet", *subscriber_flags],
    }  # fmt: skip


def _env(database_url: str, schema: str, bootstrap: str, config: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
            "SKILLCERT_KAFKA_BOOTSTRAP": bootstrap, "SKILLCERT_KAFKA_CLIENT_CONFIG": json.dumps(config),
            "SKILLCERT_TOPIC_PREFIX": f"{schema}.", "SKILLCERT_DATA_DIR": str(tmp_path / "data")}  # fmt: skip


def test_sasl_settings_reach_every_client(proxy, database_url, schema, tmp_path) -> None:
    config = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "skillcert",
              "sasl.password": "not-a-real-secret"}  # fmt: skip
    bootstrap = f"127.0.0.1:{proxy.port}"
    env = _env(database_url, schema, bootstrap, config, tmp_path)
    flags = [arg for k, v in config.items() for arg in ("-X", f"{k}={v}")]

    def asked(conns: list[dict]) -> bool:
        return any(r[0] == SASL_HANDSHAKE for c in conns for r in c["requests"])

    for name, command in _clients(tmp_path, bootstrap, flags).items():
        conns = [c for c in _run_until_seen(proxy, command, env, asked) if c["requests"]]
        assert conns, f"{name}: no connection reached the broker"
        for c in conns:
            # Before SASL, a client may only ask which API versions the broker speaks.
            before = [k for k, _ in c["requests"][: next((i for i, r in enumerate(c["requests"]) if r[0] ==
                                                          SASL_HANDSHAKE), len(c["requests"]))]]  # fmt: skip
            assert set(before) <= {API_VERSIONS}, f"{name} sent requests {before} before authenticating"
            mechanisms = [m for k, m in c["requests"] if k == SASL_HANDSHAKE]
            # A connection opened just before the client was stopped may have got no further than asking for the
            # API versions; any that went further asked for SASL PLAIN first, and one at least did.
            assert set(mechanisms) <= {"PLAIN"}, (name, c["requests"])
        assert any(k == SASL_HANDSHAKE for c in conns for k, _ in c["requests"]), name
        print(f"{name}: {len(conns)} connection(s), each asked for SASL PLAIN first")


def test_tls_settings_reach_every_client(proxy, database_url, schema, tmp_path) -> None:
    config = {"security.protocol": "SSL", "enable.ssl.certificate.verification": "false"}
    bootstrap = f"127.0.0.1:{proxy.port}"
    env = _env(database_url, schema, bootstrap, config, tmp_path)
    flags = [arg for k, v in config.items() for arg in ("-X", f"{k}={v}")]

    def hello(conns: list[dict]) -> bool:
        return any(c["first"] for c in conns)

    for name, command in _clients(tmp_path, bootstrap, flags).items():
        conns = [c for c in _run_until_seen(proxy, command, env, hello) if c["first"]]
        assert conns, f"{name}: no connection reached the broker"
        # A TLS record of type handshake (22), version 3.x: a ClientHello, not a Kafka request.
        assert all(c["first"][0] == 0x16 and c["first"][1] == 0x03 for c in conns), (name, [c["first"] for c in conns])
        print(f"{name}: {len(conns)} connection(s), each opened with a TLS ClientHello")
