"""What a mention's certainty alone leaves out: differentials, benign explanations, qualified negations.

Rules and word lists are data (lexicon/context.yaml `differential`, `explanations`,
`qualified_negation`); this module applies them to the mentions of one sentence (MentionExtractor) and,
for explanations given in a sentence of their own ("This may be artifact."), to a whole report.

* differential: findings joined by "versus", "or", "/" ("atelectasis versus scarring", "A, B, or C")
  are alternatives. Each gets `differential = True`; its certainty is left as is (IU indexers code both
  present, and labels follow them), and QA answers treat it as only possible.
* explanation: a film shadow (lung opacity, nodule ...) the same phrase puts down to something that is
  not disease. "related to subpleural fat", "represents projectile fragment" explain it away
  (certainty negative); "may be artifact", "versus technique" leave it possible (uncertain). The
  cause is kept in `explanation`.
* qualifier: the word that restricts a negation ("no large consolidation", "no acute infiltrate",
  "no XXXX infiltrates"). The mention stays negative; QA answers never say a plain "no" from it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

from spacy.matcher import PhraseMatcher
from spacy.strings import hash_string
from spacy.tokens import Doc, Span

from qa_builder.lexicon import Lexicon

_COMMA = hash_string(",")
_OR = hash_string("or")
_CLAUSE_BREAKS = frozenset(map(hash_string, (";", ":", "but", "however", "whereas", "although", "though")))
# Words a cause may follow its connector with ("related to the subpleural fat", "may be a nipple shadow")
_CAUSE_LEAD = frozenset(map(hash_string, ("xxxx", "the", "a", "an", "some", "overlying", "overlapping",
                                         "adjacent", "normal", "an", "of", "to", "by", "in", "part")))
# Between a negator and its finding, words that neither qualify nor end the phrase ("no evidence of XXXX")
_NEGATION_PHRASE = frozenset(map(hash_string, ("the", "a", "an", "any", "focal", "definite", "obvious", "visible",
                                              "discrete", "evident", "appreciable", "convincing", "overt", "frank",
                                              "gross", "other", "residual", "radiographic", "clear", "pulmonary",
                                              "lung", "parenchymal", "airspace", "air", "space", "pleural",
                                              "suspicious", "typical", "bony", "osseous", "significantly")))
_XXXX = hash_string("xxxx")


class Hedges:
    """Built once per MentionExtractor (matchers over the lexicon's word lists)."""

    def __init__(self, nlp, lexicon: Lexicon):
        h = lexicon.hedging
        make = nlp.make_doc
        self.lexicon = lexicon
        connector_tokens = [[t.lower_ for t in make(c)] for c in h.connectors]
        # a link is a differential when it holds one of these ("or", "versus", "/") ...
        self._core = frozenset(hash_string(toks[0]) for toks in connector_tokens if len(toks) == 1)
        # ... and nothing but connector words, filler and attribute words
        self._link_words = frozenset(hash_string(t) for toks in connector_tokens for t in toks) | frozenset(
            hash_string(t) for c in h.filler for t in [x.lower_ for x in make(c)])
        self._explainable = h.explainable
        self._matcher = PhraseMatcher(nlp.vocab, attr="NORM")
        for label, phrases in (("cause", h.causes), ("hedged", h.hedged), ("definite", h.definite)):
            if phrases:
                self._matcher.add(label, [make(p) for p in phrases])
        # an explanation needs a cause: sentences without a cause's first word skip the matcher
        self._cause_starts = frozenset(make(p)[0].lower for p in h.causes if p)
        self._anaphora = [tuple(t.lower for t in make(a)) for a in h.anaphora]
        self._anaphora_starts = frozenset(a[0] for a in self._anaphora)
        self._restricting = frozenset(map(hash_string, h.restricting))
        self._alternatives = {(c.name, t) for c in lexicon.concepts.values() for t in c.alternatives}
        self._alternative_concepts = frozenset(c for c, _ in self._alternatives)
        self._strings = nlp.vocab.strings

    # -- one sentence ------------------------------------------------------------------------------

    def apply(self, doc: Doc, lower: list[int], ents: Sequence[Span], mentions: Sequence, modifier_tokens: set[int]) -> None:
        """Set differential / explanation / qualifier on `mentions` (parallel to `ents`), in place."""
        for ent, m in zip(ents, mentions):
            if m.concept in self._alternative_concepts and (m.concept, ent.text.lower()) in self._alternatives:
                m.differential = True
        if len(ents) > 1:
            self._differentials(lower, ents, mentions, modifier_tokens)
        if self._explainable and not self._cause_starts.isdisjoint(lower):
            found = self._explanation(doc, lower, 0)
            if found is not None:
                kind, cause, at = found
                for ent, m in zip(ents, mentions):
                    if ent.start < at:
                        explain(m, kind, cause, self._explainable)
        for ent, m in zip(ents, mentions):
            if m.certainty == "negative":
                m.qualifier = self._qualifier(doc, lower, ent.start, modifier_tokens)

    def _differentials(self, lower, ents, mentions, modifier_tokens) -> None:
        # links between consecutive findings: 'diff' (holds a connector), 'list' (a bare comma) or None
        links = []
        for a, b in zip(ents, ents[1:]):
            gap = range(a.end, b.start)
            if gap and all(lower[t] in self._link_words or t in modifier_tokens for t in gap) \
                    and any(lower[t] in self._core for t in gap):
                links.append(("diff", any(lower[t] == _OR for t in gap)))
            elif len(gap) == 1 and lower[a.end] == _COMMA:
                links.append(("list", False))
            else:
                links.append(None)
        # A chain of findings joined by differential links, extended forward over list commas ("A versus
        # B, C") and, before a list-final "or", backward too ("A, B, or C"; not "opacity, A versus B").
        n = len(ents)
        member = [False] * n
        for k, link in enumerate(links):
            if link is None or link[0] != "diff":
                continue
            lo, hi = k, k + 1
            while hi < n - 1 and links[hi] is not None:
                hi += 1
            if link[1]:
                while lo > 0 and links[lo - 1] is not None and links[lo - 1][0] == "list":
                    lo -= 1
            chain = range(lo, hi + 1)
            if any(mentions[i].certainty == "negative" for i in chain):
                continue  # "no effusion or pneumothorax": a negated list, not alternatives
            if len({mentions[i].concept for i in chain}) < 2:
                continue  # "ICD/pacemaker": two names of one thing
            for i in chain:
                member[i] = True
        for i, m in enumerate(mentions):
            if member[i]:
                m.differential = True
        # alternatives for one shadow share its place: "Minimal atelectasis versus scarring in the left base"
        for k in range(n):
            if not member[k]:
                continue
            j = k
            while j + 1 < n and member[j + 1] and links[j] is not None:
                j += 1
            placed = next((mentions[i] for i in range(k, j + 1) if mentions[i].laterality or mentions[i].location), None)
            if placed is not None:
                for i in range(k, j + 1):
                    if mentions[i].laterality is None and mentions[i].location is None:
                        mentions[i].laterality, mentions[i].location = placed.laterality, placed.location

    def _explanation(self, doc: Doc, lower: list[int], start: int) -> tuple[str, str, int] | None:
        """(hedged | definite, cause, connector position) of the first "<connector> <cause>" from `start`."""
        matches = self._matcher(doc)
        if not matches:
            return None
        strings = self._strings
        causes = [(s, e) for mid, s, e in matches if strings[mid] == "cause" and s >= start]
        cues = [(strings[mid], s, e) for mid, s, e in matches if strings[mid] != "cause" and s >= start]
        for cs, ce in causes:
            best = None
            for kind, s, e in cues:
                if e > cs or any(lower[t] not in _CAUSE_LEAD for t in range(e, cs)) or cs - e > 3:
                    continue
                # the longest cue wins ("may be related to" is hedged although "related to" is definite)
                if best is None or e - s > best[2] - best[1] or (e - s == best[2] - best[1] and kind == "hedged"):
                    best = (kind, s, e)
            if best is not None and _CLAUSE_BREAKS.isdisjoint(lower[start:best[1]]):
                # a hedge earlier in the phrase keeps it possible ("favored ... from overlying breast shadows")
                hedged = best[0] == "hedged" or any(k == "hedged" and start <= s < best[1] for k, s, _ in cues)
                return ("hedged" if hedged else "definite"), doc[cs:ce].text.lower(), best[1]
        return None

    def _qualifier(self, doc: Doc, lower: list[int], start: int, modifier_tokens: set[int]) -> str | None:
        """The restricting word between a negator and the finding starting at `start`, if any."""
        t = start - 1
        while t >= 0:
            h = lower[t]
            if h in self._restricting:
                return doc[t].lower_
            if not (h in _NEGATION_PHRASE or t in modifier_tokens):
                return None
            t -= 1
        return None

    # -- a sentence about the previous one ("This may be artifact.") -------------------------------

    def opens_with_anaphora(self, lower: list[int]) -> bool:
        first = 0
        while first < len(lower) and lower[first] == _XXXX:
            first += 1
        return any(tuple(lower[first:first + len(a)]) == a for a in self._anaphora)

    def explains_previous(self, doc: Doc, lower: list[int]) -> tuple[str, str] | None:
        """(hedged | definite, cause) when the sentence opens with "This/These ..." and explains it."""
        first = 0
        while first < len(lower) and lower[first] == hash_string("xxxx"):
            first += 1
        if first >= len(lower) or lower[first] not in self._anaphora_starts:
            return None
        for a in self._anaphora:
            if tuple(lower[first:first + len(a)]) == a:
                found = self._explanation(doc, lower, first + len(a))
                if found is not None and found[2] - (first + len(a)) <= 3:
                    return found[0], found[1]
        return None


def explain(m, kind: str, cause: str, explainable: frozenset[str]) -> bool:
    """Apply an explanation to one mention (a Mention or a findings row dict); True if it changed."""
    get = m.get if isinstance(m, Mapping) else (lambda k: getattr(m, k))
    if get("concept") not in explainable or get("certainty") == "negative":
        return False
    certainty = "negative" if kind == "definite" else "uncertain"
    if isinstance(m, MutableMapping):
        m["certainty"], m["explanation"] = certainty, cause
    else:
        m.certainty, m.explanation = certainty, cause
    return True


def apply_report_context(sentences: Sequence[Mapping], mentions: list[dict], explains: Sequence, lexicon: Lexicon) -> None:
    """Report-level part: explanations given in a sentence of their own apply to the sentence before
    ("... nodular opacity in the right midlung. This may be artifact."), and an explained finding
    restated elsewhere in the report (same concept, side and place) is the same finding.

    `explains[i]`: explains_previous of sentence i (or None). `mentions`: findings rows (dicts), edited
    in place."""
    explainable = lexicon.hedging.explainable
    changed = []
    for i, found in enumerate(explains):
        if found is None or i == 0:
            continue
        prev = sentences[i - 1]["sentence_id"]
        if found[0] == "change":  # "This is increased since the previous study."
            for m in mentions:
                if m["sentence_id"] == prev and m["certainty"] != "negative" and m["change"] in (None, "unchanged"):
                    m["change"] = found[1]
            continue
        for m in mentions:
            if m["sentence_id"] == prev and explain(m, found[0], found[1], explainable):
                changed.append(m)
    changed += [m for m in mentions if m.get("explanation")]
    for src in changed:
        if src["laterality"] is None and src["location"] is None:
            continue  # an unplaced shadow cannot be told from another one
        for m in mentions:
            if m is not src and m["concept"] == src["concept"] and m["laterality"] == src["laterality"] \
                    and m["location"] == src["location"] and m.get("explanation") is None \
                    and m["certainty"] == "positive":
                kind = "definite" if src["certainty"] == "negative" else "hedged"
                explain(m, kind, src["explanation"], explainable)
