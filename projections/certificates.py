"""The certificate registry and the correction ledger (004 §11-14; DESIGN.md steps 8-13).

Registry: every certificate by number, by the holder's ID-number ref, or by name and
institution; its status, where its data reporting stands, and its history of corrections
and proofs. Ledger: per certificate, its one correction application, with the fields
asked for, the decision and the dates; the primary key is the one-correction rule made
visible (the rule itself is enforced when the application is written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from domain.text import INVISIBLE, NAME_DOTS, name_key
from projections.store import copy_rows

T = "cn.skillcert.certificate."

# The status a certificate shows after each event; events not listed leave it as it is.
STATUS = {
    "issued": "issued",
    "data_reported": "data_reported",
    "data_returned": "returned",
    "data_accepted": "data_accepted",
    "made_queryable": "queryable",
    "handed_over": "handed_over",
    "correction_approved": "corrected",
    "proof_issued": "proof_issued",
    "data_deleted": "data_deleted",
    "revoked": "revoked",
}
# Where its data reporting stands after each event (a corrected certificate is reported again).
DATA_STATUS = {
    "data_reported": "reported",
    "data_accepted": "accepted",
    "data_returned": "returned",
    "made_queryable": "queryable",
    "correction_approved": "unreported",
    "data_deleted": "deleted",
}
HISTORY = ("correction_applied", "correction_approved", "correction_rejected", "proof_applied", "proof_issued",
           "data_returned", "data_deleted", "revoked", "printed", "print_spoiled", "print_not_made", "handed_over")  # fmt: skip


def _name(message: dict[str, Any]) -> str:
    return message["type"].removeprefix(T).rpartition(".")[0]


class Registry:
    name = "certificate_registry"
    topics = ("certificates",)
    tables = ("certificate_registry", "certificate_history")
    version = 2  # 2: a deletion blanks the holder's data in the registry and its history

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS certificate_registry (
                certificate_id uuid PRIMARY KEY,
                number text NOT NULL UNIQUE,
                registration_id uuid NOT NULL,
                exam_id uuid NOT NULL,
                institution_id uuid NOT NULL,
                institution_name text NOT NULL,
                holder_name text NOT NULL,
                holder_gender text NOT NULL,
                id_type text NOT NULL,
                id_masked text NOT NULL,
                id_ref text NOT NULL,
                occupation text NOT NULL,
                job text,
                level int NOT NULL,
                issued_on date NOT NULL,
                status text NOT NULL,
                data_status text NOT NULL,
                report_attempts int NOT NULL DEFAULT 0,
                queryable_on date,
                forms_printed int NOT NULL DEFAULT 0,
                delivery text,
                handed_over_on date,
                proof_number text,
                corrected boolean NOT NULL DEFAULT false,
                updated_at timestamptz NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS certificate_history (
                certificate_id uuid NOT NULL,
                version int NOT NULL,
                event text NOT NULL,
                at timestamptz NOT NULL,
                actor_id text NOT NULL,
                actor_role text NOT NULL,
                detail jsonb NOT NULL,
                PRIMARY KEY (certificate_id, version)
            )""",
        ]

    def read_indexes(self) -> list[str]:
        return [
            "CREATE INDEX IF NOT EXISTS certificate_registry_holder ON certificate_registry (id_ref)",
            "CREATE INDEX IF NOT EXISTS certificate_registry_name ON certificate_registry (holder_name, institution_id)",
            # A name as typed that matches none as stored is looked for among the institution's (certificates_named).
            "CREATE INDEX IF NOT EXISTS certificate_registry_institution ON certificate_registry (institution_id, number)",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        event, d = _name(m), m["data"]
        cid, at = d["originator_id"], d["timestamp"]
        if event == "issued":
            cur.execute(INSERT_ISSUED, _issued_row(d))
            return
        sets: dict[str, Any] = {"updated_at": at}
        if event in STATUS:
            sets["status"] = STATUS[event]
        if event in DATA_STATUS:
            sets["data_status"] = DATA_STATUS[event]
        if event == "data_reported":
            cur.execute(
                "UPDATE certificate_registry SET report_attempts = report_attempts + 1 WHERE certificate_id = %s",
                (cid,),
            )
        elif event == "made_queryable":
            sets["queryable_on"] = d["on"]
        elif event in ("printed", "print_not_made"):  # a print never made took no form
            cur.execute(
                "UPDATE certificate_registry SET forms_printed = forms_printed + %s WHERE certificate_id = %s",
                (1 if event == "printed" else -1, cid),
            )
        elif event == "handed_over":
            sets |= {"delivery": d["delivery"], "handed_over_on": d["on"]}
        elif event == "proof_issued":
            sets["proof_number"] = d["proof_number"]
        elif event == "correction_approved":
            h = d["holder"]
            sets |= {
                "corrected": True, "holder_name": h["name"], "holder_gender": h["gender"],
                "id_masked": h["id_number"]["masked"], "id_ref": h["id_number"]["ref"],
            }  # fmt: skip
        elif event == "data_deleted":  # the holder's data goes from the read models too; the number stays
            sets |= {"holder_name": "", "holder_gender": "", "id_masked": ""}
            cur.execute("UPDATE certificate_history SET detail = detail - 'holder' - 'correction' - 'signed_by' "
                        "WHERE certificate_id = %s", (cid,))  # fmt: skip
        columns = ", ".join(f"{k} = %s" for k in sets)
        cur.execute(f"UPDATE certificate_registry SET {columns} WHERE certificate_id = %s", [*sets.values(), cid])
        if event in HISTORY:
            detail = {
                k: v for k, v in d.items() if k not in ("originator_id", "originator_version", "timestamp", "actor")
            }
            cur.execute(
                "INSERT INTO certificate_history VALUES (%s,%s,%s,%s,%s,%s,%s)",
                (cid, m["aggregateversion"], event, at, m["actorid"], m["actorrole"], Jsonb(detail)),
            )

    def apply_many(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]) -> None:
        """What `apply` does to each message in turn, for a rebuild (_issued_first)."""
        _issued_first(self, cur, messages, "certificate_registry", ISSUED, _issued_row)


# The columns of a certificate's row in the registry when issued, in the order _issued_row gives them.
ISSUED = ("certificate_id", "number", "registration_id", "exam_id", "institution_id", "institution_name",
          "holder_name", "holder_gender", "id_type", "id_masked", "id_ref", "occupation", "job", "level", "issued_on",
          "status", "data_status", "updated_at")  # fmt: skip
INSERT_ISSUED = f"INSERT INTO certificate_registry ({', '.join(ISSUED)}) VALUES ({', '.join(['%s'] * len(ISSUED))})"


def _issued_row(d: dict[str, Any]) -> tuple[Any, ...]:
    h = d["holder"]
    return (
        d["originator_id"], d["number"], d["registration_id"], d["exam_id"], d["institution_id"],
        d["institution_name"], h["name"], h["gender"], h["id_type"], h["id_number"]["masked"], h["id_number"]["ref"],
        d["occupation"], d["job"], d["level"], d["issued_on"], "issued", "unreported", d["timestamp"],
    )  # fmt: skip


def _issued_first(
    projection: Registry | Corrections, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]], table: str,
    columns: tuple[str, ...], row: Callable[[dict[str, Any]], tuple[Any, ...]],
) -> None:  # fmt: skip
    """The batch's issued certificates copied into the table in one COPY, then the rest applied event by event, in
    order, in one pipeline. A certificate's issue is its first event, so nothing earlier in the batch touches its
    row, and what comes later (a correction applied for, finding its number) finds it there, as it would have."""
    copy_rows(cur, table, columns, [row(m["data"]) for m in messages if _name(m) == "issued"])
    with cur.connection.pipeline():
        for m in messages:
            if _name(m) != "issued":
                projection.apply(cur, m)


class Corrections:
    name = "correction_ledger"
    topics = ("certificates",)
    tables = ("correction_ledger", "correction_ledger_certificates")
    version = 2

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS correction_ledger (
                certificate_id uuid PRIMARY KEY,  -- at most one application per certificate
                number text NOT NULL UNIQUE,
                institution_id uuid NOT NULL,
                fields jsonb NOT NULL,             -- what was asked to change (ID number masked)
                reasons text NOT NULL,
                evidence jsonb NOT NULL,
                applied_on date NOT NULL,
                applied_by text NOT NULL,
                checked jsonb,                     -- profile S: the association's check (000 二3)
                decision text NOT NULL DEFAULT 'pending',
                decided_by text,
                decided_at timestamptz,
                decision_reasons text,
                report_due date
            )""",
            # Issued rows are kept only to know each certificate's number and institution.
            """CREATE TABLE IF NOT EXISTS correction_ledger_certificates (
                certificate_id uuid PRIMARY KEY, number text NOT NULL, institution_id uuid NOT NULL
            )""",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        event, d = _name(m), m["data"]
        cid = d["originator_id"]
        if event == "issued":
            cur.execute("INSERT INTO correction_ledger_certificates VALUES (%s,%s,%s)", _known_row(d))
        elif event == "correction_applied":
            fields = {k: v for k, v in d["correction"].items() if v is not None}
            cur.execute(
                """INSERT INTO correction_ledger (certificate_id, number, institution_id, fields, reasons, evidence,
                   applied_on, applied_by)
                   SELECT certificate_id, number, institution_id, %s, %s, %s, %s, %s
                   FROM correction_ledger_certificates WHERE certificate_id = %s""",
                (Jsonb(fields), d["reasons"], Jsonb(d["evidence"]), d["applied_on"], m["actorid"], cid),
            )
        elif event == "correction_checked":
            check = {"queryable_nationally": d["queryable_nationally"], "work_order": d.get("work_order"),
                     "checked_on": d["checked_on"], "checked_by": m["actorid"]}  # fmt: skip
            cur.execute("UPDATE correction_ledger SET checked = %s WHERE certificate_id = %s", (Jsonb(check), cid))
        elif event in ("correction_approved", "correction_rejected"):
            cur.execute(
                """UPDATE correction_ledger SET decision = %s, decided_by = %s, decided_at = %s,
                   decision_reasons = %s, report_due = %s WHERE certificate_id = %s""",
                (
                    event.removeprefix("correction_"), m["actorid"], d["timestamp"], d.get("reasons"),
                    (d.get("report") or {}).get("due"), cid,
                ),
            )  # fmt: skip
        elif event == "revoked":  # a correction still undecided is moot: the certificate it would change is void
            cur.execute(
                """UPDATE correction_ledger SET decision = 'moot', decided_by = %s, decided_at = %s,
                   decision_reasons = %s WHERE certificate_id = %s AND decision = 'pending'""",
                (m["actorid"], d["timestamp"], f"certificate revoked on {d['revoked_on']}", cid),
            )

    def apply_many(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]) -> None:
        """What `apply` does to each message in turn, for a rebuild (_issued_first)."""
        _issued_first(self, cur, messages, "correction_ledger_certificates", ("certificate_id", "number",
                      "institution_id"), _known_row)  # fmt: skip


def _known_row(d: dict[str, Any]) -> tuple[Any, ...]:
    return d["originator_id"], d["number"], d["institution_id"]


def certificate_by_number(conn: psycopg.Connection[Any], number: str) -> dict[str, Any] | None:
    rows = _with_history(conn, "WHERE number = %s", [number.strip().upper()])
    return rows[0] if rows else None


def certificates_of(conn: psycopg.Connection[Any], id_ref: str) -> list[dict[str, Any]]:
    return _with_history(conn, "WHERE id_ref = %s ORDER BY issued_on DESC, number", [id_ref])


def certificates_named(conn: psycopg.Connection[Any], name: str, institution_id: str) -> list[dict[str, Any]]:
    """By the holder's name as stored (its index), else as a reader tells names apart (domain.text.name_key: 葛亮 finds
    葛 U+E0100 亮, any middle dot any other), among the institution's certificates."""
    found = _with_history(
        conn, "WHERE holder_name = %s AND institution_id = %s ORDER BY number", [name, institution_id]
    )
    if found:
        return found
    key = name_key(name)
    return _with_history(
        conn,
        "WHERE institution_id = %s AND translate(holder_name, %s, %s) = %s ORDER BY number",
        [institution_id, NAME_DOTS[1:] + INVISIBLE, "·" * (len(NAME_DOTS) - 1), key],
    )


def _with_history(conn: psycopg.Connection[Any], where: str, args: list[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM certificate_registry {where}", args)
        rows = cur.fetchall()
        for row in rows:
            cur.execute(
                "SELECT event, at, actor_id, actor_role, detail FROM certificate_history"
                " WHERE certificate_id = %s ORDER BY version",
                (row["certificate_id"],),
            )
            row["history"] = cur.fetchall()
    return rows


def correction_of(
    conn: psycopg.Connection[Any], *, certificate_id: str | None = None, number: str | None = None
) -> dict[str, Any] | None:
    column, value = ("certificate_id", certificate_id) if certificate_id else ("number", (number or "").strip().upper())
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM correction_ledger WHERE {column} = %s", (value,))
        return cur.fetchone()
