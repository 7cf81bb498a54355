"""Batch imports the institutions really do: the candidate list (集体报名) and the score book (成绩册),
as CSV or XLSX. Every row is checked; a file with any bad row is refused whole, with every bad
row and its reason, and nothing is stored.

Columns are named as institutions name them (Chinese headers) or by the API's field names.
Rows are numbered as the spreadsheet shows them: the header is row 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple
from uuid import UUID

from pydantic import ValidationError

from domain.errors import Conflict, InvalidInput
from domain.exam import Attendance, ExamSession, Sitting, Subject, sitting_id
from domain.model import Actor
from domain.registration import (
    Alias,
    AttachmentKind,
    IdType,
    Registration,
    RegistrationForm,
    registration_id,
    registration_key,
)
from domain.text import name_key
from infra.services.exams import Exams
from infra.services.registrations import Registrations
from infra.services.sheets import MAX_ROWS, Rows, read_table

__all__ = ["MAX_ROWS", "import_candidates", "import_scores"]

Reader = Callable[[bytes, str], Rows]

CANDIDATE_COLUMNS = {
    "姓名": "name", "证件类型": "id_type", "证件号码": "id_number", "身份证号码": "id_number", "性别": "gender",
    "出生日期": "date_of_birth", "文化程度": "education", "从事本职业年限": "years_in_occupation",
    "考生来源": "candidate_source", "劳动关系": "labour_relation", "手机号码": "phone", "工作单位": "work_unit",
    "申报依据": "basis", "持有职称或技能证书": "holds_prior_certificate", "承诺": "declaration_accepted",
}  # fmt: skip
ATTACHMENT_COLUMNS = {
    "毕业证": AttachmentKind.DIPLOMA, "学信网备案表": AttachmentKind.CHSI_RECORD, "社保证明": AttachmentKind.SOCIAL_SECURITY,
    "工作证明": AttachmentKind.WORK_CERTIFICATE, "劳动合同": AttachmentKind.LABOUR_CONTRACT,
    "职称或技能证书": AttachmentKind.PRIOR_CERTIFICATE,
}  # fmt: skip
SCORE_COLUMNS = {"姓名": "name", "证件类型": "id_type", "证件号码": "id_number", "身份证号码": "id_number"}
SUBJECT_COLUMNS = {s.value: s for s in Subject} | {s.name.lower(): s for s in Subject}
ABSENT = "缺考"
YES = {"是", "y", "yes", "true", "1", "√"}
NO = {"否", "n", "no", "false", "0", ""}


def _columns(
    rows: Rows, known: dict[str, Any], required: set[str], extra: Callable[[str], bool], extras: Iterable[str] = ()
) -> None:
    headers = set(rows[0][1])
    unknown = sorted(h for h in headers if h not in known and h not in known.values() and not extra(h))
    named = {known.get(h, h) for h in headers}
    missing = sorted(required - named)
    # Named as the sheet names them (证件号码), with the API's name after it: staff fill in the sheet's columns.
    headed = {field: "/".join(h for h, f in known.items() if f == field) for field in set(known.values())}
    # One problem for them all, listing what it reads once: a 64-column sheet repeated the list 53 times (22 KB).
    problems = [("file", f"{'column' if len(unknown) == 1 else 'columns'} {'、'.join(repr(h) for h in unknown)} "
                 f"{'is not one' if len(unknown) == 1 else 'are not ones'} this import reads (it reads: "
                 f"{'、'.join([*known, *extras])})")] if unknown else []  # fmt: skip
    problems += [("file", f"column {headed.get(m, m)} ({m}) is missing") for m in missing]
    if problems:
        raise InvalidInput(problems)


def _field(known: dict[str, str], header: str) -> str:
    return known.get(header, header)


def _errors(n: int, e: ValidationError, attachments: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Pydantic's errors by row; an attachment's by the column it came from (attachments.0.sha256 is 毕业证)."""
    out = []
    for err in e.errors():
        loc = err["loc"]
        if loc[0] == "attachments" and len(loc) > 1 and isinstance(loc[1], int) and loc[1] < len(attachments):
            loc = (attachments[loc[1]], *loc[3:])
        out.append((f"row {n}." + ".".join(str(p) for p in loc), err["msg"]))
    return out


def _as_headed(problems: list[tuple[str, str]], headers: Iterable[str], known: dict[str, str]) -> list[tuple[str, str]]:
    """Each problem's field as the sheet heads its column (row 3.出生日期, not row 3.date_of_birth): staff fill in the
    sheet, and problems of a cell's text were already named so."""
    column: dict[str, str] = {}
    for h in headers:
        column.setdefault(known.get(h, h), h)
    out = []
    for field, message in problems:
        row, _, rest = field.partition(".")
        name, dot, deeper = rest.partition(".")
        if row.startswith("row ") and column.get(name, name) != name:
            field = f"{row}.{column[name]}{dot}{deeper}"
        out.append((field, message))
    return out


# The candidate list.
def _attachment_kind(header: str) -> AttachmentKind | None:
    if header in ATTACHMENT_COLUMNS:
        return ATTACHMENT_COLUMNS[header]
    try:
        return AttachmentKind(header)
    except ValueError:
        return None


def candidate_forms(rows: Rows) -> list[tuple[int, RegistrationForm | None, list[tuple[str, str]]]]:
    """Each row as a registration form, or its problems. Attachment columns hold the scanned
    file's SHA-256, optionally after its file name: "毕业证.pdf 3f5a…"."""
    _columns(rows, CANDIDATE_COLUMNS, {"name", "id_number", "gender", "date_of_birth", "education",
                                       "labour_relation", "basis"}, lambda h: _attachment_kind(h) is not None,
             ATTACHMENT_COLUMNS)  # fmt: skip
    out = []
    for n, cells in rows:
        data: dict[str, Any] = {"attachments": [], "declaration_accepted": True}
        problems: list[tuple[str, str]] = []
        attached: list[str] = []  # the column of each attachment, in order
        for header, value in cells.items():
            kind = _attachment_kind(header)
            if kind is not None:
                if value:
                    *name, digest = value.split()
                    data["attachments"].append(
                        {"kind": kind, "file_name": " ".join(name) or f"{kind.value}.pdf", "sha256": digest.lower()}
                    )
                    attached.append(header)
                continue
            field = _field(CANDIDATE_COLUMNS, header)
            if field in ("holds_prior_certificate", "declaration_accepted"):
                if value.lower() not in YES | NO:
                    problems.append((f"row {n}.{field}", f"{value!r}: write 是 or 否"))
                data[field] = value.lower() in YES
            elif value != "":
                data[field] = value
        data.setdefault("id_type", IdType.RESIDENT_ID)
        try:
            form = RegistrationForm.model_validate(data)
        except ValidationError as e:
            out.append((n, None, problems + _errors(n, e, attached)))
            continue
        out.append((n, form, problems))
    return out


def import_candidates(
    svc: Registrations, actor: Actor, plan_id: UUID, content: bytes, filename: str, read: Reader = read_table
) -> list[UUID]:
    """Register every candidate of the list for the plan, in one transaction, or none. `read` turns the
    file into rows: in this process, or (the API) sheets.read_isolated."""
    rows = read(content, filename)
    forms = candidate_forms(rows)
    try:
        return svc.register_many(actor, plan_id, forms)
    except InvalidInput as e:
        raise InvalidInput(sorted(_as_headed(e.problems, rows[0][1], CANDIDATE_COLUMNS), key=_row_order)) from None
    except Conflict as e:  # rows another registered meanwhile: named as the sheet heads them too (an outside review)
        if not e.problems:
            raise
        raise Conflict(e.message, field=e.field, problems=sorted(_as_headed(e.problems, rows[0][1],
                                                                           CANDIDATE_COLUMNS), key=_row_order)) from None  # fmt: skip


def candidates_registered(svc: Registrations, plan_id: UUID, content: bytes, filename: str) -> tuple[int, int]:
    """(rows of the list whose candidate is registered for the plan, rows read): what an interrupted import (Ctrl-C
    while it ran; it stores all or nothing) left, told apart from a list imported before, or not at all."""
    forms = [f for _, f, _ in candidate_forms(read_table(content, filename)) if f is not None]
    ids = [registration_id(plan_id, f, svc.id_key) for f in forms]
    return len(svc.existing(ids)), len(ids)


# The score book.
class ScoreBook(NamedTuple):
    scored: int  # rows whose scores were recorded
    absent: int  # rows of candidates marked absent (缺考), checked and recorded as such already


def import_scores(
    svc: Exams, actor: Actor, exam_id: UUID, content: bytes, filename: str, read: Reader = read_table
) -> ScoreBook:
    """Record the session's score book from a file: one row per candidate, identified by ID number
    and name, a column per subject. "缺考" rows are candidates marked absent. Answers the rows scored and absent."""
    rows = read(content, filename)
    _columns(rows, SCORE_COLUMNS, {"name", "id_number"}, lambda h: h in SUBJECT_COLUMNS, [s.value for s in Subject])
    session = svc.get(ExamSession, exam_id, "exam session")
    problems: list[tuple[str, str]] = []
    book: dict[UUID, dict[Subject, Decimal]] = {}
    absent = 0
    row_of: dict[UUID, int] = {}
    unread: set[str] = set()  # the cells named as no score, which the book's check would call missing
    keyed: list[tuple[int, dict[str, str], dict[str, str], str, UUID]] = []
    for n, cells in rows:
        fields = {_field(SCORE_COLUMNS, h): v for h, v in cells.items() if h not in SUBJECT_COLUMNS}
        try:
            id_type = IdType(fields.get("id_type") or IdType.RESIDENT_ID)
        except ValueError:
            problems.append((f"row {n}.id_type", f"{fields['id_type']!r} is not an ID type"))
            continue
        number = fields.get("id_number", "").upper()
        keyed.append((n, cells, fields, number, registration_key(session.plan_id, id_type, number, svc.id_key)))
    # Everything the rows name, loaded in a few queries rather than several per row.
    registered = _registered(svc, [k for *_, k in keyed])
    people = svc.get_many(registered.values())
    sittings = svc.get_many(sitting_id(r) for r in registered.values())
    for n, cells, fields, number, key in keyed:
        rid = registered.get(key)
        seated = sittings.get(sitting_id(rid)) if rid is not None else None
        if not isinstance(seated, Sitting) or seated.exam_id != session.id:
            problems.append(
                (f"row {n}.id_number", f"{number or '(empty)'} has no ticket for session {session.session}")
            )
            continue
        if rid in row_of:
            problems.append((f"row {n}.id_number", f"{number} is already scored in row {row_of[rid]}"))
            continue
        row_of[rid] = n
        registration = people[rid]
        assert isinstance(registration, Registration)
        typed = fields.get("name", "")
        if name_key(registration.form.name) != name_key(typed):  # 葛亮 for 葛 U+E0100 亮, any middle dot
            problems.append((f"row {n}.name", f"{typed!r} is not the name registered with {number} "
                             f"({registration.form.name!r})"))  # fmt: skip
        marks = {SUBJECT_COLUMNS[h]: v for h, v in cells.items() if h in SUBJECT_COLUMNS and v}
        if not marks or set(marks.values()) == {ABSENT}:
            sitting = sittings.get(sitting_id(rid))
            if not isinstance(sitting, Sitting) or sitting.attendance is not Attendance.ABSENT:
                problems.append((f"row {n}", f"no scores, but {fields.get('name')} was not marked absent"))
            absent += 1
            continue
        scores = {}
        for subject, v in marks.items():
            try:
                scores[subject] = Decimal(v)
            except InvalidOperation:
                problems.append((f"row {n}.{subject.value}", f"{v!r} is not a score"))
                unread.add(f"book.{rid}.{subject.value}")
        # Checked with the rest whatever it holds that cannot be read: a row's other problems are named with it.
        book[rid] = scores
    with svc.scoring(exam_id):  # checked and saved while the scores cannot be published
        try:
            changed, found = svc.check_scores(actor, exam_id, book)
        except Conflict as e:  # scoring is not open for the session: the state forbids it, as PUT .../scores answers
            raise Conflict(e.message, field="file") from None
        problems += [(_to_row(f, row_of), m) for f, m in found if f not in unread]
        if problems:
            raise InvalidInput(sorted(_as_headed(problems, rows[0][1], SCORE_COLUMNS), key=_row_order))
        svc.save_once(*changed)
    return ScoreBook(len(book), absent)


def _registered(svc: Exams, keys: list[UUID]) -> dict[UUID, UUID]:
    """The registration under each (plan, ID number) key that has one, following an amended ID
    number's alias to the registration it names."""
    return {key: held.registration_id if isinstance(held, Alias) else key for key, held in svc.get_many(keys).items()}


def _to_row(field: str, row_of: dict[UUID, int]) -> str:
    # check_scores names "book.<registration id>[.<subject>]"; the importer names rows.
    _, rid, *subject = field.split(".", 2)
    return f"row {row_of[UUID(rid)]}" + "".join(f".{s}" for s in subject)


def _row_order(p: tuple[str, str]) -> tuple[int, str]:
    head = p[0].split(".")[0]
    return (int(head[4:]) if head.startswith("row ") and head[4:].isdigit() else 0, p[0])
