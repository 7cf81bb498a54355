"""The candidate record (001 报名记录查看, 证书进度查询): every registration of one candidate with
its status, review decisions and reasons, fee, training, exam, scores, score review, and the
certificate with where its data reporting stands."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from projections.certificates import DATA_STATUS, STATUS

TYPE = "cn.skillcert."
EXAM = TYPE + "exam_session."
DECISIONS = ("approved", "returned", "rejected")
# What the candidate sees of their exam day, after each sitting event.
ATTENDANCE = {
    "checked_in": "checked_in",
    "identity_checked": "identity_checked",
    "signed_in": "signed_in",
    "started": "started",
    "finished": "finished",
    "marked_absent": "absent",
}


class Candidates:
    name = "candidates"
    topics = ("registrations", "exams", "certificates")
    tables = ("candidate_registrations", "candidate_reviews", "candidate_sittings", "candidate_results",
              "candidate_certificates")  # fmt: skip
    version = 3

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS candidate_registrations (
                registration_id uuid PRIMARY KEY,
                plan_id uuid NOT NULL,
                institution_id uuid NOT NULL,
                id_type text NOT NULL,
                id_masked text NOT NULL,
                id_ref text NOT NULL,  -- the bus never carries ID numbers (infra.bus.privacy)
                name text NOT NULL,
                plan_number text NOT NULL,
                plan_name text NOT NULL,
                institution_name text NOT NULL,
                occupation text NOT NULL,
                job text,
                level int NOT NULL,
                basis text NOT NULL,
                form jsonb NOT NULL,
                warnings jsonb NOT NULL,
                status text NOT NULL,
                decision_reasons text NOT NULL DEFAULT '',
                decided_by text,
                decided_at timestamptz,
                condition text,
                fee jsonb,       -- receipt_number, amount, paid_at
                training jsonb,  -- account, hours, completed_at
                submitted_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS candidate_reviews (
                registration_id uuid NOT NULL,
                version int NOT NULL,
                decision text NOT NULL,
                reasons text NOT NULL,
                actor_id text NOT NULL,
                actor_role text NOT NULL,
                decided_at timestamptz NOT NULL,
                PRIMARY KEY (registration_id, version)
            )""",
            # One table per source aggregate, joined by registration when read: topics and
            # partitions are consumed in no particular order relative to each other.
            """CREATE TABLE IF NOT EXISTS candidate_sittings (
                sitting_id uuid PRIMARY KEY,
                registration_id uuid NOT NULL UNIQUE,
                exam jsonb NOT NULL,  -- exam_id, exam_date, starts_at, location, room, seat, attendance
                scores jsonb,
                review jsonb,         -- score reviews by subject: reason, requested_on, answer_due, outcome...
                updated_at timestamptz NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS candidate_results (
                registration_id uuid PRIMARY KEY,
                exam_id uuid NOT NULL,
                attempt int NOT NULL,
                absent boolean NOT NULL,
                passed boolean NOT NULL,
                confirmed boolean NOT NULL DEFAULT false
            )""",
            # A confirmation marks a whole exam's results: without this, a scan of every result in the province.
            "CREATE INDEX IF NOT EXISTS candidate_results_exam ON candidate_results (exam_id)",
            """CREATE TABLE IF NOT EXISTS candidate_certificates (
                certificate_id uuid PRIMARY KEY,
                registration_id uuid NOT NULL UNIQUE,
                certificate jsonb NOT NULL,  -- number, issued_on, status, data_status, delivery, proof_number
                updated_at timestamptz NOT NULL
            )""",
        ]

    def read_indexes(self) -> list[str]:
        return [
            "CREATE INDEX IF NOT EXISTS candidate_registrations_holder ON candidate_registrations (id_ref)",
            "CREATE INDEX IF NOT EXISTS candidate_registrations_plan ON candidate_registrations (plan_id)",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        t, d = m["type"], m["data"]
        kind, event = _kind(t)
        if kind == "registration":
            self._registration(cur, m, event, d)
        elif kind == "sitting":
            self._sitting(cur, event, d)
        elif t == EXAM + "results_reported.v1":  # a re-report after a return replaces the results
            cur.executemany(
                "INSERT INTO candidate_results VALUES (%s, %s, %s, %s, %s, false) ON CONFLICT (registration_id)"
                " DO UPDATE SET attempt = EXCLUDED.attempt, absent = EXCLUDED.absent, passed = EXCLUDED.passed,"
                " confirmed = false",
                [
                    (e["registration_id"], d["originator_id"], d["attempt"], e["absent"], e["passed"])
                    for e in d["entries"]
                ],
            )
        elif t == EXAM + "results_confirmed.v1":
            cur.execute("UPDATE candidate_results SET confirmed = true WHERE exam_id = %s", (d["originator_id"],))
        elif kind == "certificate":
            self._certificate(cur, event, d)

    def _registration(self, cur: psycopg.Cursor[Any], m: dict[str, Any], event: str, d: dict[str, Any]) -> None:
        rid, at = d["originator_id"], d["timestamp"]
        if event == "submitted":
            _insert(cur, "candidate_registrations", _registration_row(d))
        elif event in ("resubmitted", "amended"):
            f = d["form"]
            status = ", status = 'submitted', decision_reasons = ''" if event == "resubmitted" else ""
            cur.execute(
                f"""UPDATE candidate_registrations SET name = %s, id_type = %s, id_masked = %s, id_ref = %s,
                    basis = %s, form = %s, warnings = %s{status}, updated_at = %s WHERE registration_id = %s""",
                (
                    f["name"], f["id_type"], f["id_number"]["masked"], f["id_number"]["ref"], f["basis"], Jsonb(f),
                    Jsonb(d["warnings"]), at, rid,
                ),
            )  # fmt: skip
        elif event in DECISIONS:
            self._decide(cur, m, event, d)
            _insert(cur, "candidate_reviews", _review_row(m, event, d))
        elif event == "fee_paid":
            fee = {"receipt_number": d["receipt_number"], "amount": d["amount"], "paid_at": at}
            self._set(cur, rid, at, fee=Jsonb(fee))
        elif event == "training_account_opened":
            self._set(cur, rid, at, training=Jsonb({"account": d["account"]}))
        elif event == "training_completed":
            cur.execute(
                "UPDATE candidate_registrations SET training = training || %s, updated_at = %s"
                " WHERE registration_id = %s",
                (Jsonb({"hours": d["hours"], "completed_at": at}), at, rid),
            )

    def apply_many(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]) -> None:
        """What `apply` does to each message in turn, with fewer statements, for a rebuild:
        - the rows a creation event inserts (a registration, a review decision, a ticket, a certificate)
          are copied in first, in one COPY per table: every later change to such a row comes from the
          same aggregate's later events, so nothing in the batch touches it before its insert would have;
        - of a sitting's attendance changes in the batch only the last is made, where it stands: each sets
          the attendance and the time of the change, and nothing between reads either.
        The rest is applied event by event, in order, in one pipeline."""
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in INSERTS}
        last_attendance: dict[str, int] = {}
        rest: list[tuple[int, dict[str, Any], str, str]] = []
        for i, m in enumerate(messages):
            kind, event = _kind(m["type"])
            d = m["data"]
            if kind == "registration" and event == "submitted":
                rows["candidate_registrations"].append(_registration_row(d))
                continue
            if kind == "registration" and event in DECISIONS:
                rows["candidate_reviews"].append(_review_row(m, event, d))
            elif kind == "sitting" and event == "ticket_issued":
                rows["candidate_sittings"].append(_sitting_row(d))
                continue
            elif kind == "sitting" and event in ATTENDANCE:
                last_attendance[d["originator_id"]] = i
            elif kind == "certificate" and event == "issued":
                rows["candidate_certificates"].append(_certificate_row(d))
                continue
            rest.append((i, m, kind, event))
        for table, columns in INSERTS.items():
            if rows[table]:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row(row)
        with cur.connection.pipeline():
            for i, m, kind, event in rest:
                if kind == "registration" and event in DECISIONS:
                    self._decide(cur, m, event, m["data"])  # its review was copied in
                elif kind == "sitting" and event in ATTENDANCE and last_attendance[m["data"]["originator_id"]] != i:
                    continue  # a later attendance change of the same sitting in this batch overwrites it
                else:
                    self.apply(cur, m)

    @staticmethod
    def _decide(cur: psycopg.Cursor[Any], m: dict[str, Any], event: str, d: dict[str, Any]) -> None:
        at = d["timestamp"]
        cur.execute(
            """UPDATE candidate_registrations SET status = %s, decision_reasons = %s, decided_by = %s,
               decided_at = %s, condition = %s, updated_at = %s WHERE registration_id = %s""",
            (event, d["reasons"], m["actorid"], at, d.get("condition"), at, d["originator_id"]),
        )

    def _sitting(self, cur: psycopg.Cursor[Any], event: str, d: dict[str, Any]) -> None:
        sid, at = d["originator_id"], d["timestamp"]
        if event == "ticket_issued":
            _insert(cur, "candidate_sittings", _sitting_row(d))
        elif event in ATTENDANCE:
            self._sitting_set(cur, sid, at, "exam = exam || %s", Jsonb({"attendance": ATTENDANCE[event]}))
        elif event == "scores_recorded":
            self._sitting_set(cur, sid, at, "scores = %s", Jsonb(d["scores"]))
        elif event == "review_requested":
            r = d["request"]
            review = {k: r[k] for k in ("subject", "reason", "requested_on")} | {"answer_due": r["answer"]["due"]}
            # One per subject: the record keeps them by subject.
            self._sitting_set(cur, sid, at, "review = coalesce(review, '{}') || %s", Jsonb({r["subject"]: review}))
        elif event == "review_answered":
            answer = {k: d[k] for k in ("outcome", "score", "note", "answered_on", "late")}
            cur.execute(
                "UPDATE candidate_sittings SET review = jsonb_set(review, %s, (review -> %s) || %s), updated_at = %s"
                " WHERE sitting_id = %s",
                ([d["subject"]], d["subject"], Jsonb(answer), at, sid),
            )
            if d["outcome"] == "changed":
                self._sitting_set(cur, sid, at, "scores = scores || %s", Jsonb({d["subject"]: d["score"]}))

    @staticmethod
    def _sitting_set(cur: psycopg.Cursor[Any], sid: str, at: str, assignment: str, value: Any) -> None:
        cur.execute(
            f"UPDATE candidate_sittings SET {assignment}, updated_at = %s WHERE sitting_id = %s", (value, at, sid)
        )

    def _certificate(self, cur: psycopg.Cursor[Any], event: str, d: dict[str, Any]) -> None:
        cid, at = d["originator_id"], d["timestamp"]
        if event == "issued":
            _insert(cur, "candidate_certificates", _certificate_row(d))
            return
        change = {"status": STATUS[event]} if event in STATUS else {}
        if event in DATA_STATUS:
            change["data_status"] = DATA_STATUS[event]
        if event == "proof_issued":
            change["proof_number"] = d["proof_number"]
        elif event == "handed_over":
            change |= {"delivery": d["delivery"], "handed_over_on": d["on"]}
        if change:
            cur.execute(
                "UPDATE candidate_certificates SET certificate = certificate || %s, updated_at = %s"
                " WHERE certificate_id = %s",
                (Jsonb(change), at, cid),
            )

    @staticmethod
    def _set(cur: psycopg.Cursor[Any], rid: str, at: str, **columns: Any) -> None:
        sets = "".join(f"{c} = %s, " for c in columns)
        cur.execute(
            f"UPDATE candidate_registrations SET {sets}updated_at = %s WHERE registration_id = %s",
            [*columns.values(), at, rid],
        )


def _kind(event_type: str) -> tuple[str, str]:
    """'cn.skillcert.registration.fee_paid.v1' -> ('registration', 'fee_paid')."""
    kind, _, event = event_type.removeprefix(TYPE).rpartition(".")[0].partition(".")
    return kind, event


# The rows creation events insert, by table, with their columns in the order the builders give them.
INSERTS: dict[str, tuple[str, ...]] = {
    "candidate_registrations": (
        "registration_id", "plan_id", "institution_id", "id_type", "id_masked", "id_ref", "name", "plan_number",
        "plan_name", "institution_name", "occupation", "job", "level", "basis", "form", "warnings", "status",
        "submitted_at", "updated_at",
    ),
    "candidate_reviews": ("registration_id", "version", "decision", "reasons", "actor_id", "actor_role", "decided_at"),
    "candidate_sittings": ("sitting_id", "registration_id", "exam", "updated_at"),
    "candidate_certificates": ("certificate_id", "registration_id", "certificate", "updated_at"),
}  # fmt: skip


def _insert(cur: psycopg.Cursor[Any], table: str, row: tuple[Any, ...]) -> None:
    columns = INSERTS[table]
    cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})", row)


def _registration_row(d: dict[str, Any]) -> tuple[Any, ...]:
    f, p, at = d["form"], d["plan"], d["timestamp"]
    return (
        d["originator_id"], d["plan_id"], d["institution_id"], f["id_type"], f["id_number"]["masked"],
        f["id_number"]["ref"], f["name"], p["plan_number"], p["plan_name"], p["institution_name"], p["occupation"],
        p["job"], p["level"], f["basis"], Jsonb(f), Jsonb(d["warnings"]), "submitted", at, at,
    )  # fmt: skip


def _review_row(m: dict[str, Any], event: str, d: dict[str, Any]) -> tuple[Any, ...]:
    return (d["originator_id"], m["aggregateversion"], event, d["reasons"], m["actorid"], m["actorrole"],
            d["timestamp"])  # fmt: skip


def _sitting_row(d: dict[str, Any]) -> tuple[Any, ...]:
    exam = {k: d[k] for k in ("exam_id", "exam_date", "starts_at", "location", "room", "seat")}
    return (d["originator_id"], d["registration_id"], Jsonb(exam | {"attendance": "ticket_issued"}), d["timestamp"])


def _certificate_row(d: dict[str, Any]) -> tuple[Any, ...]:
    cert = {"number": d["number"], "issued_on": d["issued_on"], "status": "issued", "data_status": "unreported"}
    return (d["originator_id"], d["registration_id"], Jsonb(cert), d["timestamp"])


# A registration with its sitting, results and certificate, each from its own table.
COLUMNS = """r.registration_id, plan_id, institution_id, id_type, id_masked AS id_number, id_ref, name, plan_number, plan_name,
    institution_name, occupation, job, level, basis, warnings, status, decision_reasons, decided_by, decided_at,
    condition, fee, training, s.exam, s.scores, s.review, res.passed, res.confirmed AS results_confirmed,
    c.certificate, submitted_at, greatest(r.updated_at, s.updated_at, c.updated_at) AS updated_at"""
FROM = """candidate_registrations r
    LEFT JOIN candidate_sittings s ON s.registration_id = r.registration_id
    LEFT JOIN candidate_results res ON res.registration_id = r.registration_id
    LEFT JOIN candidate_certificates c ON c.registration_id = r.registration_id"""


def _with_reviews(cur: psycopg.Cursor[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        cur.execute(
            "SELECT decision, reasons, actor_id, actor_role, decided_at FROM candidate_reviews"
            " WHERE registration_id = %s ORDER BY version",
            (row["registration_id"],),
        )
        row["reviews"] = cur.fetchall()
    return rows


def get_registration(conn: psycopg.Connection[Any], registration_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE r.registration_id = %s", (registration_id,))
        rows = _with_reviews(cur, cur.fetchall())
    return rows[0] if rows else None


def registrations_of(conn: psycopg.Connection[Any], id_ref: str) -> list[dict[str, Any]]:
    """By the holder's ID-number ref (infra.privacy.ref of the number)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE id_ref = %s ORDER BY submitted_at DESC", (id_ref,))
        return _with_reviews(cur, cur.fetchall())


def registrations_for_plan(
    conn: psycopg.Connection[Any], plan_id: str, status: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    cond, args = "plan_id = %s", [plan_id]
    if status:
        cond += " AND status = %s"
        args.append(status)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT count(*) AS n FROM candidate_registrations WHERE {cond}", args)
        total = cur.fetchone()["n"]
        cur.execute(
            f"SELECT {COLUMNS} FROM {FROM} WHERE {cond} ORDER BY submitted_at, r.registration_id LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
        return total, _with_reviews(cur, cur.fetchall())
