"""Report text as it goes into open answers (report, impression, region): placeholders and fragments.

* De-identification placeholders ("XXXX" in IU X-ray, "___" in MIMIC-CXR, "[** ... **]" in older
  MIMIC) never reach an answer verbatim: policy 'token' writes one documented token instead
  (QAConfig.placeholder_token, "___" by default, runs of placeholders become one), policy 'drop'
  leaves out every clause that holds one (a sentence with nothing left is dropped).
* A region answer does not start with a connective that points at text it left out
  ("Specifically, no pneumothorax." -> "No pneumothorax.").
* A negated list that spans regions is cut to the items of the region asked about:
  "No pneumonia, effusions, edema or pneumothorax." -> pleura: "No effusions or pneumothorax."
"""

from __future__ import annotations

import re
from typing import Sequence

PLACEHOLDER = re.compile(r"\[\*\*[^\]]*\*\*\]|\b[Xx]{2,}\b|_{2,}")
PLACEHOLDER_RUN = re.compile(r"(?:(?:\[\*\*[^\]]*\*\*\]|\b[Xx]{2,}\b|_{2,})[\s,.-]*)*(?:\[\*\*[^\]]*\*\*\]|\b[Xx]{2,}\b|_{2,})")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"(?<=[,;:])\s+")
_LEAD_CONNECTIVE = re.compile(
    r"^(?:specifically|additionally|also|again|otherwise|however|furthermore|moreover|in addition|"
    r"of note|incidentally|finally|overall)\s*,\s*", re.IGNORECASE)

POLICIES = ("token", "drop")


def deidentified(text: str | None, policy: str, token: str) -> str | None:
    """`text` with its placeholders replaced by `token` (policy 'token') or their clauses left out
    ('drop'); None when nothing is left."""
    # plain substring tests first: most text has no placeholder, and they cost far less than the regex
    if not text or not ("XX" in text or "xx" in text or "__" in text or "[**" in text):
        return text
    if policy == "token" and token == "___" and not ("XX" in text or "xx" in text or "[**" in text) \
            and "____" not in text:
        return text  # MIMIC's own "___" already is the token
    if not PLACEHOLDER.search(text):
        return text
    if policy == "token":
        return PLACEHOLDER_RUN.sub(token, text)
    sentences = []
    for sentence in _SENTENCE_END.split(text):
        clauses = [c for c in _CLAUSE.split(sentence) if not PLACEHOLDER.search(c)]
        if not clauses:
            continue
        s = " ".join(clauses).rstrip(",;: ")
        if s and s[-1] not in ".!?":
            s += "."
        sentences.append(s[:1].upper() + s[1:])
    return " ".join(sentences) or None


def without_lead_connective(sentence: str) -> str:
    """"Specifically, no pneumothorax." -> "No pneumothorax." (the connective points at text left out)."""
    m = _LEAD_CONNECTIVE.match(sentence)
    if not m or m.end() >= len(sentence):
        return sentence
    rest = sentence[m.end():]
    return rest[:1].upper() + rest[1:]


# longest phrases first: the lead keeps "without evidence of", not just "without"
_NEGATION_LEAD = re.compile(
    r"^(?P<lead>.*?\b(?:no radiographic evidence of|without evidence of|no evidence of|without signs? of|no signs? of|"
    r"negative for|free of|clear of|there is no|there are no|without|no))\s+(?P<mod>(?:(?!no\b|not\b|without\b)"
    r"[a-z-]+\s+){0,2})$", re.IGNORECASE | re.DOTALL)
# between two items: a separator and at most two words of the next item ("..., large pleural effusion"),
# never a new negator ("..., no definite pleural effusion" starts a clause of its own)
_LIST_GAP = re.compile(r"^\s*(?P<sep>,\s*(?:or|and|nor)?|or|and|nor|/)\s+(?P<mod>(?:(?!no\b|not\b|without\b)"
                       r"[a-z-]+\s+){0,2})$", re.IGNORECASE)


def region_clause(sentence: str, items: Sequence[tuple[int, int, str, str]], region: str) -> str | None:
    """The part of a negated list about `region`, or None when the sentence is not such a list.

    `items`: (start, end, region, certainty) of the sentence's mentions, char offsets in `sentence`.
    Only a sentence of negated findings joined by commas / "or" / "and" is cut ("No A, B or C.").
    """
    items = sorted(items)
    if len(items) < 2 or any(c != "negative" for _, _, _, c in items):
        return None
    head = _NEGATION_LEAD.match(sentence[:items[0][0]])
    if head is None:
        return None
    texts = [head.group("mod") + sentence[items[0][0]:items[0][1]]]
    conj = "or"
    for (_, prev_end, _, _), (start, end, _, _) in zip(items, items[1:]):
        gap = _LIST_GAP.match(sentence[prev_end:start])
        if gap is None:
            return None
        if "and" in gap.group("sep").lower() and conj == "or" and "or" not in sentence[prev_end:start].lower():
            conj = "and"
        texts.append(gap.group("mod") + sentence[start:end])
    mine = [t for t, (_, _, r, _) in zip(texts, items) if r == region]
    if not mine or len(mine) == len(items):
        return None
    joined = mine[0] if len(mine) == 1 else ", ".join(mine[:-1]) + f" {conj} " + mine[-1]
    out = head.group("lead") + " " + joined + sentence[items[-1][1]:]
    return out[:1].upper() + out[1:]
