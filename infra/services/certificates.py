"""The certificates application service: numbering and issuance, data reporting, printing on
blank stock, handover, loss proofs, corrections, deletion, and the blank stock itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from certgen.certificate import unprintable
from domain.access import CENTRE, STAFF, require, require_region
from domain.certificate import (
    Certificate,
    Correction,
    DataStatus,
    Delivery,
    IdDocument,
    LossKind,
    SerialCounter,
    certificate_id,
    counter_id,
)
from domain.errors import Conflict, InvalidInput, NotFound
from domain.exam import ExamSession, ResultEntry
from domain.institution import Institution
from domain.levels import Level
from domain.model import Actor, Aggregate, Role, Snapshot
from domain.printing import PrintJob
from domain.registration import Attachment
from domain.stock import BLOCK, BlankStock, Books, FormBlock, block_of, stock_id
from infra.collector import collecting_less
from infra.services.base import R, Service, institution_lock, shanghai_today
from infra.services.exams import scoring_lock
from infra.store.leases import PrintLeases

CHUNK = (
    250  # per transaction: writers are serialised, so bulk steps batch; larger saves stalled psycopg over a unix socket
)


# Who gives back the forms of a print job whose process died (Certificates.abandon_print): no person did.
LEASE_SWEEPER = Actor(id="system:print-leases", role=Role.SYSTEM)


class Certificates(Service):
    def __init__(self, database_url: str, schema: str = "public", today: Callable[[], date] = shanghai_today) -> None:
        super().__init__(database_url, schema, today)
        self.leases = PrintLeases(database_url, self.recorder.datastore, schema)  # type: ignore[attr-defined]

    # Numbering and issuance (000: within 10 working days of confirmation).
    def issue(
        self, actor: Actor, exam_id: UUID, registration_ids: Sequence[UUID] | None = None, chunk: int = CHUNK
    ) -> dict[UUID, str]:
        """Number and issue certificates for a confirmed session's passes (all of them by default).
        Returns registration id -> certificate number for those issued by this call. Under the session's
        scoring lock: a candidate disqualified meanwhile (Registrations.disqualify) gets no certificate."""
        institution_id = self.institution_of(ExamSession, exam_id, "exam session")
        # A session's certificates are thousands of objects held at once: collected less often (infra.collector).
        with self.holding(scoring_lock(exam_id), shared=self._institution_locks(institution_id)), collecting_less():
            return self._issue_session(actor, exam_id, registration_ids, chunk)

    @staticmethod
    def _institution_locks(institution_id: UUID | None) -> list[tuple[int, int]]:
        """Held shared while certificates are issued: none is issued once the institution's evaluation business is
        suspended (004 第十条), and none straddles the suspension."""
        return [institution_lock(institution_id)] if institution_id is not None else []

    def _issue_session(
        self, actor: Actor, exam_id: UUID, registration_ids: Sequence[UUID] | None, chunk: int
    ) -> dict[UUID, str]:
        session = self.get(ExamSession, exam_id, "exam session")
        passed = {e.registration_id: e for e in session.passed()}
        if registration_ids is None:
            return self._issue(actor, [(session, e) for e in passed.values()], chunk)
        bad = [r for r in registration_ids if r not in passed]
        if bad:
            raise InvalidInput(
                [("registration_ids", f"{r} has no confirmed pass in session {session.session}") for r in bad[:20]]
            )
        return self._issue(actor, [(session, passed[r]) for r in dict.fromkeys(registration_ids)], chunk)

    def issue_cohort(self, actor: Actor, exam_ids: Sequence[UUID], chunk: int = CHUNK) -> dict[UUID, str]:
        """Every pass of several confirmed sessions of one institution, numbered together in
        transactions of `chunk` certificates (the event store serialises writers: batch bulk steps)."""
        institutions = {self.institution_of(ExamSession, e, "exam session") for e in exam_ids}
        locks = [lock for i in institutions for lock in self._institution_locks(i)]
        with self.holding(*(scoring_lock(e) for e in exam_ids), shared=locks), collecting_less():
            return self._issue_sessions(actor, list(dict.fromkeys(exam_ids)), chunk)

    def _issue_sessions(self, actor: Actor, exam_ids: list[UUID], chunk: int) -> dict[UUID, str]:
        sessions = [self.get(ExamSession, e, "exam session") for e in exam_ids]
        if len({s.institution_id for s in sessions}) > 1:
            raise InvalidInput(
                [("exam_ids", "a cohort is issued by one institution; these sessions belong to several")]
            )
        return self._issue(actor, [(s, e) for s in sessions for e in s.passed()], chunk)

    def _issue(self, actor: Actor, wanted: list[tuple[ExamSession, ResultEntry]], chunk: int) -> dict[UUID, str]:
        if not wanted:
            return {}
        institution = self.get(Institution, wanted[0][0].institution_id, "institution")
        institution.check_active("issue certificates")
        # Never a certificate outside the filed scope, also when it was narrowed after the plan was published.
        for occupation, job, level in sorted({(s.occupation, s.job or "", s.level) for s, _ in wanted}):
            institution.check_scope(occupation, job or None, level)
        ids = [certificate_id(e.registration_id) for _, e in wanted]  # a uuid5 each: once
        done = self.existing(ids)  # issued before: by an earlier call, or by another issuer
        todo = [w for w, i in zip(wanted, ids, strict=True) if i not in done]
        parts = [todo[start : start + chunk] for start in range(0, len(todo), chunk)]
        # Each part numbered from the counters as the part before left them, without loading them
        # again; a part that loses a race is done again alone, reloading everything, as a retry does.
        issued: dict[UUID, str] = {}
        counters: dict[tuple[int, Level], SerialCounter] = {}
        for part in parts:
            aggregates, numbers = self._number(actor, institution, part, counters)
            try:
                self.save(*aggregates)
            except IntegrityError:
                counters.clear()
                numbers = self._issue_chunk(actor, institution, part)
            issued.update(numbers)
        return issued

    def _number(
        self,
        actor: Actor,
        institution: Institution,
        part: list[tuple[ExamSession, ResultEntry]],
        counters: dict[tuple[int, Level], SerialCounter],
    ) -> tuple[list[Aggregate], dict[UUID, str]]:
        """Number and issue one part from `counters` (loaded if absent), leaving in `counters` a copy of
        each as it will be once this part is saved. Returns what to save and what it issues."""
        today = self.today()
        changed: list[Aggregate] = []
        certificates = []
        for level in sorted({s.level for s, _ in part}):
            of_level = [(s, e) for s, e in part if s.level is level]
            counter = counters.get((today.year, level))
            if counter is None:
                counter = self._counter(actor, institution, today.year, level)
            numbers = counter.allocate(actor, len(of_level))
            changed.append(counter)
            # The same state without its pending events: the next part numbers on from it.
            counters[(today.year, level)] = Snapshot.take(counter).mutate(None)
            certificates += [
                Certificate.issue(
                    actor, number, e.registration_id, s.id, institution.id, institution.name,
                    institution.profile, e.holder, s.occupation, s.job, level, today, s.numbering,
                )
                for (s, e), number in zip(of_level, numbers, strict=True)
            ]  # fmt: skip
        return [*changed, *certificates], {c.registration_id: c.number for c in certificates}

    def _issue_chunk(
        self, actor: Actor, institution: Institution, part: list[tuple[ExamSession, ResultEntry]]
    ) -> dict[UUID, str]:
        """One part alone, in one transaction, reloading and trying again until no other writer got
        there first: each counter moves exactly as far as the certificates it numbers."""
        pending: dict[UUID, str] = {}  # what the attempt that commits issued
        ids = [certificate_id(e.registration_id) for _, e in part]

        def attempt() -> list[Aggregate]:
            pending.clear()
            done = self.existing(ids)  # a racing issuer's work
            todo = [(s, e) for (s, e), i in zip(part, ids, strict=True) if i not in done]
            if not todo:
                return []
            aggregates, numbers = self._number(actor, institution, todo, {})
            pending.update(numbers)
            return aggregates

        self.retry(attempt)
        return pending

    def _counter(self, actor: Actor, institution: Institution, year: int, level: Level) -> SerialCounter:
        cid = counter_id(institution.id, year, level)
        try:  # one load, not a look first: `cid in self.repository` loads the whole aggregate too
            counter = self.repository.get(cid)
        except AggregateNotFoundError:
            return SerialCounter.open(actor, institution.id, institution.filing.prefix, year, level)
        assert isinstance(counter, SerialCounter)  # its id is derived from what only a counter is (counter_id)
        return counter

    def certificate(self, certificate_id: UUID) -> Certificate:
        return self.get(Certificate, certificate_id, "certificate")

    def _each(self, ids: Sequence[UUID], act) -> None:  # type: ignore[no-untyped-def]
        """Apply one step to many certificates in one transaction: all or none."""
        if not ids:
            raise InvalidInput([("certificate_ids", "name at least one certificate")])
        certificates = [self.certificate(i) for i in dict.fromkeys(ids)]
        problems = []
        for c in certificates:
            try:
                act(c)
            except (Conflict, InvalidInput) as e:
                problems.append((f"certificate_ids.{c.number}", e.message))
        if problems:
            raise InvalidInput(problems)
        self.save_once(*certificates)

    def invalidate(
        self, actor: Actor, institution_id: UUID, ids: Sequence[UUID], reasons: str, named: Sequence[str] = ()
    ) -> dict[str, list[str]]:
        """宣布其所发证书无效 (004 第十条): the centre declares certificates an institution issued improperly void; each
        is revoked (certificate.revoked), as a false declaration's is. All in one transaction, or none; one already
        void (revoked, or its data deleted) is left as it is and named. Answers the numbers revoked and those void
        already. `named`: each as the caller named it (a number, an id), for the refusals to say."""
        institution = self.get(Institution, institution_id, "institution")
        require(actor, CENTRE, "declare an institution's certificates void")
        require_region(actor, institution.filing.city_code, "declare an institution's certificates void")
        if not reasons.strip():
            raise InvalidInput([("reasons", "say why the certificates are void (the centre's finding)")])
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise InvalidInput([("certificates", "name at least one certificate")])
        given = {i: (n, named[n] if n < len(named) else str(i)) for n, i in reversed(list(enumerate(ids)))}
        outcome: dict[str, list[str]] = {}

        def attempt() -> list[Aggregate]:
            found = self.get_many(wanted)
            problems = [(f"certificates.{given[i][0]}", f"{given[i][1]} is not a certificate issued by {institution.name}")
                        for i in wanted if not isinstance(c := found.get(i), Certificate)
                        or c.institution_id != institution_id]  # fmt: skip
            if problems:
                raise InvalidInput(problems)
            certificates: list[Certificate] = [found[i] for i in wanted]  # type: ignore[misc]
            outcome.update(revoked=[], void_already=[])
            for c in certificates:
                if c.printable:
                    c.revoke(actor, f"004 第十条: {reasons.strip()}", self.today())
                    outcome["revoked"].append(c.number)
                else:
                    outcome["void_already"].append(c.number)
            return [c for c in certificates if c.pending_events]

        self.retry(attempt)
        return outcome

    # Data reporting (000).
    def report_data(self, actor: Actor, ids: Sequence[UUID]) -> None:
        today = self.today()
        self._each(ids, lambda c: c.report_data(actor, today))

    def accept_data(self, actor: Actor, ids: Sequence[UUID]) -> None:
        today = self.today()
        self._each(ids, lambda c: c.accept_data(actor, today))

    def return_data(self, actor: Actor, certificate_id: UUID, reasons: str) -> None:
        c = self.certificate(certificate_id)
        c.return_data(actor, reasons, self.today())
        self.save_once(c)

    def make_queryable(self, actor: Actor, ids: Sequence[UUID]) -> None:
        today = self.today()
        self._each(ids, lambda c: c.make_queryable(actor, today))

    # The physical certificate.
    def print(self, actor: Actor, certificate_id: UUID, form_serial: int | None = None) -> int:
        """Print on a blank form: the certificate and the stock change in one transaction."""
        with self.evaluating(self._institution(certificate_id), "print certificates"):
            return self._print(actor, certificate_id, form_serial)

    def _institution(self, certificate_id: UUID) -> UUID:
        institution_id = self.institution_of(Certificate, certificate_id, "certificate")
        assert institution_id is not None  # every certificate is issued by one
        return institution_id

    def _print(self, actor: Actor, certificate_id: UUID, form_serial: int | None) -> int:
        used = 0

        def attempt() -> list[Aggregate]:
            nonlocal used
            c = self.certificate(certificate_id)
            stock = self._stock(c.institution_id)
            c.print(actor, stock.next_form() if form_serial is None else form_serial)
            used = stock.use(actor, c.id, c.number, c.printed_forms[-1])
            return [c, stock]

        self.retry(attempt)
        return used

    def print_many(
        self,
        actor: Actor,
        ids: Sequence[UUID],
        check: Callable[[list[Certificate]], None] = lambda _: None,
        job: UUID | None = None,
    ) -> list[tuple[Certificate, int]]:
        """Print each on the next blank form of its institution's stock, in the order given, all in one transaction
        with the stocks: all of them or none. `check` sees the certificates as they are printed, before any form
        is booked, and may refuse them (raise). Answers each certificate as printed, with its form: what its page
        shows. With a `job`, the forms booked are recorded as that print job (domain.printing.PrintJob) in the same
        transaction. One at a time, a batch that met a certificate printed or corrected by another worker meanwhile
        stopped with the forms before it booked and no pages for them, or printed a page from what it had loaded
        before a correction changed it."""
        booked: list[tuple[Certificate, int]] = []
        institutions = {c.institution_id for c in self.get_all(Certificate, dict.fromkeys(ids), "certificate")}
        with self.holding(shared=[institution_lock(i) for i in institutions]):  # as `evaluating`, on one connection
            for institution_id in institutions:
                self.check_standing(institution_id, self.version_of(institution_id), "print certificates")
            self._print_many(actor, ids, check, booked, job)
        return booked

    def _print_many(
        self,
        actor: Actor,
        ids: Sequence[UUID],
        check: Callable[[list[Certificate]], None],
        booked: list[tuple[Certificate, int]],
        job: UUID | None,
    ) -> None:
        def attempt() -> list[Aggregate]:
            booked.clear()
            certificates = self.get_all(Certificate, dict.fromkeys(ids), "certificate")  # one query for all
            check(certificates)
            stocks: dict[UUID, BlankStock] = {}
            for c in certificates:
                if c.institution_id not in stocks:
                    stocks[c.institution_id] = self._stock(c.institution_id)
                stock = stocks[c.institution_id]
                c.print(actor, stock.next_form())
                booked.append((c, stock.use(actor, c.id, c.number, c.printed_forms[-1])))
            jobs = [] if job is None else [PrintJob.book(actor, job, [(c.id, form) for c, form in booked])]
            return [*certificates, *stocks.values(), *jobs]

        self.retry(attempt)

    def print_not_made(
        self, actor: Actor, ids: Sequence[UUID], reason: str, job: UUID | None = None
    ) -> list[tuple[str, int]]:
        """Prints booked and never made (a batch whose PDF never reached the printer): each certificate's form goes
        back to its stock, blank, and the certificate awaits a print again; all in one transaction, or none, naming
        every certificate that has no print to take back. Answers (certificate number, form) for each. A batch
        print whose PDF could not be made records this itself (infra.services.printing.print_certificates), and
        closes its print `job` in the same transaction."""

        def attempt() -> list[Aggregate]:
            certificates = self.get_all(Certificate, dict.fromkeys(ids), "certificate")
            for c in certificates:  # who may comes before what is missing
                require(actor, STAFF, "record prints not made", c.institution_id)
            problems = [f"certificate {c.number} awaits a print: no form is booked for it" for c in certificates
                        if c.needs_print]  # fmt: skip
            if problems:
                raise Conflict("; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20
                                                             else ""), field="certificates")  # fmt: skip
            stocks: dict[UUID, BlankStock] = {}
            returned.clear()
            for c in certificates:
                if c.institution_id not in stocks:
                    stocks[c.institution_id] = self._stock(c.institution_id)
                form = c.printed_forms[-1]
                c.print_not_made(actor, form, reason)
                if form not in stocks[c.institution_id].used:  # loaded after another worker returned or spoiled it
                    raise Conflict(f"certificate {c.number}'s form NO. {form:08d} was just changed by someone else; "
                                   "look again and retry", field="certificates")  # fmt: skip
                stocks[c.institution_id].return_form(actor, form, c.number, reason)
                returned.append((c.number, form))
            jobs = []
            if job is not None and (batch := self.get(PrintJob, job, "print job")).open:
                batch.abandon(actor, reason)
                jobs.append(batch)
            return [*certificates, *stocks.values(), *jobs]

        returned: list[tuple[str, int]] = []
        self.retry(attempt)
        return returned

    def finish_print(self, actor: Actor, job: UUID) -> None:
        """A batch's PDF was made: its job is closed, unless it was abandoned meanwhile (Conflict: its forms are back
        in stock and the PDF must not be used)."""

        def attempt() -> list[Aggregate]:
            batch = self.get(PrintJob, job, "print job")
            batch.finish(actor)
            return [batch]

        self.retry(attempt)

    def abandon_print(self, job: UUID, reason: str) -> list[tuple[str, int]]:
        """A print job whose process died before its PDF was made: each of its forms that still holds its
        certificate's current print goes back to stock, the certificate awaiting a print again, and the job is
        closed; all in one transaction. A form staff have since recorded spoiled or not made, or whose certificate
        was handed over, is left as it is. Answers (certificate number, form) for each form given back."""
        returned: list[tuple[str, int]] = []

        def attempt() -> list[Aggregate]:
            returned.clear()
            batch = self.get(PrintJob, job, "print job")
            if not batch.open:
                return []
            found = self.get_many(c for c, _ in batch.prints)
            certificates: list[Certificate] = []
            stocks: dict[UUID, BlankStock] = {}
            for cid, form in batch.prints:
                c = found.get(cid)
                if not isinstance(c, Certificate) or c.needs_print or c.printed_forms[-1] != form or c.handed_over:
                    continue
                if c.institution_id not in stocks:
                    stocks[c.institution_id] = self._stock(c.institution_id)
                if form not in stocks[c.institution_id].used:
                    continue
                c.print_not_made(LEASE_SWEEPER, form, reason)
                stocks[c.institution_id].return_form(LEASE_SWEEPER, form, c.number, reason)
                certificates.append(c)
                returned.append((c.number, form))
            batch.abandon(LEASE_SWEEPER, reason)
            return [*certificates, *stocks.values(), batch]

        self.retry(attempt)
        return returned

    def _stock(self, institution_id: UUID) -> BlankStock:
        try:  # one load, not a look first (`in self.repository` loads the whole stock too)
            return self.get(BlankStock, stock_id(institution_id), "blank stock")
        except NotFound:
            raise Conflict("the institution has no blank stock; receive forms first") from None

    def spoil_print(self, actor: Actor, certificate_id: UUID, form_serial: int, reason: str) -> None:
        """Record a spoiled print: the certificate and the stock change in one transaction. Print
        the certificate again afterwards; it takes the next form."""

        def attempt() -> list[Aggregate]:
            c = self.certificate(certificate_id)
            stock = self.get(BlankStock, stock_id(c.institution_id), "blank stock")
            c.spoil_print(actor, form_serial, reason)
            stock.spoil_print(actor, form_serial, c.number, reason)
            return [c, stock]

        self.retry(attempt)

    def _on_certificate(self, certificate_id: UUID, act: Callable[[Certificate], R]) -> R:
        return self.change(Certificate, certificate_id, "certificate", act)

    def hand_over(
        self,
        actor: Actor,
        certificate_id: UUID,
        delivery: Delivery,
        application_form: Attachment,
        tracking_number: str | None = None,
        id_number: str | None = None,
    ) -> None:
        with self.evaluating(self._institution(certificate_id), "hand certificates over"):
            self._on_certificate(certificate_id, lambda c: c.hand_over(actor, delivery, self.today(),
                                                                       application_form, tracking_number, id_number))  # fmt: skip

    def sign_receipt(self, actor: Actor, certificate_id: UUID, signed_by: str) -> None:
        self._on_certificate(certificate_id, lambda c: c.sign_receipt(actor, self.today(), signed_by))

    # Loss or damage.
    def apply_for_proof(
        self,
        actor: Actor,
        certificate_id: UUID,
        kind: LossKind,
        application_form: Attachment,
        id_number: str | None = None,
        id_document: IdDocument | None = None,
        id_copy: Attachment | None = None,
    ) -> str:
        """Returns the acceptance receipt's number."""
        return self._on_certificate(
            certificate_id,
            lambda c: c.apply_for_proof(actor, kind, application_form, self.today(), id_number, id_document, id_copy),
        )

    def hand_over_proof(self, actor: Actor, certificate_id: UUID, receipt_number: str, id_number: str) -> str:
        with self.evaluating(self._institution(certificate_id), "hand proofs over"):
            return self._on_certificate(
                certificate_id, lambda c: c.hand_over_proof(actor, receipt_number, id_number, self.today())
            )

    def issue_proof(self, actor: Actor, certificate_id: UUID) -> str:
        with self.evaluating(self._institution(certificate_id), "issue proofs"):
            return self._on_certificate(certificate_id, lambda c: c.issue_proof(actor, self.today()))

    # Correction and deletion.
    def apply_for_correction(
        self, actor: Actor, certificate_id: UUID, correction: Correction, reasons: str, evidence: Attachment
    ) -> None:
        if correction.name and (why := unprintable(correction.name)):  # approved, it could never be printed again
            raise InvalidInput([("correction.name", why)])

        def attempt() -> list[Aggregate]:
            c = self.certificate(certificate_id)  # a concurrent application is seen on retry and refused
            c.apply_for_correction(actor, correction, reasons, evidence, self.today())
            return [c]

        self.retry(attempt)

    def check_correction(
        self, actor: Actor, certificate_id: UUID, queryable_nationally: bool, work_order: str | None = None
    ) -> None:
        self._on_certificate(
            certificate_id, lambda c: c.check_correction(actor, queryable_nationally, work_order, self.today())
        )

    def approve_correction(self, actor: Actor, certificate_id: UUID) -> None:
        self._on_certificate(certificate_id, lambda c: c.approve_correction(actor, self.today()))

    def reject_correction(self, actor: Actor, certificate_id: UUID, reasons: str) -> None:
        self._on_certificate(certificate_id, lambda c: c.reject_correction(actor, reasons))

    def record_holder_commitment(self, actor: Actor, certificate_id: UUID, document: Attachment) -> None:
        self._on_certificate(certificate_id, lambda c: c.record_holder_commitment(actor, document))

    def check_deletion(
        self, actor: Actor, certificate_id: UUID, queryable_nationally: bool, work_order: str | None = None
    ) -> None:
        self._on_certificate(
            certificate_id, lambda c: c.check_deletion(actor, queryable_nationally, work_order, self.today())
        )

    def attach_photo(self, actor: Actor, certificate_id: UUID, photo: Attachment) -> None:
        self._on_certificate(certificate_id, lambda c: c.attach_photo(actor, photo))

    def delete_data(self, actor: Actor, certificate_id: UUID, reasons: str) -> None:
        """The data goes, and with it every file the certificate and its registration referred to that
        nothing else refers to (their keys erased: the blobs are unreadable wherever they were copied)."""
        self._on_certificate(certificate_id, lambda c: c.delete_data(actor, reasons))
        self.erased_with_data(certificate_id)

    def erased_with_data(self, certificate_id: UUID) -> bool:
        """Whether this certificate's data was deleted; if so, its files and its registration's are
        erased (again: idempotent, so a crash between the deletion and the erasure is made good here).
        The holder's signed commitment stays: it is the institution's proof of the holder's consent."""
        try:
            c = self.repository.get(certificate_id)
        except AggregateNotFoundError:
            return False
        if not isinstance(c, Certificate) or c.data_status is not DataStatus.DELETED:
            return False
        keep = (c.commitment.sha256,) if c.commitment else ()
        self.attachments.erase_for([c.id, c.registration_id], f"data of certificate {c.number} deleted", keep)
        return True

    # Blank stock (004 §1-7).
    def stock(self, institution_id: UUID) -> BlankStock:
        return self.get(BlankStock, stock_id(institution_id), "blank stock")

    def books(self, institution_id: UUID) -> Books:
        return self.stock(institution_id).books

    def _on_stock(
        self,
        actor: Actor,
        institution_id: UUID,
        act: Callable[[BlankStock], R],
        also: Callable[[], list[Aggregate]] = list,
    ) -> R:
        """Apply a command to the institution's stock, opening it on first use; `also`, the aggregates saved with it."""
        self.get(Institution, institution_id, "institution")
        result: list[R] = []

        def attempt() -> list[Aggregate]:
            try:  # one load, not a look first
                stock = self.get(BlankStock, stock_id(institution_id), "blank stock")
            except NotFound:
                stock = BlankStock.open(actor, institution_id)
            result[:] = [act(stock)]
            return [stock, *also()]

        self.retry(attempt)
        return result[0]

    def file_demand(self, actor: Actor, institution_id: UUID, year: int, per_level: dict[Level, int]) -> None:
        self._on_stock(actor, institution_id, lambda s: s.file_demand(actor, year, per_level, self.today()))

    def receive_forms(self, actor: Actor, institution_id: UUID, first: int, last: int, delivery_note: str) -> None:
        """A delivery into the stock, with the blocks of serials it falls in (domain.stock.FormBlock), all in one
        transaction: no other institution received any of its forms, and none can at the same time."""

        def claimed() -> list[Aggregate]:
            blocks: list[Aggregate] = []
            for serial in range(first - first % BLOCK, last + 1, BLOCK):  # one or two blocks
                try:
                    block = self.get(FormBlock, block_of(serial), "form block")
                except NotFound:
                    block = FormBlock.open(actor, serial)
                block.claim(actor, institution_id, first, last)
                blocks.append(block)
            return blocks

        self._on_stock(actor, institution_id, lambda s: s.receive(actor, first, last, delivery_note), claimed)

    def spoil_form(self, actor: Actor, institution_id: UUID, serial: int, reason: str) -> None:
        self._on_stock(actor, institution_id, lambda s: s.spoil(actor, serial, reason))

    def destroy_forms(self, actor: Actor, institution_id: UUID, serials: list[int], witness: str) -> None:
        self._on_stock(actor, institution_id, lambda s: s.destroy(actor, serials, witness, self.today()))

    def take_stock(self, actor: Actor, institution_id: UUID, period: str, counted: int, note: str = "") -> int:
        return self._on_stock(actor, institution_id, lambda s: s.take_stock(actor, period, counted, self.today(), note))
