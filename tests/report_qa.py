"""Golden-test helper: report text -> the QA pairs qa-build makes of it (parser and generator together)."""

from __future__ import annotations

from functools import lru_cache

from qa_builder.mentions import MentionExtractor
from qa_builder.pipeline import parse_report
from qa_builder.qa.generate import QAConfig, generate_qa
from qa_builder.reports import RawReport

FINE = QAConfig(granularities=("fine",))


@lru_cache(maxsize=1)
def extractor() -> MentionExtractor:
    return MentionExtractor()


def parse(findings: str | None = None, impression: str | None = None, report_id: str = "r1"):
    raw = RawReport(report_id, "p1", None, None, {"findings": findings, "impression": impression}, "test", {})
    return parse_report(raw, extractor())


def qa(findings: str | None = None, impression: str | None = None, config: QAConfig = FINE) -> list[dict]:
    return generate_qa(*parse(findings, impression), config)


def answers(rows: list[dict], qtype: str, concept: str | None = None) -> list[str]:
    """Answers of one question type (and concept); verify answers as 'side: answer'."""
    out = []
    for r in rows:
        if r["question_type"] != qtype or (concept is not None and r["concept"] != concept):
            continue
        if qtype == "verify":
            side = "left" if " left" in r["question"] else "right"
            out.append(f"{side}: {r['answer']}")
        else:
            out.append(r["answer"])
    return out


def asked(rows: list[dict], qtype: str, concept: str) -> bool:
    return any(r["question_type"] == qtype and r["concept"] == concept for r in rows)
