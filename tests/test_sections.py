"""split_sections: header forms, MIMIC-CXR layouts, unlabelled-paragraph recovery, lexicon, fuzzing."""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_builder.sections import (
    CANONICAL_SECTIONS,
    LEXICON_PATH,
    header_to_section,
    load_lexicon,
    split_sections,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
IU_CSV = SHARED / "data" / "iu" / "dev_reports.csv"

# The fictional example of shared/formats/mimic-cxr.md (MIMIC layout: leading spaces, " \n" blank lines).
MIMIC_EXAMPLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough and fever  // r/o pneumonia

 COMPARISON:  Chest radiograph from ___.

 FINDINGS:
 
 Heart size is mildly enlarged, unchanged. There is a small left pleural effusion
 with adjacent basilar atelectasis. No pneumothorax. Right lung is clear. Sternotomy
 wires are intact.

 IMPRESSION:
 
 1. Small left effusion and left basilar atelectasis; pneumonia cannot be excluded.
 2. Stable mild cardiomegaly.
"""


def test_mimic_layout():
    assert split_sections(MIMIC_EXAMPLE) == {
        "examination": "CHEST (PA AND LAT)",
        "indication": "___ year old woman with cough and fever  // r/o pneumonia",
        "comparison": "Chest radiograph from ___.",
        # hard wraps kept as given, only the ends are stripped
        "findings": "Heart size is mildly enlarged, unchanged. There is a small left pleural effusion\n"
                    " with adjacent basilar atelectasis. No pneumothorax. Right lung is clear. Sternotomy\n"
                    " wires are intact.",
        "impression": "1. Small left effusion and left basilar atelectasis; pneumonia cannot be excluded.\n"
                      " 2. Stable mild cardiomegaly.",
    }


def test_crlf_gives_the_same_sections():
    assert split_sections(MIMIC_EXAMPLE.replace("\n", "\r\n")) == split_sections(MIMIC_EXAMPLE)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("FINDINGS: Lungs are clear.\nIMPRESSION: Normal.", {"findings": "Lungs are clear.", "impression": "Normal."}),
        ("Findings: Lungs are clear.\nImpression: Normal.", {"findings": "Lungs are clear.", "impression": "Normal."}),
        ("findings: lungs are clear.\nimpression: normal.", {"findings": "lungs are clear.", "impression": "normal."}),
        ("Findings - Lungs are clear.\nImpression \u2013 Normal.", {"findings": "Lungs are clear.", "impression": "Normal."}),
        ("FINDINGS\nLungs are clear.\n\nIMPRESSION\nNormal.", {"findings": "Lungs are clear.", "impression": "Normal."}),
        ("Findings\nLungs are clear.\nImpression\nNormal.", {"findings": "Lungs are clear.", "impression": "Normal."}),
        ("FINDINGS :  Lungs are clear.\nIMPRESSION:Normal.", {"findings": "Lungs are clear.", "impression": "Normal."}),
        ("  Clinical history: cough\nReason for exam: fever\nFINDINGS: clear",
         {"history": "cough", "indication": "fever", "findings": "clear"}),
    ],
)
def test_header_forms(text, expected):
    assert split_sections(text) == expected


def test_headers_inside_a_line():
    # flattened reports: ALL CAPS anywhere, Capitalised after the end of a sentence
    assert split_sections("EXAMINATION: CHEST (PA AND LAT) INDICATION: cough. FINDINGS: clear. IMPRESSION: normal.") == {
        "examination": "CHEST (PA AND LAT)", "indication": "cough.", "findings": "clear.", "impression": "normal.",
    }
    assert split_sections("Findings: lungs clear. Impression: normal.") == {"findings": "lungs clear.", "impression": "normal."}
    # lower case inside a sentence is text, not a header
    assert split_sections("FINDINGS: Patient with history: asthma. Lungs clear.") == {
        "findings": "Patient with history: asthma. Lungs clear."
    }


def test_words_that_are_not_headers_stay_text():
    text = "FINDINGS:\nHistory of prior granulomatous disease.\nComparison is made to the prior study.\nimpression\nof the trachea."
    assert split_sections(text) == {"findings": text.split("\n", 1)[1]}
    # unknown sub-headings stay inside their section
    assert split_sections("FINDINGS:\nLUNGS: Clear.\nHEART: Normal size.\nIMPRESSION: Normal.") == {
        "findings": "LUNGS: Clear.\nHEART: Normal size.", "impression": "Normal.",
    }


def test_banner_wet_read_and_separator():
    text = (
        "WET READ: ___ ___ 10:30 PM\n  Left IJ terminates in the SVC. No PTX.\n"
        "______________________________________________________________________________\n"
        "                                 FINAL REPORT\n INDICATION:  Line placement.\n\n"
        " FINDINGS:  Left IJ catheter tip in the SVC.\n\n IMPRESSION:  No pneumothorax.\n"
    )
    assert split_sections(text) == {
        "wet_read": "___ ___ 10:30 PM\n  Left IJ terminates in the SVC. No PTX.",
        "indication": "Line placement.",
        "findings": "Left IJ catheter tip in the SVC.",
        "impression": "No pneumothorax.",
    }


def test_numbered_impression_kept_whole():
    out = split_sections("IMPRESSION:\n1. Small left effusion.\n2. Mild cardiomegaly.\n\n3. No pneumothorax.")
    assert out == {"impression": "1. Small left effusion.\n2. Mild cardiomegaly.\n\n3. No pneumothorax."}
    assert split_sections("IMPRESSION: 1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.") == {
        "impression": "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs."
    }


def test_only_impression_has_no_findings_key():
    out = split_sections(" FINAL REPORT\n INDICATION:  Line placement.\n \n IMPRESSION:  Tip in the SVC.\n")
    assert out == {"indication": "Line placement.", "impression": "Tip in the SVC."}


@pytest.mark.parametrize(
    "header, section",
    [("CONCLUSION", "impression"), ("SUMMARY", "impression"), ("Opinion", "impression"),
     ("FINDINGS AND IMPRESSION", "findings"), ("Findings/Impression", "findings"),
     ("RECOMMENDATION(S)", "recommendation"), ("NOTIFICATION", "notification"), ("ADDENDUM", "addendum"),
     ("REASON FOR EXAMINATION", "indication"), ("CLINICAL INFORMATION", "history"), ("COMPARISONS", "comparison"),
     ("TECHNIQUE", "technique"), ("EXAM", "examination"), ("IMPRESSON", "impression")],
)
def test_synonyms(header, section):
    assert split_sections(f"{header}: Some text.") == {section: "Some text."}
    assert header_to_section(header) == section


def test_no_headers_last_paragraph_is_impression():
    # as MIMIC's create_section_files.py: the last paragraph is the impression, the rest findings
    assert split_sections("Lungs are clear.\n \nHeart is normal.\n\nNo acute process.") == {
        "findings": "Lungs are clear.\n\nHeart is normal.", "impression": "No acute process.",
    }
    assert split_sections("Heart size normal and lungs are clear. No edema or pneumonia.") == {
        "impression": "Heart size normal and lungs are clear. No edema or pneumonia."
    }
    # banner and an ALL-CAPS title line are not report text
    assert split_sections("   FINAL REPORT\n PORTABLE CHEST\n \n Lungs are clear.\n \n No acute process.\n") == {
        "findings": "Lungs are clear.", "impression": "No acute process.",
    }


def test_unlabelled_paragraphs_after_context_sections():
    # findings written as a second COMPARISON paragraph
    text = "INDICATION: Cough.\n\nCOMPARISON: None.\n\nPA and lateral views. Lungs are clear.\n\nIMPRESSION: Normal."
    assert split_sections(text) == {
        "indication": "Cough.", "comparison": "None.", "findings": "PA and lateral views. Lungs are clear.",
        "impression": "Normal.",
    }
    # ...but a second INDICATION paragraph is a clinical question, not a finding
    text = "INDICATION: Fever.\n\nEvaluate for pneumonia.\n\nIMPRESSION: No pneumonia."
    assert split_sections(text) == {"indication": "Fever.\n\nEvaluate for pneumonia.", "impression": "No pneumonia."}
    # no FINDINGS and no IMPRESSION: the last section's later paragraphs (MIMIC's last_paragraph)
    text = "HISTORY: Chest pain.\n\nThe lungs are clear.\n\nNo acute process."
    assert split_sections(text) == {"history": "Chest pain.", "findings": "The lungs are clear.", "impression": "No acute process."}


def test_study_description_titles_are_findings():
    text = " FINAL REPORT\n CHEST, TWO VIEWS:\n \n No consolidation.\n CHEST WALL: Intact.\n \n IMPRESSION:  Normal.\n"
    # 'CHEST WALL:' inside the findings is a sub-heading and stays
    assert split_sections(text) == {"findings": "No consolidation.\n CHEST WALL: Intact.", "impression": "Normal."}
    assert split_sections("PA AND LATERAL CHEST RADIOGRAPHS:  The lungs are clear.\n\nIMPRESSION: Normal.") == {
        "findings": "The lungs are clear.", "impression": "Normal.",
    }


def test_repeated_sections_are_joined():
    text = "FINDINGS: Left effusion.\nIMPRESSION: Effusion.\nADDENDUM: Called Dr. ___.\nIMPRESSION: Also atelectasis."
    assert split_sections(text) == {
        "findings": "Left effusion.", "impression": "Effusion.\n\nAlso atelectasis.", "addendum": "Called Dr. ___.",
    }


def test_empty_and_blank_sections():
    assert split_sections("") == {}
    assert split_sections(" \n\t\n") == {}
    assert split_sections("FINDINGS:\n\nIMPRESSION: Normal.") == {"impression": "Normal."}
    assert split_sections("FINAL REPORT") == {}


# ------------------------------------------------------------------------------------------ lexicon

def test_lexicon_is_valid_and_covers_the_readme_sections():
    lex = load_lexicon()
    assert set(lex.synonyms.values()) <= set(CANONICAL_SECTIONS)
    for name in ("findings", "impression", "indication", "comparison", "history", "technique", "examination"):
        assert lex.synonyms[name] == name
    assert all(key == " ".join(key.lower().split()) for key in lex.synonyms)
    assert "final report" in lex.banners


def test_lexicon_rejects_a_synonym_in_two_sections(tmp_path):
    bad = tmp_path / "sections.yaml"
    bad.write_text("sections:\n  findings: [summary]\n  impression: [summary]\n")
    with pytest.raises(ValueError, match="summary"):
        load_lexicon(bad)
    bad.write_text("sections:\n  findngs: [findings]\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_lexicon(bad)
    assert LEXICON_PATH.is_file()


# ------------------------------------------------------------------------------------------ real data

@pytest.mark.skipif(not IU_CSV.is_file(), reason="shared IU data not present")
def test_iu_reports_round_trip():
    """Real findings/impressions written under headers come back unchanged."""
    with open(IU_CSV, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["findings"].strip() and r["impression"].strip()]
    assert len(rows) > 1000
    bad = []
    for r in rows:
        f, i = r["findings"].strip(), r["impression"].strip()
        for text in (f"FINDINGS:\n{f}\n\nIMPRESSION:\n{i}", f"Findings: {f}\nImpression: {i}",
                     f"INDICATION: {r['indication']} FINDINGS: {f} IMPRESSION: {i}",  # flattened
                     f"{f}\n\n{i}"):  # no headers: last paragraph is the impression
            got = split_sections(text)
            if got.get("findings") != f or got.get("impression") != i:
                bad.append((r["uid"], text, got))
    assert not bad, bad[:3]


# ------------------------------------------------------------------------------------------ speed

def test_speed_and_no_catastrophic_backtracking():
    texts = [MIMIC_EXAMPLE.replace("___", str(k)) for k in range(3000)]
    t0 = time.perf_counter()
    for text in texts:
        split_sections(text)
    per_report = (time.perf_counter() - t0) / len(texts)
    assert per_report < 300e-6, per_report  # ~10-25 us expected; generous for loaded CI machines
    for nasty in ("A" * 200_000, "A " * 100_000 + ":", ":" * 200_000, "IMPRESSION " * 20_000 + ":",
                  ("FINDINGS:\n" * 20_000), "a\n" * 100_000, "_" * 100_000):
        t0 = time.perf_counter()
        split_sections(nasty)
        assert time.perf_counter() - t0 < 2.0


# ------------------------------------------------------------------------------------------ fuzzing

def _non_space(s: str) -> Counter:
    return Counter(c for c in s if not c.isspace())


header_alphabet = st.sampled_from(
    ["FINDINGS", "IMPRESSION", "Findings", "impression", "INDICATION", "COMPARISON", "FINAL REPORT", "WET READ",
     "CHEST, TWO VIEWS", "CONCLUSION", "History", "1.", "2.", ":", " - ", "\u2013", "\n", "\n\n", " \n \n", "\r\n",
     "_____", "___", " ", "Lungs are clear.", "No effusion", "LUNGS:", "10:30", "(", ")", "\t"]
)
report_like = st.lists(st.one_of(header_alphabet, st.text(max_size=12)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), report_like))
def test_fuzz_never_raises_and_only_returns_input_text(text):
    out = split_sections(text)
    assert isinstance(out, dict)
    assert set(out) <= set(CANONICAL_SECTIONS)
    for value in out.values():
        assert isinstance(value, str) and value and value == value.strip()
    # sections never invent text: their characters are a sub-multiset of the input's
    produced = Counter()
    for value in out.values():
        produced += _non_space(value)
    assert not produced - _non_space(text)


words = st.lists(st.sampled_from(["lungs", "are", "clear", "no", "effusion", "heart", "size", "normal", "mild",
                                  "left", "basilar", "atelectasis", "stable", "1.", "2."]), min_size=1, max_size=12)
sentence = words.map(lambda ws: " ".join(ws) + ".")
section_text = st.lists(sentence, min_size=1, max_size=4).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["findings", "impression", "indication", "comparison", "history", "technique"]),
                    section_text, min_size=1),
    st.sampled_from(["{H}: {T}", "{H}:\n{T}", "{H}\n{T}", "  {H}:  {T}  "]),
    st.sampled_from([str.upper, str.title]),
    st.booleans(),
)
def test_round_trip_of_headed_sections(sections, layout, case, banner):
    if set(sections) - {"findings", "impression"} and not set(sections) & {"findings", "impression"}:
        sections["impression"] = "no acute process."
    parts = [layout.format(H=case(name), T=text) for name, text in sections.items()]
    text = ("FINAL REPORT\n" if banner else "") + "\n\n".join(parts)
    assert split_sections(text) == sections
