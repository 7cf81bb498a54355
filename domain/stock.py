"""Blank certificate stock (004 §1-7): demand, receipt of numbered forms, one form per print,
spoiled forms recorded and destroyed, half-yearly stocktakes. The books always balance:
received = in stock + used + spoiled."""

from __future__ import annotations

import re
from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field

from domain.access import STAFF, require
from domain.errors import Conflict, InvalidInput
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Snapshot
from domain.personal import Personal, personal
from domain.ranges import Ranges

MAX_FORM = 99_999_999  # "NO. 88888888": eight digits
DEMAND_DUE = (1, 25)  # the yearly demand form is filed by 25 January (004 §2)
PERIOD = re.compile(r"^(\d{4})-H([12])$")
BLOCK = 100_000  # the serials one FormBlock guards: a delivery, at most 100,000 forms, spans at most two


def stock_id(institution_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"skillcert:blank-stock:{institution_id}")


def form_label(serial: int) -> str:
    return f"NO. {serial:08d}"


class Books(Immutable):
    received: int
    in_stock: int
    used: int
    spoiled: int
    destroyed: int  # spoiled forms already destroyed

    @property
    def balanced(self) -> bool:
        return self.received == self.in_stock + self.used + self.spoiled


class BlankStock(Aggregate):
    class Opened(Aggregate.Created):
        actor: Actor
        institution_id: UUID

    class DemandFiled(Aggregate.Event):
        year: int
        per_level: dict[Level, int]
        filed_on: date
        late: bool

    class FormsReceived(Aggregate.Event):
        first: int
        last: int
        delivery_note: str

    class FormUsed(Aggregate.Event):
        serial: int
        certificate_id: UUID
        certificate_number: str

    class FormSpoiled(Aggregate.Event):
        serial: int
        reason: str

    class PrintSpoiled(Aggregate.Event):
        serial: int
        certificate_number: str
        reason: str

    class FormReturned(Aggregate.Event):
        serial: int
        certificate_number: str
        reason: str

    class FormsDestroyed(Aggregate.Event):
        serials: list[int]
        witness: str = Field(json_schema_extra=personal(Personal.IDENTITY))
        on: date

    class StocktakeRecorded(Aggregate.Event):
        period: str
        on: date
        counted: int
        in_system: int
        discrepancy: int  # counted - in_system
        note: str

    @event(Opened)
    def __init__(self, actor: Actor, institution_id: UUID) -> None:
        self.institution_id = institution_id
        self.ranges: list[tuple[int, int]] = []
        # The forms used, as ranges of serials: which certificate is on each is on the events and in the stock
        # ledger (projections.stock); kept here, it made every print load all of them.
        self.used = Ranges()
        self.spoiled: dict[int, str] = {}  # form serial -> reason
        self.destroyed: set[int] = set()
        self.demands: dict[int, dict[Level, int]] = {}
        self.stocktakes: dict[str, int] = {}  # period -> discrepancy

    # Every print loads the stock: from a snapshot (its books as they stood) and the events since, rather
    # than the whole history of every form ever used (benchmarks.stock_size).
    Snapshot = Snapshot

    def snapshot_state(self) -> dict[str, Any]:
        return {"institution_id": str(self.institution_id), "ranges": [list(r) for r in self.ranges],
                "used": [list(r) for r in self.used.pairs()], "spoiled": {str(k): v for k, v in self.spoiled.items()},
                "destroyed": sorted(self.destroyed), "stocktakes": dict(self.stocktakes),
                "demands": {str(y): {str(int(k)): n for k, n in d.items()} for y, d in self.demands.items()}}  # fmt: skip

    @staticmethod
    def restore_state(state: dict[str, Any]) -> dict[str, Any]:
        return {"institution_id": UUID(state["institution_id"]), "ranges": [tuple(r) for r in state["ranges"]],
                "used": _ranges(state["used"]),
                "spoiled": {int(k): v for k, v in state["spoiled"].items()}, "destroyed": set(state["destroyed"]),
                "stocktakes": dict(state["stocktakes"]),
                "demands": {int(y): {Level(int(k)): n for k, n in d.items()} for y, d in state["demands"].items()}}  # fmt: skip

    @classmethod
    def open(cls, actor: Actor, institution_id: UUID) -> BlankStock:
        require(actor, STAFF, "keep blank stock", institution_id)
        return cls._create(cls.Opened, id=stock_id(institution_id), actor=actor, institution_id=institution_id)

    @property
    def books(self) -> Books:
        received = sum(last - first + 1 for first, last in self.ranges)
        used, spoiled = len(self.used), len(self.spoiled)
        return Books(
            received=received,
            in_stock=received - used - spoiled,
            used=used,
            spoiled=spoiled,
            destroyed=len(self.destroyed),
        )

    def _received(self, serial: int) -> bool:
        return any(first <= serial <= last for first, last in self.ranges)

    def in_stock(self, serial: int) -> bool:
        return self._received(serial) and serial not in self.used and serial not in self.spoiled

    def _check_form(self, serial: int) -> None:
        if not self._received(serial):
            raise InvalidInput([("form_serial", f"{form_label(serial)} was never received into this stock")])
        if serial in self.used:
            raise Conflict(f"{form_label(serial)} is already used for a print", field="form_serial")
        if serial in self.spoiled:
            raise Conflict(f"{form_label(serial)} is spoiled ({self.spoiled[serial]})", field="form_serial")

    def file_demand(self, actor: Actor, year: int, per_level: dict[Level, int], today: date) -> None:
        """Annex 1: this year's expected passes per level."""
        require(actor, STAFF, "file blank certificate demand", self.institution_id)
        problems = [(f"per_level.{int(k)}", "must be 0-100000") for k, v in per_level.items() if not 0 <= v <= 100_000]
        if not per_level or sum(per_level.values()) == 0:
            problems.append(("per_level", "give the expected number for at least one level"))
        if not today.year - 1 <= year <= today.year + 1:
            problems.append(("year", f"{year} is not last, this or next year"))
        if problems:
            raise InvalidInput(problems)
        late = today > date(year, *DEMAND_DUE)
        self._demand_filed(actor, year, dict(per_level), today, late)

    @event(DemandFiled)
    def _demand_filed(self, actor: Actor, year: int, per_level: dict[Level, int], filed_on: date, late: bool) -> None:
        self.demands[year] = per_level

    def receive(self, actor: Actor, first: int, last: int, delivery_note: str) -> None:
        require(actor, STAFF, "receive blank forms", self.institution_id)
        problems = []
        if not 1 <= first <= last <= MAX_FORM:
            problems.append(("first", f"a range of form numbers 00000001-{MAX_FORM} with first <= last"))
        if last - first >= 100_000:
            problems.append(("last", "at most 100000 forms in one delivery"))
        if not delivery_note.strip():
            problems.append(("delivery_note", "the supplier's delivery note number"))
        if problems:
            raise InvalidInput(problems)
        for a, b in self.ranges:
            if first <= b and a <= last:
                raise Conflict(
                    f"forms {form_label(max(a, first))}-{form_label(min(b, last))} were already received", field="first"
                )
        self._forms_received(actor, first, last, delivery_note.strip())

    @event(FormsReceived)
    def _forms_received(self, actor: Actor, first: int, last: int, delivery_note: str) -> None:
        self.ranges.append((first, last))

    def next_form(self) -> int:
        for first, last in sorted(self.ranges):
            serial = first
            while serial <= last:
                if serial in self.spoiled:
                    serial += 1
                elif (after := self.used.first_from(serial)) != serial:
                    serial = after
                else:
                    return serial
        raise Conflict("no blank forms in stock; receive a delivery first")

    def use(self, actor: Actor, certificate_id: UUID, certificate_number: str, serial: int | None = None) -> int:
        """One form per print; the lowest form in stock unless the printer was loaded with another."""
        require(actor, STAFF, "print certificates", self.institution_id)
        serial = self.next_form() if serial is None else serial
        self._check_form(serial)
        self._form_used(actor, serial, certificate_id, certificate_number)
        return serial

    @event(FormUsed)
    def _form_used(self, actor: Actor, serial: int, certificate_id: UUID, certificate_number: str) -> None:
        self.used.add(serial)

    def spoil(self, actor: Actor, serial: int, reason: str) -> None:
        require(actor, STAFF, "record spoiled forms", self.institution_id)
        if not reason.strip():
            raise InvalidInput([("reason", "say how the form was spoiled")])
        self._check_form(serial)
        self._form_spoiled(actor, serial, reason.strip())

    @event(FormSpoiled)
    def _form_spoiled(self, actor: Actor, serial: int, reason: str) -> None:
        self.spoiled[serial] = reason

    def spoil_print(self, actor: Actor, serial: int, certificate_number: str, reason: str) -> None:
        """A form booked as used whose print came out spoiled: it moves to the spoiled forms. The certificate
        whose print it held says which it was (Certificate.spoil_print checks the form holds its print)."""
        self._check_used(actor, "record spoiled prints", serial)
        self._print_spoiled(actor, serial, certificate_number, reason.strip())

    @event(PrintSpoiled)
    def _print_spoiled(self, actor: Actor, serial: int, certificate_number: str, reason: str) -> None:
        self.used.remove(serial)
        self.spoiled[serial] = reason

    def return_form(self, actor: Actor, serial: int, certificate_number: str, reason: str) -> None:
        """A form booked for a print that was never made (Certificate.print_not_made): blank, back in stock, the
        next form a print takes if it is the lowest."""
        self._check_used(actor, "record prints not made", serial)
        self._form_returned(actor, serial, certificate_number, reason.strip())

    @event(FormReturned)
    def _form_returned(self, actor: Actor, serial: int, certificate_number: str, reason: str) -> None:
        self.used.remove(serial)

    def _check_used(self, actor: Actor, act: str, serial: int) -> None:
        require(actor, STAFF, act, self.institution_id)
        if serial not in self.used:
            raise Conflict(f"{form_label(serial)} was not used for a print", field="form_serial")

    def destroy(self, actor: Actor, serials: list[int], witness: str, today: date) -> None:
        require(actor, STAFF, "destroy spoiled forms", self.institution_id)
        problems = [
            ("serials", f"{form_label(s)} is not a spoiled form awaiting destruction")
            for s in serials
            if s not in self.spoiled or s in self.destroyed
        ]
        if not serials:
            problems.append(("serials", "name the spoiled forms destroyed"))
        if not witness.strip():
            problems.append(("witness", "who witnessed the destruction"))
        if problems:
            raise InvalidInput(problems)
        self._forms_destroyed(actor, sorted(set(serials)), witness.strip(), today)

    @event(FormsDestroyed)
    def _forms_destroyed(self, actor: Actor, serials: list[int], witness: str, on: date) -> None:
        self.destroyed.update(serials)

    def take_stock(self, actor: Actor, period: str, counted: int, today: date, note: str = "") -> int:
        """The half-yearly stocktake: physical count against the books. Returns the discrepancy."""
        require(actor, STAFF, "record stocktakes", self.institution_id)
        m = PERIOD.match(period)
        problems = []
        if not m:
            problems.append(("period", "must be a half year like 2026-H1"))
        elif date(int(m[1]), 1 if m[2] == "1" else 7, 1) > today:
            problems.append(("period", f"{period} has not begun"))
        if counted < 0:
            problems.append(("counted", "must be the number of forms counted, 0 or more"))
        if problems:
            raise InvalidInput(problems)
        if period in self.stocktakes:
            raise Conflict(f"the stocktake for {period} is already recorded", field="period")
        if later := [p for p in self.stocktakes if p > period]:
            # It compares the count with the books as they stand now, not as they stood at the end of that half year.
            raise Conflict(f"the stocktake for {max(later)} is recorded already; one for {period}, earlier, would count "
                           "today's forms against a past half year's", field="period")  # fmt: skip
        in_system = self.books.in_stock
        discrepancy = counted - in_system
        if discrepancy and not note.strip():
            raise InvalidInput([("note", f"the count differs from the books by {discrepancy}; explain it")])
        self._stocktake_recorded(actor, period, today, counted, in_system, discrepancy, note.strip())
        return discrepancy

    @event(StocktakeRecorded)
    def _stocktake_recorded(
        self, actor: Actor, period: str, on: date, counted: int, in_system: int, discrepancy: int, note: str
    ) -> None:
        self.stocktakes[period] = discrepancy


def _ranges(used: list[list[int]] | dict[str, str]) -> Ranges:
    # Snapshots taken before the forms used were ranges hold each serial with its certificate number.
    if isinstance(used, dict):
        return Ranges((int(serial), int(serial)) for serial in sorted(used, key=int))
    return Ranges((first, last) for first, last in used)


def block_of(serial: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"skillcert:form-block:{serial // BLOCK}")


class FormBlock(Aggregate):
    """Which institution received each form of one block of serials. Blank forms are numbered for the whole country
    and handed out by the province (004 §1-7): no two institutions receive one form, where each stock alone saw only its
    own receipts. A guard, saved with the stock that receives (Certificates.receive_forms), never published."""

    class Opened(Aggregate.Created):
        actor: Actor
        block: int

    class Claimed(Aggregate.Event):
        institution_id: UUID
        first: int
        last: int

    @event(Opened)
    def __init__(self, actor: Actor, block: int) -> None:
        self.block = block
        self.claims: list[tuple[int, int, UUID]] = []

    @classmethod
    def open(cls, actor: Actor, serial: int) -> FormBlock:
        return cls._create(cls.Opened, id=block_of(serial), actor=actor, block=serial // BLOCK)

    def claim(self, actor: Actor, institution_id: UUID, first: int, last: int) -> None:
        """The delivery's forms in this block, for this institution; refused if another received any of them."""
        require(actor, STAFF, "receive blank forms", institution_id)
        first, last = max(first, self.block * BLOCK), min(last, (self.block + 1) * BLOCK - 1)
        for a, b, other in self.claims:
            if other != institution_id and a <= last and first <= b:
                raise Conflict(f"forms {form_label(max(a, first))}-{form_label(min(b, last))} were received by "
                               f"another institution ({other}): each form is numbered once", field="first")  # fmt: skip
        self._claimed(actor, institution_id, first, last)

    @event(Claimed)
    def _claimed(self, actor: Actor, institution_id: UUID, first: int, last: int) -> None:
        self.claims.append((first, last, institution_id))
