"""Property tests: the parser never raises and its offsets always point into its own sentence."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_builder.mentions import get_extractor
from qa_builder.pipeline import parse_report
from qa_builder.reports import RawReport
from qa_builder.sentences import split_sentences

WORDS = ["No", "no", "pleural", "effusion", "left", "right", "bilateral", "heart", "is", "not", "enlarged", "XXXX",
         "___", "1.", "2)", "possible", "cannot", "be", "excluded", "resolved", "3.5", "cm", "nodule", ".", ",", ";",
         "\n", "\n\n", "versus", "FINDINGS:", "IMPRESSION:", "lungs", "are", "clear", "history", "of", "pneumonia", "?"]
report_text = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(WORDS), max_size=80).map(" ".join),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(report_text)
def test_split_sentences_total(text):
    sentences = split_sentences(text)
    assert all(s and s == s.strip() and "\n" not in s for s in sentences)


@SETTINGS
@given(report_text, report_text)
def test_parse_report_total_and_offsets_consistent(findings, impression):
    raw = RawReport(report_id="x", subject_id=None, study_id=None, text=None,
                    sections={"findings": findings, "impression": impression}, source="fuzz", extra={})
    report, sentences, mentions = parse_report(raw, get_extractor())
    assert [s["sentence_id"] for s in sentences] == list(range(len(sentences)))
    assert [m["mention_id"] for m in mentions] == list(range(len(mentions)))
    for m in mentions:
        assert m["sentence"][m["start"]:m["end"]] == m["text"]
        assert m["certainty"] in ("positive", "negative", "uncertain")
        assert m["laterality"] in (None, "left", "right", "bilateral")
        assert m["change"] in (None, "new", "increased", "decreased", "unchanged", "resolved")
        assert m["temporality"] in ("current", "historical")
