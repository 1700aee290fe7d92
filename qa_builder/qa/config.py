"""What a QA build asks: question types, granularities and the QAConfig options."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .splits import DEFAULT_FRACTIONS, check_fractions
from .text import POLICIES as PLACEHOLDER_POLICIES

GRANULARITIES: tuple[str, ...] = ("coarse", "middle", "fine")

# question_type -> (granularity, answer_type); the family module that answers each is named beside it.
QUESTION_TYPES: dict[str, tuple[str, str]] = {
    "report": ("coarse", "open"),        # coarse.py
    "impression": ("coarse", "open"),    # coarse.py
    "region": ("middle", "open"),        # region.py
    "abnormality": ("fine", "open"),     # abnormality.py
    "presence": ("fine", "closed"),      # closed.py
    "verify": ("fine", "closed"),        # closed.py
    "choose": ("fine", "closed"),        # attribute.py
    "location": ("fine", "open"),        # attribute.py
    "severity": ("fine", "open"),        # attribute.py
    "type": ("fine", "open"),            # attribute.py
    "size": ("fine", "open"),            # attribute.py
    "change": ("fine", "open"),          # attribute.py
}
FINE_TYPES = frozenset(t for t, (g, _) in QUESTION_TYPES.items() if g == "fine")
# Closed questions answered yes/no: what balancing acts on.
YES_NO_TYPES: frozenset[str] = frozenset({"presence", "verify"})
# When max_pairs_per_report trims, types are taken round-robin in this order (report first).
CAP_PRIORITY: tuple[str, ...] = (
    "report", "abnormality", "presence", "region", "location", "choose", "verify",
    "change", "severity", "type", "size", "impression",
)
SCHEMES: tuple[str, ...] = ("all", "chexpert", "chestxray14")
EVIDENCE_SECTIONS: frozenset[str] = frozenset({"findings", "impression"})
# Question types asked once per report, keyed '' (not per concept or region).
UNKEYED_TYPES = frozenset({"report", "impression", "abnormality"})


@dataclass(frozen=True)
class QAConfig:
    # Which granularities to emit: any of 'coarse', 'middle', 'fine'.
    granularities: tuple[str, ...] = GRANULARITIES
    # Which question types to emit (keys of QUESTION_TYPES); None = every type of the granularities.
    question_types: tuple[str, ...] | None = None
    # Keep at most this many pairs per report (round-robin over types, seeded); None = no cap.
    max_pairs_per_report: int | None = None
    # Corpus-level: trim the majority answer of each (question type, concept) yes/no group to
    # ceil(balance_ratio * minority) by a seeded ranking. Drops pairs, never invents them.
    # Applied by build_qa / balance_yes_no / balance_table, not by generate_qa (one report).
    balance_yes_no: bool = False
    balance_ratio: float = 1.0
    # Concepts the report only hedges: 'hedge' (answer "possibly", "..., if present") or 'skip'.
    uncertain_policy: str = "hedge"
    # Concepts that get per-concept pairs: 'all', or only those with a 'chexpert' / 'chestxray14' label.
    scheme: str = "all"
    # Seeds paraphrase choice, split hashing, capping and balancing.
    seed: int = 0
    # (train, validate, test) fractions for hashed patient-level splits.
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    # Official split CSV (MIMIC mimic-cxr-2.0.0-split.csv), honoured by study, then by subject.
    split_file: str | None = None
    # Template language ('en' -> templates/en.yaml) or a path to a template YAML file.
    language: str = "en"
    # Extra template YAML files merged on top (paraphrases appended unless the file says mode: replace).
    extra_templates: tuple[str, ...] = ()
    # Alternative concepts.yaml (display names, regions, region keywords).
    concepts_file: str | None = None
    # De-identification placeholders ("XXXX", "___", "[** **]") in open answers: 'token' writes
    # placeholder_token instead, 'drop' leaves out the clauses that hold one (qa/text.py).
    placeholders: str = "token"
    placeholder_token: str = "___"
    # Difference QA (diff_qa.parquet, qa/difference.py): study dates from a CSV with study_id, StudyDate
    # [, StudyTime] (MIMIC-CXR's metadata CSV, found beside a files/ tree when not given), or from a
    # column (and time column) of a CSV input; a prior is the subject's previous study within max_prior_days.
    difference: bool = True
    study_dates: str | None = None
    study_date_column: str | None = None
    study_time_column: str | None = None
    max_prior_days: float = 365.0

    def __post_init__(self) -> None:
        # Coerce lists or "a,b" strings (from a CLI or JSON) to tuples: the config must stay
        # hashable, it keys the generator cache.
        def tup(v: Any) -> tuple | None:
            if v is None:
                return None
            if isinstance(v, str):
                return tuple(x.strip() for x in v.split(",") if x.strip())
            return tuple(v)

        object.__setattr__(self, "granularities", tup(self.granularities))
        object.__setattr__(self, "question_types", tup(self.question_types))
        object.__setattr__(self, "extra_templates", tup(self.extra_templates) or ())
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in tup(self.split_fractions) or ()))
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities:
            raise ValueError(f"granularities must be a non-empty subset of {GRANULARITIES}, got {self.granularities}")
        if self.question_types is not None:
            bad = [t for t in self.question_types if t not in QUESTION_TYPES]
            if bad:
                raise ValueError(f"unknown question types {bad}; known: {sorted(QUESTION_TYPES)}")
        if self.max_pairs_per_report is not None and self.max_pairs_per_report < 1:
            raise ValueError("max_pairs_per_report must be >= 1 or None")
        if self.uncertain_policy not in ("hedge", "skip"):
            raise ValueError(f"uncertain_policy must be 'hedge' or 'skip', got {self.uncertain_policy!r}")
        if self.placeholders not in PLACEHOLDER_POLICIES:
            raise ValueError(f"placeholders must be one of {PLACEHOLDER_POLICIES}, got {self.placeholders!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if not self.enabled_types():
            raise ValueError("no question type left: check granularities and question_types together")
        if not self.max_prior_days > 0:
            raise ValueError("max_prior_days must be > 0")
        if not self.balance_ratio >= 1.0:
            raise ValueError("balance_ratio must be >= 1.0")
        check_fractions(self.split_fractions)

    def enabled_types(self) -> frozenset[str]:
        wanted = set(QUESTION_TYPES) if self.question_types is None else set(self.question_types)
        return frozenset(t for t in wanted if QUESTION_TYPES[t][0] in self.granularities)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CONFIG = QAConfig()
