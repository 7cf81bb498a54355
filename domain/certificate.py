"""Certificates: numbering, issuance, data reporting, the printed document, loss proofs,
corrections and deletion (000, 004 §3 and §11-14; DESIGN.md steps 8-13)."""

from __future__ import annotations

import unicodedata
from datetime import date
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field, field_validator
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumError

from domain import text
from domain.access import ASSOCIATION, CENTRE, HR, STAFF, require, require_region
from domain.certnumber import MAX_SERIAL, format_number
from domain.deadlines import Deadline, Step, deadline
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.institution import DeadlineProfile
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Role, Snapshot
from domain.personal import Personal, personal
from domain.registration import Attachment, AttachmentKind, Gender, Holder, IdType
from domain.text import name_problem


def counter_id(institution_id: UUID, year: int, level: Level) -> UUID:
    return uuid5(NAMESPACE_URL, f"skillcert:serials:{institution_id}:{year}:{int(level)}")


class SerialCounter(Aggregate):
    """Hands out certificate serials per institution, year and level. Saved in the same
    transaction as the certificates that use them, so serials have no gap and no repeat."""

    class Opened(Aggregate.Created):
        actor: Actor
        institution_id: UUID
        prefix: str
        year: int
        level: Level

    class Allocated(Aggregate.Event):
        first: int
        count: int

    @event(Opened)
    def __init__(self, actor: Actor, institution_id: UUID, prefix: str, year: int, level: Level) -> None:
        self.institution_id = institution_id
        self.prefix = prefix
        self.year = year
        self.level = level
        self.last = 0

    Snapshot = Snapshot  # a counter allocates for ever: loaded from its latest snapshot

    def snapshot_state(self) -> dict[str, Any]:
        return {"institution_id": str(self.institution_id), "prefix": self.prefix, "year": self.year,
                "level": int(self.level), "last": self.last}  # fmt: skip

    @staticmethod
    def restore_state(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "institution_id": UUID(state["institution_id"]), "level": Level(state["level"])}

    @classmethod
    def open(cls, actor: Actor, institution_id: UUID, prefix: str, year: int, level: Level) -> SerialCounter:
        return cls._create(
            cls.Opened,
            id=counter_id(institution_id, year, level),
            actor=actor,
            institution_id=institution_id,
            prefix=prefix,
            year=year,
            level=level,
        )

    def allocate(self, actor: Actor, count: int) -> list[str]:
        if count < 1:  # none or fewer would move the counter back, and hand out serials again (004 §3: 依次顺序取值)
            raise InvalidInput([("count", f"allocate one serial or more, not {count}")])
        if self.last + count > MAX_SERIAL:
            raise Conflict(f"level {int(self.level)} serials for {self.year} are used up at {self.last}")
        first = self.last + 1
        self._allocated(actor, first, count)
        return [format_number(self.prefix, self.year, self.level, s) for s in range(first, first + count)]

    @event(Allocated)
    def _allocated(self, actor: Actor, first: int, count: int) -> None:
        self.last = first + count - 1


@lru_cache(maxsize=1 << 14)  # issuance asks twice per certificate: the service, for racing issuers, and issue()
def certificate_id(registration_id: UUID) -> UUID:
    # One certificate per registration: issuing twice collides in the event store.
    return uuid5(NAMESPACE_URL, f"skillcert:certificate:{registration_id}")


class DataStatus(StrEnum):
    UNREPORTED = "unreported"
    REPORTED = "reported"  # to the provincial centre
    RETURNED = "returned"  # with reasons, to be corrected and re-reported
    ACCEPTED = "accepted"  # forwarded to the ministry centre
    QUERYABLE = "queryable"  # on the national query platform
    DELETED = "deleted"


class Delivery(StrEnum):
    PICKUP = "pickup"  # signed application form and ID card at the institution
    MAIL = "mail"  # to the application form's address, signed for


class IdDocument(StrEnum):
    """How the holder's identity was checked when they applied for or collected a proof."""

    ORIGINAL_SEEN = "original_seen"  # 身份证原件 shown to staff (004 §13 (二), (三))
    COPY_RECEIVED = "copy_received"  # 身份证复印件 handed in with the application (000)


class LossKind(StrEnum):
    LOST = "lost"
    DAMAGED = "damaged"


class Correction(Immutable):
    """Only name, gender and ID number can be corrected, all in one application (000, 004 §14)."""

    name: str | None = Field(None, min_length=1, max_length=50, json_schema_extra=personal(Personal.IDENTITY))
    gender: Gender | None = Field(None, json_schema_extra=personal(Personal.IDENTITY))
    id_number: str | None = Field(None, json_schema_extra=personal(Personal.ID_NUMBER))

    @field_validator("id_number")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return text.id_number(v) if v else v


class Certificate(Aggregate):
    class Issued(Aggregate.Created):
        actor: Actor
        number: str
        registration_id: UUID
        exam_id: UUID
        institution_id: UUID
        institution_name: str
        profile: DeadlineProfile
        holder: Holder
        occupation: str
        job: str | None
        level: Level
        issued_on: date
        numbering_late: bool
        data_report: Deadline
        queryable: Deadline

    class DataReported(Aggregate.Event):
        attempt: int
        reported_on: date
        late: bool
        centre_review: Deadline | None = Field(None, description="the provincial centre's 30 working days")

    class DataAccepted(Aggregate.Event):
        on: date | None = Field(None, description="accepted and forwarded to the ministry centre on")
        ministry: Deadline | None = Field(None, description="the ministry centre's 15 working days to queryable")

    class DataReturned(Aggregate.Event):
        reasons: str
        correction: Deadline
        returned_on: date | None = None

    class MadeQueryable(Aggregate.Event):
        on: date
        late: bool
        physical: Deadline  # physical certificate due

    class Printed(Aggregate.Event):
        form_serial: int
        holder: Holder

    class PrintSpoiled(Aggregate.Event):
        form_serial: int
        reason: str

    class PrintNotMade(Aggregate.Event):
        form_serial: int
        reason: str

    class HandedOver(Aggregate.Event):
        delivery: Delivery
        on: date
        late: bool
        tracking_number: str | None
        application_form: Attachment
        # Collected in person: the holder's original ID card was seen (000: 凭身份证到社评组织领取). None when mailed,
        # and on hand-overs recorded before it was checked.
        id_checked: IdDocument | None = None

    class ReceiptSigned(Aggregate.Event):
        on: date
        signed_by: str = Field(json_schema_extra=personal(Personal.IDENTITY))

    class ProofApplied(Aggregate.Event):
        kind: LossKind
        application_form: Attachment
        applied_on: date
        proof: Deadline
        receipt_number: str | None = Field(
            None, description="the 受理回执's number: the holder collects the proof with it"
        )
        id_checked: IdDocument | None = Field(
            None, description="how the applicant's ID was checked against the holder's"
        )
        id_copy: Attachment | None = Field(None, description="the ID card copy handed in (profile S)")

    class ProofHandedOver(Aggregate.Event):
        proof_number: str
        receipt_number: str
        on: date
        id_checked: IdDocument = Field(description="004 §13 (三): the original ID card, with the receipt")

    class ProofIssued(Aggregate.Event):
        proof_number: str
        on: date
        late: bool

    class CorrectionApplied(Aggregate.Event):
        correction: Correction
        reasons: str
        evidence: Attachment
        applied_on: date

    class CorrectionChecked(Aggregate.Event):
        """Profile S (000 二3): the association checked whether the certificate's data is queryable on
        the national network; for data that is not, it files a work order for the skills centre."""

        queryable_nationally: bool
        work_order: str | None = Field(
            None, max_length=40, description="技能等级认定需求工单 number, when not queryable"
        )
        checked_on: date

    class CorrectionApproved(Aggregate.Event):
        holder: Holder  # as corrected
        report: Deadline  # re-reported within the new-certificate reporting deadline (000 二4)

    class CorrectionRejected(Aggregate.Event):
        reasons: str

    class HolderCommitmentRecorded(Aggregate.Event):
        document: Attachment

    class DeletionChecked(Aggregate.Event):
        """Profile S (000 二3): before a certificate's data is deleted, the association checked whether it is
        queryable on the national network; data that is not goes to the skills centre on a work order."""

        queryable_nationally: bool
        work_order: str | None = Field(
            None, max_length=40, description="技能等级认定需求工单 number, when not queryable"
        )
        checked_on: date

    class DataDeleted(Aggregate.Event):
        reasons: str

    class Revoked(Aggregate.Event):
        """收回并注销: the holder's declaration was found false (001 承诺: 已获得证书则被收回、注销证书数据检索及注销
        证书资格), or the centre declared the certificate void, its institution having issued it improperly (004 第十条:
        宣布其所发证书无效). The certificate is void from `revoked_on`; its number is never given again. What was found is kept
        as background, not published on the certificates topic, which any authorised subscriber reads: they learn that
        the certificate is void, not why (the registration's disqualification, on the restricted topic, says why)."""

        finding: str = Field(json_schema_extra=personal(Personal.BACKGROUND))
        revoked_on: date
        exam_id: UUID  # the session whose results it was issued on

    class PhotoAttached(Aggregate.Event):
        photo: Attachment

    class ElectronicIssued(Aggregate.Event):
        """The electronic certificate (004 §11.1(7)): the signed PDF, by its hash, and the institution's
        signing certificate that signed it. A correction or a data deletion supersedes it."""

        document: Attachment
        signer_serial: str = Field(pattern=r"^[0-9a-f]{1,40}$")

    @event(Issued)
    def __init__(
        self,
        actor: Actor,
        number: str,
        registration_id: UUID,
        exam_id: UUID,
        institution_id: UUID,
        institution_name: str,
        profile: DeadlineProfile,
        holder: Holder,
        occupation: str,
        job: str | None,
        level: Level,
        issued_on: date,
        numbering_late: bool,
        data_report: Deadline,
        queryable: Deadline,
    ) -> None:
        self.number = number
        self.registration_id = registration_id
        self.exam_id = exam_id
        self.institution_id = institution_id
        self.institution_name = institution_name
        self.occupation = occupation
        self.job = job
        self.profile = profile
        self.holder = holder
        self.level = level
        self.issued_on = issued_on
        self.data_report = data_report
        self.queryable = queryable
        self.data_status = DataStatus.UNREPORTED
        self.report_attempts = 0
        self.correction_due: Deadline | None = None  # after the centre returned the data
        self.physical: Deadline | None = None
        self.ever_queryable = False
        self.printed_forms: list[int] = []
        self.needs_print = True
        self.printed_holder: Holder | None = None
        self.handed_over: Delivery | None = None
        self.receipt_signed = False
        self.open_proof: Deadline | None = None
        self.proofs: list[str] = []
        self.receipts: list[str] = []  # each proof application's acceptance receipt, in order
        self.receipt_details: dict[str, tuple[LossKind, date, Deadline]] = {}  # receipt -> kind, applied, due
        self.proof_receipts: dict[str, str] = {}  # proof number -> the receipt it is collected with
        self.proofs_handed_over: set[str] = set()
        self.proof_dates: dict[str, date] = {}
        self.correction: Correction | None = None
        self.correction_checked = False  # profile S: by the association, before the centre decides
        self.deletion_checked = False  # profile S: by the association, before the data is deleted
        self.correction_decided = False
        self.commitment: Attachment | None = None
        self.photo: Attachment | None = None  # the holder's, printed at the photo's place
        self.electronic: Attachment | None = None  # the current electronic certificate, if one was issued
        self.electronic_signer: str | None = None  # the signing key's serial
        self.electronic_issued: list[str] = []  # every file ever issued (sha256): a superseded one is one of them
        self.revoked: date | None = None

    @classmethod
    def issue(
        cls,
        actor: Actor,
        number: str,
        registration_id: UUID,
        exam_id: UUID,
        institution_id: UUID,
        institution_name: str,
        profile: DeadlineProfile,
        holder: Holder,
        occupation: str,
        job: str | None,
        level: Level,
        today: date,
        numbering: Deadline | None,
    ) -> Certificate:
        require(actor, STAFF, "issue certificates", institution_id)
        return cls._create(
            cls.Issued,
            id=certificate_id(registration_id),
            actor=actor,
            number=number,
            registration_id=registration_id,
            exam_id=exam_id,
            institution_id=institution_id,
            institution_name=institution_name,
            profile=profile,
            holder=holder,
            occupation=occupation,
            job=job,
            level=level,
            issued_on=today,
            numbering_late=numbering is not None and numbering.missed_by(today),
            # the issue date is the day the number is generated (000)
            data_report=deadline(profile, Step.DATA_REPORTED, today),
            queryable=deadline(profile, Step.QUERYABLE, today),
        )

    @property
    def printable(self) -> bool:
        """Neither its data deleted nor revoked: what a batch of prints takes (print() says why not, for one)."""
        return self.data_status is not DataStatus.DELETED and self.revoked is None

    def _live(self) -> None:
        if self.data_status is DataStatus.DELETED:
            raise Conflict(f"certificate {self.number}'s data was deleted")
        if self.revoked is not None:
            raise Conflict(f"certificate {self.number} was revoked on {self.revoked}")

    def revoke(self, actor: Actor, reasons: str, today: date) -> None:
        """Called with the registration's disqualification (Registration.disqualify), in its transaction, or as the
        centre declares an institution's certificates void (Certificates.invalidate, 004 第十条)."""
        require(actor, STAFF + CENTRE, "revoke certificates", self.institution_id)
        self._live()
        if not reasons.strip():
            raise InvalidInput([("reasons", "say why the certificate is revoked")])
        self._revoked(actor, reasons.strip(), today, self.exam_id)

    @event(Revoked)
    def _revoked(self, actor: Actor, finding: str, revoked_on: date, exam_id: UUID) -> None:
        self.revoked = revoked_on
        self.electronic = None

    # Data reporting (000): institution -> provincial centre -> ministry centre -> national query.
    def report_data(self, actor: Actor, today: date) -> None:
        require(actor, STAFF, "report certificate data", self.institution_id)
        self._live()
        if self.data_status not in (DataStatus.UNREPORTED, DataStatus.RETURNED):
            raise Conflict(f"certificate {self.number}'s data is {self.data_status.value}; nothing to report")
        due = self.correction_due or self.data_report
        centre = deadline(self.profile, Step.CENTRE_REVIEWED, today)
        self._data_reported(actor, self.report_attempts + 1, today, due.missed_by(today), centre)

    @event(DataReported)
    def _data_reported(
        self, actor: Actor, attempt: int, reported_on: date, late: bool, centre_review: Deadline | None = None
    ) -> None:
        self.report_attempts = attempt
        self.data_status = DataStatus.REPORTED
        self.correction_due = None

    def accept_data(self, actor: Actor, today: date) -> None:
        require(actor, CENTRE, "accept certificate data")
        self._awaiting_centre()
        self._data_accepted(actor, today, deadline(self.profile, Step.MINISTRY_QUERYABLE, today))

    def _awaiting_centre(self) -> None:
        self._live()
        if self.data_status is not DataStatus.REPORTED:
            raise Conflict(f"certificate {self.number}'s data is {self.data_status.value}, not reported")

    @event(DataAccepted)
    def _data_accepted(self, actor: Actor, on: date | None = None, ministry: Deadline | None = None) -> None:
        self.data_status = DataStatus.ACCEPTED

    def return_data(self, actor: Actor, reasons: str, today: date) -> None:
        require(actor, CENTRE, "return certificate data")
        self._awaiting_centre()
        if not reasons.strip():
            raise InvalidInput([("reasons", "say what the institution must correct")])
        correction = deadline(self.profile, Step.RETURNED_DATA_CORRECTED, today)
        self._data_returned(actor, reasons.strip(), correction, today)

    @event(DataReturned)
    def _data_returned(self, actor: Actor, reasons: str, correction: Deadline, returned_on: date | None = None) -> None:
        self.data_status = DataStatus.RETURNED
        self.correction_due = correction

    def make_queryable(self, actor: Actor, today: date) -> None:
        require(actor, CENTRE, "record national queryability")
        self._live()
        if self.data_status is not DataStatus.ACCEPTED:
            raise Conflict(f"certificate {self.number}'s data is {self.data_status.value}, not accepted")
        late = self.queryable.missed_by(today)
        self._made_queryable(actor, today, late, deadline(self.profile, Step.PHYSICAL_CERTIFICATE, today))

    @event(MadeQueryable)
    def _made_queryable(self, actor: Actor, on: date, late: bool, physical: Deadline) -> None:
        self.data_status = DataStatus.QUERYABLE
        self.ever_queryable = True
        self.physical = physical

    # The physical certificate (000 / 004 §12).
    def print(self, actor: Actor, form_serial: int) -> None:
        """Record a good print on a blank form; the stock books the form in the same transaction."""
        require(actor, STAFF, "print certificates", self.institution_id)
        self._live()
        if not self.needs_print:
            raise Conflict(
                f"certificate {self.number} is already printed on form NO. {self.printed_forms[-1]:08d}; "
                "certificates are not reissued (a lost one gets a certificate proof)"
            )
        if not self.ever_queryable:
            raise Conflict(f"certificate {self.number} is printed once its data is queryable nationally")
        if self.photo is None:
            raise Conflict(
                f"certificate {self.number} has no holder photo: attach one (PUT /certificates/{{id}}/photo) "
                "before printing (004 §11.2(1))"
            )
        if self.printed_forms and self.data_status in (DataStatus.UNREPORTED, DataStatus.RETURNED):
            raise Conflict(f"certificate {self.number} is reprinted after its corrected data is re-reported")
        self._printed(actor, form_serial, self.holder)

    @event(Printed)
    def _printed(self, actor: Actor, form_serial: int, holder: Holder) -> None:
        self.printed_forms.append(form_serial)
        self.printed_holder = holder
        self.needs_print = False
        self.handed_over = None
        self.receipt_signed = False

    def spoil_print(self, actor: Actor, form_serial: int, reason: str) -> None:
        """The print on this form came out spoiled (a jam, a misfeed): the certificate is printed
        again on another form; the spoiled one goes to the stock's spoiled forms."""
        self._take_back_print(actor, "record spoiled prints", form_serial, reason, "say how the print was spoiled",
                              "a lost or damaged one gets a proof")  # fmt: skip
        self._print_spoiled(actor, form_serial, reason.strip())

    @event(PrintSpoiled)
    def _print_spoiled(self, actor: Actor, form_serial: int, reason: str) -> None:
        self.needs_print = True

    def print_not_made(self, actor: Actor, form_serial: int, reason: str) -> None:
        """The print booked on this form never came out (the PDF was lost on its way, the job was cancelled before the
        form was fed): the form is blank and goes back to stock (BlankStock.return_form), and the certificate awaits a
        print as if it had not been booked. A spoiled print (spoil_print) is one that came out wrong."""
        self._take_back_print(actor, "record prints not made", form_serial, reason, "say why the print was not made",
                              "so its print was made")  # fmt: skip
        self._print_not_made(actor, form_serial, reason.strip())

    def _take_back_print(self, actor: Actor, act: str, form_serial: int, reason: str, say: str, handed: str) -> None:
        """What a spoiled print and a print not made both need: the form holds the current print, not handed over."""
        require(actor, STAFF, act, self.institution_id)
        if not reason.strip():
            raise InvalidInput([("reason", say)])
        if self.needs_print or not self.printed_forms or self.printed_forms[-1] != form_serial:
            raise Conflict(f"form NO. {form_serial:08d} does not hold certificate {self.number}'s current print",
                           field="form_serial")  # fmt: skip
        if self.handed_over is not None:
            raise Conflict(f"certificate {self.number} was handed over; {handed}")

    @event(PrintNotMade)
    def _print_not_made(self, actor: Actor, form_serial: int, reason: str) -> None:
        self.printed_forms.pop()
        self.needs_print = True

    def hand_over(
        self,
        actor: Actor,
        delivery: Delivery,
        today: date,
        application_form: Attachment,
        tracking_number: str | None = None,
        id_number: str | None = None,
    ) -> None:
        """Collected at the institution with the holder's ID card (000: 凭身份证到社评组织领取), its number checked
        against the holder's; or mailed, to be signed for by the holder (sign_receipt)."""
        require(actor, STAFF, "hand over certificates", self.institution_id)
        self._live()
        if self.needs_print or not self.printed_forms:
            raise Conflict(f"certificate {self.number} has no current print to hand over")
        if self.handed_over is not None:
            raise Conflict(f"certificate {self.number} was already handed over ({self.handed_over.value})")
        problems = []
        if application_form.kind is not AttachmentKind.CERTIFICATE_APPLICATION:
            problems.append(("application_form", "must be the signed certificate application form (证书申领表)"))
        if delivery is Delivery.MAIL and not (tracking_number or "").strip():
            problems.append(("tracking_number", "is required when the certificate is mailed"))
        if delivery is Delivery.PICKUP and tracking_number:
            problems.append(("tracking_number", "only for mailed certificates"))
        if delivery is Delivery.PICKUP:
            problems += self._id_problems(id_number, IdDocument.ORIGINAL_SEEN)
        elif id_number:
            problems.append(("id_number", "only for certificates collected in person; a mailed one is signed for"))
        if problems:
            raise InvalidInput(problems)
        # Against the physical deadline as it stands: from the last time the data became queryable (again, after a
        # correction: 000 二4), however many prints were spoiled on the way.
        late = self.physical.missed_by(today) if self.physical else False
        self._handed_over(actor, delivery, today, late, tracking_number.strip() if tracking_number else None,
                          application_form, IdDocument.ORIGINAL_SEEN if delivery is Delivery.PICKUP else None)  # fmt: skip

    @event(HandedOver)
    def _handed_over(
        self,
        actor: Actor,
        delivery: Delivery,
        on: date,
        late: bool,
        tracking_number: str | None,
        application_form: Attachment,
        id_checked: IdDocument | None = None,
    ) -> None:
        self.handed_over = delivery
        self.receipt_signed = delivery is Delivery.PICKUP  # signed at the counter

    def sign_receipt(self, actor: Actor, today: date, signed_by: str) -> None:
        require(actor, STAFF, "record delivery receipts", self.institution_id)
        if self.handed_over is not Delivery.MAIL or self.receipt_signed:
            raise Conflict(f"certificate {self.number} has no mailed delivery awaiting a signature")
        if not signed_by.strip():
            raise InvalidInput([("signed_by", "who signed for the delivery")])
        # 000 (physical certificate): mailed to the application form's address "并本人签收", signed for by
        # the holder in person. The seeds allow no one else, with or without an authorisation.
        if unicodedata.normalize("NFC", signed_by.strip()) != unicodedata.normalize("NFC", self.holder.name):
            raise InvalidInput([("signed_by", f"a mailed certificate is signed for by its holder {self.holder.name} in "
                                              f"person (000: 本人签收), not by {signed_by.strip()}")])  # fmt: skip
        self._receipt_signed(actor, today, signed_by.strip())

    @event(ReceiptSigned)
    def _receipt_signed(self, actor: Actor, on: date, signed_by: str) -> None:
        self.receipt_signed = True

    # Loss or damage (000, 004 §13): no reissue; a certificate proof with its own number.
    def apply_for_proof(
        self,
        actor: Actor,
        kind: LossKind,
        application_form: Attachment,
        today: date,
        id_number: str | None = None,
        id_document: IdDocument | None = None,
        id_copy: Attachment | None = None,
    ) -> str:
        """Accept a proof application after checking the applicant's ID against the holder's; returns
        the number of the acceptance receipt (受理回执) against which the proof is collected.
        004 §13 (profile T): the original ID card is shown. 000 (profile S): a copy is handed in."""
        require(actor, STAFF, "accept proof applications", self.institution_id)
        self._live()
        if self.open_proof is not None:
            raise Conflict(f"a proof application for certificate {self.number} is already being handled")
        if self.handed_over is None:
            # 000 一1-3: a proof stands in for a certificate its holder lost or damaged, checked with the national query
            # platform's record (004 annex 4); one never handed over was neither lost nor damaged by its holder.
            raise Conflict(f"certificate {self.number} was never handed to its holder: a proof is for a certificate "
                           "the holder lost or damaged; hand this one over (or record a spoiled print)")  # fmt: skip
        problems = []
        if application_form.kind is not AttachmentKind.PROOF_APPLICATION:
            problems.append(("application_form", "must be the signed loss/damage proof application (annex 3)"))
        problems += self._id_problems(id_number, id_document)
        if self.profile is DeadlineProfile.T and id_document is not IdDocument.ORIGINAL_SEEN:
            problems.append(("id_document", "the applicant shows the original ID card (004 §13 (二)): original_seen"))
        if self.profile is DeadlineProfile.S:
            if id_document is not IdDocument.COPY_RECEIVED:
                problems.append(("id_document", "the applicant hands in a copy of the ID card (000): copy_received"))
            if id_copy is None or id_copy.kind is not AttachmentKind.ID_CARD_COPY:
                problems.append(("id_copy", "the ID card copy handed in with the application (000: 身份证复印件 1 份)"))
        if problems:
            raise InvalidInput(problems)
        receipt = f"{self.number}-R{len(self.receipts) + 1:02d}"
        proof = deadline(self.profile, Step.LOSS_PROOF, today)
        self._proof_applied(actor, kind, application_form, today, proof, receipt, id_document, id_copy)
        return receipt

    def _id_problems(self, id_number: str | None, id_document: IdDocument | None) -> list[tuple[str, str]]:
        if not id_number or not id_number.strip():
            return [("id_number", "the number on the ID card presented, checked against the holder's")]
        if text.id_number(id_number) != self.holder.id_number:
            return [("id_number", "the ID card presented is not the holder's: the numbers differ")]
        if id_document is None:
            return [("id_document", "how the ID was checked: original_seen or copy_received")]
        return []

    @event(ProofApplied)
    def _proof_applied(
        self,
        actor: Actor,
        kind: LossKind,
        application_form: Attachment,
        applied_on: date,
        proof: Deadline,
        receipt_number: str | None = None,
        id_checked: IdDocument | None = None,
        id_copy: Attachment | None = None,
    ) -> None:
        self.open_proof = proof
        if receipt_number is not None:
            self.receipts.append(receipt_number)
            self.receipt_details[receipt_number] = (kind, applied_on, proof)

    def issue_proof(self, actor: Actor, today: date) -> str:
        require(actor, STAFF, "issue certificate proofs", self.institution_id)
        self._live()
        if self.open_proof is None:
            raise Conflict(f"no proof application for certificate {self.number} awaits a proof")
        number = f"{self.number}-Z{len(self.proofs) + 1:02d}"
        self._proof_issued(actor, number, today, self.open_proof.missed_by(today))
        return number

    def hand_over_proof(self, actor: Actor, receipt_number: str, id_number: str, today: date) -> str:
        """The holder collects the proof with the original ID card and the acceptance receipt
        (004 §13 (三)); returns the proof's number."""
        require(actor, STAFF, "hand over certificate proofs", self.institution_id)
        self._live()
        proof = next((p for p, r in self.proof_receipts.items() if r == receipt_number.strip()), None)
        if proof is None:
            raise InvalidInput([("receipt_number", f"no proof of certificate {self.number} was issued against "
                                                   f"receipt {receipt_number.strip()}")])  # fmt: skip
        if proof in self.proofs_handed_over:
            raise Conflict(f"proof {proof} was already handed over")
        if problems := self._id_problems(id_number, IdDocument.ORIGINAL_SEEN):
            raise InvalidInput(problems)
        self._proof_handed_over(actor, proof, receipt_number.strip(), today, IdDocument.ORIGINAL_SEEN)
        return proof

    @event(ProofHandedOver)
    def _proof_handed_over(
        self, actor: Actor, proof_number: str, receipt_number: str, on: date, id_checked: IdDocument
    ) -> None:
        self.proofs_handed_over = self.proofs_handed_over | {proof_number}

    @event(ProofIssued)
    def _proof_issued(self, actor: Actor, proof_number: str, on: date, late: bool) -> None:
        if self.receipts:  # applications accepted before receipts were numbered have none
            self.proof_receipts[proof_number] = self.receipts[-1]
        self.proofs.append(proof_number)
        self.proof_dates[proof_number] = on
        self.open_proof = None

    # Correction (000, 004 §14).
    def apply_for_correction(
        self, actor: Actor, correction: Correction, reasons: str, evidence: Attachment, today: date
    ) -> None:
        require(actor, STAFF, "accept correction applications", self.institution_id)
        self._live()
        if self.correction is not None:
            raise Conflict(
                f"certificate {self.number} already had its one correction application; "
                "all fields go in that one application"
            )
        changed = {k: v for k, v in correction.model_dump(exclude_none=True).items() if getattr(self.holder, k) != v}
        problems = []
        if not changed:
            problems.append(
                ("correction", "give the corrected name, gender or ID number that differ from the certificate")
            )
        if not reasons.strip():
            problems.append(("reasons", "say what was wrong and why"))
        if "name" in changed and (why := name_problem(changed["name"])):
            problems.append(("correction.name", why))
        corrected = self.holder.model_copy(update=changed)
        if corrected.id_type is IdType.RESIDENT_ID and "id_number" in changed:
            try:
                ric.validate(corrected.id_number)
            except StdnumError as e:
                problems.append(("id_number", f"is not a valid resident ID number: {e}"))
        if corrected.id_type is IdType.RESIDENT_ID and not any(p[0] == "id_number" for p in problems):
            gender = Gender.MALE if int(corrected.id_number[16]) % 2 else Gender.FEMALE
            if gender is not corrected.gender:
                problems.append(("gender", f"does not match the ID number, which says {gender.value}"))
        if problems:
            raise InvalidInput(problems)
        self._correction_applied(actor, Correction(**changed), reasons.strip(), evidence, today)

    @event(CorrectionApplied)
    def _correction_applied(
        self, actor: Actor, correction: Correction, reasons: str, evidence: Attachment, applied_on: date
    ) -> None:
        self.correction = correction

    # Who decides a correction (DESIGN.md, seeds 000 二3 and 004 §14):
    # - profile T: the HR department where the institution is filed;
    # - profile S: first the association checks whether the data is queryable nationally (and files a
    #   work order when it is not), then the skills centre of the institution's region decides
    #   (属地管理: the provincial centre, or the city's).
    @property
    def filed_in(self) -> str:
        """The institution's filing region: positions 8-9 of the certificate number (004 table 2)."""
        return self.number[7:9]

    def check_correction(self, actor: Actor, queryable_nationally: bool, work_order: str | None, today: date) -> None:
        require(actor, ASSOCIATION, "check correction applications against the national network")
        self._live()
        if self.profile is not DeadlineProfile.S:
            raise Conflict(
                "the association's check belongs to profile S (000 二3); profile T goes to the HR department"
            )
        if self.correction is None or self.correction_decided or self.correction_checked:
            raise Conflict(f"no correction application for certificate {self.number} awaits the association's check")
        self._correction_checked(actor, queryable_nationally, work_order_for(queryable_nationally, work_order), today)

    @event(CorrectionChecked)
    def _correction_checked(
        self, actor: Actor, queryable_nationally: bool, work_order: str | None, checked_on: date
    ) -> None:
        self.correction_checked = True

    def _awaiting_decision(self, actor: Actor, what: str) -> None:
        if self.profile is DeadlineProfile.T:
            require(actor, HR, what)
            if actor.role is Role.HR_DEPARTMENT and actor.jurisdiction != self.filed_in:
                raise Forbidden(f"only the HR department where the institution is filed (region {self.filed_in}) may "
                                f"{what} for it; this one acts for {actor.jurisdiction or 'no region'}")  # fmt: skip
        else:
            require(actor, CENTRE, what)
            require_region(actor, self.filed_in, what)
        self._live()
        if self.correction is None or self.correction_decided:
            raise Conflict(f"no correction application for certificate {self.number} awaits a decision")
        if self.profile is DeadlineProfile.S and not self.correction_checked:
            raise Conflict(f"the association has not yet checked certificate {self.number} against the national "
                           "network (000 二3)")  # fmt: skip

    def approve_correction(self, actor: Actor, today: date) -> None:
        """Changes the certificate; its data is reported again (within the new-certificate reporting
        deadline, 000 二4: 办理期限按新证书申报时间为准) and it is printed on a new form."""
        self._awaiting_decision(actor, "approve corrections")
        assert self.correction is not None
        self._correction_approved(
            actor,
            self.holder.model_copy(update=self.correction.model_dump(exclude_none=True)),
            deadline(self.profile, Step.DATA_REPORTED, today),
        )

    @event(CorrectionApproved)
    def _correction_approved(self, actor: Actor, holder: Holder, report: Deadline) -> None:
        self.holder = holder
        self.correction_decided = True
        self.data_status = DataStatus.UNREPORTED
        self.correction_due = report
        self.needs_print = True
        self.electronic = None  # the file carries the old data: superseded, issued again once re-reported

    def reject_correction(self, actor: Actor, reasons: str) -> None:
        self._awaiting_decision(actor, "reject corrections")
        if not reasons.strip():
            raise InvalidInput([("reasons", "say why the correction is not approved")])
        self._correction_rejected(actor, reasons.strip())

    @event(CorrectionRejected)
    def _correction_rejected(self, actor: Actor, reasons: str) -> None:
        self.correction_decided = True

    # Deleting a certificate's data (000): the holder's signed commitment first; history stays.
    def record_holder_commitment(self, actor: Actor, document: Attachment) -> None:
        require(actor, STAFF, "record holder commitments", self.institution_id)
        self._live()
        if document.kind is not AttachmentKind.HOLDER_COMMITMENT:
            raise InvalidInput([("document", "must be the holder's signed commitment (证书持有人承诺书)")])
        self._commitment_recorded(actor, document)

    @event(HolderCommitmentRecorded)
    def _commitment_recorded(self, actor: Actor, document: Attachment) -> None:
        self.commitment = document

    def check_electronic_due(self, signer_serial: str) -> None:
        """One electronic certificate stands at a time: another is issued after a correction or under a new key."""
        if self.electronic is not None and self.electronic_signer == signer_serial:
            raise Conflict(f"certificate {self.number}'s electronic certificate stands as issued: download it (GET "
                           ".../electronic.pdf); a new one is issued after a correction or a revoked key")  # fmt: skip

    def issue_electronic(self, actor: Actor, document: Attachment, signer_serial: str) -> None:
        """The electronic certificate, as the paper one: once queryable nationally, with the holder's photo."""
        require(actor, STAFF, "issue electronic certificates", self.institution_id)
        self._live()
        self.check_electronic_due(signer_serial)
        if not self.ever_queryable or self.data_status in (DataStatus.UNREPORTED, DataStatus.RETURNED):
            raise Conflict(f"certificate {self.number} is issued electronically once its data is queryable nationally")
        if self.photo is None:
            raise Conflict(f"certificate {self.number} has no holder photo: attach one before issuing it")
        if document.kind is not AttachmentKind.ELECTRONIC_CERTIFICATE:
            raise InvalidInput([("document", "must be the signed electronic certificate")])
        self._electronic_issued(actor, document, signer_serial)

    @event(ElectronicIssued)
    def _electronic_issued(self, actor: Actor, document: Attachment, signer_serial: str) -> None:
        self.electronic = document
        self.electronic_signer = signer_serial
        self.electronic_issued.append(document.sha256)

    def attach_photo(self, actor: Actor, photo: Attachment) -> None:
        """The holder's recent colour photo on white (004 §11.2(1)); a later one replaces it for the
        next print (a corrected certificate is printed again)."""
        require(actor, STAFF, "attach holder photos", self.institution_id)
        self._live()
        if photo.kind is not AttachmentKind.PHOTO:
            raise InvalidInput([("photo", "must be a photo attachment (kind photo)")])
        if self.photo == photo:
            return
        self._photo_attached(actor, photo)

    @event(PhotoAttached)
    def _photo_attached(self, actor: Actor, photo: Attachment) -> None:
        self.photo = photo

    def check_deletion(self, actor: Actor, queryable_nationally: bool, work_order: str | None, today: date) -> None:
        """000 二3: "社评组织在监管系统中的数据修改、删除等，由协会先行核实证书数据是否已在国网可查": under profile S
        the association checks a deletion as it checks a correction, once the holder's commitment is in."""
        require(actor, ASSOCIATION, "check deletions against the national network")
        self._live()
        if self.profile is not DeadlineProfile.S:
            raise Conflict("the association's check belongs to profile S (000 二3)")
        if self.commitment is None:
            raise Conflict(f"no deletion of certificate {self.number}'s data is asked for: the holder's signed "
                           "commitment comes first")  # fmt: skip
        if self.deletion_checked:
            raise Conflict(f"the deletion of certificate {self.number}'s data was already checked")
        self._deletion_checked(actor, queryable_nationally, work_order_for(queryable_nationally, work_order), today)

    @event(DeletionChecked)
    def _deletion_checked(
        self, actor: Actor, queryable_nationally: bool, work_order: str | None, checked_on: date
    ) -> None:
        self.deletion_checked = True

    def delete_data(self, actor: Actor, reasons: str) -> None:
        require(actor, STAFF, "delete certificate data", self.institution_id)
        self._live()
        if self.commitment is None:
            raise Conflict(f"deleting certificate {self.number}'s data needs the holder's signed commitment first")
        if self.profile is DeadlineProfile.S and not self.deletion_checked:
            raise Conflict(f"the association has not yet checked the deletion of certificate {self.number}'s data "
                           "against the national network (000 二3)")  # fmt: skip
        if not reasons.strip():
            raise InvalidInput([("reasons", "say why the data is deleted")])
        self._data_deleted(actor, reasons.strip())

    @event(DataDeleted)
    def _data_deleted(self, actor: Actor, reasons: str) -> None:
        self.data_status = DataStatus.DELETED
        self.electronic = None


def work_order_for(queryable_nationally: bool, work_order: str | None) -> str | None:
    """The association's work order for the skills centre (技能等级认定需求工单), required where the data is not
    queryable nationally (000 二3): for a correction's check as for a deletion's."""
    work_order = (work_order or "").strip() or None
    if not queryable_nationally and work_order is None:
        raise InvalidInput([("work_order", "data not queryable nationally goes to the skills centre on a work order "
                                           "(技能等级认定需求工单): give its number")])  # fmt: skip
    return work_order
