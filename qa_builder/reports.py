"""Input readers for qa-build: CSV, MIMIC-CXR `files/` trees and Open-i XML -> RawReport | Reject.

`iter_reports(path)` streams one `RawReport` or one `Reject` per input record, in a deterministic
order: CSV data rows in file order; MIMIC `.txt` files and Open-i `.xml` files (folder or archive
members) sorted by path, numbers in names compared as numbers (``2.xml`` before ``10.xml``).
Nothing is loaded whole: CSV rows are read one at a time, trees are walked with `os.scandir`,
archives are read as streams. `InputError` is raised (before the first record, when
`iter_reports` is called) only when nothing usable was given.

Policies, so that nothing is lost silently:
* A blank CSV line is not a record (as in pandas); every other CSV record is one data row, and
  ``source`` is ``path:N`` with N the 1-based line number of the record's first line in the file
  (the header is line 1; a multi-line record is named by its first line).
* A damaged CSV row never takes a following row with it: a quoted field left open is cut at the next
  line that starts a row (rules above `_CsvSplitter`; README "Damaged rows, odd files and the
  output folder"); the reject names the lines it spans.
* Bytes that are not UTF-8 are decoded with U+FFFD replacement and the record is KEPT: a wrong
  byte (a cp1252 degree sign, say) should not cost a whole report. The record says so in
  ``RawReport.warnings`` ("not valid UTF-8 (decoded with replacement)").
* Rejected, with the reason in `Reject.reason`: empty id, no findings/impression text, a NUL byte
  (binary data), a report file that is not plausible text (mostly control characters or
  undecodable bytes), a report longer than MAX_REPORT_CHARS characters, a CSV row with too many or
  too few fields, an unclosed quote or a stray quote, a duplicate report_id (the first is kept; the
  reason names where it was first seen), an unreadable file or archive member, malformed XML.
* Files in an input folder that are not read (hidden files and folders, files of another type)
  are counted by reason in the `skipped` Counter that `iter_reports` is given (manifest.json).
* CSV values: ids are stripped; section and text values are stripped and '' -> None; passthrough
  values are kept exactly as given except '' -> None.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
import zlib
from itertools import repeat
from operator import contains
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .sections import header_to_section, split_sections

__all__ = [
    "SECTION_NAMES", "ID_COLUMNS", "TEXT_COLUMNS", "MAX_REPORT_CHARS", "FORMATS",
    "RawReport", "Reject", "InputError",
    "detect_format", "iter_reports", "passthrough_columns", "report_sections",
]

SECTION_NAMES = ("findings", "impression", "indication", "comparison", "history", "technique", "examination")
EVIDENCE_SECTIONS = ("findings", "impression")
ID_COLUMNS = ("report_id", "study_id", "study", "uid", "id")      # auto-detected, in this priority
TEXT_COLUMNS = ("text", "report")                                  # full, unsectioned report text
LAST_PARAGRAPH_COLUMN = "last_paragraph"                           # MIMIC create_section_files.py
MAX_REPORT_CHARS = 200_000   # ~100x the longest MIMIC-CXR report; longer ones are rejected
FORMATS = ("csv", "mimic", "openi")
OPENI_PASSTHROUGH = ("MeSH", "images")
# Output columns of reports.parquet that a passthrough column may not shadow: renamed 'input_<name>'.
RESERVED_COLUMNS = frozenset({"report_id", "subject_id", "study_id", "source", *SECTION_NAMES})

UTF8_WARNING = "not valid UTF-8 (decoded with replacement)"


@dataclass(slots=True)
class RawReport:
    report_id: str
    subject_id: str | None
    study_id: str | None
    text: str | None                    # full text of an unsectioned source, else None
    sections: dict[str, str | None]     # sections given by the source (see report_sections)
    source: str                         # 'path', 'path:row' or 'archive.tgz:member'
    extra: dict[str, str | None]        # passthrough columns, in input column order
    warnings: tuple[str, ...] = ()      # kept-with-a-note problems, e.g. UTF8_WARNING


@dataclass(slots=True)
class Reject:
    source: str
    report_id: str | None
    reason: str


class InputError(Exception):
    """Nothing usable was given (missing path, empty file, CSV without the needed columns...)."""


def _input_error(path: Path | str, message: str) -> InputError:
    return InputError(f"{path}: {message}".replace("\r", " ").replace("\n", " "))  # always one line


def report_sections(report: RawReport) -> dict[str, str]:
    """The non-empty sections of a report: `split_sections(text)` for unsectioned sources, with any
    section the source gave separately (e.g. an `indication` column next to `text`) taking precedence."""
    out = split_sections(report.text) if report.text is not None else {}
    for name, value in report.sections.items():
        if value:
            out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# helpers shared by the readers

_DIGITS = re.compile(r"(\d+)")


def _natural_key(name: str) -> list:
    # 's2' < 's10', '2.xml' < '10.xml'; str and int parts alternate so lists always compare
    return [int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name))]


def _decode(data: bytes) -> tuple[str, tuple[str, ...]]:
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8"), ()
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), (UTF8_WARNING,)


def _unescape_row(row: list[str]) -> bool:
    """Fix fields read with errors='surrogateescape' in place; True when a field had bad bytes."""
    bad = False
    for k, value in enumerate(row):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                row[k] = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                bad = True
    return bad


def _too_long(n_chars: int) -> str:
    return f"report longer than {MAX_REPORT_CHARS} characters ({n_chars})"


_EMPTY_SECTIONS = "empty report (no findings/impression text)"
_EMPTY_TEXT = "empty report (no text)"
_NUL = "contains NUL bytes (binary data)"
# Characters that plausible report text has few of: C0/C1 controls (not tab, newlines, form feed) and
# U+FFFD (bytes no supported encoding decodes). Random binary decodes to ~60 % of them; a cp1252
# report to well under 1 %.
_NOT_TEXT = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffd]")


def _not_text(text: str) -> str | None:
    """Why `text` (a whole report file, decoded) is not plausible text, or None."""
    bad = len(_NOT_TEXT.findall(text))
    if bad >= 8 and bad * 5 > len(text):
        return (f"not plausible text ({bad} of {len(text)} characters are control characters or "
                "undecodable bytes: binary data?)")
    return None


def _dedupe(records: Iterable[RawReport | Reject]) -> Iterator[RawReport | Reject]:
    """Keep the first report of each report_id; later ones become Rejects naming the first."""
    seen: dict[str, str] = {}
    for record in records:
        if isinstance(record, RawReport):
            first = seen.get(record.report_id)
            if first is not None:
                yield Reject(record.source, record.report_id,
                             f"duplicate report_id {record.report_id!r} (first seen at {first})")
                continue
            seen[record.report_id] = record.source
        yield record


# --------------------------------------------------------------------------------------------
# format detection

_MIMIC_STUDY = re.compile(r"s(\d+)\.txt", re.IGNORECASE)
_MIMIC_SUBJECT = re.compile(r"p(\d+)", re.IGNORECASE)
_CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
_TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tar.xz")
_SNIFF_BYTES = 8192


def _read_head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    """First n bytes of a file, gunzipped when it is gzip."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(n)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                head = fh.read(n)
    except (OSError, EOFError) as exc:
        raise _input_error(path, f"cannot read ({exc})") from None
    return head


def _looks_binary(head: bytes) -> bool:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    first_line = head.split(b"\n", 1)[0]
    if b"\x00" in first_line:
        return True
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return control > len(head) * 0.1


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _sniff_dir(root: Path, max_dirs: int = 200) -> str | None:
    """'mimic' or 'openi' from the first report-like file met in a sorted depth-first walk."""
    start = root / "files" if (root / "files").is_dir() else root
    stack = [(start, 0)]
    visited = 0
    while stack and visited < max_dirs:
        directory, depth = stack.pop()
        visited += 1
        try:
            entries = sorted(os.scandir(directory), key=lambda e: _natural_key(e.name))
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                subdirs.append((Path(entry.path), depth + 1))
            elif name.lower().endswith(".xml"):
                return "openi"
            elif name.lower().endswith(".txt") and (
                _MIMIC_SUBJECT.fullmatch(directory.name) or _MIMIC_STUDY.fullmatch(name)
            ):
                return "mimic"
        if depth < 4:
            stack.extend(reversed(subdirs))  # pop() then visits them in sorted order
    return None


def detect_format(path: Path | str) -> str:
    """'csv' | 'mimic' | 'openi' for a report input; InputError (one line) when it is none of these."""
    path = Path(path)
    if not path.exists():
        raise _input_error(path, "no such file or directory")
    if path.is_dir():
        fmt = _sniff_dir(path)
        if fmt is None:
            raise _input_error(path, "directory holds neither a MIMIC-CXR tree (pNN/pNNNNNNNN/sNNNNNNNN.txt) "
                                     "nor Open-i XML reports (*.xml)")
        return fmt
    name = path.name.lower()
    if name.endswith(_TAR_SUFFIXES) or name.endswith(".xml"):
        return "openi"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    head = _read_head(path)
    if not head.strip():
        raise _input_error(path, "file is empty")
    if _is_tar(path):
        return "openi"
    text = head.lstrip(codecs.BOM_UTF8 + b" \t\r\n")
    if text.startswith(b"<"):
        if b"<eCitation" in head or b"<AbstractText" in head:
            return "openi"
        raise _input_error(path, "XML file is not an Open-i report (no <eCitation>/<AbstractText>)")
    if _looks_binary(head):
        raise _input_error(path, "not a report input: binary data (expected CSV, a MIMIC-CXR files/ tree or Open-i XML)")
    encoding = "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
    first_line = head.decode(encoding, errors="replace").lstrip("\ufeff").split("\n", 1)[0].lower()
    cells = {c.strip().strip('"') for c in re.split(r"[,\t;|]", first_line)}
    if len(cells) > 1 and cells & {*ID_COLUMNS, *TEXT_COLUMNS, *SECTION_NAMES}:
        return "csv"  # a CSV under another name: its header names a column we know
    raise _input_error(path, "not a report input (expected a CSV with a header, a MIMIC-CXR files/ tree "
                             "or Open-i XML)")


# --------------------------------------------------------------------------------------------
# CSV

@dataclass(slots=True)
class _CsvPlan:
    path: Path
    encoding: str
    delimiter: str
    n_columns: int
    id_index: int
    id_name: str
    study_from_id: bool                      # id column is MIMIC's 'study' ('s5...' -> digits)
    subject_index: int | None
    study_index: int | None
    text_index: int | None
    section_indices: list[tuple[str, int]]   # section name -> column, input order
    last_paragraph_index: int | None
    passthrough: list[tuple[int, str]] = field(default_factory=list)   # (column, output name)


def _raise_field_limit() -> None:
    # csv refuses fields over 128 KiB by default; a long report must reach the length check instead
    if csv.field_size_limit() < 2**31 - 1:
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def _open_csv(path: Path, encoding: str) -> io.TextIOWrapper:
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    raw: BinaryIO = gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[assignment]
    # surrogateescape: bad bytes survive decoding and are fixed per row (see _unescape_row)
    return io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")


def _csv_plan(path: Path, id_column: str | None) -> _CsvPlan:
    head = _read_head(path)
    if not head.strip():
        raise _input_error(path, "file is empty")
    if _looks_binary(head):
        raise _input_error(path, "not a CSV file (binary data)")
    encoding = "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    name = path.name.lower()
    if name.endswith((".tsv", ".tsv.gz")):
        delimiter = "\t"
    else:
        first = head.decode(encoding if encoding != "utf-8-sig" else "utf-8", errors="replace").lstrip("\ufeff")
        first = first.split("\n", 1)[0]
        counts = {d: first.count(d) for d in (",", "\t", ";", "|")}
        delimiter = max(counts, key=lambda d: (counts[d], d == ","))
    _raise_field_limit()
    try:
        with _open_csv(path, encoding) as fh:
            reader = csv.reader(fh, delimiter=delimiter, strict=True)
            header = next((row for row in reader if row), None)
            try:
                has_rows = header is not None and next((row for row in reader if row), None) is not None
            except csv.Error:
                has_rows = True  # a broken first row is still a row: iter_reports rejects it
    except (csv.Error, OSError, EOFError, UnicodeError) as exc:
        raise _input_error(path, f"cannot read the CSV header ({exc})") from None
    if header is None:
        raise _input_error(path, "file is empty")
    _unescape_row(header)
    header = [h.strip() for h in header]
    shown = ", ".join(header[:20]) + (", ..." if len(header) > 20 else "")
    lower = [h.lower() for h in header]
    index: dict[str, int] = {}
    for k, h in enumerate(lower):
        index.setdefault(h, k)

    if id_column is not None:
        if id_column.strip().lower() not in index:
            raise _input_error(path, f"id column {id_column!r} not found (columns: {shown})")
        id_name = id_column.strip().lower()
    else:
        id_name = next((c for c in ID_COLUMNS if c in index), "")
        if not id_name:
            raise _input_error(path, f"no id column (expected one of {', '.join(ID_COLUMNS)}, "
                                     f"or pass --id-column; columns: {shown})")
    id_index = index[id_name]
    section_indices = [(h, k) for k, h in enumerate(lower) if h in SECTION_NAMES and index[h] == k]
    last_paragraph_index = index.get(LAST_PARAGRAPH_COLUMN)
    has_evidence_columns = any(n in EVIDENCE_SECTIONS for n, _ in section_indices) or last_paragraph_index is not None
    text_index = None
    if not has_evidence_columns:
        text_index = next((index[c] for c in TEXT_COLUMNS if c in index and index[c] != id_index), None)
        if text_index is None:
            raise _input_error(path, "no report text: expected a text/report column or findings/impression "
                                     f"columns (columns: {shown})")
    subject_index = index.get("subject_id")
    study_index = index.get("study_id")
    consumed = {id_index, text_index, last_paragraph_index, subject_index, study_index}
    consumed.update(k for _, k in section_indices)
    for k, h in enumerate(lower):
        if k not in consumed and index[h] in consumed:  # which of the two would be the data?
            raise _input_error(path, f"column {header[k]!r} appears twice")
    if not has_rows:
        raise _input_error(path, "no data rows after the header")

    passthrough: list[tuple[int, str]] = []
    taken = {"report_id", "subject_id", "study_id", "source", *SECTION_NAMES}
    for k, h in enumerate(header):
        if k in consumed:
            continue
        out = h or f"unnamed_{k + 1}"
        if out.lower() in RESERVED_COLUMNS:
            out = f"input_{out}"
        base, n = out, 2
        while out.lower() in taken:
            out, n = f"{base}_{n}", n + 1
        taken.add(out.lower())
        passthrough.append((k, out))
    return _CsvPlan(
        path=path, encoding=encoding, delimiter=delimiter, n_columns=len(header),
        id_index=id_index, id_name=header[id_index], study_from_id=id_name == "study",
        subject_index=subject_index, study_index=study_index, text_index=text_index,
        section_indices=section_indices, last_paragraph_index=last_paragraph_index, passthrough=passthrough,
    )


_MIMIC_STUDY_VALUE = re.compile(r"[sS]?(\d+)")


# How records are told apart (README "Damaged rows, odd files and the output folder"):
# * A record that the C csv module reads without a quoting error is taken as it reads it when it is
#   one line, or when it spans lines (a quoted field with line breaks), has the header's width and
#   none of its inner lines starts a row (below).
# * Otherwise (a stray quote, a multi-line record of another width or with a row-like line inside,
#   a quoted field that never closes) the record is read again line by line from its first line:
#   while a quoted field is
#   open, a line that closes it into a row of the header's width ends the row; otherwise a line
#   that on its own STARTS A ROW cuts it there (the open row is rejected, "unclosed quote", and that
#   line starts afresh). A line starts a row when its id column holds an id-like value (no spaces or
#   quotes, at most 128 characters, the same pattern of letters, digits and punctuation as the ids
#   read so far: 's5…' for 's50000001') or is empty, and the line either parses as a complete row of
#   at least the header's width, or as one whose quoted field after the id is still open, or is
#   exactly the header's width with a stray quote. Report prose does not look like that; a line
#   that does not is kept in the open field.
# * An open field still open after _OPEN_LIMIT characters is cut there ("unclosed quote").

_EOF_IN_QUOTES = "unexpected end of data"
_OPEN_LIMIT = 5 * MAX_REPORT_CHARS
_BLOCK_CHARS = 1 << 16    # lines read (and parsed by the C reader) at a time
_ID_MAX = 128
_SHAPE_SAMPLE = 1000   # ids whose pattern is learnt (the first rows of the file)
_SHAPE_MAX = 16        # more distinct patterns than this: ids are irregular, any id-like value goes
_SHAPE_TABLE = str.maketrans({**{c: "a" for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"},
                              **{c: "9" for c in "0123456789"}})
_RUNS = re.compile(r"(.)\1+")
_NOT_ID = re.compile(r'[\s"]')


def _id_shape(value: str) -> str:
    """'s50000001' -> 'a9', 'CXR12_IM-3' -> 'a9_a-9': letters and digits, runs collapsed."""
    return _RUNS.sub(r"\1", value.translate(_SHAPE_TABLE))


def _reject_id(row: list[str] | None, index: int) -> str | None:
    """The id of a damaged row when it can be read: a printable value in the id column."""
    if row is None or index >= len(row):
        return None
    value = row[index]
    if not value.isascii():
        fixed = [value]
        _unescape_row(fixed)
        value = fixed[0]
    value = value.strip()
    readable = value and len(value) <= 200 and value.isprintable() and "\ufffd" not in value
    return value if readable else None


class _CsvSplitter:
    """Physical lines -> records: (first line, last line, fields, problem, has NUL). `problem` is
    None for a well-formed record, else the reason (fields then hold what could be read, or None)."""

    fast = True   # the C reader first (False: every line through the line-by-line rules; for tests)

    def __init__(self, delimiter: str, n_columns: int, id_index: int):
        self.delimiter, self.n_columns, self.id_index = delimiter, n_columns, id_index
        self.shapes: set[str] = set()
        self.sampled = 0

    def parse(self, text: str) -> list[str]:
        return next(csv.reader((text,), delimiter=self.delimiter, strict=True))

    def lenient(self, line: str) -> list[str] | None:
        try:
            return next(csv.reader((line.rstrip("\r\n"),), delimiter=self.delimiter))
        except (csv.Error, StopIteration):
            return None

    def learn(self, report_id: str) -> None:
        """Note the pattern of an id read from a well-formed row."""
        if self.sampled < _SHAPE_SAMPLE:
            self.sampled += 1
            if len(self.shapes) <= _SHAPE_MAX:
                self.shapes.add(_id_shape(report_id))

    def id_like(self, value: str) -> bool:
        if len(value) > _ID_MAX or _NOT_ID.search(value):
            return False
        return not self.shapes or len(self.shapes) > _SHAPE_MAX or _id_shape(value) in self.shapes

    def starts_row(self, line: str) -> bool:
        """Does this line, read on its own, begin a new row? (see the rules above)"""
        n, k = self.n_columns, self.id_index
        body = line.rstrip("\r\n")
        if body.count(self.delimiter) < k:
            return False
        complete = True
        if '"' not in body:
            row = body.split(self.delimiter)
        else:
            try:
                row = self.parse(body)
            except csv.Error as exc:
                if _EOF_IN_QUOTES in str(exc):  # a row whose quoted field after the id stays open
                    try:
                        row = self.parse(body + '"')
                    except csv.Error:
                        return False
                    if len(row) - 1 <= k or len(row) > n:
                        return False
                    complete = False
                else:  # a row of the header's width with a stray quote
                    row = self.lenient(body) or []
                    if len(row) != n:
                        return False
        if complete and len(row) < n:
            return False
        value = row[k].strip()
        if not value:
            return complete and len(row) == n
        return self.id_like(value)

    def records(self, fh: io.TextIOWrapper, first_no: int, errors: list[str]):
        """Records from the lines of fh (line `first_no` on). Fast path: the C `csv.reader` over a block
        of lines; a record it reads without a quoting error is taken as read when it is one line, or
        has the header's width and no inner line that could start a row (cheap filters first: a
        quote, or a line with enough delimiters; then `starts_row`). From the first line of a record
        where that fails (or whose quoted field is open at the end of the file or for more than
        _OPEN_LIMIT characters), lines are read one at a time with the rules above until no quoted
        field is open; then the fast path goes on. Read errors (truncated gzip, I/O) end the lines
        and are put in `errors`."""
        delimiter, parse, n_columns = self.delimiter, self.parse, self.n_columns
        least = n_columns - 1
        lines: list[str] = []
        pos = 0                   # next unread index of `lines`
        base = first_no           # line number of lines[0]
        eof = False
        nul_possible = False      # a NUL somewhere in `lines`

        def more() -> bool:
            nonlocal lines, pos, base, eof, nul_possible
            if eof:
                return False
            try:
                block = fh.readlines(_BLOCK_CHARS)
            except (OSError, EOFError, zlib.error, UnicodeError) as exc:
                errors.append(f"file is truncated or unreadable after line {base + len(lines) - 1} ({exc})")
                block = []
            if not block:
                eof = True
                return False
            lines, base = lines[pos:] + block, base + pos
            pos = 0
            nul_possible = any(map(contains, lines, repeat("\x00")))
            return True

        while pos < len(lines) or more():
            # ---- fast path
            sub = lines[pos:] if pos else lines
            reader = csv.reader(sub, delimiter=delimiter, strict=True)
            check_nul = nul_possible
            done = 0
            slow = False
            if not self.fast:  # (tests: the line-by-line rules alone must give the same records)
                reader, slow = (), True
            try:
                for row in reader:
                    end = reader.line_num
                    if end - done == 1:
                        if row:
                            first = base + pos + done
                            if check_nul and "\x00" in sub[done]:
                                yield first, first, [v.replace("\x00", "") for v in row], None, True
                            else:
                                yield first, first, row, None, False
                        done = end
                        continue
                    if len(row) != n_columns:
                        slow = True
                        break
                    if end - done > 2:  # could an inner line start a row? (a quote, or enough delimiters)
                        inner = sub[done + 1:end - 1]
                        text = "".join(inner)
                        if ('"' in text or text.count(delimiter) >= least
                                and max(map(str.count, inner, repeat(delimiter))) >= least) \
                                and any(self.starts_row(line.replace("\x00", "")) for line in inner
                                        if '"' in line or line.count(delimiter) >= least):
                            slow = True
                            break
                    first = base + pos + done
                    if check_nul and any("\x00" in v for v in row):
                        yield first, first + end - done - 1, [v.replace("\x00", "") for v in row], None, True
                    else:
                        yield first, first + end - done - 1, row, None, False
                    done = end
            except csv.Error as exc:  # a quoting error, or a quoted field still open at the end of the block
                slow = True
                if _EOF_IN_QUOTES in str(exc) and not eof and sum(map(len, sub[done:])) <= _OPEN_LIMIT:
                    pos += done
                    more()  # the record runs past the block: read on, and parse it again from its start
                    continue
            pos += done
            if not slow:
                continue
            # ---- slow path: line by line from the first line of the record the fast path gave up on,
            # until no quoted field is open
            pending: list[str] | None = None   # lines of a row whose quoted field is open
            start = size = 0
            open_nul = False
            no = base + pos - 1
            while pos < len(lines) or more():
                line = lines[pos]
                no = base + pos
                pos += 1
                nul = "\x00" in line
                if nul:
                    line = line.replace("\x00", "")
                if pending is not None:
                    outcome = "open"
                    if '"' in line:
                        try:
                            row = parse("".join(pending) + line)
                            outcome = "row"
                        except csv.Error as exc:
                            if _EOF_IN_QUOTES not in str(exc):
                                outcome, error = "error", exc
                        if outcome == "row" and len(row) == n_columns:
                            yield start, no, row, None, open_nul or nul
                            break
                    if self.starts_row(line):
                        yield (start, no - 1, self.lenient(pending[0]), f"unclosed quote (line {no} starts a new row)",
                               open_nul)
                        pending = None  # and the line starts afresh, below
                    elif outcome == "open":
                        pending.append(line)
                        open_nul |= nul
                        size += len(line)
                        if size > _OPEN_LIMIT:
                            yield (start, no, self.lenient(pending[0]),
                                   f"unclosed quote (still open after {_OPEN_LIMIT:,} characters)", open_nul)
                            break
                        continue
                    elif outcome == "row":  # closed, but not the header's width: the caller says so
                        yield start, no, row, None, open_nul or nul
                        break
                    else:
                        yield start, no, self.lenient(pending[0]), _quote_problem(error), open_nul or nul
                        break
                if '"' not in line:
                    body = line.rstrip("\r\n")
                    if body or nul:
                        yield no, no, body.split(delimiter), None, nul
                    break
                try:
                    row = parse(line)
                except csv.Error as exc:
                    if _EOF_IN_QUOTES in str(exc):
                        pending, start, size, open_nul = [line], no, len(line), nul
                        continue
                    yield no, no, self.lenient(line), _quote_problem(exc), nul
                    break
                yield no, no, row, None, nul
                break
            else:
                if pending is not None:
                    yield start, no, self.lenient(pending[0]), "unclosed quote (runs to the end of the file)", open_nul


def _quote_problem(exc: csv.Error) -> str:
    message = str(exc)
    if "expected after" in message:
        return f"stray quote ({message})"
    return f"malformed CSV row ({message})"


def _skip_header(fh: io.TextIOWrapper, delimiter: str) -> int:
    """Read past the header record (validated by _csv_plan); returns its last line number."""
    no, text = 0, ""
    for no, line in enumerate(fh, 1):
        if not text and not line.strip("\r\n"):
            continue
        text += line
        try:
            next(csv.reader((text,), delimiter=delimiter, strict=True))
            return no
        except csv.Error as exc:
            if _EOF_IN_QUOTES not in str(exc):
                return no
    return no


def _iter_csv(plan: _CsvPlan) -> Iterator[RawReport | Reject]:
    path = str(plan.path)
    n_columns = plan.n_columns
    id_index, subject_index, study_index = plan.id_index, plan.subject_index, plan.study_index
    text_index, last_paragraph_index = plan.text_index, plan.last_paragraph_index
    section_indices, passthrough = plan.section_indices, plan.passthrough
    empty_id = f"empty report_id (column {plan.id_name!r})"
    seen: dict[str, int] = {}
    splitter = _CsvSplitter(plan.delimiter, n_columns, id_index)
    learn = splitter.learn
    errors: list[str] = []
    _raise_field_limit()
    with _open_csv(plan.path, plan.encoding) as fh:
        header_end = _skip_header(fh, plan.delimiter)
        for first, last, row, problem, nul in splitter.records(fh, header_end + 1, errors):
            source = f"{path}:{first}"
            span = f" (lines {first}-{last})" if last > first else ""  # a reject names the lines it spans
            if problem is not None or nul or len(row) != n_columns:
                if problem is None and not nul:
                    many = "many" if len(row) > n_columns else "few"
                    problem = f"too {many} fields ({len(row)}, header has {n_columns})"
                elif nul:
                    problem = _NUL
                yield Reject(source, _reject_id(row, id_index), problem + span)
                continue
            joined = "".join(row)
            warnings: tuple[str, ...] = ()
            if not joined.isascii() and _unescape_row(row):
                warnings = (UTF8_WARNING,)
            report_id = row[id_index].strip()
            if not report_id:
                yield Reject(source, None, empty_id + span)
                continue
            learn(report_id)
            if text_index is not None:
                text = row[text_index]
                if len(text) > MAX_REPORT_CHARS:
                    yield Reject(source, report_id, _too_long(len(text)) + span)
                    continue
                if not text or text.isspace():
                    yield Reject(source, report_id, _EMPTY_TEXT + span)
                    continue
                text = text.strip()
                sections = {name: (row[k].strip() or None) for name, k in section_indices}
            else:
                text = None
                sections = {name: (row[k].strip() or None) for name, k in section_indices}
                if last_paragraph_index is not None and not sections.get("findings") and not sections.get("impression"):
                    sections["impression"] = row[last_paragraph_index].strip() or None
                size = sum(len(v) for v in sections.values() if v)
                if size > MAX_REPORT_CHARS:
                    yield Reject(source, report_id, _too_long(size) + span)
                    continue
                if not sections.get("findings") and not sections.get("impression"):
                    yield Reject(source, report_id, _EMPTY_SECTIONS + span)
                    continue
            first_seen = seen.get(report_id)
            if first_seen is not None:
                yield Reject(source, report_id,
                             f"duplicate report_id {report_id!r} (first seen at {path}:{first_seen})" + span)
                continue
            seen[report_id] = first
            study_id = None
            if study_index is not None:
                study_id = row[study_index].strip() or None
            elif plan.study_from_id:
                m = _MIMIC_STUDY_VALUE.fullmatch(report_id)
                study_id = m.group(1) if m else None
            yield RawReport(
                report_id=report_id,
                subject_id=(row[subject_index].strip() or None) if subject_index is not None else None,
                study_id=study_id,
                text=text,
                sections=sections,
                source=source,
                extra={out: (row[k] if row[k] != "" else None) for k, out in passthrough},
                warnings=warnings,
            )
        for error in errors:
            yield Reject(path, None, error)


# --------------------------------------------------------------------------------------------
# MIMIC-CXR files/ tree

def _walk(root: str, suffix: str, skipped: Counter | None = None) -> Iterator[str | Reject]:
    """Paths (str: pathlib costs more than reading a report) of files ending in `suffix` under
    root, depth first, natural-sorted; a Reject for an unreadable folder. Hidden entries and files
    of another type are not read: counted in `skipped` by reason."""
    try:
        with os.scandir(root) as it:
            entries = sorted(((_natural_key(e.name), e) for e in it), key=lambda pair: pair[0])
    except OSError as exc:
        yield Reject(root, None, f"unreadable directory ({exc.strerror or exc})")
        return
    for _, entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if entry.name.startswith("."):
            if skipped is not None:
                skipped["hidden folder" if is_dir else "hidden file"] += 1
        elif is_dir:
            yield from _walk(entry.path, suffix, skipped)
        elif entry.name.lower().endswith(suffix):
            yield entry.path
        elif skipped is not None:
            skipped[f"not a {suffix} file"] += 1


def _mimic_root(path: Path) -> str:
    return str(path / "files" if (path / "files").is_dir() else path)


def _mimic_record(source: str) -> RawReport | Reject:
    parent, name = os.path.split(source)
    study = _MIMIC_STUDY.fullmatch(name)
    if study is None:  # LICENSE.txt, notes...: visible, never parsed as a report
        return Reject(source, None, "not a MIMIC-CXR report file name (expected sNNNNNNNN.txt)")
    report_id = name[: -len(".txt")]
    try:
        with open(source, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return Reject(source, report_id, f"unreadable file ({exc.strerror or exc})")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text, warnings = data.decode("utf-16", errors="replace"), ()
    elif b"\x00" in data:
        return Reject(source, report_id, _NUL)
    else:
        text, warnings = _decode(data)
    problem = _not_text(text)
    if problem is not None:
        return Reject(source, report_id, problem)
    if not text.strip():
        return Reject(source, report_id, "empty report file")
    if len(text) > MAX_REPORT_CHARS:
        return Reject(source, report_id, _too_long(len(text)))
    subject = _MIMIC_SUBJECT.fullmatch(os.path.basename(parent))
    return RawReport(
        report_id=report_id,
        subject_id=subject.group(1) if subject else None,
        study_id=study.group(1),
        text=text,
        sections={},
        source=source,
        extra={},
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------------
# Open-i XML

_OPENI_LABELS = ("comparison", "indication", "findings", "impression")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def _openi_record(data: bytes, source: str, report_id: str) -> RawReport | Reject:
    if not data.strip():
        return Reject(source, report_id, "empty file")
    warnings: list[str] = []
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        text, bad = _decode(data)
        if not bad:
            return Reject(source, report_id, f"malformed XML ({exc})")
        try:  # invalid UTF-8 made it unparseable: parse the replacement-decoded text instead
            root = ET.fromstring(_XML_DECLARATION.sub("", text, count=1))
        except ET.ParseError as exc2:
            return Reject(source, report_id, f"malformed XML ({exc2})")
        warnings.append(UTF8_WARNING)
    sections: dict[str, str | None] = dict.fromkeys(_OPENI_LABELS)
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip()
        name = header_to_section(label)
        if name is None:
            warnings.append(f"AbstractText label {label!r} ignored")
            continue
        value = "".join(node.itertext()).strip() or None
        if value:
            sections[name] = f"{sections[name]}\n\n{value}" if sections.get(name) else value
        else:
            sections.setdefault(name, None)
    if "\x00" in "".join(v for v in sections.values() if v):
        return Reject(source, report_id, _NUL)
    size = sum(len(v) for v in sections.values() if v)
    if size > MAX_REPORT_CHARS:
        return Reject(source, report_id, _too_long(size))
    if not sections.get("findings") and not sections.get("impression"):
        return Reject(source, report_id, _EMPTY_SECTIONS)
    majors = [t for m in root.iter("MeSH") for node in m.iter("major") if (t := "".join(node.itertext()).strip())]
    images = [i for node in root.iter("parentImage") if (i := (node.get("id") or "").strip())]
    return RawReport(
        report_id=report_id,
        subject_id=None,
        study_id=None,
        text=None,
        sections=sections,
        source=source,
        extra={"MeSH": ";".join(majors) or None, "images": ";".join(images) or None},
        warnings=tuple(warnings),
    )


def _openi_files(files: Iterable[str | Reject]) -> Iterator[RawReport | Reject]:
    for source in files:
        if isinstance(source, Reject):
            yield source
            continue
        report_id = os.path.splitext(os.path.basename(source))[0]
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            yield Reject(source, report_id, f"unreadable file ({exc.strerror or exc})")
            continue
        yield _openi_record(data, source, report_id)


def _is_report_member(member: tarfile.TarInfo) -> bool:
    base = PurePosixPath(member.name).name
    return member.isfile() and base.lower().endswith(".xml") and not base.startswith(".")


def _tar_names(path: Path, skipped: Counter | None = None) -> tuple[list[str], str | None]:
    """Report member names in archive order, and the error that cut the listing short, if any;
    other files are counted in `skipped`."""
    names: list[str] = []
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if _is_report_member(member):
                    names.append(member.name)
                elif skipped is not None and member.isfile():
                    hidden = PurePosixPath(member.name).name.startswith(".")
                    skipped["hidden file" if hidden else "not a .xml file"] += 1
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        if not names:
            raise _input_error(path, f"cannot read archive ({exc})") from None
        return names, f"{type(exc).__name__}: {exc}"
    return names, None


def _openi_archive(path: Path, names: list[str], error: str | None) -> Iterator[RawReport | Reject]:
    """Stream the archive again, yielding members in sorted-name order. Out-of-order members wait
    in memory until their turn: nothing for an archive written in sorted order, at most the
    archive's XML (about 10 MB for NLMCXR_reports.tgz) otherwise."""
    order = sorted(range(len(names)), key=lambda k: (_natural_key(names[k]), k))
    waiting: dict[int, RawReport | Reject] = {}
    cursor = 0
    archive_path = str(path)

    def flush() -> Iterator[RawReport | Reject]:
        nonlocal cursor
        while cursor < len(order) and order[cursor] in waiting:
            yield waiting.pop(order[cursor])
            cursor += 1

    position = 0
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if position >= len(names):
                    break
                if not _is_report_member(member):
                    continue
                source = f"{archive_path}:{member.name}"
                report_id = PurePosixPath(member.name).stem
                try:
                    fh = archive.extractfile(member)
                    data = fh.read() if fh is not None else b""
                    waiting[position] = _openi_record(data, source, report_id)
                except (tarfile.TarError, OSError, EOFError) as exc:
                    waiting[position] = Reject(source, report_id, f"unreadable archive member ({exc})")
                position += 1
                yield from flush()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        error = error or f"{type(exc).__name__}: {exc}"
    for k in range(len(names)):  # members listed in pass 1 but not read now
        if k not in waiting and k >= position:
            waiting[k] = Reject(f"{archive_path}:{names[k]}", PurePosixPath(names[k]).stem,
                                "unreadable archive member (archive changed or truncated)")
    yield from flush()
    if error is not None:
        yield Reject(archive_path, None, f"archive is truncated or corrupt after {len(names)} reports ({error})")


# --------------------------------------------------------------------------------------------
# public entry points

def _resolve(path: Path | str, fmt: str | None, id_column: str | None) -> tuple[Path, str]:
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise _input_error(path, f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    elif not path.exists():
        raise _input_error(path, "no such file or directory")
    if id_column is not None and fmt != "csv":
        raise _input_error(path, f"--id-column applies to CSV input only (this is {fmt})")
    if fmt == "csv" and path.is_dir():
        raise _input_error(path, "is a directory, not a CSV file")
    if fmt == "mimic" and not path.is_dir():
        raise _input_error(path, "MIMIC-CXR input must be a directory (the files/ tree or its parent)")
    return path, fmt


def _peeked(first: str | Reject, rest: Iterator[str | Reject]) -> Iterator[str | Reject]:
    yield first
    yield from rest


def iter_reports(
    path: Path | str, fmt: str | None = None, id_column: str | None = None, skipped: Counter | None = None
) -> Iterator[RawReport | Reject]:
    """One RawReport or Reject per input record, streamed in a deterministic order.

    Raises InputError now (not on first iteration) when nothing usable was given. Files of an input
    folder that are not read (hidden, another type) are counted in `skipped`, by reason."""
    path, fmt = _resolve(path, fmt, id_column)
    if fmt == "csv":
        return _iter_csv(_csv_plan(path, id_column))
    if fmt == "mimic":
        files = _walk(_mimic_root(path), ".txt", skipped)
        first = next(files, None)
        if first is None:
            raise _input_error(path, "no report files (*.txt) in this MIMIC-CXR tree")
        return _dedupe(f if isinstance(f, Reject) else _mimic_record(f) for f in _peeked(first, files))
    # openi
    if path.is_dir():
        files = _walk(str(path), ".xml", skipped)
        first = next(files, None)
        if first is None:
            raise _input_error(path, "no Open-i XML reports (*.xml) in this directory")
        return _dedupe(_openi_files(_peeked(first, files)))
    if path.name.lower().endswith(".xml"):
        return _dedupe(_openi_files([str(path)]))
    if not _is_tar(path):
        raise _input_error(path, "not an Open-i input (expected a folder of *.xml, an .xml file or a .tgz archive)")
    names, error = _tar_names(path, skipped)
    if not names:
        raise _input_error(path, "archive holds no Open-i XML reports (*.xml)")
    return _dedupe(_openi_archive(path, names, error))


def passthrough_columns(path: Path | str, fmt: str | None = None, id_column: str | None = None) -> list[str]:
    """Names of the passthrough columns `iter_reports` puts in RawReport.extra, in order."""
    path, fmt = _resolve(path, fmt, id_column)
    if fmt == "csv":
        return [name for _, name in _csv_plan(path, id_column).passthrough]
    if fmt == "openi":
        return list(OPENI_PASSTHROUGH)
    return []

