"""Golden sentences for the abnormality list (qa/abnormality.py), region answers (qa/region.py) and the
open-answer text rules (qa/text.py)."""

from __future__ import annotations

import pytest

from qa_builder.qa.generate import QAConfig
from qa_builder.qa.text import deidentified, region_clause, without_lead_connective
from report_qa import answers, qa

ALL = QAConfig()


@pytest.mark.parametrize("text, expected", [
    ("Stable XXXX opacity in the left base, XXXX scarring or atelectasis. Stable degenerative changes of the spine.",
     "possible atelectasis, possible scarring, lung opacity, degenerative change of the spine"),
    ("Low lung volumes with bronchovascular crowding.", "low lung volumes"),   # crowding is no interstitial disease
    ("The aorta is tortuous, and cannot exclude ascending aortic aneurysm.", "tortuous aorta, possible aortic aneurysm"),
    ("There is a left upper lobectomy.", "lobectomy"),                         # not a pneumonectomy
    ("Lung lines remain low. No focal infiltrates.", "none"),                  # 'lung lines' is no device
])
def test_the_list_holds_every_present_finding_and_nothing_absent(text, expected):
    got = answers(qa(text), "abnormality")
    assert [", ".join(sorted(got[0].split(", ")))] == [", ".join(sorted(expected.split(", ")))]


def test_region_answer_holds_only_its_regions_items():
    rows = qa("No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.", config=ALL)
    by_region = {r["region"]: r["answer"] for r in rows if r["question_type"] == "region"}
    assert by_region["pleura"] == "No effusions or pneumothorax."
    assert by_region["lungs"] == "No pneumonia, edema, nodules or masses."


def test_region_answer_drops_a_dangling_connective():
    rows = qa("The lungs are clear. Specifically, no evidence of focal consolidation, pneumothorax, or pleural effusion.",
              config=ALL)
    by_region = {r["region"]: r["answer"] for r in rows if r["question_type"] == "region"}
    assert by_region["pleura"] == "No evidence of pneumothorax or pleural effusion."


def test_region_clause_leaves_anything_but_a_plain_negated_list_alone():
    s = "No XXXX abnormal pulmonary opacities, no definite pleural effusion seen."
    items = [(s.index("pulmonary opacities"), s.index("pulmonary opacities") + 19, "lungs", "negative"),
             (s.index("pleural effusion"), s.index("pleural effusion") + 16, "pleura", "negative")]
    assert region_clause(s, items, "pleura") is None
    assert without_lead_connective("Specifically, no effusion.") == "No effusion."


@pytest.mark.parametrize("policy, expected", [
    ("token", "There are ___ opacities. Stable opacity in the left base, ___ scarring. No effusion."),
    ("drop", "Stable opacity in the left base. No effusion."),
])
def test_placeholders_never_reach_an_answer(policy, expected):
    text = "There are XXXX XXXX opacities. Stable opacity in the left base, XXXX scarring. No effusion."
    assert deidentified(text, policy, "___") == expected
    rows = qa(text, config=QAConfig(placeholders=policy))
    assert rows and not any("XXXX" in r["answer"] or "XXXX" in r["question"] for r in rows)
    assert [r["answer"] for r in rows if r["question_type"] == "report"] == [expected]
