"""A batch print whose process is killed outright while it renders: its forms come back to stock on their own.

Before, a `skillcert print` or an API worker SIGKILLed (the OOM killer, a careless operator) between booking the
forms and handing over the PDF left them booked as used while they lay blank in the tray, until staff found out and
recorded each print not made. The process now holds a lease on its print job while it renders; PostgreSQL ends it with
the process, and the API's sweeper (and the next `skillcert print`) gives the forms back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from domain.errors import NotFound
from domain.printing import PrintJob
from infra.services.printing import print_certificates, return_abandoned, to_print
from tests.lifecycle import staff
from tests.test_certgen import PUBLIC, session  # noqa: F401 (fixture)

CHILD = textwrap.dedent("""
    import sys, time
    from datetime import date
    from pathlib import Path
    from uuid import UUID

    import infra.services.printing as printing
    from domain.model import Actor, Role
    from infra.services.certificates import Certificates

    url, schema, institution, signals, stage = sys.argv[1:6]
    ids = [UUID(i) for i in sys.argv[6:]]
    render = printing.render

    def wait():
        Path(signals, "rendering").write_text("")
        while not Path(signals, "go").exists():
            time.sleep(0.05)

    def stuck(pages, progress=None):  # as a long batch would: rendering, its forms booked
        wait()
        return render(pages, progress)

    def delivering(content):  # the PDF made, its file not yet written (a full disk, a pipe nobody reads)
        wait()

    if stage == "render":
        printing.render = stuck
    svc = Certificates(url, schema, today=lambda: date(2026, 7, 1))
    actor = Actor(id="staff-li", role=Role.INSTITUTION_STAFF, institution_id=UUID(institution))
    try:
        printing.print_certificates(svc, actor, ids, "https://verify.example.org",
                                    deliver=delivering if stage == "deliver" else None)
    except Exception as e:
        print(type(e).__name__, e, file=sys.stderr)
        sys.exit(3)
    print("printed")
""")


def _printer(tmp_path: Path, database_url: str, schema: str, iid, ids, stage: str = "render") -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    script = tmp_path / "printer.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), database_url, schema, str(iid), str(tmp_path), stage, *map(str, ids)],
        cwd=Path(__file__).parent.parent, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "rendering").exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the printer never started rendering"
        time.sleep(0.05)
    return child


def _leases(database_url: str, schema: str) -> int:
    with psycopg.connect(database_url) as c:
        return c.execute(f'SELECT count(*) FROM "{schema}".print_leases').fetchone()[0]


def test_a_print_killed_while_rendering_gives_its_forms_back_and_a_live_one_keeps_them(
    world,
    session,  # noqa: F811
    tmp_path,
    database_url,
    schema,  # noqa: F811
):
    from infra.api import create_app

    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    child = _printer(tmp_path, database_url, schema, iid, ids)
    # Rendering: booked, and its lease held. A sweep leaves a live print alone.
    assert to_print(svc, exam_id) == [] and len(svc.stock(iid).used) == 3
    assert return_abandoned(svc) == [] and len(svc.stock(iid).used) == 3
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert to_print(svc, exam_id) == [] and _leases(database_url, schema) == 1  # still booked, and listed

    # The API gives them back as it starts (and every little while after), with no one asking.
    with TestClient(create_app(database_url, schema, today=world.clock, public_url=PUBLIC)):
        deadline = time.monotonic() + 30
        while to_print(svc, exam_id) != ids:
            assert time.monotonic() < deadline, "the forms of the killed print were not given back"
            time.sleep(0.2)
    assert not svc.stock(iid).used and _leases(database_url, schema) == 0
    history = [type(e).__name__ for e in svc.events.get(ids[0])][-2:]
    assert history == ["Printed", "PrintNotMade"], history
    assert return_abandoned(svc) == []  # once

    # Killed again, the PDF made and its file not yet written (an outside review held the CLI's write on a named
    # pipe): given back all the same.
    (tmp_path / "rendering").unlink()
    child = _printer(tmp_path, database_url, schema, iid, ids, stage="deliver")
    assert to_print(svc, exam_id) == []
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not return_abandoned(svc):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert to_print(svc, exam_id) == ids and not svc.stock(iid).used

    # Printed again, they take the same forms, lowest first; the job that did it is finished and off the list.
    print_certificates(svc, staff(iid), ids, PUBLIC)
    assert [svc.certificate(i).printed_forms[-1] for i in ids] == [10_000_001, 10_000_002, 10_000_003]
    assert _leases(database_url, schema) == 0 and return_abandoned(svc) == []


def test_a_print_whose_lease_was_lost_while_rendering_is_told_and_hands_out_no_pdf(
    world,
    session,  # noqa: F811
    tmp_path,
    database_url,
    schema,  # noqa: F811
):
    """PostgreSQL restarted under a live print: its lease is gone, and a sweeper takes the job for dead and gives its
    forms back. The printer, finishing, is refused: no PDF leaves it on forms the ledger says are blank."""
    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    child = _printer(tmp_path, database_url, schema, iid, ids)
    with psycopg.connect(database_url, autocommit=True) as c:
        ended = c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                          "'skillcert-print' AND datname = current_database()").fetchall()  # fmt: skip
    assert ended == [(True,)]
    deadline = time.monotonic() + 10
    while not (back := return_abandoned(svc)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [form for _, form in back] == [10_000_001, 10_000_002, 10_000_003] and to_print(svc, exam_id) == ids
    (tmp_path / "go").write_text("")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 3 and "given back to stock while its PDF was being made" in err, (out, err)
    assert to_print(svc, exam_id) == ids and not svc.stock(iid).used  # given back once, not twice


def test_a_refused_batch_leaves_no_job(world, session, database_url, schema):  # noqa: F811
    """A batch refused before booking (another institution's staff) books nothing and leaves nothing to sweep."""
    from uuid import uuid4

    from domain.errors import Forbidden

    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    with pytest.raises(Forbidden):
        print_certificates(svc, staff(uuid4()), ids, PUBLIC)
    assert _leases(database_url, schema) == 1  # its lease ended with the refusal; the sweep takes it off the list
    assert return_abandoned(svc) == [] and _leases(database_url, schema) == 0
    with pytest.raises(NotFound):
        svc.get(PrintJob, uuid4(), "print job")
    with psycopg.connect(database_url) as c:  # no job was stored for it
        jobs = c.execute(f'SELECT count(*) FROM "{schema}".skillcert_events WHERE topic LIKE %s',
                         ("domain.printing:PrintJob.%",)).fetchone()[0]  # fmt: skip
    assert jobs == 0 and to_print(svc, exam_id) == ids and not svc.stock(iid).used


def test_a_print_to_a_pipe_is_booked_before_a_byte_leaves_so_a_kill_never_gives_back_printed_forms(
    world,
    session,  # noqa: F811
    tmp_path,
    database_url,
    schema,
):
    """An outside review printed to a named pipe and killed the CLI the moment its reader had the whole PDF: the
    sweeper gave the forms back as blank while the printer held a PDF on them. A pipe or a device cannot be written
    aside and moved into place, as a file is: it is written once the job is finished, and killed then, the forms
    stay booked (staff record them not made if nothing came out)."""
    from domain.model import Role
    from tests.api import bearer

    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)["Authorization"].split()[1]
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_TOKEN": token, "SKILLCERT_PUBLIC_URL": PUBLIC}  # fmt: skip
    pipe = tmp_path / "printer"
    os.mkfifo(pipe)
    printing = subprocess.Popen([sys.executable, "-m", "infra.cli", "print", "session", "--session", str(exam_id),
                                 "--out", str(pipe)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    got: list[bytes] = []

    def printer() -> None:  # reads the whole PDF
        with open(pipe, "rb") as reader:
            got.append(reader.read())

    reading = threading.Thread(target=printer, daemon=True)
    reading.start()
    reading.join(timeout=60)
    printing.send_signal(signal.SIGKILL)  # the moment it has
    printing.wait(timeout=10)
    assert got, printing.communicate()
    received = got[0]
    assert received.startswith(b"%PDF") and received.rstrip().endswith(b"%%EOF") and len(ids) == 3
    assert return_abandoned(svc) == []  # a printer holds them: they stay booked
    assert to_print(svc, exam_id) == [] and len(svc.stock(iid).used) == 3
