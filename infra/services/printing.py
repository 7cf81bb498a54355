"""Batch printing on the institution's blank stock: each page takes the next form through the
domain, so the stock ledger shows which serial printed which certificate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from uuid import UUID, uuid4

from certgen.certificate import CertificatePage, preflight, render
from domain.access import require
from domain.certificate import Certificate, certificate_id
from domain.errors import Conflict, InvalidInput, NotFound
from domain.exam import ExamSession
from domain.model import Actor, Role
from domain.plan import EvaluationPlan
from domain.printing import PrintJob
from infra.services.attachments import recent, upright
from infra.services.certificates import Certificates


def to_print(svc: Certificates, exam_id: UUID) -> list[UUID]:
    """The session's certificates that await a print (never printed, or spoiled, or corrected)."""
    session = svc.get(ExamSession, exam_id, "exam session")
    ids = [certificate_id(e.registration_id) for e in session.passed()]
    issued = svc.existing(ids)
    return [i for i in ids if i in issued and (c := svc.certificate(i)).needs_print and c.printable]


def plan_to_print(svc: Certificates, plan_id: UUID) -> list[UUID]:
    """Every certificate of the plan's candidates, whichever session they sat, that awaits a print,
    in certificate number order."""
    plan = svc.get(EvaluationPlan, plan_id, "plan")
    waiting = [svc.certificate(i) for i in svc.existing(certificate_id(r) for r in svc.plan_holders(plan.id))]
    return [c.id for c in sorted(waiting, key=lambda c: c.number) if c.needs_print and c.printable]


def print_certificates(
    svc: Certificates,
    actor: Actor,
    ids: Sequence[UUID],
    public_url: str,
    progress: Callable[[int], None] | None = None,
    deliver: Callable[[bytes], Callable[[], object] | None] | None = None,
) -> bytes:
    """Check every page, then book every certificate on the next blank form, all in one transaction with the
    stock and the batch's print job (Certificates.print_many), then render them into one PDF in form order, each
    page from the certificate as it was printed. `deliver` (the CLI writing its file) takes the PDF before the job
    is finished, and may answer what makes it visible once it is (the CLI's rename into place): a file half written
    is no PDF. Should the PDF not be made or delivered (an error, Ctrl-C), the forms go back to stock
    (Certificates.print_not_made). Should this process die first (SIGKILL), its lease on the job ends with it, and
    whoever next sweeps (return_abandoned) gives them back."""
    if not ids:
        raise InvalidInput([("certificates", "nothing to print: no certificate awaits a print")])
    photos: dict[UUID, bytes] = {}

    def check(certificates: list[Certificate]) -> None:  # as they are printed: again if the booking is tried again
        for c in certificates:  # who may print comes before what is missing
            require(actor, (Role.INSTITUTION_STAFF,), "print certificates", c.institution_id)
        photos.clear()
        photos.update(holder_photos(svc, certificates))
        preflight(CertificatePage.of(c, 0, public_url, photos[c.id]) for c in certificates)  # before any form is used

    job = uuid4()
    reveal = None
    with svc.leases.held(job):
        # Printing changes none of what a page shows: the certificates printed make the pages.
        booked = svc.print_many(actor, ids, check, job)
        try:
            content = render([CertificatePage.of(c, form, public_url, photos[c.id]) for c, form in booked], progress)
            if deliver is not None:
                reveal = deliver(content)  # a write stuck on a full disk or a pipe: still under the lease
            svc.finish_print(actor, job)  # refused if a sweeper gave the forms back meanwhile (PostgreSQL restarted)
        except BaseException as e:  # Ctrl-C in the CLI too: the forms are still blank, and the ledger must say so
            not_made(svc, actor, booked, e, job)
            raise
    if reveal is not None:
        try:
            reveal()
        except BaseException as e:
            not_made(svc, actor, booked, e)
            raise
    return content


def not_made(svc: Certificates, actor: Actor, booked: list[tuple[Certificate, int]], e: BaseException,
             job: UUID | None = None) -> None:  # fmt: skip
    """Record a batch's prints not made, after `e` stopped its PDF; its job closed with them."""
    if isinstance(e, Conflict) and job is not None and not svc.get(PrintJob, job, "print job").open:
        return  # closed by another: its forms are back already, or the PDF was made
    try:
        svc.print_not_made(actor, [c.id for c, _ in booked], f"the PDF could not be made ({type(e).__name__})", job)
    except Exception as failed:
        later = " (or wait: they are given back on their own within a minute)" if job is not None else ""
        raise FormsStillBooked(
            f"the PDF of {len(booked)} certificates was not made ({type(e).__name__}), and recording their forms "
            f"back in stock failed too ({failed}): record them with POST /certificates/print-not-made (skillcert "
            f"print not-made){later}: {', '.join(c.number for c, _ in booked[:20])}{' …' if len(booked) > 20 else ''}"
        ) from e


def return_abandoned(svc: Certificates) -> list[tuple[str, int]]:
    """Give back the forms of every print job whose process died before its PDF was made (its lease ended with
    it): each form still holding its certificate's print goes back to stock, and the certificate awaits a print.
    Run by the API every little while and by `skillcert print` as it starts; safe to run anywhere, at once."""
    returned: list[tuple[str, int]] = []
    with svc.leases.abandoned() as jobs:
        for job in jobs:
            try:
                returned += svc.abandon_print(job, "the process making the PDF stopped before it was made")
            except NotFound:
                pass  # its booking was never saved: nothing was booked
            svc.leases.clear(job)
    return returned


class FormsStillBooked(RuntimeError):
    """A batch's PDF was not made and its forms could not be put back either: someone must."""


def holder_photos(svc: Certificates, certificates: list[Certificate]) -> dict[UUID, bytes]:
    """Every certificate's photo, or a refusal naming each certificate without a usable one, before
    any blank form is booked: a form printed with no photo is a spent form."""
    problems: list[tuple[str, str]] = []
    photos: dict[UUID, bytes] = {}
    today = svc.today()
    for c in certificates:
        if c.photo is None:
            problems.append((c.number, "no holder photo: attach one (PUT /certificates/{id}/photo)"))
            continue
        held = svc.attachments.held(c.photo.sha256)
        content = svc.attachments.content(c.photo.sha256)
        if held is None or content is None:
            problems.append((c.number, "its photo is no longer held: upload and attach it again"))
        elif not recent(held.uploaded_at.date(), today):
            problems.append((c.number, f"its photo was uploaded on {held.uploaded_at.date()}, more than half a year "
                                       "ago (004 §11.2(1) 近半年内): attach a recent one"))  # fmt: skip
        else:
            photos[c.id] = upright(content)
    if problems:
        raise Conflict("; ".join(f"certificate {n}: {p}" for n, p in problems[:20])
                       + (f"; and {len(problems) - 20} more" if len(problems) > 20 else ""))  # fmt: skip
    return photos
