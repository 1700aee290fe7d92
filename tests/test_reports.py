"""Input readers: CSV / MIMIC-CXR tree / Open-i XML -> RawReport | Reject, bad input, format detection."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_builder.reports import _BLOCK_CHARS, _CsvSplitter  # noqa: I001  (the CSV reader's internals)
from qa_builder.reports import (
    MAX_REPORT_CHARS,
    UTF8_WARNING,
    InputError,
    RawReport,
    Reject,
    detect_format,
    iter_reports,
    passthrough_columns,
    report_sections,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "inputs"
SHARED = Path(__file__).resolve().parents[2] / "shared"
IU_CSV = SHARED / "data" / "iu" / "dev_reports.csv"
needs_iu = pytest.mark.skipif(not IU_CSV.is_file(), reason="shared IU data not present")


def read_all(path, **kw) -> list[RawReport | Reject]:
    return list(iter_reports(path, **kw))


def by_id(records) -> dict[str, RawReport]:
    return {r.report_id: r for r in records if isinstance(r, RawReport)}


def write_csv(tmp_path: Path, text: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ============================================================================= CSV: real data

@needs_iu
def test_iu_csv_matches_pandas():
    import pandas as pd

    records = read_all(IU_CSV)
    assert len(records) == 1603  # one record per data row
    reports = [r for r in records if isinstance(r, RawReport)]
    rejects = [r for r in records if isinstance(r, Reject)]
    assert len(reports) == 1595
    assert {r.reason for r in rejects} == {"empty report (no findings/impression text)"}
    assert [r.source for r in records] == [f"{IU_CSV}:{n}" for n in range(2, 1605)]  # line numbers: header is 1
    assert passthrough_columns(IU_CSV) == ["MeSH", "Problems", "image"]

    df = pd.read_csv(IU_CSV, dtype=str, keep_default_na=False)
    for rec, (_, row) in zip(records, df.iterrows()):
        assert rec.report_id == row["uid"]
        if isinstance(rec, Reject):
            assert not row["findings"].strip() and not row["impression"].strip()
            continue
        assert rec.text is None and rec.subject_id is None and rec.study_id is None
        for name in ("indication", "comparison", "findings", "impression"):
            assert rec.sections[name] == (row[name].strip() or None)
        assert rec.extra == {k: (row[k] or None) for k in ("MeSH", "Problems", "image")}  # passthrough as given
        assert rec.warnings == ()
    first = reports[0]
    assert first.report_id == "3" and first.sections["findings"] is None
    assert first.sections["impression"].startswith("No displaced rib fractures")


# ============================================================================= CSV: every kind of row

MIXED = FIXTURES / "mixed_rows.csv"
MIXED_EXPECTED = [  # (line, report_id, None if kept else reason)
    (2, "r1", None),
    (3, "r2", None),                               # multi-line quoted field (lines 3-4); a blank line follows
    (6, "r3", None),                               # empty impression -> None
    (7, "r1", f"duplicate report_id 'r1' (first seen at {MIXED}:2)"),
    (8, None, "empty report_id (column 'report_id')"),
    (9, "r5", "empty report (no findings/impression text)"),
    (10, "r6", "too many fields (5, header has 4)"),
    (11, "r7", "too few fields (2, header has 4)"),
    (12, "r8", "contains NUL bytes (binary data)"),
    (13, "r9", None),                              # Latin-1 byte: kept, with a warning
    (14, "r10", "stray quote (',' expected after '\"')"),
    (15, "r11", None),                             # padded values
]


def test_mixed_rows_one_record_per_row():
    records = read_all(MIXED)
    assert [r.source for r in records] == [f"{MIXED}:{line}" for line, _, _ in MIXED_EXPECTED]
    for rec, (row, rid, reason) in zip(records, MIXED_EXPECTED):
        assert rec.report_id == rid, row
        if reason is None:
            assert isinstance(rec, RawReport), (row, rec)
        else:
            assert isinstance(rec, Reject) and rec.reason == reason, (row, rec)
            assert "\n" not in rec.reason


def test_mixed_rows_values():
    reports = by_id(read_all(MIXED))
    assert passthrough_columns(MIXED) == ["site"]
    r1 = reports["r1"]
    assert r1.sections == {"findings": "Lungs are clear.", "impression": "No acute process."}
    assert r1.extra == {"site": "A"} and r1.text is None and r1.warnings == ()
    assert reports["r2"].sections["findings"] == "Heart size is normal.\nNo pleural effusion."
    assert reports["r3"].sections["impression"] is None and reports["r3"].extra == {"site": None}
    r9 = reports["r9"]
    assert r9.sections["findings"] == "Temperature 38\ufffdC noted."  # bad byte replaced, report kept
    assert r9.warnings == (UTF8_WARNING,)
    r11 = reports["r11"]
    assert r11.sections == {"findings": "Padded findings.", "impression": None}
    assert r11.extra == {"site": "  spaced  "}  # passthrough unchanged


def test_output_is_deterministic():
    assert read_all(MIXED) == read_all(MIXED)
    assert read_all(FIXTURES / "openi") == read_all(FIXTURES / "openi")


def test_long_reports(tmp_path):
    kept = "Lungs are clear. " * 9_000                    # 153k chars: above csv's default field limit
    too_long = "x" * (1024 * 1024)                        # 1 MB
    path = write_csv(tmp_path, f"id,findings,impression\na,{kept},Normal.\nb,{too_long},Normal.\nc,Clear.,Normal.\n")
    a, b, c = read_all(path)
    assert isinstance(a, RawReport) and a.sections["findings"] == kept.strip()
    assert isinstance(b, Reject) and b.report_id == "b"
    assert b.reason == f"report longer than {MAX_REPORT_CHARS} characters ({len(too_long) + len('Normal.')})"
    assert isinstance(c, RawReport)
    path = write_csv(tmp_path, f"id,text\nbig,{too_long}\n", "text.csv")
    (rej,) = read_all(path)
    assert rej.reason == f"report longer than {MAX_REPORT_CHARS} characters ({len(too_long)})"


def test_unbalanced_quote_is_cut_at_the_next_row(tmp_path):
    path = write_csv(tmp_path, 'id,findings\n1,Clear.\n2,"never closed\n3,Not swallowed.\n4,"open at the end\n')
    one, two, three, four = read_all(path)
    assert isinstance(one, RawReport) and isinstance(three, RawReport) and three.source == f"{path}:4"
    assert isinstance(two, Reject) and two.report_id == "2" and two.source == f"{path}:3"
    assert two.reason == "unclosed quote (line 4 starts a new row)"
    assert isinstance(four, Reject) and four.report_id == "4"
    assert four.reason == "unclosed quote (runs to the end of the file)"


field = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "r1", "r1", "Clear.", '"', '""', "a,b", "line\nbreak", "nul\x00", "\r\n", ";"]),
)
raw_line = st.one_of(
    st.lists(field, min_size=1, max_size=6).map(
        lambda fs: ",".join('"' + f.replace('"', '""') + '"' if any(c in f for c in ',"\n\r') else f for f in fs)
    ),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),  # garbage, broken quotes
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(raw_line, max_size=12), bad_bytes=st.booleans())
def test_fuzz_csv_every_record_accounted_for(tmp_path, lines, bad_bytes):
    import csv as _csv
    import re

    body = "report_id,findings,impression\n" + "\n".join(lines) + "\n"
    data = body.encode("utf-8", "surrogatepass")
    if bad_bytes:
        data = data.replace(b"Clear", b"Cl\xe9ar")
    path = write_csv(tmp_path, data, "fuzz.csv")
    try:
        records = read_all(path)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    # Every non-blank physical line after the header is covered by exactly one record: the record
    # starting on it, or a multi-line record before it (a reject names its lines, a kept report holds
    # a line break). Physical lines end at \r\n, \r or \n.
    text = data.decode("utf-8", "surrogateescape")
    physical = re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", text)
    nonblank = [k for k, line in enumerate(physical, 1) if line.rstrip("\r\n") and k > 1]
    starts = [int(r.source.rsplit(":", 1)[1]) for r in records]
    assert starts == sorted(set(starts)) and set(starts) <= set(nonblank)
    assert not nonblank or starts[0] == nonblank[0]
    for k, r in enumerate(records):
        end = starts[k + 1] if k + 1 < len(starts) else len(physical) + 1
        inside = [n for n in nonblank if starts[k] < n < end]
        if not inside:
            continue
        if isinstance(r, Reject):
            m = re.search(r"\(lines (\d+)-(\d+)\)", r.reason)
            assert m and int(m.group(1)) == starts[k] and max(inside) <= int(m.group(2)) < end, (r, inside)
        else:  # a kept report spanning lines: they are one well-formed CSV record
            span = "".join(physical[starts[k] - 1:max(inside)]).replace("\x00", "")
            assert len(list(_csv.reader([span], strict=True))) == 1, (r, inside)
    kept = [r.report_id for r in records if isinstance(r, RawReport)]
    assert len(kept) == len(set(kept))
    with pytest.MonkeyPatch.context() as mp:  # the C-reader fast path reads as the line rules alone do
        mp.setattr(_CsvSplitter, "fast", False)
        assert read_all(path) == records
    for r in records:
        if isinstance(r, RawReport):
            assert r.report_id and r.report_id == r.report_id.strip()
            assert r.sections.get("findings") or r.sections.get("impression")
        else:
            assert r.reason and "\n" not in r.reason


# ============================================================================= CSV: layouts

def test_text_column_reports():
    path = FIXTURES / "text_reports.csv"
    records = read_all(path)
    assert [type(r) for r in records] == [RawReport] * 3
    assert passthrough_columns(path) == ["site"]
    a1, a2, a3 = records
    assert a1.report_id == "a1" and a1.subject_id == "900001" and a1.study_id is None
    assert a1.text.startswith("FINDINGS: The lungs are clear.") and a1.extra == {"site": "north"}
    # a context column next to the text is carried in `sections` and wins over the text's own
    assert a2.sections == {"indication": "Fever and cough"}
    assert report_sections(a2) == {
        "indication": "Fever and cough",
        "comparison": "None.",
        "findings": "Mild cardiomegaly. Small left pleural effusion\nwith adjacent atelectasis.",
        "impression": "1. Small left pleural effusion.\n2. Mild cardiomegaly.",
    }
    assert report_sections(a3) == {"findings": "Heart size is normal. Lungs are clear.", "impression": "No acute process."}
    assert a3.extra == {"site": None}


def test_mimic_sectioned_csv():
    path = FIXTURES / "mimic_sectioned.csv"
    records = read_all(path)
    assert passthrough_columns(path) == []
    s1, s2, s3, s4 = records
    assert (s1.report_id, s1.study_id, s1.subject_id) == ("s50000001", "50000001", None)
    assert s1.sections == {"impression": "No acute process.", "findings": "Lungs are clear.", "comparison": "None."}
    assert s2.sections["findings"] is None and s2.sections["impression"] == "Stable mild cardiomegaly."
    # last_paragraph stands in for the impression when there is neither impression nor findings
    assert s3.sections["impression"] == "Small right pleural effusion." and s3.sections["findings"] is None
    assert isinstance(s4, Reject) and s4.reason == "empty report (no findings/impression text)"


def test_id_column_priority_and_override(tmp_path):
    path = write_csv(tmp_path, "ID,Study_ID,Subject_ID,Findings,report_id_old\nx1,55,7,Clear.,old\n")
    (rec,) = read_all(path)
    assert (rec.report_id, rec.study_id, rec.subject_id) == ("55", "55", "7")  # study_id outranks id
    assert rec.extra == {"ID": "x1", "report_id_old": "old"}
    (rec,) = read_all(path, id_column="id")
    assert rec.report_id == "x1" and rec.study_id == "55"
    # a passthrough column may not shadow an output column
    path = write_csv(tmp_path, "uid,report_id,source,,findings\nu1,r9,web,z,Clear.\n", "shadow.csv")
    assert passthrough_columns(path, id_column="uid") == ["input_report_id", "input_source", "unnamed_4"]
    (rec,) = read_all(path, id_column="uid")
    assert rec.report_id == "u1" and rec.extra == {"input_report_id": "r9", "input_source": "web", "unnamed_4": "z"}


def test_encodings_delimiters_and_compression(tmp_path):
    body = "report_id;findings;impression\r\nq1;Clear.;Normal.\r\n"
    for name, data in [
        ("semi.csv", body.encode("utf-8")),
        ("bom16.csv", body.encode("utf-16")),
        ("tab.tsv", body.replace(";", "\t").encode("utf-8")),
        ("gz.csv.gz", gzip.compress(body.encode("utf-8-sig"))),
        ("noext", body.encode("utf-8")),
    ]:
        path = write_csv(tmp_path, data, name)
        assert detect_format(path) == "csv", name
        (rec,) = read_all(path)
        assert isinstance(rec, RawReport), (name, rec)
        assert rec.report_id == "q1" and rec.sections == {"findings": "Clear.", "impression": "Normal."}, name


def test_streaming_memory_is_bounded(tmp_path):
    row = "Heart size is normal. " * 20
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("id,findings,impression\n")
        for k in range(10_000):
            fh.write(f"{k},{row},No acute process.\n")
    size = path.stat().st_size
    tracemalloc.start()
    count = sum(1 for _ in iter_reports(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 10_000
    # only the id index grows, never the reports (the reader holds one block of lines at a time)
    assert peak < size / 4 + 4 * _BLOCK_CHARS, (peak, size)


# ============================================================================= CSV: unusable input

def one_line_error(excinfo, path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (b"report_id,findings\n", "no data rows"),
        (b"name,findings\nx,Clear.\n", "no id column"),
        (b"report_id,indication\nx,Cough.\n", "no report text"),
        (b"report_id,findings,Findings\nx,a,b\n", "appears twice"),
        (bytes(range(256)) * 40, "binary"),
        (b"\x00\x01\x02PK\x03\x04" + os.urandom(2000), "binary"),
    ],
)
def test_unusable_csv_raises_input_error(tmp_path, content, expected):
    path = write_csv(tmp_path, content)
    with pytest.raises(InputError) as excinfo:
        iter_reports(path)  # raised at the call, before any iteration
    assert expected in one_line_error(excinfo, path)


def test_missing_path_and_bad_arguments(tmp_path):
    missing = tmp_path / "nope.csv"
    for call in (lambda: iter_reports(missing), lambda: detect_format(missing), lambda: passthrough_columns(missing)):
        with pytest.raises(InputError) as excinfo:
            call()
        assert "no such file" in one_line_error(excinfo, missing)
    path = FIXTURES / "mixed_rows.csv"
    with pytest.raises(InputError, match="id column 'nope' not found"):
        iter_reports(path, id_column="nope")
    with pytest.raises(InputError, match="unknown format"):
        iter_reports(path, fmt="json")
    with pytest.raises(InputError, match="CSV input only"):
        iter_reports(FIXTURES / "openi", id_column="uid")
    with pytest.raises(InputError, match="must be a directory"):
        iter_reports(path, fmt="mimic")


# ============================================================================= MIMIC-CXR tree

MIMIC = FIXTURES / "mimic"


@pytest.mark.parametrize("root", [MIMIC, MIMIC / "files"])
def test_mimic_tree(root):
    assert detect_format(root) == "mimic"
    assert passthrough_columns(root) == []
    records = read_all(root)
    files = MIMIC / "files"
    assert [(type(r).__name__, r.source) for r in records] == [
        ("RawReport", str(files / "p10/p10000001/s50000001.txt")),
        ("RawReport", str(files / "p10/p10000001/s50000002.txt")),
        ("Reject", str(files / "p10/p10000010/s50000009.txt")),
        ("RawReport", str(files / "p10/p10000010/s50000010.txt")),
        ("Reject", str(files / "p11/p11000001/notes.txt")),
        ("RawReport", str(files / "p11/p11000001/s51000001.txt")),
        ("Reject", str(files / "p11/p11000002/s50000001.txt")),
    ]  # LICENSE.txt beside files/ is not an input
    reasons = [r.reason for r in records if isinstance(r, Reject)]
    assert reasons == [
        "empty report file",
        "not a MIMIC-CXR report file name (expected sNNNNNNNN.txt)",
        f"duplicate report_id 's50000001' (first seen at {files / 'p10/p10000001/s50000001.txt'})",
    ]
    first = records[0]
    assert (first.report_id, first.subject_id, first.study_id) == ("s50000001", "10000001", "50000001")
    assert first.sections == {} and first.extra == {}
    assert report_sections(first)["impression"] == "1. Small right pleural effusion.\n 2. No pneumothorax."
    assert report_sections(records[1]) == {"indication": "Line placement.",
                                           "impression": "Right IJ catheter tip in the mid SVC. No pneumothorax."}
    assert report_sections(records[3]) == {  # no headers: last paragraph is the impression
        "findings": "Lungs are well expanded and clear. Cardiomediastinal silhouette is normal.",
        "impression": "No acute cardiopulmonary process.",
    }
    latin1 = records[5]
    assert latin1.warnings == (UTF8_WARNING,) and "38\ufffdC" in latin1.text


def test_mimic_subtree_and_unreadable_file(tmp_path):
    root = tmp_path / "p12"
    shutil.copytree(MIMIC / "files" / "p10", root)
    (root / "p10000001" / "s50000099.txt").symlink_to(tmp_path / "missing-target")
    assert detect_format(root) == "mimic"
    records = read_all(root)
    bad = [r for r in records if isinstance(r, Reject) and r.report_id == "s50000099"]
    assert len(bad) == 1 and bad[0].reason.startswith("unreadable file")
    assert len(records) == 5


def test_mimic_tree_without_reports(tmp_path):
    (tmp_path / "files" / "p10").mkdir(parents=True)
    with pytest.raises(InputError):
        detect_format(tmp_path)
    with pytest.raises(InputError, match="no report files"):
        iter_reports(tmp_path, fmt="mimic")


# ============================================================================= Open-i

OPENI = FIXTURES / "openi"
OPENI_ORDER = ["1", "2", "3", "4", "10"]  # numbers in names compare as numbers


def check_openi(records, source_of):
    assert [r.report_id for r in records] == OPENI_ORDER
    assert [r.source for r in records] == [source_of(n) for n in OPENI_ORDER]
    one, two, three, four, ten = records
    assert one.sections == {
        "comparison": "None.", "indication": "Chest pain.",
        "findings": "The cardiac silhouette is mildly enlarged. No focal consolidation.",
        "impression": "Mild cardiomegaly.",
    }
    assert one.extra == {"MeSH": "Cardiomegaly/mild", "images": "CXR1_1_IM-0001-3001;CXR1_1_IM-0001-4001"}
    assert one.text is None and one.subject_id is None and one.study_id is None
    assert two.sections["findings"] is None and two.extra == {"MeSH": "normal", "images": "CXR2_IM-0652-1001"}
    assert isinstance(three, Reject) and three.reason.startswith("malformed XML")
    assert isinstance(four, Reject) and four.reason == "empty report (no findings/impression text)"
    assert ten.extra == {"MeSH": "Pulmonary Atelectasis/base/left;Opacity/lung/base/left", "images": None}


def test_openi_folder():
    assert detect_format(OPENI) == "openi"
    assert passthrough_columns(OPENI) == ["MeSH", "images"]
    check_openi(read_all(OPENI), lambda n: str(OPENI / "ecgen-radiology" / f"{n}.xml"))


def make_tgz(path: Path, names: list[str], extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name in names:
            tf.add(OPENI / "ecgen-radiology" / name, arcname=f"ecgen-radiology/{name}")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_openi_archive_is_read_in_sorted_order(tmp_path):
    # members deliberately out of order, plus a non-XML member that is not an input
    archive = make_tgz(tmp_path / "NLMCXR_reports.tgz", ["10.xml", "3.xml", "1.xml", "4.xml", "2.xml"],
                       {"ecgen-radiology/README": b"not a report"})
    assert detect_format(archive) == "openi"
    check_openi(read_all(archive), lambda n: f"{archive}:ecgen-radiology/{n}.xml")


def test_openi_archive_truncated(tmp_path):
    archive = make_tgz(tmp_path / "full.tgz", ["1.xml", "2.xml", "10.xml"])
    data = gzip.decompress(archive.read_bytes())
    cut = tmp_path / "cut.tar"
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        second = tf.getmembers()[1]
    cut.write_bytes(data[: second.offset_data + 100])  # all of 1.xml, then 2.xml cut short
    records = read_all(cut)
    assert isinstance(records[0], RawReport) and records[0].report_id == "1"
    assert isinstance(records[-1], Reject) and records[-1].report_id is None
    assert "truncated or corrupt" in records[-1].reason


def test_openi_archive_without_reports(tmp_path):
    archive = make_tgz(tmp_path / "empty.tgz", [], {"README": b"nothing"})
    with pytest.raises(InputError, match="no Open-i XML"):
        iter_reports(archive)


def test_openi_bad_bytes_and_unknown_labels(tmp_path):
    xml = (b'<?xml version="1.0" encoding="utf-8"?><eCitation><MedlineCitation><Article><Abstract>'
           b'<AbstractText Label="FINDINGS">Temperature 38\xb0C.</AbstractText>'
           b'<AbstractText Label="CONCLUSION">Normal.</AbstractText>'
           b'<AbstractText Label="SIGNATURE">Dr. X</AbstractText>'
           b"</Abstract></Article></MedlineCitation></eCitation>")
    (tmp_path / "7.xml").write_bytes(xml)
    (rec,) = read_all(tmp_path / "7.xml")
    assert rec.sections["findings"] == "Temperature 38\ufffdC." and rec.sections["impression"] == "Normal."
    assert rec.warnings == (UTF8_WARNING, "AbstractText label 'SIGNATURE' ignored")
    (tmp_path / "8.xml").write_bytes(b"")
    records = read_all(tmp_path)
    assert [(type(r).__name__, r.report_id) for r in records] == [("RawReport", "7"), ("Reject", "8")]


# ============================================================================= detect_format

def test_detect_format_sniffs_content(tmp_path):
    xml = (OPENI / "ecgen-radiology" / "1.xml").read_bytes()
    (tmp_path / "report.dat").write_bytes(xml)
    assert detect_format(tmp_path / "report.dat") == "openi"
    tar = make_tgz(tmp_path / "archive.bin", ["1.xml"])
    assert detect_format(tar) == "openi"
    (tmp_path / "notes.txt").write_text("Just some prose, with a comma.\n")
    with pytest.raises(InputError, match="not a report input"):
        detect_format(tmp_path / "notes.txt")
    (tmp_path / "junk.bin").write_bytes(os.urandom(4096).replace(b"\n", b"\x00"))
    with pytest.raises(InputError, match="binary"):
        detect_format(tmp_path / "junk.bin")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(InputError, match="neither"):
        detect_format(empty)
