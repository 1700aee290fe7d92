"""Difference QA (qa/difference.py): study order, states, stated before derived answers, questions."""

from __future__ import annotations

from functools import lru_cache

from qa_builder.qa.difference import (ConceptState, DifferenceQuestions, StudyRef, answer_for, concept_states,
                                      pair_studies, parse_when)
from qa_builder.qa.vocab import load_concepts, load_templates
from report_qa import parse


@lru_cache(maxsize=1)
def questions() -> DifferenceQuestions:
    concepts, _ = load_concepts()
    return DifferenceQuestions(load_templates("en"), concepts, 0, ", ", "yes", "no", "none")


def rows(prior_text: str, current_text: str) -> dict:
    prior = concept_states(parse(prior_text)[2])
    cur = concept_states(parse(current_text)[2])
    out = questions().rows("c", "p", "2", "b", "1", 30.0, "train", cur, prior)
    return {(r[7], r[11]): (r[9], r[10]) for r in out}


def test_order_is_by_date_and_time_never_by_id():
    refs = [StudyRef("s9", "p", "9", parse_when("20200301")), StudyRef("s1", "p", "1", parse_when("20200401")),
            StudyRef("s5", "p", "5", parse_when("20200101", "235959.9"))]
    pairs, counts = pair_studies(refs, 365)
    assert pairs == {"s9": ("s5", pairs["s9"][1]), "s1": ("s9", 31.0)}
    assert round(pairs["s9"][1], 3) == 59.0 and counts["first_of_subject"] == 1


def test_no_prior_without_a_date_a_unique_timestamp_or_within_the_gap():
    refs = [StudyRef("a", "p", "1", parse_when("20200101", "120000")),
            StudyRef("b", "p", "2", parse_when("20200105", "080000")),
            StudyRef("c", "p", "3", parse_when("20200105", "080000")),   # tied with b
            StudyRef("d", "p", "4", parse_when("20200110")),             # after a tie: which came last is unknown
            StudyRef("e", "q", "5", None), StudyRef("f", None, "6", parse_when("20200101")),
            StudyRef("g", "r", "7", parse_when("20190101")), StudyRef("h", "r", "8", parse_when("20210101"))]
    pairs, counts = pair_studies(refs, 365)
    assert pairs == {}
    assert counts == {"paired": 0, "first_of_subject": 2, "no_subject": 1, "no_date": 1, "same_timestamp": 3,
                      "prior_too_old": 1}


def test_states_respect_certainty():
    states = concept_states(parse("Possible small right effusion. No large consolidation. Atelectasis versus "
                                  "scarring. Cardiomegaly. The pneumothorax has resolved. No edema.")[2])
    assert states["pleural_effusion"].status == "uncertain"
    assert "consolidation" not in states             # a qualified negation says nothing
    assert states["atelectasis"].status == "uncertain"
    assert states["cardiomegaly"].status == "present"
    assert (states["pneumothorax"].status, states["pneumothorax"].change) == ("absent", "resolved")
    assert states["pulmonary_edema"].status == "absent"


def test_stated_comes_first_then_derived_and_silence_says_nothing():
    assert answer_for(ConceptState("present", "increased", (1,)), None, False) == ("increased", "stated")
    assert answer_for(ConceptState("present", None, (1,)), ConceptState("absent", None, (2,)), False) == ("new", "derived")
    assert answer_for(ConceptState("absent", None, (1,)), ConceptState("present", None, (2,)), True) == ("removed", "derived")
    assert answer_for(ConceptState("present", None, (1,)), ConceptState("present", None, (2,)), False) == (
        "still present", "derived")
    assert answer_for(ConceptState("uncertain", None, (1,)), ConceptState("present", None, (2,)), False) == (
        "uncertain", "derived")
    assert answer_for(ConceptState("present", None, (1,)), None, False) is None  # prior silent


def test_questions_of_a_pair():
    got = rows("Small left pleural effusion. Right upper lobe pneumonia. No pneumothorax.",
               "The left pleural effusion has increased. Right upper lobe pneumonia has resolved. No pneumothorax.")
    assert got[("diff_concept", "pleural_effusion")] == ("increased", "stated")
    assert got[("diff_concept", "pneumonia")] == ("resolved", "stated")
    assert ("diff_concept", "pneumothorax") not in got       # absent in both: nothing to ask
    assert got[("diff_summary", None)] == ("resolved pneumonia, increased pleural effusion", "stated")  # concepts.yaml order
    assert got[("diff_new", None)] == ("no", "stated")       # every current finding is accounted for
    assert got[("diff_resolved", None)] == ("pneumonia", "stated")


def test_no_no_when_a_current_finding_is_unaccounted_for():
    got = rows("No pleural effusion.", "Small left pleural effusion. Cardiomegaly.")
    assert got[("diff_concept", "pleural_effusion")] == ("new", "derived")
    assert got[("diff_new", None)] == ("yes", "derived")
    got = rows("No pleural effusion.", "Cardiomegaly.")       # prior silent on the heart
    assert ("diff_new", None) not in got
