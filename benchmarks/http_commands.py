"""Commands through the real API, from many concurrent clients, next to the same API answering a
trivial authenticated GET (/me) in the same run.

    python -m benchmarks.http_commands                       # embedded PostgreSQL, workers 1 and 2, 3 runs
    python -m benchmarks.http_commands --database-url postgresql://postgres@127.0.0.1/test --workers 1 --workers 4

For each worker count and run: `skillcert api` is started as a process (SKILLCERT_API_WORKERS) on a fresh
schema with a plan of 100,000 places; then for SECONDS each, CLIENTS asyncio clients send as fast as
they are answered: GET /me; POST /registrations (new candidates); and a mix of reviews (approve) and fee
payments of the registrations just made. It prints requests per second, p50 and p95 latency for each
phase, the ratio of commands to GETs, the CPU time the API's processes and PostgreSQL spent per request
(steadier than requests a second on a machine whose neighbours come and go), and medians of the runs. The
clients run on the same machine, on keep-alive connections written by hand (`Client`), and print the share
of a core they took. Last, the framework's floor: the same clients against benchmarks.bare_api (FastAPI and
uvicorn with as many workers, one GET behind one dependency, no database), what no route of ours can beat.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table
from stdnum.cn import ric

from benchmarks.servers import servers
from domain.institution import DeadlineProfile, Filing
from domain.model import Actor, Role
from domain.registration import AttachmentKind
from infra.embedded import free_port
from infra.services import samples
from infra.services.registrations import Registrations
from tests.api import bearer
from tests.builders import L2_CONDITION, L2_EVIDENCE, SCOPE, plan_details

console = Console(width=150)
SYSTEM = Actor(id="bench", role=Role.SYSTEM)
ATTACHMENTS = [json.loads(samples.attachment(k).model_dump_json())
               for k in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD, AttachmentKind.SOCIAL_SECURITY,
                         AttachmentKind.PRIOR_CERTIFICATE)]  # fmt: skip
EVIDENCE = json.loads(L2_EVIDENCE.model_dump_json())


def form(k: int) -> dict:
    born = date(1990, 1, 1) + timedelta(days=k % 7000)
    serial = 100 + k // 7000
    base = f"440305{born:%Y%m%d}{serial:03d}"
    return {"name": f"考生{k}", "id_number": base + ric.calc_check_digit(base + "0"),
            "gender": "男" if serial % 2 else "女", "date_of_birth": born.isoformat(), "education": "大学本科",
            "years_in_occupation": 8, "candidate_source": "本企业职工", "labour_relation": "本企业职工",
            "phone": "13800138000", "work_unit": "深圳市某某科技有限公司", "basis": "working_years",
            "holds_prior_certificate": True,
            "attachments": ATTACHMENTS, "declaration_accepted": True}  # fmt: skip


class Answer:
    """A response as the benchmark needs it: its status and its body."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.body = status, body

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection, written by hand: httpx's client took most of a core to send a few
    hundred requests a second, on the two cores the API shares with it. This one takes a few percent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]) -> None:
        self.reader, self.writer = reader, writer
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def get(self, path: str) -> Answer:
        return await self._send(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{self.headers}\r\n".encode())

    async def post(self, path: str, body: dict) -> Answer:  # type: ignore[type-arg]
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\n{self.headers}Content-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n")  # fmt: skip
        return await self._send(head.encode() + data)

    async def _send(self, request: bytes) -> Answer:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
        return Answer(int(head[9:12]), await self.reader.readexactly(length))


async def drive(
    base: str, clients: int, seconds: float, headers: dict[str, str], request
) -> tuple[int, list[float], int, float]:  # type: ignore[no-untyped-def]
    """`clients` connections each calling `request(client, n)` until `seconds` pass:
    (answered, latencies, errors, the cores this process used meanwhile)."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(10**9))
    host, _, port = base.removeprefix("http://").partition(":")
    deadline = time.perf_counter() + seconds
    cpu = time.process_time()

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        http = Client(reader, writer, headers)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            r = await request(http, next(counter))
            latencies.append(time.perf_counter() - started)
            if r.status_code >= 400:
                errors += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), latencies, errors, (time.process_time() - cpu) / seconds


def cpu_seconds(api_pid: int) -> tuple[float, float]:
    """(CPU seconds used so far by the API's processes, by PostgreSQL's): read from /proc, for the cost of a
    request, which a noisy machine moves less than it moves requests a second. PostgreSQL's are every
    process named postgres on the machine (nothing else here uses it while a phase runs)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents, used, postgres = {}, {}, 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                name, _, rest = f.read().rpartition(")")
        except OSError:
            continue  # ended meanwhile
        fields = rest.split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if name.endswith("(postgres"):
            postgres += seconds
        parents[int(pid)], used[int(pid)] = int(fields[1]), seconds
    ours = {api_pid}
    for _ in range(3):  # the API's worker processes, and theirs
        ours |= {pid for pid, parent in parents.items() if parent in ours}
    return sum(used.get(pid, 0.0) for pid in ours), postgres


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else float("nan")


@dataclass
class Served:
    """`skillcert api` running on a fresh schema for a run: an institution, its plans of 100,000 places (number ->
    (plan id, registration code)), a staff token's headers, the API's process and address."""

    schema: str
    plans: dict[str, tuple[uuid.UUID, str]]
    staff: dict[str, str]
    api: subprocess.Popen[bytes]
    base: str


@contextmanager
def serving(url: str, workers: int, plans: tuple[str, ...] = ("HTTP",)) -> Iterator[Served]:
    """The API on a fresh schema, answering /health; stopped and the schema dropped afterwards. The API's log is kept
    in the temporary directory when the run fails."""
    schema = f"bench_http_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    svc = Registrations(url, schema, today=lambda: date(2026, 3, 2))
    samples.hold(svc.attachments)
    iid = svc.register_institution(SYSTEM, "深圳市技能人才评价示范中心", Filing(city_code="03", station_serial="015"),
                                   DeadlineProfile.S, SCOPE)  # fmt: skip
    staff_actor = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=iid)
    published = {n: svc.publish_plan(staff_actor, iid, plan_details(n, seats=100_000,
                                                                     registration_deadline=date(2099, 12, 31),
                                                                     evaluation_start=date(2100, 1, 10),
                                                                     evaluation_end=date(2100, 1, 10)))
                 for n in plans}  # fmt: skip
    svc.close()
    staff = bearer(url, schema, Role.INSTITUTION_STAFF, "staff-bench", iid)
    port = free_port()
    env = {**os.environ, "SKILLCERT_DATABASE_URL": url, "SKILLCERT_DB_SCHEMA": schema, "SKILLCERT_API_PORT": str(port),
           "SKILLCERT_API_WORKERS": str(workers)}  # fmt: skip
    log = Path(tempfile.gettempdir()) / f"{schema}-api.log"
    try:
        with started([sys.executable, "-m", "infra.cli", "api"], port, "/health", env, log) as (api, base):
            yield Served(schema, published, staff, api, base)
        log.unlink()
    except BaseException:
        console.print(f"the run failed; the API's log is {log}")
        raise
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def one_run(url: str, workers: int, clients: int, seconds: float) -> dict[str, tuple[float, ...]]:
    with serving(url, workers) as served:
        base, staff, api, (_, code) = served.base, served.staff, served.api, served.plans["HTTP"]

        async def me(http: Client, n: int) -> Answer:
            return await http.get("/me")

        async def register(http: Client, n: int) -> Answer:
            return await http.post("/registrations", {"registration_code": code, "form": form(n)})

        to_review: deque[str] = deque()
        to_pay: deque[str] = deque()

        async def mixed(http: Client, n: int) -> Answer:
            """The day after registration opens: new registrations, reviews of them, fee payments of the
            approved, each registration reviewed once and paid once."""
            if n % 3 == 2 and to_pay:
                rid = to_pay.popleft()
                return await http.post(f"/registrations/{rid}/fee", {"receipt_number": f"R{n:09d}", "amount": "380.00"})
            if n % 3 == 1 and to_review:
                rid = to_review.popleft()
                r = await http.post(f"/registrations/{rid}/review", {
                    "decision": "approved", "reasons": "材料齐全", "condition": L2_CONDITION, "evidence": EVIDENCE})  # fmt: skip
                if r.status_code == 204:
                    to_pay.append(rid)
                return r
            r = await register(http, 1_000_000 + n)
            if r.status_code == 201:
                to_review.append(r.json()["id"])
            return r

        asyncio.run(drive(base, clients, 2, staff, me))  # warm-up
        results = {}
        for label, request in (("GET /me", me), ("registrations", register), ("registrations, reviews, fees", mixed)):
            results[label] = phase(base, api.pid, clients, seconds, staff, request)
    with bare(workers) as (api, base):
        asyncio.run(drive(base, clients, 2, staff, me))
        results["bare FastAPI GET (floor)"] = phase(base, api.pid, clients, seconds, staff, me)
    return results


def phase(base: str, api_pid: int, clients: int, seconds: float, headers: dict[str, str], request) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
    """(requests/s, p50, p95, errors, client cores, API CPU ms a request, PostgreSQL CPU ms a request)."""
    api_before, pg_before = cpu_seconds(api_pid)
    answered, latencies, errors, cores = asyncio.run(drive(base, clients, seconds, headers, request))
    api_after, pg_after = cpu_seconds(api_pid)
    return (answered / seconds, p(latencies, 50), p(latencies, 95), errors, cores,
            (api_after - api_before) / answered * 1000, (pg_after - pg_before) / answered * 1000)  # fmt: skip


@contextmanager
def bare(workers: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """benchmarks.bare_api served by uvicorn with as many workers (the framework's floor): its process and address."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.bare_api:app", "--port", str(port), "--workers",
               str(workers), "--log-level", "warning"]  # fmt: skip
    with started(command, port, "/me", dict(os.environ), Path(os.devnull)) as served:
        yield served


@contextmanager
def started(
    command: list[str], port: int, probe: str, env: dict[str, str], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A server started as a process, once `probe` answers 200 (within a minute): the process and its address.
    Stopped at the end."""
    server = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}{probe}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, f"{command} did not start"
            time.sleep(0.2)
        yield server, base
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def main(
    database_url: str = typer.Option(None, help="a running PostgreSQL; default: an embedded one"),
    workers: list[int] = typer.Option([1, 2], help="API worker processes to try (repeatable)"),  # noqa: B008
    clients: int = typer.Option(32, help="concurrent clients"),
    seconds: float = typer.Option(10, help="each phase's length"),
    runs: int = typer.Option(3),
) -> None:
    table = Table(
        title=f"the API under {clients} concurrent clients, {seconds:.0f} s per phase; "
        + (f"medians of {runs} runs" if runs > 1 else "one run")
    )
    for column in (
        "workers",
        "phase",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "errors",
        "vs GET /me",
        "client cores",
        "API CPU ms/req",
        "PG CPU ms/req",
    ):
        table.add_column(column, justify="right")
    with servers(database_url or "", None) as (database_url, _):
        for w in workers:
            runs_done = [one_run(database_url, w, clients, seconds) for _ in range(runs)]
            baseline = statistics.median(r["GET /me"][0] for r in runs_done)
            for label in runs_done[0]:
                rate = statistics.median(r[label][0] for r in runs_done)
                table.add_row(str(w), label, f"{rate:,.0f}", f"{statistics.median(r[label][1] for r in runs_done):.0f}",
                              f"{statistics.median(r[label][2] for r in runs_done):.0f}",
                              str(sum(r[label][3] for r in runs_done)), f"{rate / baseline:.2f}",
                              f"{statistics.median(r[label][4] for r in runs_done):.2f}",
                              f"{statistics.median(r[label][5] for r in runs_done):.2f}",
                              f"{statistics.median(r[label][6] for r in runs_done):.2f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
