"""The candidate record (001 报名记录查看, 证书进度查询): every registration of one candidate with
its status, review decisions and reasons, fee, training, exam, scores, score review, and the
certificate with where its data reporting stands."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from projections.certificates import DATA_STATUS, STATUS
from projections.store import copy_rows

TYPE = "cn.skillcert."
EXAM = TYPE + "exam_session."
DECISIONS = ("approved", "returned", "rejected", "disqualified")
# What the candidate sees of their exam day, after each sitting event.
ATTENDANCE = {
    "checked_in": "checked_in",
    "identity_checked": "identity_checked",
    "signed_in": "signed_in",
    "started": "started",
    "finished": "finished",
    "marked_absent": "absent",
}
# Sitting events a rebuild folds, per sitting, into one change of a batch (Candidates.apply_many).
FOLDED = {*ATTENDANCE, "scores_recorded"}


class Candidates:
    name = "candidates"
    topics = ("registrations", "exams", "certificates")
    tables = ("candidate_registrations", "candidate_reviews", "candidate_sittings", "candidate_results",
              "candidate_certificates", "candidate_cancellations")  # fmt: skip
    version = 4  # 4: scores cancelled on a disqualification (candidate_cancellations)

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
            # Scores cancelled with a disqualification, from the session's events: joined when read, as the
            # sitting's own events (its scores) may come before or after them.
            """CREATE TABLE IF NOT EXISTS candidate_cancellations (
                registration_id uuid PRIMARY KEY,
                exam_id uuid NOT NULL,
                reasons text NOT NULL,
                cancelled_at timestamptz NOT NULL
            )""",
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
        elif t == EXAM + "scores_cancelled.v1":
            cur.execute(
                "INSERT INTO candidate_cancellations VALUES (%s, %s, %s, %s)",
                (d["registration_id"], d["originator_id"], d["reasons"], d["timestamp"]),
            )
        elif kind == "certificate":
            self._certificate(cur, event, d)

    def _registration(self, cur: psycopg.Cursor[Any], m: dict[str, Any], event: str, d: dict[str, Any]) -> None:
        rid, at = d["originator_id"], d["timestamp"]
        if event == "submitted":
            _insert(cur, "candidate_registrations", _registration_row(d))
        elif (changes := _changes(m, event, d)) is not None:
            self._set(cur, rid, changes)
            if event in DECISIONS:
                _insert(cur, "candidate_reviews", _review_row(m, event, d))
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
        - a registration's changes in the batch (decisions, fee, amendments) are folded into one per
          registration, and those that set the same columns into one UPDATE: each sets its columns outright
          (_changes), so the last value of each wins. A registration whose training hours are added in the
          batch is left to the event-by-event path, whole, so its changes keep their order;
        - likewise a sitting's attendance changes and scores, into one UPDATE for every sitting (attendance is
          set within `exam`); a sitting with a score review in the batch is left to the event-by-event path.
        The rest is applied event by event, in order, in one pipeline."""
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in INSERTS}
        events = [(m, *_kind(m["type"])) for m in messages]
        # Those whose changes are left in order, event by event (see above).
        merged = {m["data"]["originator_id"] for m, _, event in events if event == "training_completed"}
        reviewed = {  # a score review, or anything else not folded
            m["data"]["originator_id"]
            for m, kind, event in events
            if kind == "sitting" and event not in FOLDED and event != "ticket_issued"
        }
        changed: dict[str, dict[str, Any]] = {}  # registration -> its columns' last values in the batch
        folded: dict[str, list[Any]] = {}  # sitting -> [exam patch, scores set?, scores, time]
        rest: list[dict[str, Any]] = []
        for m, kind, event in events:
            d = m["data"]
            if kind == "registration" and event == "submitted":
                rows["candidate_registrations"].append(_registration_row(d))
                continue
            if kind == "registration" and d["originator_id"] not in merged:
                if (changes := _changes(m, event, d)) is not None:
                    changed.setdefault(d["originator_id"], {}).update(changes)
                    if event in DECISIONS:
                        rows["candidate_reviews"].append(_review_row(m, event, d))
                continue  # an event the record does not show
            elif kind == "sitting" and event == "ticket_issued":
                rows["candidate_sittings"].append(_sitting_row(d))
                continue
            elif kind == "sitting" and event in FOLDED and d["originator_id"] not in reviewed:
                change = folded.setdefault(d["originator_id"], [{}, False, None, None])
                if event == "scores_recorded":
                    change[1:3] = True, Jsonb(d["scores"])
                else:
                    change[0]["attendance"] = ATTENDANCE[event]
                change[3] = d["timestamp"]
                continue
            elif kind == "certificate" and event == "issued":
                rows["candidate_certificates"].append(_certificate_row(d))
                continue
            rest.append(m)
        for table, columns in INSERTS.items():
            copy_rows(cur, table, columns, rows[table])
        by_columns: dict[tuple[str, ...], list[tuple[str, dict[str, Any]]]] = {}
        for rid, columns in changed.items():
            by_columns.setdefault(tuple(sorted(columns)), []).append((rid, columns))
        for columns, regs in by_columns.items():
            cur.execute(
                sql.SQL("UPDATE candidate_registrations r SET {} FROM unnest(%b::uuid[], {}) AS v(id, {})"
                        " WHERE r.registration_id = v.id").format(
                    sql.SQL(", ").join(sql.SQL("{0} = v.{0}").format(sql.Identifier(c)) for c in columns),
                    sql.SQL(", ").join(sql.SQL("%b::{}[]").format(sql.SQL(CHANGED_TYPES[c])) for c in columns),
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                ),
                [[rid for rid, _ in regs], *([values[c] for _, values in regs] for c in columns)],
            )  # fmt: skip
        if folded:
            ids, changes = list(folded), list(folded.values())
            cur.execute(
                """UPDATE candidate_sittings s SET exam = s.exam || v.patch,
                   scores = CASE WHEN v.scored THEN v.scores ELSE s.scores END, updated_at = v.at
                   FROM unnest(%b::uuid[], %b::jsonb[], %b::bool[], %b::jsonb[], %b::timestamptz[])
                        AS v(id, patch, scored, scores, at)
                   WHERE s.sitting_id = v.id""",
                (ids, [Jsonb(c[0]) for c in changes], [c[1] for c in changes], [c[2] for c in changes],
                 [c[3] for c in changes]),
            )  # fmt: skip
        with cur.connection.pipeline():
            for m in rest:
                self.apply(cur, m)

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
    def _set(cur: psycopg.Cursor[Any], rid: str, columns: dict[str, Any]) -> None:
        sets = ", ".join(f"{c} = %s" for c in columns)
        cur.execute(f"UPDATE candidate_registrations SET {sets} WHERE registration_id = %s", [*columns.values(), rid])


def _changes(m: dict[str, Any], event: str, d: dict[str, Any]) -> dict[str, Any] | None:
    """The columns of a registration's row that an event sets outright, with their values; None for an
    event that sets none that way (it merges into a column, or the record does not show it)."""
    at = d["timestamp"]
    if event in ("resubmitted", "amended"):
        f = d["form"]
        changes = {
            "name": f["name"], "id_type": f["id_type"], "id_masked": f["id_number"]["masked"],
            "id_ref": f["id_number"]["ref"], "basis": f["basis"], "form": Jsonb(f), "warnings": Jsonb(d["warnings"]),
        }  # fmt: skip
        if event == "resubmitted":
            changes |= {"status": "submitted", "decision_reasons": ""}
    elif event in DECISIONS:
        changes = {"status": event, "decision_reasons": d["reasons"], "decided_by": m["actorid"], "decided_at": at}
        if event != "disqualified":  # the condition the approval found met stays on record
            changes["condition"] = d.get("condition")
    elif event == "fee_paid":
        changes = {"fee": Jsonb({"receipt_number": d["receipt_number"], "amount": d["amount"], "paid_at": at})}
    elif event == "training_account_opened":
        changes = {"training": Jsonb({"account": d["account"]})}
    else:
        return None
    return changes | {"updated_at": at}


# The types of the columns of candidate_registrations that _changes sets, for a rebuild's set-based UPDATE.
CHANGED_TYPES = {
    "name": "text", "id_type": "text", "id_masked": "text", "id_ref": "text", "basis": "text", "form": "jsonb",
    "warnings": "jsonb", "status": "text", "decision_reasons": "text", "decided_by": "text",
    "decided_at": "timestamptz", "condition": "text", "fee": "jsonb", "training": "jsonb", "updated_at": "timestamptz",
}  # fmt: skip


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
    condition, fee, training, s.exam, CASE WHEN x.registration_id IS NULL THEN s.scores END AS scores,
    CASE WHEN x.registration_id IS NULL THEN s.review END AS review,
    res.passed AND x.registration_id IS NULL AS passed, res.confirmed AS results_confirmed, x.reasons AS scores_cancelled,
    c.certificate, submitted_at, greatest(r.updated_at, s.updated_at, c.updated_at, x.cancelled_at) AS updated_at"""
FROM = """candidate_registrations r
    LEFT JOIN candidate_sittings s ON s.registration_id = r.registration_id
    LEFT JOIN candidate_results res ON res.registration_id = r.registration_id
    LEFT JOIN candidate_cancellations x ON x.registration_id = r.registration_id
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


# What a candidate's own record adds: whether the institution may evaluate (004 第十条), so that a registration
# waiting at a suspended institution says why. From the catalogue's row, read through to_jsonb so that the catalogue's
# tables of version 1 (no standing), read while a worker rebuilds them after an upgrade, answer too.
STANDING = """, coalesce((SELECT to_jsonb(i) ->> 'standing' FROM catalogue_institutions i
    WHERE i.institution_id = r.institution_id), 'active') AS institution_standing"""


def get_registration(conn: psycopg.Connection[Any], registration_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {COLUMNS}{STANDING} FROM {FROM} WHERE r.registration_id = %s", (registration_id,))
        rows = _with_reviews(cur, cur.fetchall())
    return rows[0] if rows else None


def registrations_of(conn: psycopg.Connection[Any], id_ref: str) -> list[dict[str, Any]]:
    """By the holder's ID-number ref (infra.privacy.ref of the number)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {COLUMNS}{STANDING} FROM {FROM} WHERE id_ref = %s ORDER BY submitted_at DESC", (id_ref,))
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
