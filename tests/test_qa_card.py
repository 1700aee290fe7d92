"""stats.json and data_card.md (qa_builder.qa.card)."""

from __future__ import annotations

import json
import re

import pytest

from qa_builder.qa.card import (compute_stats, finish_stats, load_source_info, merge_partial_stats, partial_stats,
                                render_card, write_data_card)
from qa_builder.qa.generate import QAConfig, build_qa
from qa_builder.qa.schema import write_qa_parquet


def _case(rid: str, subject: str, effusion: str):
    sentences = [{"sentence_id": 0, "section": "findings", "sentence": "Small left pleural effusion."
                  if effusion == "positive" else "No pleural effusion."},
                 {"sentence_id": 1, "section": "findings", "sentence": "The osseous structures are intact."}]
    mentions = [{"report_id": rid, "mention_id": 0, "section": "findings", "sentence_id": 0,
                 "sentence": sentences[0]["sentence"], "start": 0, "end": 5, "text": "effusion",
                 "concept": "pleural_effusion", "certainty": effusion,
                 "laterality": "left" if effusion == "positive" else None, "location": None,
                 "severity": "small" if effusion == "positive" else None, "descriptor": None, "size": None,
                 "change": None, "temporality": "current", "chexpert": "Pleural Effusion", "chestxray14": "Effusion"}]
    report = {"report_id": rid, "subject_id": subject, "study_id": None,
              "findings": " ".join(s["sentence"] for s in sentences), "impression": None}
    return report, sentences, mentions


@pytest.fixture(scope="module")
def corpus():
    cases = [_case(f"r{i}", f"p{i}", "positive" if i % 3 == 0 else "negative") for i in range(30)]
    # a report with no mention at all: coarse/middle pairs only, so fine coverage < 100 %
    cases.append(({"report_id": "r99", "subject_id": None, "study_id": None, "findings": "Unremarkable.",
                   "impression": None}, [{"sentence_id": 0, "section": "findings", "sentence": "Unremarkable."}], []))
    return build_qa(cases)


def test_compute_stats(corpus):
    stats = compute_stats(corpus, reports_count=32, config=QAConfig())
    assert stats["pairs"] == corpus.num_rows
    assert sum(stats["by_granularity"].values()) == corpus.num_rows
    assert sum(stats["by_question_type"].values()) == corpus.num_rows
    assert sum(v["pairs"] for v in stats["by_split"].values()) == corpus.num_rows
    assert sum(v["reports"] for v in stats["by_split"].values()) == 31
    assert stats["coverage"]["fine"] == round(30 / 32, 4)  # 30 reports with a mention, out of 32 given
    assert stats["presence_balance"]["pleural_effusion"] == {"yes": 10, "no": 20, "possibly": 0,
                                                             "yes_share": round(10 / 30, 4)}
    assert stats["answer_words"]["fine"]["min"] == 1
    assert stats["fine_evidence"]["with_evidence_share"] == 1.0
    assert stats["config"]["uncertain_policy"] == "hedge"
    json.dumps(stats)  # serialisable as is
    empty = compute_stats(corpus.slice(0, 0), reports_count=0)
    assert empty["pairs"] == 0 and empty["coverage"]["fine"] == 0.0


def test_partial_stats_merged_over_report_blocks_equal_the_whole(corpus):
    whole = compute_stats(corpus, reports_count=32)
    ids = corpus.column("report_id").to_pylist()
    cuts = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1] and i % 5 == 0] + [len(ids)]
    assert len(cuts) > 3
    merged = partial_stats(corpus.slice(0, 0))
    for a, b in zip(cuts, cuts[1:]):
        merge_partial_stats(merged, partial_stats(corpus.slice(a, b - a)))
    assert finish_stats(merged, reports_count=32) == whole


def test_render_card_fills_every_placeholder(corpus):
    stats = compute_stats(corpus, reports_count=31)
    src = load_source_info("mimic")
    text = render_card(stats, source_info={**src, "input": "files/"})
    assert not re.search(r"\$[a-z_]+", text.replace("$name", ""))  # only the documented `$name` example stays
    assert "PhysioNet Credentialed Health Data License" in text
    assert "Not measured" in text
    with_acc = render_card(stats, source_info=src, accuracy={"micro_f1": 0.96, "per_label": {
        "Effusion": {"precision": 0.97, "recall": 0.95, "f1": 0.96, "support": 70}}})
    assert "| Effusion | 0.97 | 0.95 | 0.96 | 70 |" in with_acc and "micro_f1: 0.96" in with_acc


def test_write_data_card_is_deterministic(corpus, tmp_path):
    write_qa_parquet(corpus, tmp_path / "qa.parquet")
    src = load_source_info("openi")
    stats = write_data_card(tmp_path, corpus, 31, config=QAConfig(), source_info=src)
    assert json.loads((tmp_path / "stats.json").read_text()) == json.loads(json.dumps(stats))
    assert stats["qa_parquet_bytes"] == (tmp_path / "qa.parquet").stat().st_size
    first = [(tmp_path / n).read_bytes() for n in ("stats.json", "data_card.md")]
    write_data_card(tmp_path, corpus, 31, config=QAConfig(), source_info=src)
    assert [(tmp_path / n).read_bytes() for n in ("stats.json", "data_card.md")] == first
    card = (tmp_path / "data_card.md").read_text()
    assert "CC BY-NC-ND 4.0" in card and "| pleural_effusion |" in card


def test_source_presets():
    for name in ("mimic", "openi", "csv"):
        info = load_source_info(name)
        assert {"name", "licence", "redistribution"} <= set(info)
    with pytest.raises(KeyError):
        load_source_info("chexpert-plus")
