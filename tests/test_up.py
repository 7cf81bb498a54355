"""`skillcert up` as an operator runs it: a child process that dies is started again, saying so; Ctrl-C
(SIGINT to the whole process group, as a terminal sends it) stops everything in order, quietly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg

from infra.embedded import free_port


def _children(pid: int, words: str) -> list[psutil.Process]:
    return [c for c in psutil.Process(pid).children(recursive=True) if words in " ".join(c.cmdline())]


def _wait_for(check, timeout: float, what: str, output: Path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}; output:\n{output.read_text(errors='replace')[-4000:]}"
        time.sleep(0.2)
    return found


def test_up_restarts_a_child_that_dies_and_stops_everything_on_ctrl_c(database_url: str, schema: str,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "up.log"
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_TOPIC_PREFIX": f"{schema}.", "SKILLCERT_KAFKA_PORT": str(free_port()),
           "SKILLCERT_API_PORT": str(free_port()), "SKILLCERT_DATA_DIR": str(tmp_path / "data"),
           "SKILLCERT_KAFKA_SESSION_TIMEOUT_MS": "6000", "COLUMNS": "200"}  # fmt: skip
    env.pop("SKILLCERT_KAFKA_BOOTSTRAP", None)  # the embedded broker
    up = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=env, stdout=out.open("wb"),
                          stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        _wait_for(lambda: "skillcert is up" in out.read_text(errors="replace"), 120, "up did not come up", out)
        [relay] = _children(up.pid, "relay run")
        relay.send_signal(signal.SIGKILL)
        _wait_for(lambda: "relay exited (code -9); starting it again (1 of 5" in out.read_text(), 10,
                  "no line about the relay", out)  # fmt: skip
        [again] = _wait_for(lambda: _children(up.pid, "relay run"), 10, "the relay was not started again", out)
        assert again.pid != relay.pid
        # It publishes again: the demo's events reach the broker's topics through the new relay.
        with psycopg.connect(database_url) as conn:
            _wait_for(lambda: conn.execute(f"SELECT position > 0 FROM {schema}.relay_position").fetchone()[0], 30,
                      "the relay did not publish", out)  # fmt: skip

        before = out.read_text()
        started = time.monotonic()
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground process group
        up.wait(20)
        took = time.monotonic() - started
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    after = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.read_text(errors="replace")[len(before) :])  # terminal codes
    assert up.returncode == 0 and took < 10, (up.returncode, took, after)
    assert "Traceback" not in after and "stopped." in after, after
    order = [line.split()[0] for line in after.splitlines() if " stopped (" in line]
    assert order == ["api", "consumers", "checkpoints", "relay"], after
    assert not psutil.pid_exists(again.pid) or psutil.Process(again.pid).status() == psutil.STATUS_ZOMBIE
