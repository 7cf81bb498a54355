"""The blank stock ledger (004 §1-7): per institution, forms received, in stock, used, spoiled
and destroyed, the last stocktake and its discrepancy; the yearly demand and the forms used per
level; and which serial printed which certificate.

Blank forms are not made per level (a form takes any level's certificate), so received and in
stock are per institution; demand and use are per level, the level read from the number of
the certificate printed.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from domain.certnumber import parse
from domain.stock import form_label
from projections.store import read_tolerantly

T = "cn.skillcert.blank_stock."
# The events that move forms (stock_movements.serials: the forms, or a receipt's first and last).
MOVES = ("forms_received", "form_used", "form_spoiled", "print_spoiled", "form_returned", "forms_destroyed")
FROM_STOCK = "FROM stock_books WHERE stock_id = %s"  # a stock event's institution


class StockLedger:
    name = "stock_ledger"
    topics = ("stock",)
    tables = ("stock_books", "stock_receipts", "stock_forms", "stock_demand", "stock_stocktakes", "stock_movements")
    # 4: every form's movements, by log position (rebuilt once at upgrade); 3: a demand filed again replaces the year
    # whole; 2: no witness named
    version = 4

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS stock_books (
                institution_id uuid PRIMARY KEY,
                stock_id uuid NOT NULL UNIQUE,
                received int NOT NULL DEFAULT 0,
                used int NOT NULL DEFAULT 0,
                spoiled int NOT NULL DEFAULT 0,
                destroyed int NOT NULL DEFAULT 0,
                in_stock int GENERATED ALWAYS AS (received - used - spoiled) STORED,
                last_stocktake_period text,
                last_stocktake_on date,
                last_counted int,
                last_discrepancy int,
                updated_at timestamptz NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS stock_receipts (
                institution_id uuid NOT NULL,
                first bigint NOT NULL,
                last bigint NOT NULL,
                delivery_note text NOT NULL,
                received_at timestamptz NOT NULL,
                PRIMARY KEY (institution_id, first)
            )""",
            """CREATE TABLE IF NOT EXISTS stock_forms (
                institution_id uuid NOT NULL,
                serial bigint NOT NULL,
                status text NOT NULL,  -- used, spoiled, destroyed
                certificate_id uuid,
                certificate_number text,
                level int,
                reason text,
                at timestamptz NOT NULL,
                PRIMARY KEY (institution_id, serial)
            )""",
            """CREATE TABLE IF NOT EXISTS stock_demand (
                institution_id uuid NOT NULL,
                year int NOT NULL,
                level int NOT NULL,
                forms int NOT NULL,
                filed_on date NOT NULL,
                late boolean NOT NULL,
                PRIMARY KEY (institution_id, year, level)
            )""",
            # What happened to which forms, event by event: the audit report names them (infra.services.report), and
            # a form's history outlives its row in stock_forms, which a print not made deletes.
            """CREATE TABLE IF NOT EXISTS stock_movements (
                position bigint PRIMARY KEY,
                institution_id uuid NOT NULL,
                event text NOT NULL,
                serials bigint[] NOT NULL,
                certificate_number text,
                reason text,
                at timestamptz NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS stock_stocktakes (
                institution_id uuid NOT NULL,
                version int NOT NULL,
                period text NOT NULL,
                on_day date NOT NULL,
                counted int NOT NULL,
                in_system int NOT NULL,
                discrepancy int NOT NULL,
                note text NOT NULL,
                PRIMARY KEY (institution_id, version)
            )""",
        ]

    def read_indexes(self) -> list[str]:
        return [
            "CREATE INDEX IF NOT EXISTS stock_forms_certificate ON stock_forms (certificate_number)",
            "CREATE INDEX IF NOT EXISTS stock_movements_institution ON stock_movements (institution_id, position)",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        event, d = m["type"].removeprefix(T).rpartition(".")[0], m["data"]
        sid, at = d["originator_id"], d["timestamp"]
        if event == "opened":
            cur.execute(
                "INSERT INTO stock_books (institution_id, stock_id, updated_at) VALUES (%s,%s,%s)",
                (d["institution_id"], sid, at),
            )
            return
        if event in MOVES:
            serials = [d["first"], d["last"]] if event == "forms_received" else d.get("serials") or [d["serial"]]
            reason = "已销毁（有监销人）" if event == "forms_destroyed" else d.get("reason") or d.get("delivery_note")
            cur.execute(
                f"""INSERT INTO stock_movements SELECT %s, institution_id, %s, %s, %s, %s, %s {FROM_STOCK}
                    ON CONFLICT (position) DO NOTHING""",
                (m["position"], event, serials, d.get("certificate_number"), reason, at, sid),
            )
        books = {"forms_received": "received", "form_used": "used", "form_spoiled": "spoiled"}
        if event == "forms_received":
            count = d["last"] - d["first"] + 1
            cur.execute(
                f"INSERT INTO stock_receipts SELECT institution_id, %s, %s, %s, %s {FROM_STOCK}",
                (d["first"], d["last"], d["delivery_note"], at, sid),
            )
        elif event == "form_used":
            count, number = 1, d["certificate_number"]
            cur.execute(
                f"INSERT INTO stock_forms SELECT institution_id, %s, 'used', %s, %s, %s, NULL, %s {FROM_STOCK}",
                (d["serial"], d["certificate_id"], number, int(parse(number).level), at, sid),
            )
        elif event == "form_spoiled":
            count = 1
            cur.execute(
                f"INSERT INTO stock_forms SELECT institution_id, %s, 'spoiled', NULL, NULL, NULL, %s, %s {FROM_STOCK}",
                (d["serial"], d["reason"], at, sid),
            )
        elif event == "print_spoiled":
            cur.execute(
                """UPDATE stock_forms f SET status = 'spoiled', reason = %s, at = %s FROM stock_books b
                   WHERE b.stock_id = %s AND f.institution_id = b.institution_id AND f.serial = %s""",
                (d["reason"], at, sid, d["serial"]),
            )
            cur.execute(
                "UPDATE stock_books SET used = used - 1, spoiled = spoiled + 1, updated_at = %s WHERE stock_id = %s",
                (at, sid),
            )
        elif event == "form_returned":  # booked for a print never made: blank, back in stock
            cur.execute(
                """DELETE FROM stock_forms f USING stock_books b
                   WHERE b.stock_id = %s AND f.institution_id = b.institution_id AND f.serial = %s""",
                (sid, d["serial"]),
            )
            cur.execute("UPDATE stock_books SET used = used - 1, updated_at = %s WHERE stock_id = %s", (at, sid))
        elif event == "forms_destroyed":
            count = len(d["serials"])
            cur.execute(
                """UPDATE stock_forms f SET status = 'destroyed', reason = f.reason || '; ' || %s, at = %s
                   FROM stock_books b WHERE b.stock_id = %s AND f.institution_id = b.institution_id
                   AND f.serial = ANY(%s)""",
                # The witness's name stays in the event store: the stock topic carries no personal data.
                ("已销毁（有监销人）", at, sid, d["serials"]),
            )
            books["forms_destroyed"] = "destroyed"
        elif event == "demand_filed":
            # Filed again, the year's demand is replaced whole, as the stock's own books replace it: a level asked for
            # before and not now is no longer asked for.
            cur.execute(f"DELETE FROM stock_demand WHERE year = %s AND institution_id = (SELECT institution_id "
                        f"{FROM_STOCK})", (d["year"], sid))  # fmt: skip
            cur.executemany(
                f"""INSERT INTO stock_demand SELECT institution_id, %s, %s, %s, %s, %s {FROM_STOCK}
                    ON CONFLICT (institution_id, year, level) DO UPDATE SET forms = EXCLUDED.forms,
                    filed_on = EXCLUDED.filed_on, late = EXCLUDED.late""",
                [(d["year"], int(level), n, d["filed_on"], d["late"], sid) for level, n in d["per_level"].items()],
            )
        elif event == "stocktake_recorded":
            cur.execute(
                f"INSERT INTO stock_stocktakes SELECT institution_id, %s, %s, %s, %s, %s, %s, %s {FROM_STOCK}",
                (m["aggregateversion"], d["period"], d["on"], d["counted"], d["in_system"], d["discrepancy"],
                 d["note"], sid),
            )  # fmt: skip
            cur.execute(
                """UPDATE stock_books SET last_stocktake_period = %s, last_stocktake_on = %s, last_counted = %s,
                   last_discrepancy = %s, updated_at = %s WHERE stock_id = %s""",
                (d["period"], d["on"], d["counted"], d["discrepancy"], at, sid),
            )
        if event in books:
            column = books[event]
            cur.execute(
                f"UPDATE stock_books SET {column} = {column} + %s, updated_at = %s WHERE stock_id = %s",
                (count, at, sid),
            )


def ledger(conn: psycopg.Connection[Any], institution_id: str) -> dict[str, Any] | None:
    """The books of one institution, with demand and use per level and the receipts."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM stock_books WHERE institution_id = %s", (institution_id,))
        books = cur.fetchone()
        if books is None:
            return None
        cur.execute(
            # Forms a certificate is printed on: a spoiled print keeps its certificate's number, but is no form used
            "SELECT level, count(*) AS used FROM stock_forms WHERE institution_id = %s AND status = 'used'"
            " GROUP BY level ORDER BY level",
            (institution_id,),
        )
        books["used_per_level"] = cur.fetchall()
        cur.execute(
            "SELECT year, level, forms, filed_on, late FROM stock_demand WHERE institution_id = %s"
            " ORDER BY year DESC, level",
            (institution_id,),
        )
        books["demand"] = cur.fetchall()
        cur.execute(
            "SELECT first, last, delivery_note, received_at FROM stock_receipts WHERE institution_id = %s"
            " ORDER BY first",
            (institution_id,),
        )
        books["receipts"] = cur.fetchall()
        cur.execute(
            "SELECT period, on_day, counted, in_system, discrepancy, note FROM stock_stocktakes"
            " WHERE institution_id = %s ORDER BY version",
            (institution_id,),
        )
        books["stocktakes"] = cur.fetchall()
    return books


def form(conn: psycopg.Connection[Any], institution_id: str, serial: int) -> dict[str, Any] | None:
    """What became of one blank form: the certificate it printed, why it was spoiled, or in stock; None if the
    institution never received it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT serial, status, certificate_id, certificate_number, level, reason, at FROM stock_forms"
            " WHERE institution_id = %s AND serial = %s",
            (institution_id, serial),
        )
        row = cur.fetchone()
        if row is None:  # blank, if it was received: in stock since its delivery (or back there, a print not made)
            cur.execute(
                "SELECT %s::bigint AS serial, 'in_stock' AS status, NULL::uuid AS certificate_id, NULL AS"
                " certificate_number, NULL::int AS level, NULL AS reason, received_at AS at FROM stock_receipts"
                " WHERE institution_id = %s AND first <= %s AND last >= %s",
                (serial, institution_id, serial, serial),
            )
            row = cur.fetchone()
        if row is not None:
            row["label"] = form_label(row["serial"])

            def history() -> list[dict[str, Any]]:  # received, booked, returned, booked again, spoiled..., in log order
                cur.execute(
                    """SELECT position, event, certificate_number, reason, at FROM stock_movements
                       WHERE institution_id = %s AND CASE WHEN event = 'forms_received' THEN serials[1] <= %s
                       AND serials[2] >= %s ELSE %s = ANY(serials) END ORDER BY position""",
                    (institution_id, serial, serial, serial),
                )
                return cur.fetchall()

            row["history"] = read_tolerantly(conn, history, list)  # none from a ledger not yet rebuilt at version 4
    return row


def forms_of_certificate(conn: psycopg.Connection[Any], number: str) -> list[dict[str, Any]]:
    """Every blank form a certificate was printed on (a corrected certificate is reprinted)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT serial, at FROM stock_forms WHERE certificate_number = %s ORDER BY at, serial",
            (number.strip().upper(),),
        )
        return [r | {"label": form_label(r["serial"])} for r in cur.fetchall()]
