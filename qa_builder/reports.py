"""Input readers for qa-build: CSV, MIMIC-CXR `files/` trees and Open-i XML -> RawReport | Reject.

`iter_reports(path)` streams one `RawReport` or one `Reject` per input record, in a deterministic
order: CSV data rows in file order; MIMIC `.txt` files and Open-i `.xml` files (folder or archive
members) sorted by path, numbers in names compared as numbers (``2.xml`` before ``10.xml``).
Nothing is loaded whole: CSV rows are read one at a time, trees are walked with `os.scandir`,
archives are read as streams. `InputError` is raised (before the first record, when
`iter_reports` is called) only when nothing usable was given.

Policies, so that nothing is lost silently:
* A blank CSV line is not a record (as in pandas); every other CSV record is one data row, and
  ``source`` is ``path:N`` with N the 1-based data row number (so row N is pandas' ``iloc[N - 1]``).
* Bytes that are not UTF-8 are decoded with U+FFFD replacement and the record is KEPT: a wrong
  byte (a cp1252 degree sign, say) should not cost a whole report. The record says so in
  ``RawReport.warnings`` ("not valid UTF-8 (decoded with replacement)").
* Rejected, with the reason in `Reject.reason`: empty id, no findings/impression text, a NUL byte
  (binary data), a report longer than MAX_REPORT_CHARS characters, a CSV row whose field count
  differs from the header's or whose quoting is broken, a duplicate report_id (the first is kept;
  the reason names where it was first seen), an unreadable file or archive member, malformed XML.
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


def _iter_csv(plan: _CsvPlan) -> Iterator[RawReport | Reject]:
    path = str(plan.path)
    n_columns = plan.n_columns
    id_index, subject_index, study_index = plan.id_index, plan.subject_index, plan.study_index
    text_index, last_paragraph_index = plan.text_index, plan.last_paragraph_index
    section_indices, passthrough = plan.section_indices, plan.passthrough
    empty_id = f"empty report_id (column {plan.id_name!r})"
    seen: dict[str, int] = {}
    _raise_field_limit()
    with _open_csv(plan.path, plan.encoding) as fh:
        reader = csv.reader(fh, delimiter=plan.delimiter, strict=True)
        next(row for row in reader if row)  # header (validated by _csv_plan)
        n = 0
        while True:
            first_line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except (OSError, EOFError, zlib.error, UnicodeError) as exc:  # truncated gzip, I/O error
                yield Reject(path, None, f"file is truncated or unreadable after data row {n} ({exc})")
                break
            except csv.Error as exc:  # broken quoting; the reader resumes on the next line
                n += 1
                yield Reject(f"{path}:{n}", None,
                             f"malformed CSV row starting at line {first_line}: {exc} (unbalanced quotes?)")
                continue
            if not row:
                continue  # blank line: not a record
            n += 1
            source = f"{path}:{n}"
            if len(row) != n_columns:
                rid = (row[id_index].strip() or None) if id_index < len(row) else None
                yield Reject(source, rid, f"row has {len(row)} fields, header has {n_columns}")
                continue
            joined = "".join(row)
            if "\x00" in joined:
                yield Reject(source, row[id_index].strip() or None, _NUL)
                continue
            warnings: tuple[str, ...] = ()
            if not joined.isascii() and _unescape_row(row):
                warnings = (UTF8_WARNING,)
            report_id = row[id_index].strip()
            if not report_id:
                yield Reject(source, None, empty_id)
                continue
            if text_index is not None:
                text = row[text_index]
                if len(text) > MAX_REPORT_CHARS:
                    yield Reject(source, report_id, _too_long(len(text)))
                    continue
                if not text or text.isspace():
                    yield Reject(source, report_id, _EMPTY_TEXT)
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
                    yield Reject(source, report_id, _too_long(size))
                    continue
                if not sections.get("findings") and not sections.get("impression"):
                    yield Reject(source, report_id, _EMPTY_SECTIONS)
                    continue
            first = seen.get(report_id)
            if first is not None:
                yield Reject(source, report_id, f"duplicate report_id {report_id!r} (first seen at {path}:{first})")
                continue
            seen[report_id] = n
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


# --------------------------------------------------------------------------------------------
# MIMIC-CXR files/ tree

def _walk(root: str, suffix: str) -> Iterator[str | Reject]:
    """Paths (str: pathlib costs more than reading a report) of files ending in `suffix` under
    root, depth first, natural-sorted; hidden entries skipped; a Reject for an unreadable folder."""
    try:
        with os.scandir(root) as it:
            entries = sorted(((_natural_key(e.name), e) for e in it if not e.name.startswith(".")),
                             key=lambda pair: pair[0])
    except OSError as exc:
        yield Reject(root, None, f"unreadable directory ({exc.strerror or exc})")
        return
    for _, entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(entry.path, suffix)
        elif entry.name.lower().endswith(suffix):
            yield entry.path


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
    if b"\x00" in data:
        return Reject(source, report_id, _NUL)
    text, warnings = _decode(data)
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


def _tar_names(path: Path) -> tuple[list[str], str | None]:
    """Report member names in archive order, and the error that cut the listing short, if any."""
    names: list[str] = []
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                if _is_report_member(member):
                    names.append(member.name)
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
    path: Path | str, fmt: str | None = None, id_column: str | None = None
) -> Iterator[RawReport | Reject]:
    """One RawReport or Reject per input record, streamed in a deterministic order.

    Raises InputError now (not on first iteration) when nothing usable was given."""
    path, fmt = _resolve(path, fmt, id_column)
    if fmt == "csv":
        return _iter_csv(_csv_plan(path, id_column))
    if fmt == "mimic":
        files = _walk(_mimic_root(path), ".txt")
        first = next(files, None)
        if first is None:
            raise _input_error(path, "no report files (*.txt) in this MIMIC-CXR tree")
        return _dedupe(f if isinstance(f, Reject) else _mimic_record(f) for f in _peeked(first, files))
    # openi
    if path.is_dir():
        files = _walk(str(path), ".xml")
        first = next(files, None)
        if first is None:
            raise _input_error(path, "no Open-i XML reports (*.xml) in this directory")
        return _dedupe(_openi_files(_peeked(first, files)))
    if path.name.lower().endswith(".xml"):
        return _dedupe(_openi_files([str(path)]))
    if not _is_tar(path):
        raise _input_error(path, "not an Open-i input (expected a folder of *.xml, an .xml file or a .tgz archive)")
    names, error = _tar_names(path)
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

