"""Golden sentences: the traps a report parser must get right (certainty, attributes, scheme conventions)."""

from __future__ import annotations

import pytest

from fresh_python import run_fresh
from qa_builder.labels import report_labels
from qa_builder.mentions import MentionExtractor, ParserConfig
from qa_builder.sentences import split_sentences


@pytest.fixture(scope="module")
def extractor() -> MentionExtractor:
    return MentionExtractor()


def found(extractor, sentence: str) -> dict[str, str]:
    """concept -> strongest certainty in the sentence."""
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    out: dict[str, str] = {}
    for m in extractor.extract(sentence):
        if m.concept not in out or rank[m.certainty] > rank[out[m.concept]]:
            out[m.concept] = m.certainty
    return out


@pytest.mark.parametrize(
    "sentence, expected",
    [
        ("The heart is not enlarged.", {"cardiomegaly": "negative"}),
        ("Heart size is normal.", {"cardiomegaly": "negative"}),
        ("The cardiomediastinal silhouette is within normal limits.",
         {"cardiomegaly": "negative", "enlarged_cardiomediastinum": "negative"}),
        ("Possible small right pleural effusion cannot be excluded.", {"pleural_effusion": "uncertain"}),
        ("The left pleural effusion has resolved.", {"pleural_effusion": "negative"}),
        ("FINDINGS: No pleural effusion.", {"pleural_effusion": "negative"}),
        ("Lungs are clear.", {"lung_opacity": "negative", "consolidation": "negative"}),
        ("There are no XXXX of a pleural effusion.", {"pleural_effusion": "negative"}),
        ("No effusion or pneumothorax.", {"pleural_effusion": "negative", "pneumothorax": "negative"}),
        ("No interval change in the small right effusion.", {"pleural_effusion": "positive"}),
        ("Lungs are clear of focal consolidation, effusion or pneumothorax.",
         {"consolidation": "negative", "lung_opacity": "negative", "pleural_effusion": "negative", "pneumothorax": "negative"}),
        ("Negative for pneumothorax.", {"pneumothorax": "negative"}),
        ("The previously seen right pneumothorax is no longer seen.", {"pneumothorax": "negative"}),
        ("Stable left basilar atelectasis versus scarring.", {"atelectasis": "positive", "scarring": "positive"}),
        ("Right basilar opacity may represent pneumonia.", {"lung_opacity": "positive", "pneumonia": "uncertain"}),
        ("Findings suggestive of emphysema.", {"emphysema": "uncertain"}),
        # "most suggestive of" leans present although it contains "suggestive of"
        ("Bibasilar opacities most suggestive of pulmonary edema.", {"lung_opacity": "positive", "pulmonary_edema": "positive"}),
        ("Mild cardiomegaly, unchanged.", {"cardiomegaly": "positive"}),
        ("Heart size is upper limits of normal.", {"borderline_heart_size": "positive"}),
        ("Borderline heart size.", {"cardiomegaly": "positive"}),
        ("History of pneumonia.", {"pneumonia": "positive"}),
    ],
)
def test_golden_certainty(extractor, sentence, expected):
    got = found(extractor, sentence)
    assert {c: got.get(c) for c in expected} == expected
    # Anything else the sentence yields may only be an implied negative ("heart" -> silhouette too).
    assert all(got[c] == "negative" for c in got if c not in expected), got


def test_no_acute_process_has_no_positive(extractor):
    mentions = extractor.extract("No acute cardiopulmonary process.")
    assert all(m.certainty != "positive" for m in mentions)


def test_right_hilum_enlarged_is_not_cardiomegaly(extractor):
    assert found(extractor, "The right hilum is enlarged.") == {"hilar_enlargement": "positive"}
    (m,) = extractor.extract("The right hilum is enlarged.")
    assert m.laterality == "right"


def test_calcified_granuloma_is_not_a_mass_or_nodule(extractor):
    (m,) = extractor.extract("Calcified granuloma in the left upper lobe.")
    assert (m.concept, m.certainty, m.laterality, m.location, m.descriptor) == (
        "granuloma", "positive", "left", "upper lobe", "calcified")


def test_history_is_historical(extractor):
    (m,) = extractor.extract("History of pneumonia.")
    assert m.temporality == "historical"


def test_resolved_sets_change(extractor):
    (m,) = extractor.extract("The left pleural effusion has resolved.")
    assert (m.certainty, m.change, m.laterality) == ("negative", "resolved", "left")


def test_coordinated_attributes_attach_to_the_right_finding(extractor):
    a, b = extractor.extract("Left basilar atelectasis and right upper lobe opacity.")
    assert (a.concept, a.laterality, a.location) == ("atelectasis", "left", "base")
    assert (b.concept, b.laterality, b.location) == ("lung_opacity", "right", "upper lobe")


def test_bilateral_left_greater_than_right(extractor):
    (m,) = extractor.extract("Bilateral effusions, left greater than right.")
    assert (m.concept, m.laterality) == ("pleural_effusion", "bilateral")


def test_severity_size_change(extractor):
    (m,) = extractor.extract("Heart size is mildly enlarged, unchanged.")
    assert (m.concept, m.severity, m.change) == ("cardiomegaly", "mild", "unchanged")
    (n,) = extractor.extract("New 8 mm nodule in the right upper lobe.")
    assert (n.concept, n.size, n.change, n.laterality, n.location) == ("lung_nodule", "8 mm", "new", "right", "upper lobe")


def test_nodule_of_three_cm_is_a_mass():
    on = MentionExtractor(config=ParserConfig(nodule_to_mass_by_size=True))
    (m,) = on.extract("A 3.5 cm nodule in the left lower lobe.")
    assert m.concept == "lung_mass"
    (m,) = on.extract("A 1.5 cm nodule in the left lower lobe.")
    assert m.concept == "lung_nodule"


@pytest.mark.parametrize(
    "sentence, concept",
    [
        ("Expansile lesion of the right posterior 9th rib represents sequelae of known myeloma.", "bone_lesion"),
        ("There is a lesion in the right 5th rib.", "bone_lesion"),
        ("Lytic lesions in the thoracic spine.", "bone_lesion"),
        ("These bony lesions may be secondary to myeloma.", "bone_lesion"),
        ("A 1 cm lesion in the right upper lobe.", "lung_nodule"),  # a lesion in a lung stays a lung lesion
        ("No focal lesion.", "lung_nodule"),
    ],
)
def test_a_generic_lesion_located_in_a_bone_is_a_bone_lesion(extractor, sentence, concept):
    assert [m.concept for m in extractor.extract(sentence)] == [concept]


def test_claims_must_name_known_locations(tmp_path):
    import shutil

    from qa_builder.lexicon import LEXICON_DIR, LexiconError, load_lexicon

    for name in ("findings.yaml", "modifiers.yaml", "context.yaml"):
        shutil.copy(LEXICON_DIR / name, tmp_path / name)
    text = (tmp_path / "findings.yaml").read_text()
    (tmp_path / "findings.yaml").write_text(text.replace("locations: [rib, clavicle,", "locations: [ribz, clavicle,"))
    with pytest.raises(LexiconError, match=r"bone_lesion\.claims: unknown locations \['ribz'\]"):
        load_lexicon(tmp_path)


def test_scheme_conventions(extractor):
    """An enlarged cardiac silhouette alone is CheXpert Cardiomegaly but not ChestX-ray14 Cardiomegaly."""
    lexicon = extractor.lexicon
    mentions = [
        {"concept": m.concept, "certainty": m.certainty, "temporality": m.temporality}
        for m in extractor.extract("The cardiac silhouette is enlarged.")
    ]
    labels = {(s, label): v for s, label, v in report_labels(mentions, lexicon)}
    assert labels[("chexpert", "Cardiomegaly")] == 1
    assert ("chestxray14", "Cardiomegaly") not in labels
    assert labels[("chexpert", "No Finding")] == 0


def test_label_aggregation_positive_beats_uncertain_beats_negative(extractor):
    lexicon = extractor.lexicon
    rows = [
        {"concept": "pleural_effusion", "certainty": "negative", "temporality": "current"},
        {"concept": "pleural_effusion", "certainty": "uncertain", "temporality": "current"},
        {"concept": "pneumonia", "certainty": "negative", "temporality": "current"},
        {"concept": "pneumonia", "certainty": "positive", "temporality": "historical"},
    ]
    labels = {(s, label): v for s, label, v in report_labels(rows, lexicon)}
    assert labels[("chexpert", "Pleural Effusion")] == -1
    assert labels[("chestxray14", "Effusion")] == -1
    assert labels[("chexpert", "Pneumonia")] == 0  # the historical positive does not count
    rows.append({"concept": "pleural_effusion", "certainty": "positive", "temporality": "current"})
    labels = {(s, label): v for s, label, v in report_labels(rows, lexicon)}
    assert labels[("chexpert", "Pleural Effusion")] == 1
    # results are cached per set of mentions: a caller changing its list must not change the next answer
    report_labels(rows, lexicon).clear()
    assert {(s, label): v for s, label, v in report_labels(rows, lexicon)} == labels


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1. Small left effusion.\n 2. Stable mild cardiomegaly.", ["Small left effusion.", "Stable mild cardiomegaly."]),
        ("There is a small left pleural effusion\nwith adjacent atelectasis. No pneumothorax.",
         ["There is a small left pleural effusion with adjacent atelectasis.", "No pneumothorax."]),
        ("A 1.5 cm nodule. Lungs clear.. No effusion", ["A 1.5 cm nodule.", "Lungs clear..", "No effusion"]),
        ("Atelectasis vs. scarring at the left base. XXXX opacity.", ["Atelectasis vs. scarring at the left base.", "XXXX opacity."]),
        ("No acute process. 2. Stable nodule.", ["No acute process.", "Stable nodule."]),
        ("", []),
    ],
)
def test_sentence_splitting(text, expected):
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    "sentence, concept",
    [("No effussion.", "pleural_effusion"), ("Mild left basilar atelecatsis.", "atelectasis"),
     ("Small right pneumothroax.", "pneumothorax"), ("Nondisplaced left rib fracutre.", "fracture")],
)
def test_one_edit_misspellings_are_read(extractor, sentence, concept):
    assert concept in found(extractor, sentence)


def test_real_words_are_not_corrected(extractor):
    # "hemithorax" is one letter from "hemothorax" (an effusion term) but is a different word.
    assert "pleural_effusion" not in found(extractor, "The left hemithorax is clear.")
    (m,) = extractor.extract("Small left effussion.")
    assert m.text == "effussion"  # offsets and text stay as written


def test_parser_import_stays_lean_and_leaves_spacy_whole():
    """qa-build's start-up skips torch and spacy.cli; both still import normally afterwards."""
    code = (
        "import sys, qa_builder.mentions\n"
        "assert 'torch' not in sys.modules and 'spacy.cli' not in sys.modules, sorted(sys.modules)\n"
        "import spacy\n"
        "from spacy.cli import info\n"
        "assert callable(info) and 'spacy.cli.info' in sys.modules\n"
        "import torch\n"
        "print('ok')\n"
    )
    run_fresh(code)
