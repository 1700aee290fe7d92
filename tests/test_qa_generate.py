"""QA generation (qa_builder.qa.generate): golden cases, rules, options, determinism, templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_builder.qa.generate import (
    QUESTION_TYPES,
    QAConfig,
    balance_table,
    balance_yes_no,
    build_qa,
    generate_qa,
    get_generator,
)
from qa_builder.qa.schema import QA_COLUMNS, QA_SCHEMA, rows_to_table

FINE_ONLY = QAConfig(granularities=("fine",))

# -- building inputs by hand ----------------------------------------------------------------------

MENTION_DEFAULTS = dict(laterality=None, location=None, severity=None, descriptor=None, size=None,
                        change=None, temporality="current", chexpert=None, chestxray14=None)


def make_case(sentences: list[tuple[str, str]], mentions: list[tuple], report_id: str = "r1",
              subject_id: str | None = "p1", **report_fields):
    """sentences: [(section, text)]; mentions: [(sentence_index, concept, certainty, {attrs})].

    Returns (report, sentences, mentions) as the parser hands them over: mention ids in order,
    sentence ids unique across sections.
    """
    sents = [{"sentence_id": i, "section": sec, "sentence": text} for i, (sec, text) in enumerate(sentences)]
    ms = []
    for mid, (sid, concept, certainty, *rest) in enumerate(mentions):
        attrs = rest[0] if rest else {}
        ms.append({"report_id": report_id, "mention_id": mid, "section": sents[sid]["section"],
                   "sentence_id": sid, "sentence": sents[sid]["sentence"], "start": 0, "end": 1,
                   "text": concept, "concept": concept, "certainty": certainty, **MENTION_DEFAULTS, **attrs})
    findings = " ".join(t for s, t in sentences if s == "findings") or None
    impression = " ".join(t for s, t in sentences if s == "impression") or None
    report = {"report_id": report_id, "subject_id": subject_id, "study_id": None,
              "findings": findings, "impression": impression, **report_fields}
    return report, sents, ms


def summary(rows: list[dict], types: set[str] | None = None) -> list[tuple]:
    """(question_type, concept or region, answer, evidence) per row: the parts goldens pin down."""
    return [(r["question_type"], r["concept"] or r["region"], r["answer"], r["evidence"])
            for r in rows if types is None or r["question_type"] in types]


# -- golden cases ---------------------------------------------------------------------------------

def test_negative_effusion_is_an_evidenced_no():
    case = make_case([("findings", "No pleural effusion.")], [(0, "pleural_effusion", "negative")])
    rows = generate_qa(*case, FINE_ONLY)
    assert summary(rows) == [
        ("abnormality", None, "none", [0]),
        ("presence", "pleural_effusion", "no", [0]),
    ]
    assert all(r["evidence_text"] == "No pleural effusion." for r in rows)


def test_uncertain_finding_is_hedged_never_yes():
    case = make_case([("impression", "Left lower lobe pneumonia cannot be excluded.")],
                     [(0, "pneumonia", "uncertain", {"laterality": "left", "location": "lower lobe"})])
    rows = generate_qa(*case, FINE_ONLY)
    assert summary(rows) == [
        ("abnormality", None, "possible pneumonia", [0]),
        ("presence", "pneumonia", "possibly", [0]),
        ("verify", "pneumonia", "possibly", [0]),
        ("choose", "pneumonia", "left, if present (the report is uncertain)", [0]),
        ("location", "pneumonia", "left lower lobe, if present (the report is uncertain)", [0]),
    ]


def test_uncertain_finding_is_skipped_with_skip_policy():
    case = make_case([("impression", "Pneumonia cannot be excluded."), ("impression", "No pneumothorax.")],
                     [(0, "pneumonia", "uncertain"), (1, "pneumothorax", "negative")])
    rows = generate_qa(*case, QAConfig(granularities=("fine",), uncertain_policy="skip"))
    # no pair about pneumonia, and no abnormality list ("none" would deny the hedged pneumonia)
    assert summary(rows) == [("presence", "pneumothorax", "no", [1])]


def test_resolved_finding_is_no_now_and_resolved_as_change():
    case = make_case([("findings", "The pneumothorax has resolved.")],
                     [(0, "pneumothorax", "positive", {"change": "resolved"})])
    assert summary(generate_qa(*case, FINE_ONLY)) == [
        ("abnormality", None, "none", [0]),
        ("presence", "pneumothorax", "no", [0]),
        ("change", "pneumothorax", "resolved", [0]),
    ]


def test_one_sided_negative_only_answers_that_side():
    # "No right effusion" says nothing about the left: no presence 'no', only the verify pair.
    case = make_case([("findings", "No right pleural effusion.")],
                     [(0, "pleural_effusion", "negative", {"laterality": "right"})])
    assert summary(generate_qa(*case, FINE_ONLY), {"presence", "verify"}) == [
        ("verify", "pleural_effusion", "no", [0]),
    ]
    q = [r for r in generate_qa(*case, FINE_ONLY) if r["question_type"] == "verify"][0]["question"]
    assert "right" in q and "left" not in q


def test_bilateral_choose_verify_location_severity():
    case = make_case([("findings", "Small bilateral pleural effusions.")],
                     [(0, "pleural_effusion", "positive", {"laterality": "bilateral", "severity": "small"})])
    assert summary(generate_qa(*case, FINE_ONLY)) == [
        ("abnormality", None, "pleural effusion", [0]),
        ("presence", "pleural_effusion", "yes", [0]),
        ("verify", "pleural_effusion", "yes", [0]),
        ("verify", "pleural_effusion", "yes", [0]),
        ("choose", "pleural_effusion", "both sides", [0]),
        ("location", "pleural_effusion", "both sides", [0]),
        ("severity", "pleural_effusion", "small", [0]),
    ]


def test_left_and_right_mentions_merge_and_positive_beats_negative():
    case = make_case(
        [("findings", "No left effusion."), ("findings", "Small right effusion."),
         ("impression", "Moderate left and small right effusions, new.")],
        [(0, "pleural_effusion", "negative", {"laterality": "left"}),
         (1, "pleural_effusion", "positive", {"laterality": "right", "severity": "small"}),
         (2, "pleural_effusion", "positive", {"laterality": "left", "severity": "moderate", "change": "new"})])
    got = {(t, a, tuple(e)) for t, _, a, e in summary(generate_qa(*case, FINE_ONLY))}
    assert ("presence", "yes", (1, 2)) in got
    assert ("verify", "yes", (2,)) in got and ("verify", "yes", (1,)) in got  # left from the impression
    assert ("choose", "both sides", (1, 2)) in got
    assert ("location", "both sides", (1, 2)) in got
    assert ("severity", "small and moderate", (1, 2)) in got
    assert ("change", "new", (2,)) in got
    assert not any(a == "no" for _, a, _ in got)


def test_location_phrases():
    case = make_case(
        [("findings", "Atelectasis at both lung bases."), ("findings", "Right upper lobe opacity."),
         ("findings", "Opacity in the lingula."), ("findings", "Left basilar opacity.")],
        [(0, "atelectasis", "positive", {"laterality": "bilateral", "location": "base"}),
         (1, "lung_opacity", "positive", {"laterality": "right", "location": "upper lobe"}),
         (2, "lung_opacity", "positive", {"laterality": "left", "location": "lingula"}),
         (3, "lung_opacity", "positive", {"laterality": "left", "location": "base"})])
    loc = {c: a for t, c, a, _ in summary(generate_qa(*case, FINE_ONLY), {"location"})}
    assert loc == {"atelectasis": "bilateral bases", "lung_opacity": "right upper lobe and lingula and left base"}


def test_abnormality_list_order_excludes_devices_and_history():
    case = make_case(
        [("findings", "Mild cardiomegaly."), ("findings", "Left lower lobe atelectasis."),
         ("findings", "Endotracheal tube in place."), ("findings", "History of pneumonia."),
         ("findings", "No pneumothorax.")],
        [(0, "cardiomegaly", "positive", {"severity": "mild"}),
         (1, "atelectasis", "positive", {"laterality": "left", "location": "lower lobe"}),
         (2, "endotracheal_tube", "positive"),
         (3, "pneumonia", "positive", {"temporality": "historical"}),
         (4, "pneumothorax", "negative")])
    rows = generate_qa(*case, FINE_ONLY)
    abn = [r for r in rows if r["question_type"] == "abnormality"]
    assert [(a["answer"], a["evidence"]) for a in abn] == [("atelectasis, cardiomegaly", [0, 1])]
    assert {r["concept"] for r in rows if r["question_type"] == "presence"} == \
        {"cardiomegaly", "atelectasis", "endotracheal_tube", "pneumothorax"}  # nothing about historical pneumonia
    assert [r["answer"] for r in rows if r["concept"] == "endotracheal_tube"] == ["yes"]


def test_no_mentions_no_fine_pairs_and_no_invented_negatives():
    case = make_case([("findings", "Unremarkable study.")], [])
    assert generate_qa(*case, FINE_ONLY) == []


def test_middle_regions_include_sentences_without_mentions():
    case = make_case(
        [("findings", "Heart size is normal."), ("findings", "No pneumothorax."),
         ("findings", "The osseous structures are intact."),
         ("findings", "Opacity overlying the left 5th rib."),
         ("impression", "No pneumothorax."), ("impression", "No acute cardiopulmonary process.")],
        [(0, "cardiomegaly", "negative"), (1, "pneumothorax", "negative"),
         (3, "lung_opacity", "positive", {"laterality": "left"}), (4, "pneumothorax", "negative")])
    rows = generate_qa(*case, QAConfig(granularities=("middle",)))
    got = [(r["region"], r["answer"], r["evidence"], r["evidence_text"]) for r in rows]
    assert got == [
        ("lungs", "Opacity overlying the left 5th rib.", [2], "Opacity overlying the left 5th rib."),
        # the repeated impression sentence is said once, but both mentions are evidence
        ("pleura", "No pneumothorax.", [1, 3], "No pneumothorax."),
        ("heart_mediastinum", "Heart size is normal.", [0], "Heart size is normal."),
        # a normal statement the parser has no concept for still answers its region
        ("bones", "The osseous structures are intact.", [], "The osseous structures are intact."),
    ]
    assert all(r["granularity"] == "middle" and r["question_type"] == "region" and r["concept"] is None for r in rows)


def test_coarse_pairs():
    case = make_case([("findings", "Lungs   are\n clear."), ("impression", "Normal chest.")], [])
    case[0]["findings"] = "Lungs   are\n clear."
    rows = generate_qa(*case, QAConfig(granularities=("coarse",)))
    assert [(r["question_type"], r["answer"], r["answer_type"]) for r in rows] == [
        ("report", "Lungs are clear.", "open"), ("impression", "Normal chest.", "open")]
    only_impression = make_case([("impression", "No acute process.")], [])
    rows = generate_qa(*only_impression, QAConfig(granularities=("coarse",)))
    assert [(r["question_type"], r["answer"]) for r in rows] == [("report", "No acute process.")]


def test_unknown_concept_is_handled():
    case = make_case([("findings", "A flux capacitor is seen.")], [(0, "flux_capacitor", "positive")])
    rows = generate_qa(*case)
    presence = [r for r in rows if r["question_type"] == "presence"][0]
    assert "flux capacitor" in presence["question"] and presence["answer"] == "yes"
    assert presence["region"] == "other"
    assert not [r for r in rows if r["question_type"] == "region" and r["region"] == "other"]


def test_scheme_restricts_per_concept_pairs_but_not_the_abnormality_list():
    case = make_case([("findings", "Mild scoliosis."), ("findings", "Small left effusion.")],
                     [(0, "scoliosis", "positive", {"severity": "mild"}),
                      (1, "pleural_effusion", "positive", {"laterality": "left", "chexpert": "Pleural Effusion"})])
    rows = generate_qa(*case, QAConfig(granularities=("fine",), scheme="chexpert"))
    assert {r["concept"] for r in rows if r["concept"]} == {"pleural_effusion"}
    assert [r["answer"] for r in rows if r["question_type"] == "abnormality"] == ["pleural effusion, scoliosis"]


# -- rules that must hold for any input -------------------------------------------------------------

CONCEPTS = ["pleural_effusion", "pneumothorax", "atelectasis", "cardiomegaly", "pacemaker", "made_up_thing"]
mention_st = st.fixed_dictionaries({
    "sid": st.integers(0, 4),
    "concept": st.sampled_from(CONCEPTS),
    "certainty": st.sampled_from(["positive", "negative", "uncertain"]),
    "laterality": st.sampled_from([None, None, "left", "right", "bilateral"]),
    "location": st.sampled_from([None, None, "base", "upper lobe"]),
    "severity": st.sampled_from([None, "small", "mild"]),
    "change": st.sampled_from([None, None, "new", "unchanged", "resolved"]),
    "temporality": st.sampled_from(["current", "current", "current", "historical"]),
})


def _case_from(drawn: list[dict]):
    sentences = [("findings" if i < 3 else "impression", f"Sentence {i} about the chest.") for i in range(5)]
    mentions = [(d["sid"], d["concept"], d["certainty"],
                 {k: d[k] for k in ("laterality", "location", "severity", "change", "temporality")}) for d in drawn]
    return make_case(sentences, mentions)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mention_st, max_size=8), st.sampled_from(["hedge", "skip"]))
def test_answers_follow_the_report(drawn, policy):
    report, sentences, mentions = _case_from(drawn)
    rows = generate_qa(report, sentences, mentions, QAConfig(uncertain_policy=policy))
    by_id = {m["mention_id"]: m for m in mentions}
    current = [m for m in mentions if m["temporality"] == "current"]
    assert len({r["qa_id"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == set(QA_COLUMNS)
        assert r["split"] in ("train", "validate", "test") and r["split"] == rows[0]["split"]
        assert QUESTION_TYPES[r["question_type"]] == (r["granularity"], r["answer_type"])
        assert all(e in by_id for e in r["evidence"])
        assert r["evidence"] == sorted(set(r["evidence"]))
        if r["granularity"] != "fine":
            continue
        assert r["evidence"], r  # every fine pair is evidenced
        ev = [by_id[e] for e in r["evidence"]]
        assert all(m["temporality"] == "current" for m in ev)
        c = r["concept"]
        if c is None:
            continue
        assert all(m["concept"] == c for m in ev)
        mine = [m for m in current if m["concept"] == c]
        positive = [m for m in mine if m["certainty"] == "positive" and m["change"] != "resolved"]
        if r["answer"] == "yes":
            assert all(m["certainty"] == "positive" and m["change"] != "resolved" for m in ev)
        if r["question_type"] == "presence":
            if r["answer"] == "no":  # an explicit negative, and nothing positive or hedged
                assert not positive and not [m for m in mine if m["certainty"] == "uncertain"]
                assert all(m["certainty"] == "negative" or m["change"] == "resolved" for m in ev)
            if r["answer"] == "possibly":
                assert policy == "hedge" and not positive
        if "uncertain" in r["answer"] or r["answer"] == "possibly":
            assert policy == "hedge"
    if policy == "skip":
        assert not any("possibl" in r["answer"] or "uncertain" in r["answer"] for r in rows)


# -- options ------------------------------------------------------------------------------------------

RICH = make_case(
    [("findings", "Heart size is mildly enlarged, unchanged."),
     ("findings", "There is a small left pleural effusion with adjacent basilar atelectasis."),
     ("findings", "No pneumothorax."), ("findings", "Sternotomy wires are intact."),
     ("findings", "The osseous structures are intact."),
     ("impression", "Small left effusion; pneumonia cannot be excluded.")],
    [(0, "cardiomegaly", "positive", {"severity": "mild", "change": "unchanged", "chexpert": "Cardiomegaly"}),
     (1, "pleural_effusion", "positive", {"laterality": "left", "severity": "small", "chexpert": "Pleural Effusion"}),
     (1, "atelectasis", "positive", {"laterality": "left", "location": "base", "chexpert": "Atelectasis"}),
     (2, "pneumothorax", "negative", {"chexpert": "Pneumothorax"}),
     (3, "sternotomy_wires", "positive", {"chexpert": "Support Devices"}),
     (5, "pleural_effusion", "positive", {"laterality": "left", "severity": "small", "chexpert": "Pleural Effusion"}),
     (5, "pneumonia", "uncertain", {"chexpert": "Pneumonia"})],
    report_id="s50414267", subject_id="10000032")


def test_granularity_and_question_type_filters():
    rows = generate_qa(*RICH, QAConfig(granularities=("fine",), question_types=("presence", "region")))
    assert {r["question_type"] for r in rows} == {"presence"}  # 'region' is middle: filtered out
    rows = generate_qa(*RICH, QAConfig(question_types="report,choose"))  # CLI-style string
    assert {r["question_type"] for r in rows} == {"report", "choose"}


def test_max_pairs_keeps_a_spread_of_types_and_renumbers():
    full = generate_qa(*RICH)
    capped = generate_qa(*RICH, QAConfig(max_pairs_per_report=6))
    assert len(full) > 6 and len(capped) == 6
    strip = lambda r: {k: v for k, v in r.items() if k != "qa_id"}  # noqa: E731
    full_pairs = [strip(r) for r in full]
    assert all(strip(r) in full_pairs for r in capped)
    assert [r["qa_id"] for r in capped] == [f"s50414267:{i}" for i in range(6)]
    assert [r["question_type"] for r in capped][:1] == ["report"]
    assert len({r["question_type"] for r in capped}) == 6  # round-robin over types


def test_determinism_and_seed():
    a = generate_qa(*RICH)
    assert generate_qa(*RICH) == a
    assert generate_qa(*RICH, QAConfig(seed=0)) == a
    b = generate_qa(*RICH, QAConfig(seed=7))
    assert [(r["question_type"], r["answer"], r["evidence"]) for r in a] == \
        [(r["question_type"], r["answer"], r["evidence"]) for r in b]
    assert [r["question"] for r in a] != [r["question"] for r in b]  # wording is what the seed moves


def test_wording_is_stable_across_processes():
    """Paraphrase choice uses a stable hash, not Python's per-process salted hash()."""
    code = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, %r)
        from test_qa_generate import RICH
        from qa_builder.qa.generate import generate_qa
        print(json.dumps([r["question"] for r in generate_qa(*RICH)]))
    """) % str(Path(__file__).parent)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == [r["question"] for r in generate_qa(*RICH)]


def test_golden_wording():
    rows = generate_qa(*RICH, QAConfig(question_types=("presence",)))
    assert [r["question"] for r in rows] == [
        "Is there cardiomegaly?",
        "Does this chest X-ray show a pleural effusion?",
        "Is there atelectasis?",
        "Does this chest X-ray show a pneumothorax?",
        "Does this chest X-ray show sternotomy wires?",  # plural concept: presence_plural templates
        "Is pneumonia present?",
    ]


def test_rows_are_table_ready():
    rows = generate_qa(*RICH)
    table = rows_to_table(rows)
    assert table.schema.equals(QA_SCHEMA) and table.num_rows == len(rows)
    assert build_qa([RICH]).equals(table)
    assert build_qa([]).num_rows == 0


def test_config_validation():
    for bad in (dict(granularities=("tiny",)), dict(question_types=("why",)), dict(uncertain_policy="maybe"),
                dict(scheme="radlex"), dict(max_pairs_per_report=0), dict(split_fractions=(1, -1, 0)),
                dict(balance_ratio=0.5)):
        with pytest.raises(ValueError):
            QAConfig(**bad)
    assert QAConfig(granularities=["fine"]) == QAConfig(granularities=("fine",))  # hashable either way


# -- balancing ------------------------------------------------------------------------------------------

def _corpus(n: int = 60):
    """Reports with many negative and fewer positive effusions (like real corpora)."""
    cases = []
    for i in range(n):
        if i % 4 == 0:
            m = [(0, "pleural_effusion", "positive", {"laterality": "left"})]
            text = "Small left pleural effusion."
        else:
            m = [(0, "pleural_effusion", "negative")]
            text = "No pleural effusion."
        cases.append(make_case([("findings", text), ("findings", "No pneumothorax.")],
                               m + [(1, "pneumothorax", "negative")], report_id=f"r{i}", subject_id=f"p{i // 2}"))
    return cases


def test_balancing_only_drops_and_balances():
    cfg = QAConfig(balance_yes_no=True)
    rows = [r for c in _corpus() for r in generate_qa(*c, cfg)]
    kept = balance_yes_no(rows, cfg)
    assert all(r in rows for r in kept) and len(kept) < len(rows)
    order = [rows.index(r) for r in kept]
    assert order == sorted(order)  # input order kept
    for qtype in ("presence",):
        effusion = [r["answer"] for r in kept if r["question_type"] == qtype and r["concept"] == "pleural_effusion"]
        assert effusion.count("yes") == effusion.count("no") == 15
        # pneumothorax: only 'no' answers, so balancing keeps none of them
        assert not [r for r in kept if r["question_type"] == qtype and r["concept"] == "pneumothorax"]
    untouched = [r for r in rows if r["question_type"] not in ("presence", "verify")]
    assert all(r in kept for r in untouched)
    # deterministic, order-independent selection, and the table version agrees
    assert balance_yes_no(list(reversed(rows)), cfg) == list(reversed(kept))
    assert balance_table(rows_to_table(rows), cfg).equals(rows_to_table(kept))
    assert build_qa(_corpus(), cfg).equals(rows_to_table(kept))


def test_balance_ratio_keeps_more():
    rows = [r for c in _corpus() for r in generate_qa(*c)]
    kept = balance_yes_no(rows, QAConfig(balance_yes_no=True, balance_ratio=2.0))
    eff = [r["answer"] for r in kept if r["question_type"] == "presence" and r["concept"] == "pleural_effusion"]
    assert eff.count("yes") == 15 and eff.count("no") == 30


# -- templates are data ---------------------------------------------------------------------------------

def test_extra_template_adds_paraphrases(tmp_path):
    extra = tmp_path / "more.yaml"
    extra.write_text("questions:\n  presence:\n    - Can you see {np} here?\n", encoding="utf-8")
    gen = get_generator(QAConfig(extra_templates=(str(extra),)))
    assert gen.questions["presence"][-1] == "Can you see {np} here?"
    assert len(gen.questions["presence"]) == len(get_generator(QAConfig()).questions["presence"]) + 1
    replace = tmp_path / "only.yaml"
    replace.write_text("mode: replace\nquestions:\n  presence: ['Any {name}?']\n", encoding="utf-8")
    rows = generate_qa(*RICH, QAConfig(question_types=("presence",), extra_templates=(str(replace),)))
    assert rows[1]["question"] == "Any pleural effusion?"


def test_a_new_language_is_a_yaml_file(tmp_path):
    de = tmp_path / "de.yaml"
    de.write_text(textwrap.dedent("""
        language: de
        questions:
          report: ["Beschreiben Sie die Befunde."]
          impression: ["Was ist die Beurteilung?"]
          region: ["Was sagt der Befund über {region}?"]
          abnormality: ["Welche Auffälligkeiten sind zu sehen?"]
          presence: ["Liegt {np} vor?"]
          verify: ["Liegt {np} {side} vor?"]
          choose: ["Ist {the} links oder rechts?"]
          location: ["Wo befindet sich {the}?"]
          severity: ["Wie ausgeprägt ist {the}?"]
          type: ["Welche Art von {name}?"]
          size: ["Wie groß ist {the}?"]
          change: ["Wie hat sich {the} verändert?"]
        answers: {"yes": ja, "no": nein, possibly: möglicherweise, none: keine,
                  hedge_item: "möglicherweise {item}", hedge_attribute: "{answer} (unsicher)"}
        values:
          side: {left: links, right: rechts}
          choose: {left: links, right: rechts, bilateral: beidseits}
          severity: {small: klein}
        location: {lat_only: {left: links, right: rechts, bilateral: beidseits}}
        regions: {pleura: die Pleura}
        concepts:
          pleural_effusion: {name: Pleuraerguss, np: ein Pleuraerguss, the: der Pleuraerguss}
    """), encoding="utf-8")
    case = make_case([("findings", "Small left effusion.")],
                     [(0, "pleural_effusion", "positive", {"laterality": "left", "severity": "small"})])
    rows = generate_qa(*case, QAConfig(language=str(de), granularities=("middle", "fine")))
    got = [(r["question"], r["answer"]) for r in rows]
    assert ("Was sagt der Befund über die Pleura?", "Small left effusion.") in got
    assert ("Liegt ein Pleuraerguss vor?", "ja") in got
    assert ("Ist der Pleuraerguss links oder rechts?", "links") in got
    assert ("Wie ausgeprägt ist der Pleuraerguss?", "klein") in got
    assert ("Liegt ein Pleuraerguss links vor?", "ja") in got


def test_bad_templates_fail_at_load(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("questions:\n  presence: ['Is there {finding}?']\n", encoding="utf-8")
    with pytest.raises(ValueError, match="placeholder"):
        generate_qa(*RICH, QAConfig(extra_templates=(str(bad),)))
    with pytest.raises(FileNotFoundError):
        generate_qa(*RICH, QAConfig(language="xx"))
