"""Question wording: paraphrases from templates/<language>.yaml, chosen by a stable hash.

Each question gets one paraphrase, chosen by a stable hash of (seed, report_id) mixed with (question
type, key), key = the concept, region or concept:side: same input and seed -> same wording.
"""

from __future__ import annotations

from collections import defaultdict

from .common import GOLDEN, MASK64, choice
from .splits import stable_hash
from .vocab import ConceptInfo


class Wording:
    """Mixin of QAGenerator: paraphrase tables, cached per (question type, key)."""

    questions: dict[str, tuple[str, ...]]
    v_side: dict
    region_names: dict[str, str]
    hedge_attr: str

    def _init_wording(self, concept_questions: dict | None = None) -> None:
        self.concept_questions: dict[str, dict[str, list[str]]] = concept_questions or {}
        self._q_cache: dict[tuple[str, str], tuple[tuple[str, ...], int, int]] = {}
        self._key_hash: dict[tuple, int] = {}

    def _pick(self, base: int, *key: str) -> int:
        """32-bit value from the report's hash and a key: one blake2b per report, not per question."""
        kh = self._key_hash.get(key)
        if kh is None:
            kh = self._key_hash[key] = stable_hash(*key)
        return (((base ^ kh) * GOLDEN) & MASK64) >> 32

    def question(self, qtype: str, base: int, key: str, info: ConceptInfo | None = None,
                 region: str | None = None, side: str | None = None) -> str:
        """The paraphrase for a report hash `base`.

        `key` (concept, region or concept:side) must determine the other arguments: the formatted
        variants are cached per (question type, key).
        """
        return choice(self._q_entry(qtype, key, info, region, side), base)

    def _q_entry(self, qtype: str, key: str, info: ConceptInfo | None = None, region: str | None = None,
                 side: str | None = None) -> tuple[tuple[str, ...], int, int]:
        """(formatted paraphrases, stable_hash(qtype, key), their number) of a question, cached per
        (qtype, key)."""
        entry = self._q_cache.get((qtype, key))
        if entry is None:
            entry = self._q_cache[(qtype, key)] = self._variants(qtype, key, info, region, side)
        return entry

    def _variants(self, qtype: str, key: str, info: ConceptInfo | None, region: str | None,
                  side: str | None) -> tuple[tuple[str, ...], int, int]:
        variants = self.questions[qtype]
        if info is not None and info.plural and self.questions.get(qtype + "_plural"):
            variants = self.questions[qtype + "_plural"]
        own = self.concept_questions.get(info.id, {}).get(qtype) if info is not None else None
        if own:  # a concept's own wording ("How tortuous is the aorta?")
            variants = tuple(own)
        fields = {"side": self.v_side.get(side, side) if side else ""}
        if info is not None:
            fields.update(name=info.name, np=info.np, the=info.the)
        if region is not None:
            fields["region"] = self.region_names.get(region, region)
        texts = []
        for v in variants:
            text = v.format_map(defaultdict(str, fields))
            texts.append(text[:1].upper() + text[1:])
        return tuple(texts), stable_hash(qtype, key), len(texts)

    def _hedge(self, answer: str, hedged: bool) -> str:
        """An attribute answer of a finding the report only hedges: "small, if present (...)"."""
        return self.hedge_attr.format(answer=answer) if hedged else answer
