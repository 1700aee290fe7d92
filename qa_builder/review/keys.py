"""Review keys and answer comparison.

A reviewed pair is found again by (report_id, question_type, subject, side), never by its wording:
paraphrases are re-drawn whenever a template list changes, so the question text of a reviewed pair
is not stable across builds. Only the region display names and side words are read from the
question, and only when a sheet has no `region` / `side` column (the clinician sheet has none).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Mapping, NamedTuple

from qa_builder.qa.config import QUESTION_TYPES, UNKEYED_TYPES  # UNKEYED: asked once per report
from qa_builder.qa.text import PLACEHOLDER_RUN
from qa_builder.qa.vocab import load_templates

REGION_TYPES = frozenset({"region"})
# Everything else is asked per concept (presence, verify, choose, location, severity, ...).
CONCEPT_TYPES = frozenset(QUESTION_TYPES) - UNKEYED_TYPES - REGION_TYPES
CLOSED_TYPES = frozenset(t for t, (_, answer_type) in QUESTION_TYPES.items() if answer_type == "closed")
COARSE_MIDDLE_TYPES = frozenset(t for t, (g, _) in QUESTION_TYPES.items() if g in ("coarse", "middle"))


class Key(NamedTuple):
    report_id: str
    question_type: str
    subject: str  # concept, region id or ""
    side: str     # "left" / "right" for verify, else ""

    def label(self) -> str:
        """subject/side for a one-line listing ('-' when the type has no subject)."""
        return (self.subject or "-") + (f"/{self.side}" if self.side else "")


def _phrase_pattern(phrase: str) -> re.Pattern:
    # Whole words: "left" must not match inside "cleft"; phrases may hold any punctuation.
    return re.compile(r"(?<![a-z0-9])" + re.escape(phrase) + r"(?![a-z0-9])")


def _norm_space(text: str) -> str:
    return " ".join(str(text).split()).lower()


class KeyReader:
    """Builds keys; recovers region and side from question text with the template's words."""

    def __init__(self, templates: Mapping):
        names: list[tuple[str, str]] = []
        for region, display in (templates.get("regions") or {}).items():
            name = _norm_space(display)
            names.append((name, str(region)))
            if name.startswith("the "):  # a paraphrase may drop the article: "Are lungs clear?"
                names.append((name[4:], str(region)))
        # Longest first: a name that contains a shorter one ("the other findings") wins.
        names.sort(key=lambda x: (-len(x[0]), x[0]))
        self._regions = [(_phrase_pattern(name), region) for name, region in names if name]
        sides = ((templates.get("values") or {}).get("side")) or {"left": "left", "right": "right"}
        self._sides = [(_phrase_pattern(_norm_space(word)), str(side)) for side, word in sides.items() if str(word).strip()]

    @classmethod
    def for_config(cls, language: str = "en", extra_templates: tuple[str, ...] | list[str] = ()) -> "KeyReader":
        return _reader(language, tuple(extra_templates))

    def region_of(self, question: str) -> str | None:
        q = _norm_space(question)
        for pattern, region in self._regions:
            if pattern.search(q):
                return region
        return None

    def side_of(self, question: str) -> str | None:
        """The side a verify question asks about; None when no side word or both appear."""
        q = _norm_space(question)
        found = {side for pattern, side in self._sides if pattern.search(q)}
        return found.pop() if len(found) == 1 else None

    def key(self, report_id: str, question_type: str, *, concept: str | None = None, question: str = "",
            region: str | None = None, side: str | None = None) -> Key:
        """Key of one pair. `region` / `side` when known (a column), else read from `question`.
        Raises ValueError saying what is missing."""
        if question_type not in QUESTION_TYPES:
            raise ValueError(f"unknown question_type {question_type!r}")
        subject = the_side = ""
        if question_type in CONCEPT_TYPES:
            subject = (concept or "").strip()
            if not subject:
                raise ValueError(f"a {question_type} pair needs its concept")
        elif question_type in REGION_TYPES:
            subject = (region or "").strip() or (self.region_of(question) or "")
            if not subject:
                raise ValueError(f"no region name of the templates in the question {question!r}")
        if question_type == "verify":
            the_side = (side or "").strip() or (self.side_of(question) or "")
            if not the_side:
                raise ValueError(f"no single side word of the templates in the question {question!r}")
        return Key(str(report_id).strip(), question_type, subject, the_side)


@lru_cache(maxsize=8)
def _reader(language: str, extra: tuple[str, ...]) -> KeyReader:
    return KeyReader(load_templates(language, extra))


# -- answers ------------------------------------------------------------------------------------

_TRAILING = re.compile(r"[\s.]+$")
_ITEM_SPLIT = re.compile(r"\s*(?:,|;|\s+and\s+)\s*")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+")
_WORDS = re.compile(r"[a-z0-9]+")
# Connectives a reviewer (or a rule change) adds or removes when a sentence is quoted out of context.
_DISCOURSE = re.compile(r"^(?:again|also|additionally|otherwise|specifically|however|incidentally|"
                        r"furthermore|moreover|similarly|overall|finally),\s*")


# Any run of de-identification placeholders (IU "XXXX", MIMIC "___", "[** **]") is one placeholder:
# qa-build writes them as one token (QAConfig.placeholders), a sheet may hold the source's own.


def normalise(text: str | None) -> str:
    """Lower case, single spaces, no trailing period, placeholders as one token."""
    return _TRAILING.sub("", PLACEHOLDER_RUN.sub("___", _norm_space(text or "")))


def _strip_discourse(text: str) -> str:
    return _DISCOURSE.sub("", text, count=1)


class AnswerRules:
    """same_answer with the hedge wrapper of one template set."""

    def __init__(self, hedge_attribute: str = "{answer}, if present (the report is uncertain)"):
        prefix, found, suffix = normalise(hedge_attribute).partition("{answer}")

        def loose(part: str) -> str:  # spaces in the wrapper may be missing or doubled in a sheet
            return "".join(r"\s*" if ch == " " else re.escape(ch) for ch in part)

        self._hedge = re.compile("^" + loose(prefix) + "(.+?)" + loose(suffix) + "$") if found else None

    @classmethod
    def for_config(cls, language: str = "en", extra_templates: tuple[str, ...] | list[str] = ()) -> "AnswerRules":
        return _rules(language, tuple(extra_templates))

    def split_hedge(self, answer: str | None) -> tuple[str, bool]:
        """(normalised answer without the hedge wrapper, whether it was there)."""
        text = normalise(answer)
        m = self._hedge.match(text) if self._hedge else None
        return (normalise(m.group(1)), True) if m else (text, False)

    def match(self, built: str | None, expected: str | None, question_type: str) -> str | None:
        """'same', 'trimmed' (region answers only) or None."""
        b, b_hedged = self.split_hedge(built)
        e, e_hedged = self.split_hedge(expected)
        if b_hedged != e_hedged:
            return None
        if question_type in CLOSED_TYPES:
            return "same" if b == e else None
        if question_type in COARSE_MIDDLE_TYPES:
            if _strip_discourse(b) == _strip_discourse(e):
                return "same"
            return "trimmed" if question_type in REGION_TYPES and _trimmed(b, e) else None
        return "same" if _items(b, fold=True) == _items(e, fold=True) else None

    def same_answer(self, built: str | None, expected: str | None, question_type: str) -> bool:
        return self.match(built, expected, question_type) is not None


def _items(text: str, fold: bool = False) -> frozenset[str]:
    # "focal, alveolar and alveolar" == "focal and alveolar": the list's order and repeats carry no meaning
    items = (i for i in _ITEM_SPLIT.split(text) if i)
    if not fold:
        return frozenset(items)
    out = set()
    for i in items:
        i = _LETTERS.sub(lambda m: singular(m.group()), i)
        i = _SAME_WORDS.get(i, i)
        out.add(_COMPOUND.sub("", i))  # "mid lung" / "mid-lung" / "midlung"
    return frozenset(out)


# Answer items that say the same thing in other words (after singular folding).
_SAME_WORDS = {"both side": "bilateral", "left side": "left", "right side": "right"}
_COMPOUND = re.compile(r"[\s-]+")


_LETTERS = re.compile(r"[a-z]+")
# Plurals the suffix rules below would get wrong.
_IRREGULAR = {"apices": "apex", "vertices": "vertex", "cortices": "cortex", "vertebrae": "vertebra",
              "bronchi": "bronchus"}
_KEEP = frozenset({"series", "species"})


def singular(word: str) -> str:
    """A conservative singular of one lower-case word, for comparing only (never shown): "arteries" ->
    "artery", "ribs" -> "rib", "bases" -> "base", "masses" -> "mass", "apices" -> "apex". Words of <= 3
    letters and words ending in ss / us / is ("fibrosis", "hilus") are left alone, as is any word not
    ending in s ("thorax", "emphysema")."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word in _KEEP or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "uses", "ches", "shes", "xes")):
        return word[:-2]
    return word[:-1]


def _trimmed(built: str, expected: str) -> bool:
    """A region answer cut down to the clauses about its region: every built sentence uses only
    words of the expected answer, and the built answer is shorter."""
    if not built or len(built) >= len(expected):
        return False
    words = set(_WORDS.findall(expected))
    return all(set(_WORDS.findall(_strip_discourse(s))) <= words for s in _SENTENCE_SPLIT.split(built) if s)


@lru_cache(maxsize=8)
def _rules(language: str, extra: tuple[str, ...]) -> AnswerRules:
    answers = load_templates(language, extra).get("answers") or {}
    hedge = answers.get("hedge_attribute")
    return AnswerRules(str(hedge)) if hedge else AnswerRules()


def same_answer(built: str | None, expected: str | None, question_type: str, rules: AnswerRules | None = None) -> bool:
    """Whether a built answer says what the expected one says (see README "Reviewing answers")."""
    return (rules or AnswerRules.for_config()).same_answer(built, expected, question_type)
