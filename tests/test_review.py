"""The review loop (qa_builder/review): keys, answer comparison, scoring, sampling, overrides."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from qa_builder.cli import eval_app, review_app
from qa_builder.pipeline import BuildConfig, build
from qa_builder.qa.generate import QAConfig
from qa_builder.review.keys import AnswerRules, Key, KeyReader, same_answer, singular
from qa_builder.review.sample import allocate
from qa_builder.review.score import Built, card_section, evaluate_review, format_table, read_build, score, wilson
from qa_builder.review.sheet import EXTRA_COLUMNS, REVIEW_COLUMNS, ReviewError, ReviewRow, read_sheet

BIN = Path(sys.executable).parent
SAMPLE = Path(__file__).resolve().parents[1] / "qa_builder" / "data" / "sample_reports.csv"
IU = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu"
HEDGED = "{answer}, if present (the report is uncertain)"


@pytest.fixture(scope="module")
def reader() -> KeyReader:
    return KeyReader.for_config("en")


# -- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("question, region", [
    ("What does the report say about the heart and mediastinum?", "heart_mediastinum"),
    ("Describe the lines, tubes and devices in this chest X-ray.", "devices"),
    ("What is seen in the diaphragm and upper abdomen on this radiograph?", "diaphragm_abdomen"),
    ("Any comment on soft tissues?", "soft_tissues"),   # the display name without its leading "the"
    ("DESCRIBE   THE PLEURA.", "pleura"),
])
def test_region_from_question_text(reader, question, region):
    assert reader.region_of(question) == region
    assert reader.key("r1", "region", question=question) == Key("r1", "region", region, "")


def test_region_longest_name_first():
    r = KeyReader({"regions": {"lungs": "the lungs", "both": "the lungs and pleura"}})
    assert r.region_of("Describe the lungs and pleura.") == "both"
    assert r.region_of("Describe the lungs.") == "lungs"


def test_region_column_beats_the_question_and_missing_region_is_an_error(reader):
    assert reader.key("r1", "region", question="Describe the lungs.", region="bones").subject == "bones"
    with pytest.raises(ValueError, match="no region"):
        reader.key("r1", "region", question="Describe the chest.")


def test_verify_side_whole_words_only(reader):
    assert reader.side_of("Does the right side show a fracture?") == "right"
    assert reader.side_of("Is there a pleural effusion on the LEFT?") == "left"
    assert reader.side_of("Is there a cleft on the right?") == "right"  # not "left" inside "cleft"
    assert reader.side_of("Is it on the left or the right?") is None
    key = reader.key("7", "verify", concept="atelectasis", question="Is there atelectasis on the left side?")
    assert key == Key("7", "verify", "atelectasis", "left")
    with pytest.raises(ValueError, match="side"):
        reader.key("7", "verify", concept="atelectasis", question="Is there atelectasis?")
    # side only keys verify: presence asked of the same concept has no side
    assert reader.key("7", "presence", concept="atelectasis", question="Is there atelectasis on the left?").side == ""


def test_key_survives_a_different_paraphrase(reader):
    a = reader.key("9", "region", question="What does the report say about the pleura?")
    b = reader.key("9", "region", question="Summarise pleura findings, please.")
    assert a == b == Key("9", "region", "pleura", "")
    v1 = reader.key("9", "verify", concept="lung_nodule", question="Does the right side show a lung nodule?")
    v2 = reader.key("9", "verify", concept="lung_nodule", question="On the right, do you see a nodule?")
    assert v1 == v2
    p1 = reader.key("9", "presence", concept="lung_nodule", question="Is there a lung nodule?")
    assert p1 == reader.key("9", "presence", concept="lung_nodule", question="Any nodules?") != v1


# -- answers ----------------------------------------------------------------------------------

def test_hedge_flag_is_compared_separately():
    assert not same_answer("1.2 cm", HEDGED.format(answer="1.2 cm"), "size")
    assert same_answer(HEDGED.format(answer="1.2 cm"), "1.2 CM, If present (the report is uncertain).", "size")
    rules = AnswerRules("{answer} (uncertain)")  # the wrapper comes from the templates
    assert rules.split_hedge("Mild (uncertain)") == ("mild", True)
    assert not rules.same_answer("mild (uncertain)", "mild", "severity")


def test_open_answers_compare_item_sets():
    assert same_answer("focal, alveolar and alveolar", "focal and alveolar", "type")
    assert same_answer("right base, left apex", "left apex and right base.", "location")
    assert same_answer("left base unchanged; left midlung new", "left midlung new, left base unchanged", "change")
    assert not same_answer("left apex, perihilar", "left apex", "location")
    assert same_answer(HEDGED.format(answer="right base and left apex"),
                       HEDGED.format(answer="left apex, right base"), "location")


@pytest.mark.parametrize("word, folded", [
    ("arteries", "artery"), ("ribs", "rib"), ("bases", "base"), ("apices", "apex"), ("lobes", "lobe"),
    ("opacities", "opacity"), ("masses", "mass"), ("branches", "branch"), ("vertebrae", "vertebra"),
    # left alone: short words, -ss / -us / -is endings, words without a final s
    ("fibrosis", "fibrosis"), ("atelectasis", "atelectasis"), ("thorax", "thorax"), ("hilus", "hilus"),
    ("emphysema", "emphysema"), ("pneumothorax", "pneumothorax"), ("mass", "mass"), ("has", "has"), ("yes", "yes"),
    ("series", "series"),
])
def test_singular(word, folded):
    assert singular(word) == folded


def test_open_fine_answers_ignore_singular_plural():
    assert same_answer("left coronary artery", "left coronary arteries", "location")
    assert same_answer("bilateral bases", "bilateral base", "location")
    assert same_answer("Both apices and right ribs", "right rib, both apex", "location")
    assert same_answer("small nodules", "small nodule", "type")
    assert same_answer("multiple masses", "multiple mass", "abnormality")
    assert same_answer("2 cms", "2 cms", "size") and same_answer("lungs unchanged", "lung unchanged", "change")
    assert same_answer(HEDGED.format(answer="left lower lobes"), HEDGED.format(answer="left lower lobe"), "location")
    assert not same_answer("left coronary artery", "right coronary arteries", "location")
    assert not same_answer("emphysema", "pneumothorax", "abnormality")
    assert not same_answer("fibrosis", "fibrosi", "type")       # an -is word is never cut
    # closed and region / coarse answers are not folded
    assert not same_answer("both sides", "both side", "choose")
    assert not same_answer("the ribs are intact.", "the rib is intact.", "region")
    assert not same_answer("no nodules", "no nodule", "presence")
    assert not same_answer("Bilateral bases clear.", "Bilateral base clear.", "report")


def test_closed_answers_are_exact():
    assert same_answer("Yes.", "yes", "presence")
    assert not same_answer("no", "no large consolidation", "presence")
    # an item list is not a set for closed types
    assert not same_answer("left and right", "right and left", "choose")


def test_coarse_ignores_leading_discourse_word_only():
    assert same_answer("Specifically, the lungs are clear.", "the lungs  are clear", "report")
    assert same_answer("The lungs are clear.", "Otherwise, the lungs are clear.", "impression")
    assert not same_answer("The lungs are clear.", "Clear, the lungs are.", "report")


def test_trimmed_region_answers():
    rules = AnswerRules()
    long = "The heart is normal in size and the lungs are clear. No pleural effusion."
    assert rules.match("The lungs are clear.", long, "region") == "trimmed"
    assert rules.match("The lungs are clear. Otherwise, no pleural effusion.", long, "region") == "trimmed"
    assert rules.match(long, long, "region") == "same"
    assert rules.match("The lungs are hyperinflated.", long, "region") is None      # a word not in the expected
    assert rules.match(long + " Heart normal.", long, "region") is None             # longer is never trimmed
    assert rules.match("", long, "region") is None
    assert rules.match("The lungs are clear.", long, "report") is None              # region rows only


def test_wilson_interval_values():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) is None


def test_allocate_spreads_and_redistributes():
    assert allocate(10, {"a": 1, "b": 100, "c": 100}) == {"a": 1, "b": 5, "c": 4}
    assert allocate(10, {"a": 0, "b": 3}) == {"a": 0, "b": 3}
    assert allocate(7, {"a": 5, "b": 5, "c": 5}) == {"a": 3, "b": 2, "c": 2}


# -- reworded awkward rows ------------------------------------------------------------------------

def _review(rid: str, qtype: str, answer: str, verdict: str, corrected: str, concept: str = "calcification",
            note: str = "") -> ReviewRow:
    return ReviewRow(row=int(rid), key=Key(rid, qtype, concept, ""), granularity="fine", question=f"q {rid}?",
                     answer=answer, verdict=verdict, corrected=corrected, category="word", note=note)


def test_awkward_rows_repeating_their_answer_are_reworded_not_different():
    rows = [
        _review("1", "location", "perihilar", "awkward", "perihilar", note="hilar is better"),  # built otherwise
        _review("2", "change", "resolved", "awkward", "Resolved.", concept="catheter"),  # normalised: the same
        _review("3", "type", "focal, alveolar and alveolar", "awkward", ""),  # empty corrected: the answer stands
        _review("4", "location", "perihilar", "awkward", "perihilar"),  # built the same: as corrected
        _review("5", "location", "perihilar", "awkward", "hilar"),      # a real correction: different
        _review("6", "location", "base", "correct", "base"),            # not awkward: different
        _review("7", "location", "apex", "awkward", "apex"),            # not in the build: lost
        _review("8", "severity", "mild", "awkward", "mild"),            # as corrected
    ]
    found = {Key("1", "location", "calcification", ""): Built("hilar", "q 1?", "1:0"),
             Key("2", "change", "catheter", ""): Built("removed", "q 2?", "2:0"),
             Key("3", "type", "calcification", ""): Built("focal", "q 3?", "3:0"),
             Key("4", "location", "calcification", ""): Built("Perihilar.", "q 4?", "4:0"),
             Key("5", "location", "calcification", ""): Built("aorta", "q 5?", "5:0"),
             Key("6", "location", "calcification", ""): Built("apex", "q 6?", "6:0"),
             Key("8", "severity", "calcification", ""): Built("mild", "q 8?", "8:0")}
    assert [r.reworded_only for r in rows] == [True, True, True, True, False, False, True, True]
    result = score(rows, found, AnswerRules(), {"location": 100, "change": 10, "type": 10, "severity": 10})
    total = result["total"]
    assert _totals(result) == {"reviewed": 8, "as_corrected": 2, "trimmed": 0, "different": 2, "lost": 1,
                               "dropped": 0, "still_asked": 0}
    assert total["reworded"] == 3
    # out of the rate's numerator and denominator, per type and overall; still expected rows (not lost)
    assert (total["rate"]["k"], total["rate"]["n"]) == (2, 4)
    loc = result["by_type"]["location"]
    assert (loc["reworded"], loc["as_corrected"], loc["different"], loc["lost"]) == (1, 1, 2, 1)
    assert (loc["rate"]["k"], loc["rate"]["n"]) == (1, 3)
    assert result["by_type"]["change"]["rate"]["rate"] is None and result["by_type"]["change"]["reworded"] == 1
    assert result["expected_rows"] == 8
    h = result["headline"]
    assert (h["expected_answered_as_corrected"]["k"], h["expected_answered_as_corrected"]["n"]) == (2, 4)
    assert (h["expected_lost"]["k"], h["expected_lost"]["n"]) == (1, 8)
    reworded = result["lists"]["reworded"]
    assert [(e["report_id"], e["built"], e["expected"]) for e in reworded] == [
        ("1", "hilar", "perihilar"), ("2", "removed", "Resolved."), ("3", "focal", "focal, alveolar and alveolar")]
    assert reworded[0]["note"] == "hilar is better"
    assert [e["report_id"] for e in result["lists"]["different"]] == ["5", "6"]
    assert [e["report_id"] for e in result["lists"]["regressions"]] == ["6"]
    # the printed table: its own column, its own list with built and reviewed answers
    text = format_table(result)
    head = next(line for line in text.splitlines() if line.startswith("type"))
    assert head.split()[:7] == ["type", "reviewed", "as", "corrected", "(trimmed)", "different", "reworded"]
    all_line = next(line for line in text.splitlines() if line.startswith("all "))
    assert all_line.split()[:7] == ["all", "8", "2", "0", "2", "3", "1"]
    assert "check by hand: 3\n" in text
    assert "1 location calcification: 'q 1?' -> built 'hilar'; reviewed 'perihilar' [awkward, word] " \
           "note: hilar is better" in text
    assert "expected rows answered differently: 2\n" in text
    card = card_section({"score": result, "file": "s.csv", "sha256": "0" * 64,
                         "counts": {"reviewed": 8, "applied": {"dropped": 0, "corrected": 0, "confirmed": 0,
                                                               "not_found": 0}}})
    assert "| different | reworded | lost |" in card and "| all | 8 | 2 (0) | 2 | 3 | 1 |" in card


# -- sheets -----------------------------------------------------------------------------------

def _write(path: Path, rows: list[dict], columns=REVIEW_COLUMNS) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


GOOD = {"report_id": "5", "granularity": "fine", "question_type": "presence", "concept": "pneumothorax",
        "question": "Is there a pneumothorax?", "answer": "no", "verdict": "correct", "corrected_answer": "no"}


@pytest.mark.parametrize("bad, message", [
    ({"report_id": ""}, "row 2: missing report_id"),
    ({"question_type": "colour"}, "row 2: unknown question_type 'colour'"),
    ({"verdict": "maybe"}, "row 2: unknown verdict"),
    ({"verdict": "wrong", "corrected_answer": ""}, "row 2: verdict wrong needs a corrected_answer"),
    ({"concept": ""}, "row 2: a presence pair needs its concept"),
])
def test_bad_sheet_rows_name_file_and_row(tmp_path, reader, bad, message):
    path = _write(tmp_path / "s.csv", [GOOD, {**GOOD, **bad}])
    with pytest.raises(ReviewError) as err:
        read_sheet(path, reader)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_unreadable_sheets(tmp_path, reader):
    with pytest.raises(ReviewError, match="cannot read"):
        read_sheet(tmp_path / "missing.csv", reader)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReviewError, match="missing column"):
        read_sheet(tmp_path / "x.csv", reader)
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ReviewError, match="not UTF-8"):
        read_sheet(tmp_path / "bin.csv", reader)


# -- the loop end to end -----------------------------------------------------------------------

def _subset(path: Path, n: int = 40) -> Path:
    with open(SAMPLE, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows[:n + 1])
    return path


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("review")
    src = _subset(tmp / "reports.csv")
    build(src, tmp / "a", BuildConfig(workers=1, progress=False))
    return tmp, src


@pytest.fixture(scope="module")
def sampled(loop):
    tmp, _ = loop
    args = ["sample", str(tmp / "a"), "--n", "30", "--seed", "1", "--out", str(tmp / "sheet.csv"),
            "--html", str(tmp / "sheet.html")]
    res = CliRunner().invoke(review_app, args)
    assert res.exit_code == 0, res.output
    first = ((tmp / "sheet.csv").read_bytes(), (tmp / "sheet.html").read_bytes())
    res2 = CliRunner().invoke(review_app, args)
    assert res2.exit_code == 0 and res2.output == res.output
    assert ((tmp / "sheet.csv").read_bytes(), (tmp / "sheet.html").read_bytes()) == first
    with open(tmp / "sheet.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh)), res.output


def test_sampled_sheet(loop, sampled):
    tmp, _ = loop
    rows, output = sampled
    assert len(rows) == 30 and output.startswith("30 pairs sampled")
    assert list(rows[0]) == list(REVIEW_COLUMNS + EXTRA_COLUMNS)
    assert all(not r[c] for r in rows for c in ("verdict", "corrected_answer", "category", "note"))
    types = {r["question_type"] for r in rows}
    assert "region" in types and not types & {"report", "impression"}
    assert all(r["side"] in ("left", "right") for r in rows if r["question_type"] == "verify")
    qa = {r["qa_id"]: r for r in pq.read_table(tmp / "a" / "qa.parquet").to_pylist()}
    # stratified: a type gets less than the largest share only when it has no pair left
    counts = {t: sum(r["question_type"] == t for r in rows) for t in types}
    have = {t: sum(r["question_type"] == t for r in qa.values()) for t in types}
    assert all(counts[t] >= max(counts.values()) - 1 or counts[t] == have[t] for t in types), (counts, have)
    for r in rows:
        built = qa[r["qa_id"]]
        assert (r["question"], r["answer"], r["report_id"]) == (built["question"], built["answer"], built["report_id"])
    html = (tmp / "sheet.html").read_text(encoding="utf-8")
    assert html.count('<section class="card"') == 30 and "<mark>" in html and "<strong>" in html
    assert "<script" not in html and "http" not in html and "<dt>corrected_answer</dt><dd></dd>" in html


def test_exclude_skips_reviewed_keys(loop, sampled):
    tmp, _ = loop
    res = CliRunner().invoke(review_app, ["sample", str(tmp / "a"), "--n", "30", "--seed", "1",
                                          "--out", str(tmp / "next.csv"), "--exclude", str(tmp / "sheet.csv")])
    assert res.exit_code == 0, res.output
    with open(tmp / "next.csv", newline="", encoding="utf-8") as fh:
        again = {r["qa_id"] for r in csv.DictReader(fh)}
    assert again and not again & {r["qa_id"] for r in sampled[0]}


def _alt(r: dict) -> str:
    if r["question_type"] in ("presence", "verify"):
        return "no" if r["answer"] == "yes" else "yes"
    if r["question_type"] == "choose":
        return "left" if r["answer"] != "left" else "right"
    return f"unrelated corrected answer {r['qa_id']}"


@pytest.fixture(scope="module")
def filled(loop, sampled):
    """3 DROP, 1 trivial, 3 corrected, 1 not yet reviewed, the rest correct."""
    tmp, _ = loop
    rows = [dict(r) for r in sampled[0]]
    plan = {"drop": rows[0:3], "trivial": rows[3:4], "corrected": rows[4:7], "unreviewed": rows[7:8]}
    for r in plan["drop"]:
        r.update(verdict="unsupported", corrected_answer="DROP", category="wrong-concept")
    for r in plan["trivial"]:
        r.update(verdict="trivial", corrected_answer=r["answer"], category="answer-in-question")
    for r in plan["corrected"]:
        r.update(verdict="wrong", corrected_answer=_alt(r))
    for r in rows[8:]:
        r.update(verdict="correct", corrected_answer=r["answer"])
    return _write(tmp / "filled.csv", rows, REVIEW_COLUMNS + EXTRA_COLUMNS), rows, plan


def _totals(result: dict) -> dict:
    return {k: result["total"][k] for k in ("reviewed", "as_corrected", "trimmed", "different", "lost", "dropped",
                                            "still_asked")}


def test_score_counts(loop, filled):
    tmp, _ = loop
    path, rows, plan = filled
    result = evaluate_review(tmp / "a", path)
    assert result["unreviewed"] == 1
    assert _totals(result) == {"reviewed": 29, "as_corrected": 22, "trimmed": 0, "different": 3, "lost": 0,
                               "dropped": 0, "still_asked": 4}
    assert result["total"]["rate"]["rate"] == pytest.approx(22 / 29)
    assert result["total"]["at_review"]["k"] == 22  # correct rows only: trivial, DROP and wrong were not right
    assert result["headline"]["drop_no_longer_asked"]["rate"] == 0.0
    assert result["headline"]["expected_answered_as_corrected"]["met"] is False
    assert {e["question"] for e in result["lists"]["different"]} == {r["question"] for r in plan["corrected"]}
    assert len(result["lists"]["still_asked"]) == 4 and not result["lists"]["regressions"]
    types = {r["question_type"] for r in rows if r["verdict"]}
    assert set(result["by_type"]) == types
    assert set(result["table_estimate"]["left_out"]) >= {"report", "impression"}
    # the CLI prints the same numbers; --json is the same result
    res = CliRunner().invoke(eval_app, [str(tmp / "a"), "--review", str(path)])
    assert res.exit_code == 0, res.output
    assert "drop rows still asked: 4" in res.output and "expected rows answered differently: 3" in res.output
    res = CliRunner().invoke(eval_app, [str(tmp / "a"), "--review", str(path), "--json"])
    assert _totals(json.loads(res.output)) == _totals(result)


def test_overrides_build(loop, filled):
    tmp, src = loop
    path, rows, plan = filled
    outs = []
    for workers, name in ((1, "b"), (2, "c")):
        build(src, tmp / name, BuildConfig(workers=workers, batch_size=7, progress=False, overrides=str(path)))
        outs.append(tmp / name)
    for name in ("qa.parquet", "reports.parquet", "findings.parquet", "stats.json", "data_card.md"):
        assert len({(o / name).read_bytes() for o in outs}) == 1, name
    manifests = [json.loads((o / "manifest.json").read_text()) for o in outs]
    for m in manifests:
        m.pop("run")
    assert manifests[0] == manifests[1]

    before = pq.read_table(tmp / "a" / "qa.parquet").to_pylist()
    after = pq.read_table(tmp / "b" / "qa.parquet").to_pylist()
    assert len(after) == len(before) - 4
    by_question = {(r["report_id"], r["question"]): r for r in after}
    for r in plan["drop"] + plan["trivial"]:
        assert (r["report_id"], r["question"]) not in by_question
    for r in plan["corrected"]:
        assert by_question[(r["report_id"], r["question"])]["answer"] == r["corrected_answer"]
    for r in plan["unreviewed"]:  # a row without a verdict changes nothing
        assert by_question[(r["report_id"], r["question"])]["answer"] == r["answer"]
    per_report: dict[str, list[str]] = {}
    for r in after:
        per_report.setdefault(r["report_id"], []).append(r["qa_id"])
    assert all(ids == [f"{rid}:{i}" for i in range(len(ids))] for rid, ids in per_report.items())

    block = manifests[0]["overrides"]
    assert block["file"] == str(path) and len(block["sha256"]) == 64
    assert block["counts"]["applied"] == {"dropped": 4, "corrected": 3, "confirmed": 22, "not_found": 0}
    assert _totals(block["score"]) == _totals(evaluate_review(tmp / "a", path))  # measured before overrides
    card = (tmp / "b" / "data_card.md").read_text()
    assert "## Measured answer accuracy" in card
    assert "29 reviewed pairs applied: 4 dropped, 3 corrected, 22 already agreed, 0 not found in this build." in card

    again = evaluate_review(tmp / "b", path)
    assert _totals(again) == {"reviewed": 29, "as_corrected": 25, "trimmed": 0, "different": 0, "lost": 0,
                              "dropped": 4, "still_asked": 0}
    assert again["headline"]["expected_answered_as_corrected"]["rate"] == 1.0
    assert again["headline"]["drop_no_longer_asked"]["rate"] == 1.0


def test_build_without_overrides_has_no_review_section(loop):
    tmp, _ = loop
    card = (tmp / "a" / "data_card.md").read_text()
    assert "answer_accuracy" not in card and "Measured answer accuracy" not in card
    # the placeholder sits on the parser-accuracy line: empty, the card keeps its layout
    assert "\n## Parser accuracy\n\nNot measured: no gold file was given (`qa-eval OUT --gold FILE` measures it).\n\n## How" in card
    assert "overrides" not in json.loads((tmp / "a" / "manifest.json").read_text())


REWORDED = """\
mode: replace
questions:
  region: ["Summarise the radiologist's comments on {region}."]
  verify: ["On the {side}, is {np} visible?"]
  verify_plural: ["On the {side}, are {name} visible?"]
  presence: ["Would you say {np} is there?"]
  choose: ["Which side has {the}?"]
"""


def test_keys_survive_template_rewording(loop, filled, reader):
    tmp, src = loop
    path, _, _ = filled
    (tmp / "reworded.yaml").write_text(REWORDED)
    build(src, tmp / "r", BuildConfig(workers=1, progress=False,
                                      qa=QAConfig(extra_templates=(str(tmp / "reworded.yaml"),))))
    found_a, _, _ = read_build(tmp / "a", reader)
    found_r, dups, _ = read_build(tmp / "r", KeyReader.for_config("en", (str(tmp / "reworded.yaml"),)))
    assert set(found_a) == set(found_r) and not dups
    changed = [k for k in found_a if k.question_type in ("region", "verify") and found_a[k].question != found_r[k].question]
    assert len(changed) == sum(k.question_type in ("region", "verify") for k in found_a) > 0
    # a sheet from the old wording scores the same, with and without its region/side columns
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    bare = _write(tmp / "bare.csv", rows, REVIEW_COLUMNS)
    expected = _totals(evaluate_review(tmp / "a", path))
    assert _totals(evaluate_review(tmp / "r", path)) == expected
    assert _totals(evaluate_review(tmp / "r", bare)) == expected


def test_cli_errors_are_one_line(tmp_path, loop):
    tmp, _ = loop
    bad = _write(tmp_path / "bad.csv", [GOOD, {**GOOD, "question_type": "colour"}])
    stderr = []
    for cmd in ([str(BIN / "qa-eval"), str(tmp / "a"), "--review", str(bad)],
                [str(BIN / "qa-eval"), str(tmp / "a")],
                [str(BIN / "qa-review"), "sample", str(tmp / "a"), "--out", str(tmp_path / "s.csv"), "--types", "x"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        stderr.append(lines[0])
    assert "bad.csv: row 2: unknown question_type 'colour'" in stderr[0]
    assert "--gold" in stderr[1] and "unknown question type(s) x" in stderr[2]


# -- the clinician sheet on the IU dev split -----------------------------------------------------

@pytest.mark.skipif(not (IU / "dev_qa_review.csv").exists(), reason="../shared/data/iu not present")
def test_iu_review_sheet_parses_to_keys(reader):
    rows = read_sheet(IU / "dev_qa_review.csv", reader)
    assert len(rows) == 255 and all(r.reviewed for r in rows)
    middle = [r for r in rows if r.granularity == "middle"]
    assert middle and all(r.key.question_type == "region" and r.key.subject for r in middle)
    assert {r.key.subject for r in middle} <= {"lungs", "pleura", "heart_mediastinum", "hila", "bones", "devices",
                                               "diaphragm_abdomen", "soft_tissues"}
    verify = [r for r in rows if r.key.question_type == "verify"]
    assert len(verify) == 25 and all(r.key.side in ("left", "right") for r in verify)
    assert len({r.key for r in rows}) == 255


def test_review_diff_lists_what_a_rule_change_changed(tmp_path):
    """`qa-review diff OLD NEW`: nothing for a build against itself; parser options show up as the pairs
    and the sentences they change (a 3.5 cm nodule stays a nodule; 'likely X' turns uncertain)."""
    from qa_builder.mentions import ParserConfig
    from qa_builder.pipeline import BuildConfig, build
    from qa_builder.review.diff import diff_builds, format_diff

    src = tmp_path / "reports.csv"
    src.write_text("report_id,findings,impression\n"
                   "a,Heart size is normal. Right basilar opacity likely atelectasis.,No effusion.\n"
                   "b,A 3.5 cm nodule in the left lower lobe.,Likely small left pleural effusion.\n", encoding="utf-8")
    build(src, tmp_path / "old", BuildConfig(workers=1, progress=False))
    build(src, tmp_path / "new", BuildConfig(workers=1, progress=False, parser=ParserConfig(
        probable_as="uncertain", nodule_to_mass_by_size=False)))
    same = diff_builds(tmp_path / "old", tmp_path / "old")
    assert same["counts"] == {} and same["sentences_changed"] == 0
    changed = diff_builds(tmp_path / "old", tmp_path / "new")
    assert changed["sentences_changed"] == 3
    assert changed["counts"]["presence"]["removed"] == 1 and changed["counts"]["presence"]["added"] == 1
    text = format_diff(changed)
    assert "b presence lung_mass: 'yes' -> None" in text and "b presence lung_nodule: None -> 'yes'" in text
