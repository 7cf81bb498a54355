"""Spreadsheets in and out: reading the institutions' CSV and XLSX files safely, writing CSV safely.

Reading a file someone uploaded is done in a child process (`read_isolated`) with its own memory
and CPU limits and a deadline, so a hostile file costs that child, never the API: an XLSX is a
zip of XML, and a few hundred kilobytes can unpack to gigabytes (a "zip bomb"), declare millions
of empty cells, or nest XML entities. Before any XML is parsed the zip's directory is checked
(how many parts, how large each unpacks, in all); the XML is parsed by openpyxl in read-only
streaming mode through defusedxml (no entities, no external references), counting rows and cells
as it goes. CSV cells are bounded too. Every cell is held to domain.text's rule.

Writing: a cell that starts with =, +, -, @ (or a tab or carriage return) is a formula to Excel
and LibreOffice ("CSV injection"): a candidate named =HYPERLINK(...) would run in staff's
spreadsheet. Such cells are written with a leading apostrophe, which the spreadsheet shows as text.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from domain.errors import InvalidInput
from domain.text import normalise, problem

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 5000
MAX_COLUMNS = 64
MAX_CELL = 1000  # characters: the longest field of a form is 500
MAX_HEADER = 100  # characters in a column's name: the longest this app reads is 9 (持有职称或技能证书)
MAX_UNPACKED = 64 * 1024 * 1024  # an XLSX's parts unpacked, in all
MAX_PARTS = 200
MAX_SHARED_STRINGS = 16 * 1024 * 1024  # the shared strings part, unpacked
MAX_CELLS = MAX_ROWS * MAX_COLUMNS  # cells a sheet may declare, empty ones included
READ_DEADLINE = 4.0  # seconds the child may take: a refusal reaches the client within 5
CHILD_MEMORY = 768 * 1024 * 1024  # bytes of address space the child may use
CHILD_CPU = 10  # seconds of CPU

log = logging.getLogger(__name__)
Table = list[list[str]]
Rows = list[tuple[int, dict[str, str]]]


def read_table(content: bytes, filename: str) -> Rows:
    """(row number, {header: cell}) for every non-empty row; the header is row 1. In this process:
    for the command line, whose user's own file it is. The API uses read_isolated."""
    return _rows(_table(content, filename))


def read_isolated(content: bytes, filename: str, deadline: float = READ_DEADLINE) -> Rows:
    """read_table in a child process with memory, CPU and time limits. The refusal of a file (4xx)
    comes back as InvalidInput; a child that dies or overruns is refused the same way."""
    if len(content) > MAX_BYTES:
        raise InvalidInput([("file", f"is {len(content):,} bytes; the limit is {MAX_BYTES:,}")])
    child = subprocess.Popen(
        [sys.executable, "-m", "infra.services.sheets", filename],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, _ = child.communicate(content, timeout=deadline)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise InvalidInput([("file", f"took longer than {deadline:.0f} s to read; it is too large or malformed")]) \
            from None  # fmt: skip
    if child.returncode != 0 or not out:
        raise InvalidInput([("file", "could not be read within the limits on memory and time; is it a real sheet?")])
    answer = json.loads(out)
    if "problems" in answer:
        raise InvalidInput([tuple(p) for p in answer["problems"]])
    return [(n, cells) for n, cells in answer["rows"]]


def _child() -> None:
    """The child's side of read_isolated: limits first, then the file from stdin, JSON on stdout."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU, CHILD_CPU))
    content = sys.stdin.buffer.read(MAX_BYTES + 1)
    try:
        answer: dict[str, Any] = {"rows": read_table(content, sys.argv[1])}
    except InvalidInput as e:
        answer = {"problems": e.problems}
    sys.stdout.write(json.dumps(answer, ensure_ascii=False))


def _table(content: bytes, filename: str) -> Table:
    if len(content) > MAX_BYTES:
        raise InvalidInput([("file", f"is {len(content):,} bytes; the limit is {MAX_BYTES:,}")])
    name = filename.lower()
    if content[:2] == b"PK" or name.endswith(".xlsx"):
        return _xlsx(content)
    if name.endswith((".csv", ".txt", ".tsv")) or not filename:
        return _csv(content)
    if name.endswith((".xls", ".et")):
        # By its bytes, as an upload's kind is judged: other systems export text or a web page named .xls.
        if content[:4] == b"\xd0\xcf\x11\xe0":
            raise InvalidInput([("file", f"{filename} is in the old Excel (or WPS) format: save it as an Excel "
                                         "workbook (.xlsx) or as CSV UTF-8 and import that")])  # fmt: skip
        if content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
            raise InvalidInput([("file", f"{filename} is a web page (HTML) named .xls, as some systems export a table: "
                                         "open it in Excel and save it as an Excel workbook (.xlsx)")])  # fmt: skip
        return _csv(content)
    raise InvalidInput([("file", f"{filename}: give a .csv, .txt (tab-separated) or .xlsx file")])


def _rows(table: Table) -> Rows:
    if not any(c.strip() for r in table for c in r):  # nothing, or blank lines only
        raise InvalidInput([("file", "is empty: the first row names the columns")])
    headers = [h.strip() for h in table[0]]
    problems = [(f"row 1.column {i}", why) for i, h in enumerate(headers, start=1) if (why := problem(h))]
    # Checked before the cells: each cell's problem is named by its column, so a long name would be repeated in
    # the answer once for every row.
    problems += [(f"row 1.column {i}", f"a column name of {len(h):,} characters; no column this import reads has a "
                  f"name longer than {MAX_HEADER}") for i, h in enumerate(headers, start=1) if len(h) > MAX_HEADER]  # fmt: skip
    if problems:
        raise InvalidInput(problems)
    if twice := sorted({h for h in headers if h and headers.count(h) > 1}):
        raise InvalidInput([("file", f"row 1 names {'、'.join(twice)} more than once")])
    filled = [(n, cells) for n, cells in enumerate(table[1:], start=2) if any(c.strip() for c in cells)]
    if len(filled) > MAX_ROWS:
        raise InvalidInput([("file", f"has {len(filled)} rows; import at most {MAX_ROWS} at a time")])
    rows: Rows = []
    for n, cells in filled:
        row = {}
        for i, h in enumerate(headers):
            if not h:
                continue
            cell = cells[i].strip() if i < len(cells) else ""
            if why := problem(cell):
                problems.append((f"row {n}.{h}", why))
            elif len(cell) > MAX_CELL:
                problems.append((f"row {n}.{h}", f"holds {len(cell):,} characters; a cell holds at most {MAX_CELL}"))
            row[normalise(h)] = normalise(cell)
        rows.append((n, row))
    if problems:
        raise InvalidInput(problems)
    if not rows:
        raise InvalidInput([("file", "has a header row but no data rows")])
    return rows


def _csv(content: bytes) -> Table:
    """Comma- or tab-separated text: what Excel and WPS save as CSV (UTF-8, or GB18030 on a Chinese Windows), as
    "Unicode text" (UTF-16 with a byte-order mark, tab-separated, .txt) and as tab-delimited text. A tab-separated
    file read with commas was refused as a header cell holding a tab."""
    head = content[:4096]
    try:
        if content[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
            text = content.decode("utf-32")
        elif content[:2] in (b"\xff\xfe", b"\xfe\xff"):
            text = content.decode("utf-16")
        elif (odd := head[1::2].count(0)) + (even := head[::2].count(0)) > len(head) // 8:
            # UTF-16 without its byte-order mark: the high byte of every ASCII character (digits, commas, tabs) is NUL,
            # on one side. A stray NUL in UTF-8 is not that: it is read as UTF-8 and refused naming its cell.
            text = content.decode("utf-16-le" if odd > even else "utf-16-be")
        else:
            text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = content.decode("gb18030")  # what Excel on a Chinese Windows saves as CSV
        except UnicodeDecodeError:
            raise InvalidInput([("file", "is neither UTF-8, UTF-16, UTF-32 nor GB18030 text; save it as CSV UTF-8")]) \
                from None  # fmt: skip
    header = text.split("\n", 1)[0]
    # Strict: an unclosed quote ends the file inside a cell, which a lenient reader took as one long cell, and the rows
    # it swallowed were refused as missing their fields.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if header.count("\t") > header.count(",") else ",",
                        strict=True)  # fmt: skip
    csv.field_size_limit(MAX_CELL * 4)
    table: Table = []
    done = 0  # the line the last whole row ended on: the next row, the one that fails, starts after it
    try:
        for cells in reader:
            done = reader.line_num
            if len(cells) > MAX_COLUMNS:
                raise InvalidInput([("file", f"row {reader.line_num} has {len(cells)} columns; at most {MAX_COLUMNS}")])
            table.append(cells)
            if len(table) > 2 * MAX_ROWS:
                raise InvalidInput([("file", f"has more than {MAX_ROWS} rows; import at most {MAX_ROWS} at a time")])
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            raise InvalidInput([("file", f"ends inside a quoted cell: the quote (\") that opens it on line {done + 1} "
                                         "is never closed")]) from None  # fmt: skip
        if "field larger than field limit" in str(e):
            raise InvalidInput([("file", f"line {reader.line_num}: a cell holds at most {MAX_CELL} characters")]) \
                from None  # fmt: skip
        raise InvalidInput([("file", f"line {reader.line_num}: not well-formed CSV ({e}): a quoted cell is quoted "
                                     "whole, its quotes inside doubled (\"\")")]) from None  # fmt: skip
    return table


def _check_zip(content: bytes) -> None:
    try:
        parts = zipfile.ZipFile(io.BytesIO(content)).infolist()
    except (zipfile.BadZipFile, ValueError):
        raise InvalidInput([("file", "is not a readable XLSX workbook (not a zip archive)")]) from None
    if len(parts) > MAX_PARTS:
        raise InvalidInput([("file", f"has {len(parts)} parts; a sheet of candidates has a few dozen")])
    unpacked = sum(p.file_size for p in parts)
    if unpacked > MAX_UNPACKED:
        raise InvalidInput([("file", f"unpacks to {unpacked:,} bytes; the limit is {MAX_UNPACKED:,} (a zip bomb?)")])
    for p in parts:
        if p.filename.endswith("sharedStrings.xml") and p.file_size > MAX_SHARED_STRINGS:
            raise InvalidInput([("file", f"its shared strings unpack to {p.file_size:,} bytes; the limit is "
                                         f"{MAX_SHARED_STRINGS:,}")])  # fmt: skip


def _xlsx(content: bytes) -> Table:
    _check_zip(content)
    import openpyxl

    # openpyxl parses through defusedxml when it is installed (a dependency of ours): no entity
    # expansion, no external entities. Checked, not assumed.
    if not openpyxl.DEFUSEDXML:  # pragma: no cover - the dependency is declared
        raise RuntimeError("defusedxml is not installed; refusing to parse uploaded XML without it")
    try:
        book = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        sheet = book.worksheets[0]
        table: Table = []
        cells = 0
        rounded: list[tuple[int, int]] = []  # (row, column) of numbers Excel could not hold exactly
        formulas = _has_formulas(content)
        results_missing: set[tuple[int, int]] = set()  # (row, column) of cells without a value, where formulas are
        # Refuse while reading: a sheet can declare far more rows and cells than its size suggests.
        for row in sheet.iter_rows(values_only=True):
            cells += len(row)
            if len(row) > MAX_COLUMNS and any(v is not None for v in row[MAX_COLUMNS:]):
                raise InvalidInput([("file", f"row {len(table) + 1} has more than {MAX_COLUMNS} columns")])
            rounded += [(len(table) + 1, j) for j, v in enumerate(row[:MAX_COLUMNS])
                        if isinstance(v, float) and abs(v) >= 1e15]  # fmt: skip
            if formulas:
                results_missing.update((len(table) + 1, j) for j, v in enumerate(row[:MAX_COLUMNS]) if v is None)
            table.append([_cell(v) for v in row[:MAX_COLUMNS]])
            if len(table) > 2 * MAX_ROWS:
                raise InvalidInput([("file", f"has more than {MAX_ROWS} rows; import at most {MAX_ROWS} at a time")])
            if cells > MAX_CELLS:
                raise InvalidInput([("file", f"declares more than {MAX_CELLS:,} cells ({MAX_ROWS:,} rows of "
                                             f"{MAX_COLUMNS} columns), most of them empty; save only the table")])  # fmt: skip
        names = book.sheetnames
        book.close()
        if results_missing and (uncalculated := _uncalculated(content, len(table), results_missing)):
            header = table[0]
            raise InvalidInput([(f"row {r}.{_heading(header, j)}",
                                 f"holds a formula ({formula[:60]}) whose result the file does not hold: the program "
                                 "that wrote it did not calculate it; open the file in Excel or WPS and save it, or "
                                 "paste the column as values") for r, j, formula in uncalculated[:50]])  # fmt: skip
        if rounded:
            # An ID number typed into a number cell: Excel keeps 15 digits and rounds the rest, so 440305200001018517
            # came in as 440305200001018496, another person's number when its check digit happened to agree.
            header = table[0]
            raise InvalidInput([(f"row {r}.{_heading(header, j)}",
                                 "is a number of more than 15 digits, which Excel does not keep (it rounds the last "
                                 "ones): format the column as text and type the numbers again") for r, j in rounded])  # fmt: skip
        if len(names) > 1 and sum(any(c.strip() for c in row) for row in table) <= 1:
            raise InvalidInput([("file", f"the list is read from the workbook's first sheet, {names[0]!r}, which holds "
                                 f"no rows of data; move the list to the first of its {len(names)} sheets "
                                 f"({'、'.join(repr(n) for n in names[:10])})")])  # fmt: skip
        return table
    except InvalidInput:
        raise
    except Exception as e:  # openpyxl raises many kinds for a file that is not a workbook
        log.info("an upload named as a workbook could not be read: %r", e)
        raise InvalidInput(
            [
                (
                    "file",
                    "is not a readable XLSX workbook: a zip archive, but not one of a workbook, or a "
                    "damaged one; save it again from Excel as an Excel workbook (.xlsx)",
                )
            ]
        ) from None


def _heading(header: list[str], j: int) -> str:
    return header[j].strip() if j < len(header) and header[j].strip() else f"column {j + 1}"


_FORMULA = re.compile(rb"<(?:\w+:)?f[\s>/]")


def _has_formulas(content: bytes) -> bool:
    """Whether any sheet holds a formula: only then is the workbook read a second time (_uncalculated)."""
    book = zipfile.ZipFile(io.BytesIO(content))
    return any(_FORMULA.search(book.read(p)) for p in book.namelist() if p.startswith("xl/worksheets/")
               and p.endswith(".xml"))  # fmt: skip


def _uncalculated(content: bytes, rows: int, missing: set[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """(row, column, formula) of each cell of the first sheet that holds a formula and no result (among `missing`,
    the cells read without a value; a formula whose result is empty text has one). Read by its
    result alone, such a cell is empty: a required column then read as missing, an optional one as not given.
    Excel and WPS save each formula's result; a workbook written by a program (a report exporter) may not."""
    import openpyxl

    formulas = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=False)
    results = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    found = []
    rows_of = zip(formulas.worksheets[0].iter_rows(values_only=True, max_row=rows),
                  results.worksheets[0].iter_rows(max_row=rows), strict=False)  # fmt: skip
    for r, (written, read) in enumerate(rows_of, start=1):
        # A result of empty text is saved as such (a cell of type "str" with an empty value): that one was calculated.
        found += [(r, j, v) for j, v in enumerate(written[:MAX_COLUMNS]) if isinstance(v, str) and v.startswith("=")
                  and (r, j) in missing and (j >= len(read) or read[j].data_type == "n")]  # fmt: skip
    formulas.close()
    results.close()
    return found


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.date().isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# Writing.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> str:
    """A value as a spreadsheet cell that no spreadsheet program evaluates."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def write_csv(header: list[str], rows: Iterable[Iterable[Any]]) -> bytes:
    """UTF-8 with a BOM, which Excel needs to read Chinese; every cell through safe_cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return ("\ufeff" + out.getvalue()).encode()


if __name__ == "__main__":
    _child()
