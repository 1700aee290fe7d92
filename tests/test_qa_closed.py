"""Golden sentences for the closed fine questions (qa/closed.py): presence and verify.

Each case is report text run through the parser and the generator, so a rule change anywhere on the
path (hedges, attributes, QA) shows here.
"""

from __future__ import annotations

import pytest

from report_qa import answers, asked, parse, qa


@pytest.mark.parametrize("text, concept", [
    ("Minimal atelectasis versus scarring seen in the left lung base.", "atelectasis"),
    ("Minimal atelectasis versus scarring seen in the left lung base.", "scarring"),
    ("Stable XXXX opacity in the left base, XXXX scarring or atelectasis.", "atelectasis"),
    ("Some opacities left mid lung compatible with focal subsegmental atelectasis/scarring.", "scarring"),
    ("Small left pleural effusion versus pleural thickening.", "pleural_effusion"),
    ("Streaky bibasilar opacities may be compatible with atelectasis versus consolidation, aspiration.", "aspiration"),
    ("Ill-defined opacity corresponding with residual mass/nodularity.", "lung_nodule"),
])
def test_one_alternative_of_a_differential_is_only_possible(text, concept):
    assert answers(qa(text), "presence", concept) == ["possibly"]


def test_a_differential_keeps_the_indexers_label_convention():
    """Labels follow the IU indexers (both alternatives coded present); only QA hedges."""
    _, _, mentions = parse("Minimal atelectasis versus scarring seen in the left lung base.")
    assert {(m["concept"], m["certainty"], m["differential"]) for m in mentions} == {
        ("atelectasis", "positive", True), ("scarring", "positive", True)}


@pytest.mark.parametrize("text", [
    "Right basilar opacity, atelectasis versus pneumonia.",  # the observation is no alternative
    "No effusion or pneumothorax.",                          # a negated list is no differential
])
def test_not_every_or_is_a_differential(text):
    rows = qa(text)
    assert answers(rows, "presence", "lung_opacity") in ([], ["yes"])
    assert "possibly" not in answers(rows, "presence", "pleural_effusion")


@pytest.mark.parametrize("text, concept, expected", [
    # a benign cause in the same phrase or the next sentence ("This may be ...") keeps it possible
    ("There is a vague nodular opacity in the right midlung measuring 1.2 cm. This may be artifact.",
     "nodular_opacity", ["possibly"]),
    ("Haziness in the right lung apex. These may be explained by overlapping structures.", "lung_opacity", ["possibly"]),
    ("Opacification over both bases, may be secondary to soft tissue attenuation.", "lung_opacity", ["possibly"]),
    # a definite one explains it away (on the right only: that side's verify says no)
    ("There is a pleural based density in the right lung base, XXXX related to subpleural fat.", "lung_opacity", []),
    ("Small rounded radiopaque density within the subcutaneous fat XXXX represents projectile fragment.",
     "lung_opacity", ["no"]),
])
def test_a_shadow_put_down_to_something_else_is_not_a_plain_yes(text, concept, expected):
    rows = qa(text)
    assert answers(rows, "presence", concept) == expected
    assert "yes" not in answers(rows, "verify", concept)
    assert not asked(rows, "location", concept) or "if present" in answers(rows, "location", concept)[0]


@pytest.mark.parametrize("text, concept", [
    ("No large consolidation.", "consolidation"),
    ("There is no evidence of acute infiltrate.", "infiltration"),
    ("No XXXX infiltrates noted.", "infiltration"),      # the qualifier is masked
    ("No acute bony abnormality.", "fracture"),          # an old fracture is not excluded
    ("No significant pleural effusion.", "pleural_effusion"),
])
def test_a_qualified_negation_gives_no_plain_no(text, concept):
    rows = qa(text)
    assert not asked(rows, "presence", concept)
    _, _, mentions = parse(text)
    assert any(m["concept"] == concept and m["certainty"] == "negative" and m["qualifier"] for m in mentions)


@pytest.mark.parametrize("text, concept", [
    ("No focal consolidation.", "consolidation"),        # 'focal' stays plain (qualified_negation in context.yaml)
    ("No definite pleural effusion.", "pleural_effusion"),
    ("No large consolidation, effusion, or pneumothorax.", "pneumothorax"),  # 'large' qualifies its own item only
])
def test_plain_qualifiers_still_answer_no(text, concept):
    assert answers(qa(text), "presence", concept) == ["no"]


def test_verify_asks_the_wrong_side_too():
    rows = qa("Left lower lobe pneumonia.")
    assert sorted(answers(rows, "verify", "pneumonia")) == ["left: yes", "right: no"]


def test_the_wrong_side_is_not_asked_when_the_region_has_a_finding_there():
    """Right basilar atelectasis is an opacity on the right: 'no opacity on the right' would be wrong."""
    rows = qa("Left basilar opacity. Right basilar atelectasis.")
    assert answers(rows, "verify", "lung_opacity") == ["left: yes"]
    assert answers(rows, "verify", "atelectasis") == ["right: yes"]


def test_bilateral_and_hedged_verify():
    assert sorted(answers(qa("Bilateral pleural effusions."), "verify", "pleural_effusion")) == ["left: yes", "right: yes"]
    assert answers(qa("Possible small right pleural effusion."), "verify", "pleural_effusion") == ["right: possibly"]


def test_one_statement_one_question():
    """'Heart size is normal.' negates cardiomegaly and an enlarged cardiac silhouette: asked once."""
    rows = qa("Heart size is normal.")
    assert answers(rows, "presence", "cardiomegaly") == ["no"]
    assert not asked(rows, "presence", "enlarged_cardiac_silhouette")
    _, _, mentions = parse("Heart size is normal.")
    assert {m["concept"] for m in mentions} == {"cardiomegaly", "enlarged_cardiac_silhouette"}  # labels keep both


def test_a_guess_is_possibly_while_consistent_with_reads_as_a_diagnosis():
    """'probable X' keeps the IU label (present) but QA says possibly; 'consistent with X' is a yes."""
    _, _, mentions = parse("Probable mild cardiomegaly.")
    assert [(m["concept"], m["certainty"], m["probable"]) for m in mentions] == [("cardiomegaly", "positive", True)]
    assert answers(qa("Probable mild cardiomegaly."), "presence", "cardiomegaly") == ["possibly"]
    assert answers(qa("Bandlike opacities in the right base consistent with atelectasis."), "presence",
                   "atelectasis") == ["yes"]
    # the guess is the atelectasis, not the airspace disease before it
    rows = qa("Patchy airspace disease in the left base, probably mostly atelectasis.")
    assert answers(rows, "presence", "lung_opacity") == ["yes"]
    assert answers(rows, "presence", "atelectasis") == ["possibly"]


def test_midline_findings_have_no_side_questions():
    rows = qa("Degenerative changes of the right shoulder. Degenerative changes of the thoracic spine. "
              "The heart is mildly enlarged.")
    assert not asked(rows, "verify", "degenerative_spine") and not asked(rows, "choose", "degenerative_spine")
    assert not asked(rows, "verify", "cardiomegaly")
    assert answers(rows, "choose", "degenerative_joint") == ["right"]  # the shoulder's change is a joint's


def test_removal_of_a_device_negates_the_device_only():
    rows = qa("There has been interval removal of right chest tube with increased elevation of the right "
              "hemidiaphragm and right basilar atelectasis.")
    assert answers(rows, "presence", "atelectasis") == ["yes"]
    assert answers(rows, "presence", "elevated_hemidiaphragm") == ["yes"]
    assert answers(rows, "change", "chest_tube") == ["removed"]


def test_no_wrong_side_no_when_the_sentence_names_that_side():
    """The parser may miss a coordinated side; a 'no' for it would then be wrong."""
    rows = qa("Healed right 10th and left 9th posterolateral rib fractures.")
    assert "right: no" not in answers(rows, "verify", "fracture")
    assert sorted(answers(rows, "verify", "fracture")) == ["left: yes", "right: yes"]
