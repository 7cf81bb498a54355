"""Drive candidates through the lifecycle with the real services, step by step, as an
institution would. Dates follow one exam on Friday 10 April 2026 (after Qingming)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from uuid import UUID

from domain.exam import ReviewOutcome, Room, Subject
from domain.levels import Level
from domain.model import Actor, Role
from infra.services.certificates import Certificates
from infra.services.exams import Exams
from infra.services.registrations import Decision, Registrations
from infra.services.samples import photo_attachment
from tests.builders import L2_CONDITION, L2_EVIDENCE, candidate, setup_plan, staff_of, working_years_form

EXAM_DAY = date(2026, 4, 10)  # a Friday
TICKETS_OPEN = date(2026, 4, 3)
SCORES_DUE = date(2026, 4, 15)  # 3 working days: Mon 13, Tue 14, Wed 15
REVIEW_CLOSES = date(2026, 4, 24)  # 10 working days
REPORT_DAY = date(2026, 4, 27)
CONFIRM_DAY = date(2026, 4, 28)
ISSUE_DAY = date(2026, 4, 29)
CENTRE = Actor(id="centre-wang", role=Role.PROVINCIAL_CENTRE)
HR = Actor(id="hr-zhao", role=Role.HR_DEPARTMENT, jurisdiction="03")  # Shenzhen, where the test institution is filed
ASSOCIATION = Actor(id="assoc-lin", role=Role.ASSOCIATION)
SCORER = "scorer-chen"
REVIEWER = "reviewer-he"


@dataclass
class World:
    registrations: Registrations
    exams: Exams
    certificates: Certificates
    clock: object

    def at(self, day: date) -> World:
        self.clock.today = day  # type: ignore[attr-defined]
        return self


def card(certs: Certificates, cid: UUID) -> str:
    """The number on the holder's ID card, as presented when a certificate is collected in person (000)."""
    return certs.certificate(cid).holder.id_number


def id_check(certs: Certificates, cid: UUID) -> dict:
    """The holder's ID checked at a proof application, as profile S wants it (000): the number on the
    card presented, and a copy handed in."""
    from domain.certificate import IdDocument
    from domain.registration import AttachmentKind
    from tests.builders import attachment

    holder = certs.certificate(cid).holder
    return {"id_number": holder.id_number, "id_document": IdDocument.COPY_RECEIVED,
            "id_copy": attachment(AttachmentKind.ID_CARD_COPY)}  # fmt: skip


def approve_correction(certs: Certificates, cid: UUID) -> None:
    """Through the route of the certificate's profile: S (000 二3) the association's check, then the
    skills centre; T (004 §14) the HR department where the institution is filed."""
    _route(certs, cid).approve_correction(_decider(certs, cid), cid)


def reject_correction(certs: Certificates, cid: UUID, reasons: str) -> None:
    _route(certs, cid).reject_correction(_decider(certs, cid), cid, reasons)


def _route(certs: Certificates, cid: UUID) -> Certificates:
    from domain.institution import DeadlineProfile

    if certs.certificate(cid).profile is DeadlineProfile.S:
        certs.check_correction(ASSOCIATION, cid, queryable_nationally=True)
    return certs


def _decider(certs: Certificates, cid: UUID) -> Actor:
    from domain.institution import DeadlineProfile

    return CENTRE if certs.certificate(cid).profile is DeadlineProfile.S else HR


def staff(iid: UUID, who: str = "staff-li") -> Actor:
    return Actor(id=who, role=Role.INSTITUTION_STAFF, institution_id=iid)


def approved_cohort(w: World, n: int, seats: int | None = None) -> tuple[UUID, UUID, list[UUID]]:
    """n level-2 candidates registered, approved on condition 2.1 and fee paid."""
    w.at(date(2026, 3, 2))
    iid, pid, code = setup_plan(w.registrations, seats=seats or n, level=Level.TWO)
    rids = [w.registrations.register(candidate(i), code, working_years_form(i)) for i in range(1, n + 1)]
    for i, rid in enumerate(rids, 1):
        w.registrations.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
        w.registrations.pay_fee(staff(iid), rid, f"R2026{i:06d}", Decimal("380.00"))
    return iid, pid, rids


def rooms_for(n: int) -> list[Room]:
    return [Room(name=f"30{k}", seats=30) for k in range(1, n // 30 + 2)]


def sit_exam(w: World, iid: UUID, pid: UUID, rids: list[UUID], absent: frozenset[UUID] = frozenset()) -> UUID:
    w.at(TICKETS_OPEN)
    exam_id = w.exams.schedule(
        staff(iid), pid, "A", EXAM_DAY, time(9), time(11, 30), "深圳市南山区科技园考点", rooms_for(len(rids))
    )
    seats = {a.registration_id: a.seat for a in w.exams.issue_tickets(staff(iid), exam_id)}
    w.at(EXAM_DAY)
    proctor = staff(iid, "proctor-liu")
    for i, rid in enumerate(rids, 1):
        if rid in absent:
            continue
        w.exams.check_in(candidate(i), rid)
        w.exams.check_identity(proctor, rid)
        w.exams.sign_in(proctor, rid, seats[rid], second_identity_check=True)
        w.exams.start(proctor, rid)
        w.exams.finish(proctor, rid)
    w.exams.close_day(staff(iid), exam_id)
    return exam_id


def score(i: int) -> dict[Subject, Decimal]:
    """Every seventh candidate fails the theory paper; the rest pass everything."""
    theory = Decimal("52.5") if i % 7 == 0 else Decimal("60") + Decimal(i % 40)
    return {Subject.THEORY: theory, Subject.SKILLS: Decimal("75"), Subject.COMPREHENSIVE: Decimal("81.5")}


def score_and_publish(
    w: World, iid: UUID, exam_id: UUID, rids: list[UUID], absent: frozenset[UUID] = frozenset()
) -> None:
    w.at(date(2026, 4, 13))
    book = {rid: score(i) for i, rid in enumerate(rids, 1) if rid not in absent}
    w.exams.record_scores(staff(iid, SCORER), exam_id, book)
    w.exams.publish_scores(staff(iid), exam_id)


def report_and_confirm(w: World, iid: UUID, exam_id: UUID) -> None:
    w.at(REPORT_DAY)
    w.exams.report_results(staff(iid), exam_id)
    w.at(CONFIRM_DAY)
    w.exams.confirm_results(CENTRE, exam_id)


def confirmed_exam(w: World, n: int, absent_every: int = 0) -> tuple[UUID, UUID, list[UUID], UUID]:
    iid, pid, rids = approved_cohort(w, n)
    absent = frozenset(r for i, r in enumerate(rids, 1) if absent_every and i % absent_every == 0)
    exam_id = sit_exam(w, iid, pid, rids, absent)
    score_and_publish(w, iid, exam_id, rids, absent)
    report_and_confirm(w, iid, exam_id)
    return iid, pid, rids, exam_id


def queryable_certificates(w: World, n: int, photos: bool = True) -> tuple[UUID, list[UUID]]:
    """n candidates through to certificates on the national query platform, their photos attached
    unless told not to. Returns the institution and the certificate ids."""
    from domain.certificate import certificate_id

    iid, _, _, exam_id = confirmed_exam(w, n)
    w.at(ISSUE_DAY)
    cids = [certificate_id(r) for r in w.certificates.issue(staff(iid), exam_id)]
    w.certificates.report_data(staff(iid), cids)
    w.certificates.accept_data(CENTRE, cids)
    w.at(date(2026, 7, 1))
    w.certificates.make_queryable(CENTRE, cids)
    for k, cid in enumerate(cids if photos else ()):  # the holders' photos, handed in with their applications
        w.certificates.attach_photo(staff(iid), cid, photo_attachment(k))
    return iid, cids


def collect(certs: Certificates, iid: UUID, cid: UUID) -> None:
    """The holder collects the printed certificate in person: the signed application form and their ID card (000)."""
    from domain.certificate import Delivery
    from domain.registration import AttachmentKind
    from tests.builders import attachment

    certs.hand_over(staff(iid), cid, Delivery.PICKUP, attachment(AttachmentKind.CERTIFICATE_APPLICATION),
                    id_number=card(certs, cid))  # fmt: skip


def handed_over_certificates(w: World, n: int) -> tuple[UUID, list[UUID]]:
    """queryable_certificates, then printed and collected by their holders on 2 July: what a holder can lose."""
    iid, cids = queryable_certificates(w, n)
    w.at(date(2026, 7, 2))
    w.certificates.receive_forms(staff(iid), iid, 20_000_001, 20_000_000 + n, "SH-2026-0702")
    for cid in cids:
        w.certificates.print(staff(iid), cid)
        collect(w.certificates, iid, cid)
    return iid, cids


@dataclass
class Lifecycle:
    """What full_lifecycle did, for tests to check against."""

    iid: UUID
    pid: UUID
    exam_id: UUID
    rids: list[UUID]
    absent: frozenset[UUID]
    failed: set[UUID]
    passed: list[UUID]
    cids: list[UUID]
    numbers: dict[UUID, str]
    lost: UUID
    corrected: UUID
    refused: UUID
    deleted: UUID
    revoked: UUID  # its holder's declaration was found false (001 承诺)
    proof: str
    reprint_form: int
    discrepancy: int


def full_lifecycle(w: World, n: int = 200) -> Lifecycle:
    """n candidates of one plan (n >= 50) from registration to printed certificate, with
    training, an amendment, absences, score reviews, returned data, spoiled and destroyed
    forms, pickup and mail, a loss proof, an approved and a rejected correction, a deletion,
    a disqualification and a stocktake."""
    from domain.certificate import Correction, Delivery, LossKind, certificate_id
    from domain.registration import AttachmentKind
    from tests.builders import attachment

    iid, pid, rids = approved_cohort(w, n)
    reg, exams, certs = w.registrations, w.exams, w.certificates
    # Training for the first 50; candidate 2 misspelled their name and explains it in writing.
    for rid in rids[:50]:
        reg.open_training_account(staff(iid), rid, f"train-{rid.hex[:8]}")
        reg.complete_training(staff(iid), rid, Decimal("64"), attachment(AttachmentKind.TRAINING_CERTIFICATE))
    reg.amend(staff(iid), rids[1], working_years_form(2, name="考生二"), "报名时姓名录入错误，附身份证复印件",
              attachment(AttachmentKind.WRITTEN_EXPLANATION))  # fmt: skip

    absent = frozenset(rids[i - 1] for i in (50, 100, 150, 200) if i <= n)
    exam_id = sit_exam(w, iid, pid, rids, absent)
    score_and_publish(w, iid, exam_id, rids, absent)
    # Three score reviews in the window: candidate 7 (failed theory) is changed to a pass.
    w.at(date(2026, 4, 16))
    for i in (1, 7, 14):
        exams.request_review(candidate(i), rids[i - 1], Subject.THEORY, "对理论成绩有异议")
    w.at(date(2026, 4, 20))
    exams.answer_review(staff(iid, REVIEWER), rids[6], ReviewOutcome.CHANGED, "复核发现漏计一题", Decimal("60.5"))
    for i in (1, 14):
        exams.answer_review(staff(iid, REVIEWER), rids[i - 1], ReviewOutcome.UPHELD, "复核无误")
    report_and_confirm(w, iid, exam_id)

    failed = {rids[i - 1] for i in range(1, n + 1) if i % 7 == 0 and i != 7} - absent
    passed = [r for r in rids if r not in absent and r not in failed]
    w.at(ISSUE_DAY)
    numbers = certs.issue(staff(iid), exam_id)
    cids = [certificate_id(r) for r in passed]

    # Data reporting: two returned, corrected and re-reported; all accepted, then queryable.
    w.at(date(2026, 5, 20))
    certs.report_data(staff(iid), cids)
    w.at(date(2026, 6, 1))
    for cid in cids[:2]:
        certs.return_data(CENTRE, cid, "工作信息审批表缺少审批人签字")
    certs.accept_data(CENTRE, cids[2:])
    w.at(date(2026, 6, 10))
    certs.report_data(staff(iid), cids[:2])
    certs.accept_data(CENTRE, cids[:2])
    w.at(date(2026, 7, 1))
    certs.make_queryable(CENTRE, cids)

    # Blank stock: demand filed in January, 300 forms received; two spoiled while printing.
    w.at(date(2026, 1, 20))
    certs.file_demand(staff(iid), iid, 2026, {Level.TWO: 250, Level.THREE: 40})
    w.at(date(2026, 7, 2))
    certs.receive_forms(staff(iid), iid, 10_000_001, 10_000_300, "SH-2026-0701")
    for k, cid in enumerate(cids):
        if k in (10, 11):
            certs.spoil_form(staff(iid), iid, certs.stock(iid).next_form(), "卡纸")
        certs.attach_photo(staff(iid), cid, photo_attachment(k))
        certs.print(staff(iid), cid)
    certs.destroy_forms(staff(iid), iid, [10_000_011, 10_000_013], "监销人：王主任")
    w.at(date(2026, 7, 8))
    for k, cid in enumerate(cids):
        if k % 2:
            certs.hand_over(
                staff(iid), cid, Delivery.MAIL, attachment(AttachmentKind.CERTIFICATE_APPLICATION), f"SF{k:010d}"
            )
            certs.sign_receipt(staff(iid), cid, certs.certificate(cid).holder.name)  # 本人签收
        else:
            collect(certs, iid, cid)

    # After handover: a loss proof, an approved correction, a rejected one, a deletion.
    lost, corrected, refused, deleted = cids[3], cids[4], cids[5], cids[6]
    w.at(date(2026, 9, 1))
    certs.apply_for_proof(staff(iid), lost, LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                          **id_check(certs, lost))  # fmt: skip
    proof = certs.issue_proof(staff(iid), lost)
    evidence = attachment(AttachmentKind.CORRECTION_EVIDENCE)
    certs.apply_for_correction(staff(iid), corrected, Correction(name="考生改名"), "公安机关更名证明", evidence)
    certs.apply_for_correction(staff(iid), refused, Correction(name="另一个名字"), "本人要求", evidence)
    approve_correction(certs, corrected)
    reject_correction(certs, refused, "非录入错误，不属纠错范围")
    certs.report_data(staff(iid), [corrected])
    certs.accept_data(CENTRE, [corrected])
    certs.make_queryable(CENTRE, [corrected])
    reprint_form = certs.print(staff(iid), corrected)
    collect(certs, iid, corrected)
    certs.record_holder_commitment(staff(iid), deleted, attachment(AttachmentKind.HOLDER_COMMITMENT))
    certs.check_deletion(ASSOCIATION, deleted, queryable_nationally=True)  # profile S (000 二3)
    certs.delete_data(staff(iid), deleted, "持证人放弃证书相关待遇")
    revoked = cids[8]  # a forged work record found: disqualified, scores cancelled, certificate revoked
    reg.disqualify(CENTRE, passed[8], "工作年限证明系伪造（单位核实回函）")
    w.at(date(2026, 10, 8))
    discrepancy = certs.take_stock(staff(iid), iid, "2026-H2", certs.books(iid).in_stock)

    return Lifecycle(
        iid, pid, exam_id, rids, absent, failed, passed, cids, numbers,
        lost, corrected, refused, deleted, revoked, proof, reprint_form, discrepancy,
    )  # fmt: skip
