"""Golden sentences for the attribute questions (qa/attribute.py and the parser's attachment rules in
qa_builder/attributes.py): choose, location, severity, type, size, change."""

from __future__ import annotations

import pytest

from report_qa import answers, asked, qa


# -- family 1: no answer the question already gives ------------------------------------------------

@pytest.mark.parametrize("text, qtype, concept", [
    ("Degenerative changes of the spine.", "type", "degenerative_spine"),
    ("Degenerative changes of the spine.", "location", "degenerative_spine"),
    ("There are T-spine osteophytes.", "location", "degenerative_spine"),   # the spine a CXR shows
    ("Scoliosis of the thoracic spine.", "location", "scoliosis"),
    ("Densely calcified aorta.", "type", "calcification"),
    ("Unfolding of the aorta.", "location", "tortuous_aorta"),
    ("Chronic obstructive pulmonary disease.", "type", "copd"),
    ("Interstitial lung disease.", "type", "interstitial_disease"),
])
def test_answers_implied_by_the_concept_are_not_asked(text, qtype, concept):
    rows = qa(text)
    assert asked(rows, "presence", concept)
    assert not asked(rows, qtype, concept)


def test_a_more_specific_place_than_the_name_is_still_asked():
    assert answers(qa("Tortuosity of the thoracic aorta."), "location", "tortuous_aorta") == ["thoracic aorta"]
    assert answers(qa("Lumbar spine degenerative changes."), "location", "degenerative_spine") == ["lumbar spine"]


# -- family 4: attributes of that finding only -----------------------------------------------------

@pytest.mark.parametrize("text, concept, expected", [
    # never across a neighbouring finding
    ("Stable right upper mediastinal Bilateral small pleural effusions.", "pleural_effusion", ["both sides"]),
    ("Left lower lobe opacity and right effusion.", "pleural_effusion", ["right side"]),
    # never from consequences or spared regions
    ("Left apical fibrotic changes with apical hilar retraction.", "fibrosis", ["left apex"]),
    ("Diffuse bilateral pulmonary fibrosis with relative sparing of the bilateral lung apices.", "fibrosis",
     ["bilateral diffuse"]),
    # never from names: the left coronary artery is no side of the chest
    ("Calcified left coronary arteries.", "calcification", ["left coronary artery"]),
    # devices: the stated anatomy, tip included
    ("Left internal jugular central venous catheter with the tip at the cavoatrial junction.",
     "central_venous_catheter", ["left internal jugular and cavoatrial junction"]),
    # the report's own precision
    ("Right middle lobe opacity.", "lung_opacity", ["right middle lobe"]),
    ("Right midlung opacity.", "lung_opacity", ["right mid lung"]),
    ("Calcified granulomas in the right hilum.", "granuloma", ["right hilar"]),
    ("Opacity in the left lung base consistent with atelectasis.", "lung_opacity", ["left base"]),
    ("Opacity in the left lung base consistent with atelectasis.", "atelectasis", ["left base"]),
])
def test_location_comes_from_the_findings_own_phrase(text, concept, expected):
    assert answers(qa(text), "location", concept) == expected


@pytest.mark.parametrize("text, qtype, concept", [
    ("No acute cardiopulmonary disease. Low lung volumes without acute abnormality.", "type", "hypoinflation"),
    ("The lungs are hyperinflated with increased retrosternal airspace.", "change", "hyperinflation"),
    ("Decreased biapical vascular markings with moderate hyperexpansion of the lungs.", "change", "hyperinflation"),
    ("Increased density at the right base.", "change", "lung_opacity"),  # part of the name, no comparison
    ("Diminished lung volumes.", "change", "hypoinflation"),
    ("Endotracheal tube tip 4 cm above the carina.", "size", "endotracheal_tube"),  # a distance, and a device
    ("Minimally displaced right 8th rib fracture.", "severity", "fracture"),       # 'minimal' is the displacement's
])
def test_no_attribute_from_another_phrase(text, qtype, concept):
    assert not asked(qa(text), qtype, concept)


def test_values_are_the_reports_words():
    rows = qa("The heart is borderline in size. The aorta is mildly tortuous. Chronic-appearing opacities.")
    assert answers(rows, "severity", "cardiomegaly") == ["borderline"]  # not 'mild'
    assert answers(rows, "severity", "tortuous_aorta") == ["mild"]
    assert answers(rows, "type", "lung_opacity") == ["chronic"]  # not 'chronic and healed'
    assert answers(qa("Minimally displaced right 8th rib fracture."), "type", "fracture") == ["minimally displaced"]


def test_each_value_once():
    rows = qa("Focal, alveolar consolidation in the left lower lobe. Alveolar consolidation in the left lower lobe.")
    assert answers(rows, "type", "consolidation") == ["focal and alveolar"]


# -- change --------------------------------------------------------------------------------------

def test_change_needs_a_comparison_and_is_said_per_place():
    rows = qa("Left base opacities again noted, stable. There is a left midlung opacity, not seen on prior.")
    assert answers(rows, "change", "lung_opacity") == ["left base unchanged and left mid lung new"]


def test_a_removed_device_is_removed():
    assert answers(qa("The right internal jugular catheter has been removed."), "change",
                   "central_venous_catheter") == ["removed"]
    assert answers(qa("The right pleural effusion has resolved."), "change", "pleural_effusion") == ["resolved"]


def test_hedged_attributes_carry_the_hedge():
    rows = qa("Small left pleural effusion versus pleural thickening.")
    assert answers(rows, "severity", "pleural_effusion") == ["small, if present (the report is uncertain)"]


# -- wording -------------------------------------------------------------------------------------

def test_questions_agree_with_the_noun():
    rows = qa("Surgical clips in the right upper quadrant. Low lung volumes, severe.")
    questions = [r["question"] for r in rows if r["concept"] in ("surgical_clips", "hypoinflation")]
    assert not any(q.startswith(("Is the surgical clips", "How severe is the low", "Is there surgical clips"))
                   for q in questions), questions
    assert any(q.startswith(("Are the surgical clips", "Which side are the surgical clips")) for q in questions)


def test_severity_questions_read_naturally_per_concept():
    rows = qa("The aorta is mildly tortuous. Small right pleural effusion.")
    q = {r["concept"]: r["question"] for r in rows if r["question_type"] == "severity"}
    assert q["tortuous_aorta"] in ("How tortuous is the aorta?", "What is the degree of aortic tortuosity?")
    assert q["pleural_effusion"] in ("How large is the pleural effusion?", "What is the size of the pleural effusion?")


def test_a_sentence_that_only_compares_updates_the_one_before():
    rows = qa("Ill-defined opacity is again noted in the region of the lingula. This is increased since the "
              "previous study.")
    assert answers(rows, "change", "lung_opacity") == ["increased"]


def test_side_phrases_and_sizes():
    rows = qa("Bibasilar atelectasis and small left-sided pleural effusion. Mass measuring 2.1 x 2 cm, 2.1 cm.")
    assert answers(rows, "severity", "pleural_effusion") == ["small"]
    assert not asked(rows, "severity", "atelectasis")
    assert answers(rows, "size", "lung_mass") == ["2.1 x 2 cm"]
