"""Sentences -> finding mentions with certainty, temporality and attributes.

A spaCy `blank("en")` tokenizer, PhraseMatcher/Matcher built from the lexicon, and negspacy's NegEx
engine run once per context kind (negation, uncertainty, probable, historical) with our own termsets.
Sentences are the unit: no cue scopes across a sentence end, so results are cached per sentence text,
which pays on real corpora where "No pneumothorax." recurs thousands of times.
"""

from __future__ import annotations

import sys
import types
from collections import Counter, OrderedDict
from dataclasses import dataclass


def _import_spacy_lean():
    """Import spaCy without the parts a blank pipeline never uses, ~0.6 s less start-up per qa-build:
    - torch: thinc imports it when installed (it is, for model/); hidden during the import only;
    - spacy.cli (weasel, httpx, requests ...): imported just for the `spacy.info` re-export; a stand-in
      serves that during the import. A later `import torch` / `import spacy.cli` works as usual."""
    if "spacy" in sys.modules:
        import spacy
        return spacy

    def info(*args, **kwargs):  # the real spacy.info, loaded on first use
        from spacy.cli.info import info as real_info
        return real_info(*args, **kwargs)

    stand_in = types.ModuleType("spacy.cli.info")
    stand_in.info = info  # type: ignore[attr-defined]
    hidden = {"spacy.cli": types.ModuleType("spacy.cli"), "spacy.cli.info": stand_in}
    if "torch" not in sys.modules:
        hidden["torch"] = None  # type: ignore[assignment]
    sys.modules.update(hidden)
    try:
        import spacy
    finally:
        for name in hidden:
            del sys.modules[name]
    return spacy


spacy = _import_spacy_lean()
from negspacy.negation import Negex
from spacy.matcher import PhraseMatcher
from spacy.attrs import IS_ALPHA, LENGTH, LOWER
from spacy.strings import hash_string
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from qa_builder.attributes import Modifier, attach_modifiers, find_sizes, size_in_mm
from qa_builder.hedges import Hedges
from qa_builder.lexicon import CONTEXT_KINDS, Lexicon, default_lexicon

# Copulas, adverbs and negators allowed between a predicate's subject and its predicate
# ("the heart is again mildly enlarged", "heart size is not enlarged").
_PREDICATE_FILLER = [
    "is", "are", "was", "were", "be", "been", "appears", "appear", "seems", "seem", "remains", "remain",
    "mildly", "moderately", "markedly", "severely", "slightly", "minimally", "somewhat", "borderline",
    "again", "now", "still", "also", "stably", "significantly", "mild", "moderate", "massively",
    "not", "no", "likely", "probably", "possibly", "may", "might", "could", "grossly", "top", "at",
    "within", "the", "upper", "limits", "of", "normal", "size", "and", "to", "slight", "stable",
    "unchanged", "in", "persistently", "progressively", "further", "more", "less", "very", "xxxx",
    "has", "have", "decreased", "increased", "but", "though", "although", "yet", "overall",
]
_IN_SPAN_NEGATORS = frozenset({"not", "no"})
# Hedges that predicate filler can swallow ("the heart may be mildly enlarged").
_IN_SPAN_HEDGES = frozenset({"may", "might", "could", "possibly"})
_IN_SPAN_PROBABLE = frozenset({"likely", "probably"})
_IN_SPAN_PROBABLE_IDS = frozenset(map(hash_string, _IN_SPAN_PROBABLE))
_NONE: frozenset[int] = frozenset()  # no entity flagged (the context engine was skipped)
MASS_MIN_MM = 30.0  # radiological convention: a nodule of 3 cm or more is a mass
_IGNORE = "_ignore"  # matcher label of findings.yaml `ignore` phrases
# First words of a sentence that may explain the one before it ("This may be artifact."): see explains
_ANAPHORA_FIRST = frozenset({"this", "these", "it", "they", "the"})


@dataclass(slots=True)
class Mention:
    start: int                      # char offset in the sentence
    end: int
    text: str
    concept: str
    certainty: str                  # positive | negative | uncertain
    temporality: str = "current"    # current | historical
    laterality: str | None = None
    location: str | None = None
    severity: str | None = None
    descriptor: str | None = None
    size: str | None = None
    change: str | None = None
    differential: bool = False      # one alternative of a differential ("atelectasis versus scarring")
    qualifier: str | None = None    # restricting word of a negation ("no large consolidation")
    explanation: str | None = None  # benign cause it is put down to ("subpleural fat", "artifact")
    probable: bool = False          # asserted with a guess ("probably", "likely"): QA says "possibly"


@dataclass(slots=True)
class ParserConfig:
    probable_as: str = "positive"   # certainty for lean-present hedges ("likely", "consistent with")
    cache_size: int = 100_000       # sentences whose mentions are memoised
    nodule_to_mass_by_size: bool = True  # nodules >= 3 cm become lung_mass


class MentionExtractor:
    """Builds the spaCy pipeline once; `extract(sentence)` is pure and cached."""

    def __init__(self, lexicon: Lexicon | None = None, config: ParserConfig | None = None):
        self.lexicon = lexicon or default_lexicon()
        self.config = config or ParserConfig()
        self.nlp = spacy.blank("en")
        vocab = self.nlp.vocab
        make = self.nlp.make_doc

        # Matchers read NORM, which is the lower-cased word unless `_correct_spelling` set a fix.
        self.finding_matcher = PhraseMatcher(vocab, attr="NORM")
        # Predicate constructions: subjects and predicates are matched as phrases and paired in
        # Python (`_predicate_spans`); a token Matcher with wildcards was 5x slower.
        self.predicate_matcher = PhraseMatcher(vocab, attr="NORM")
        self._predicate_groups: list[str] = []  # group index -> concept
        for concept in self.lexicon.concepts.values():
            if concept.terms:
                self.finding_matcher.add(concept.name, [make(t) for t in concept.terms])
            for pred in concept.predicates:
                g = len(self._predicate_groups)
                self._predicate_groups.append(concept.name)
                self.predicate_matcher.add(f"S{g}", [make(t) for t in pred.subjects])
                self.predicate_matcher.add(f"P{g}", [make(t) for t in pred.predicates])
        if self.lexicon.ignore:  # longest match wins, so these hide the term inside them
            self.finding_matcher.add(_IGNORE, [make(t) for t in self.lexicon.ignore])
        self._filler = frozenset(_PREDICATE_FILLER)
        # (matched text, location) -> the concept that claims such a mention ("lesion" + rib -> bone_lesion)
        self._claims = {(term, location): concept.name for concept in self.lexicon.concepts.values()
                        for claim in concept.claims for term in claim.terms for location in claim.locations}

        self.modifier_matcher = PhraseMatcher(vocab, attr="NORM")
        for group, values in self.lexicon.modifiers.items():
            for value, phrases in values.items():
                self.modifier_matcher.add(f"{group}\t{value}", [make(p) for p in phrases])

        self.normal_matcher = PhraseMatcher(vocab, attr="NORM")
        for i, normal in enumerate(self.lexicon.normal_statements):
            self.normal_matcher.add(f"normal{i}", [make(p) for p in normal.phrases])

        # One NegEx engine per context kind, each flagging ents via its own Span extension.
        self.context = {}
        self._cue_starts: dict[str, frozenset[str]] = {}
        for kind in CONTEXT_KINDS:
            termset = {
                "pseudo_negations": list(self.lexicon.termsets[kind]["pseudo"]),
                "preceding_negations": list(self.lexicon.termsets[kind]["preceding"]),
                "following_negations": list(self.lexicon.termsets[kind]["following"]),
                "termination": list(self.lexicon.termsets[kind]["termination"]),
            }
            self.context[kind] = _SentenceNegex(self.nlp, f"ctx_{kind}", termset, extension_name=f"ctx_{kind}")
            # A cue can only match where its first token occurs: skip the engine otherwise (most sentences).
            cues = termset["preceding_negations"] + termset["following_negations"]
            self._cue_starts[kind] = frozenset(make(c)[0].lower for c in cues)
        self.hedges = Hedges(self.nlp, self.lexicon)
        self._explains: dict[str, tuple[str, str] | None] = {}  # sentence -> explains_previous, see explains
        self._speller = _Speller(self._finding_words(), self._lexicon_words() | self.lexicon.real_words)
        self._cache: OrderedDict[str, tuple[Mention, ...]] = OrderedDict()
        self._row_cache: dict[str, tuple[dict, ...]] = {}  # insertion-ordered: oldest evicted first
        self.cache_hits = 0
        self.cache_misses = 0

    # -- public ---------------------------------------------------------------------------------
    def extract_rows(self, sentence: str) -> tuple[dict, ...]:
        """findings.parquet fields of each mention that depend on the sentence alone, cached with it.
        Callers copy a row before adding report fields (the cached dicts are shared)."""
        return self.extract_sentence(sentence)[0]

    def extract_sentence(self, sentence: str) -> tuple[tuple[dict, ...], tuple | None]:
        """(extract_rows, report context) of a sentence, cached together. The context is None for
        almost every sentence; else (explains(sentence), whether a row has an explanation): what
        hedges.apply_report_context needs."""
        hit = self._row_cache.get(sentence)
        if hit is None:
            concepts = self.lexicon.concepts
            rows = tuple(
                {"sentence": sentence, "start": m.start, "end": m.end, "text": m.text, "concept": m.concept,
                 "certainty": m.certainty, "laterality": m.laterality, "location": m.location,
                 "severity": m.severity, "descriptor": m.descriptor, "size": m.size, "change": m.change,
                 "temporality": m.temporality, "chexpert": concepts[m.concept].chexpert,
                 "chestxray14": concepts[m.concept].chestxray14, "differential": m.differential,
                 "qualifier": m.qualifier, "explanation": m.explanation, "probable": m.probable}
                for m in self._extract(sentence)
            )
            explains = self.explains(sentence)
            explained = any(r["explanation"] for r in rows)
            hit = (rows, (explains, explained) if explains or explained else None)
            self.cache_misses += 1
            if self.config.cache_size:
                self._row_cache[sentence] = hit
                if len(self._row_cache) > self.config.cache_size:
                    self._row_cache.pop(next(iter(self._row_cache)))
        else:
            self.cache_hits += 1
        return hit

    def extract(self, sentence: str) -> tuple[Mention, ...]:
        cached = self._cache.get(sentence)
        if cached is not None:
            self.cache_hits += 1
            self._cache.move_to_end(sentence)
            return cached
        self.cache_misses += 1
        mentions = tuple(self._extract(sentence))
        if self.config.cache_size:
            self._cache[sentence] = mentions
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return mentions

    def explains(self, sentence: str) -> tuple[str, str] | None:
        """What a sentence opening "This/These ..." says about the one before it: (hedged | definite,
        cause) when it explains it away ("This may be artifact."), ("change", value) when it only
        compares it ("This is increased since the previous study."), else None; cached."""
        if sentence in self._explains:
            return self._explains[sentence]
        found = None
        words = sentence.lstrip().split(None, 1)
        if words and words[0].lower().strip(".,") in _ANAPHORA_FIRST or "xxxx" in sentence[:6].lower():
            doc = self.nlp.make_doc(sentence)
            lower = doc.to_array(LOWER).tolist()
            found = self.hedges.explains_previous(doc, lower)
            if found is None and self.hedges.opens_with_anaphora(lower) and not self.extract(sentence):
                changes = [self.nlp.vocab.strings[mid].split("\t")[1] for mid, _, _ in self.modifier_matcher(doc)
                           if self.nlp.vocab.strings[mid].startswith("change\t")]
                if len(set(changes)) == 1:
                    found = ("change", changes[0])
        if len(self._explains) < 100_000:
            self._explains[sentence] = found
        return found

    # -- internals --------------------------------------------------------------------------------
    def _finding_words(self) -> Counter:
        """Words of finding names, counted: a misspelling is corrected only towards these."""
        lex = self.lexicon
        phrases = [t for c in lex.concepts.values() for t in c.terms]
        phrases += [p for c in lex.concepts.values() for pred in c.predicates for p in pred.subjects + pred.predicates]
        return Counter(w for p in phrases for w in p.replace("-", " ").replace("/", " ").split())

    def _lexicon_words(self) -> set[str]:
        lex = self.lexicon
        phrases = [t for c in lex.concepts.values() for t in c.terms]
        phrases += [p for c in lex.concepts.values() for pred in c.predicates for p in pred.subjects + pred.predicates]
        phrases += [p for values in lex.modifiers.values() for ps in values.values() for p in ps]
        phrases += [p for ts in lex.termsets.values() for ps in ts.values() for p in ps]
        phrases += [p for n in lex.normal_statements for p in n.phrases]
        return {w for p in phrases for w in p.replace("-", " ").replace("/", " ").split()}

    def _extract(self, sentence: str) -> list[Mention]:
        doc = self.nlp.make_doc(sentence)
        if not len(doc):
            return []
        tokens = self._speller.correct(doc)  # (LENGTH, IS_ALPHA, LOWER) per token
        strings = self.nlp.vocab.strings
        spans = [Span(doc, s, e, label=mid) for mid, s, e in self.finding_matcher(doc)]
        spans += self._predicate_spans(doc)
        findings = [f for f in filter_spans(spans) if f.label_ != _IGNORE]  # longest wins, then earliest
        normals = self._normal_spans(doc, findings)
        if not findings and not normals:
            return []
        ents = sorted(findings, key=lambda s: s.start)  # not set as doc.ents: nothing reads them
        lower = [t[2] for t in tokens]  # LOWER hashes: no Python Token objects
        words = set(lower)
        flags = {kind: engine.negex_on(doc, ents) if not words.isdisjoint(self._cue_starts[kind]) else _NONE
                 for kind, engine in self.context.items()}

        modifiers = [
            Modifier(*strings[mid].split("\t"), start=s, end=e)
            for mid, s, e in self.modifier_matcher(doc)
        ]
        modifiers += find_sizes(doc, sentence)
        attached = attach_modifiers(doc, [(e.start, e.end) for e in ents], modifiers, lower)

        mentions: list[Mention] = []
        for i, (ent, attrs) in enumerate(zip(ents, attached)):
            mention = Mention(
                start=ent.start_char, end=ent.end_char, text=ent.text, concept=ent.label_,
                certainty=self._certainty(i, ent, flags), **attrs,
            )
            if i in flags["historical"]:
                mention.temporality = "historical"
            if mention.certainty == self.config.probable_as and mention.certainty != "negative" and (
                    i in flags["probable"] or not _IN_SPAN_PROBABLE_IDS.isdisjoint(lower[ent.start:ent.end])) \
                    and i not in flags["lean"]:
                mention.probable = True
            if mention.certainty == "positive" and ent.text.lower() in self.lexicon.concepts[ent.label_].suggestive:
                mention.certainty = "uncertain"  # "wedging" suggests a fracture without naming one
            if mention.change == "resolved":
                mention.certainty = "negative"
            if (self.config.nodule_to_mass_by_size and mention.concept == "lung_nodule"
                    and (size_in_mm(mention.size) or 0) >= MASS_MIN_MM):
                mention.concept = "lung_mass"
            if mention.location is not None and self._claims:
                mention.concept = self._claims.get((mention.text.lower(), mention.location), mention.concept)
            mentions.append(mention)
        if mentions:
            modifier_tokens = {t for m in modifiers for t in range(m.start, m.end)}
            self.hedges.apply(doc, lower, ents, mentions, modifier_tokens)
        mentions.extend(normals)
        mentions.sort(key=lambda m: (m.start, m.end, m.concept))
        return mentions

    def _predicate_spans(self, doc: Doc) -> list[Span]:
        """"<subject> <filler>{0,6} <predicate>" of the same group, e.g. "heart size is mildly enlarged"."""
        matches = self.predicate_matcher(doc)
        if not matches:
            return []
        strings = self.nlp.vocab.strings
        subjects: dict[int, list[tuple[int, int]]] = {}
        predicates: dict[int, list[tuple[int, int]]] = {}
        for mid, s, e in matches:
            key = strings[mid]
            (subjects if key[0] == "S" else predicates).setdefault(int(key[1:]), []).append((s, e))
        spans = []
        for g, subj in subjects.items():
            for ps, pe in predicates.get(g, ()):
                for ss, se in subj:
                    if se <= ps <= se + 6 and all(t.lower_ in self._filler for t in doc[se:ps]):
                        spans.append(Span(doc, ss, pe, label=self._predicate_groups[g]))
                        break
        return spans

    def _certainty(self, i: int, ent: Span, flags: dict[str, set[int]]) -> str:
        """Certainty of ents[i] from the context flags (negation > uncertainty > probable) and from
        cue words inside the span itself ("heart is not enlarged")."""
        words = {t.lower_ for t in ent} if len(ent) > 1 else ()
        if i in flags["negation"] or not _IN_SPAN_NEGATORS.isdisjoint(words):
            return "negative"
        if i in flags["uncertainty"] or not _IN_SPAN_HEDGES.isdisjoint(words):
            return "uncertain"
        if i in flags["probable"] or i in flags["lean"] or not _IN_SPAN_PROBABLE.isdisjoint(words):
            return self.config.probable_as
        return "positive"

    def _normal_spans(self, doc: Doc, findings: list[Span]) -> list[Mention]:
        """Negative mentions implied by normal statements, unless a finding of that concept overlaps."""
        out: list[Mention] = []
        taken = [(f.start, f.end, f.label_) for f in findings]
        matches = sorted(self.normal_matcher(doc), key=lambda m: (m[1], -m[2]))  # longest first per start
        for mid, s, e in matches:
            statement = self.lexicon.normal_statements[int(self.nlp.vocab.strings[mid][6:])]
            span = doc[s:e]
            for concept in statement.concepts:
                if any(c == concept and ts < e and s < te for ts, te, c in taken):
                    continue
                taken.append((s, e, concept))
                out.append(Mention(span.start_char, span.end_char, span.text, concept, "negative",
                                   qualifier=statement.qualifier))
        return out


class _Speller:
    """Fixes one-edit misspellings of finding words ("effussion", "atelecatsis", "pneumothroax").

    Only long alphabetic tokens that are neither lexicon words nor listed real words (lexicon
    `real_words`: "hemithorax" is not a misspelt "hemothorax") are looked at; the candidate must be a
    finding word at Damerau distance 1 that is not just another inflection ("appears"/"appear"), and
    the clear favourite when several fit. The fix goes into token.norm_, which the matchers read, so
    the text and offsets stay as written.
    """

    MIN_LENGTH = 7

    def __init__(self, targets: Counter, known: set[str]):
        self.known_hashes = frozenset(map(hash_string, known))  # as Doc.to_array(LOWER) gives them
        self._fixes: dict[str, str | None] = {}  # word -> suggest(word): other long words recur a lot
        self.counts = targets
        self.index: dict[str, set[str]] = {}
        for w in targets:
            if len(w) >= self.MIN_LENGTH - 1 and w.isalpha():
                for key in {w, *self._deletes(w)}:
                    self.index.setdefault(key, set()).add(w)

    @staticmethod
    def _deletes(word: str) -> list[str]:
        return [word[:i] + word[i + 1:] for i in range(len(word))]

    def suggest(self, word: str) -> str | None:
        found = set(self.index.get(word, ()))                  # word is a lexicon word minus a letter
        for d in self._deletes(word):
            found |= self.index.get(d, set())                  # extra letter, substitution, transposition
        found = [c for c in found if _one_edit(word, c) and not _inflection(word, c)]
        if not found:
            return None
        found.sort(key=lambda c: (-self.counts[c], c))
        if len(found) > 1 and self.counts[found[0]] < 2 * self.counts[found[1]]:
            return None  # no clear favourite
        return found[0]

    def correct(self, doc: Doc) -> list[list[int]]:
        """Fix misspellings in token.norm_; returns the (LENGTH, IS_ALPHA, LOWER) rows it read (the
        caller reuses the LOWER hashes)."""
        # Token attributes as one array: most sentences have no long unknown word, and this finds
        # that without creating a Python Token per word.
        rows = doc.to_array([LENGTH, IS_ALPHA, LOWER]).tolist()
        for i, (length, alpha, low_hash) in enumerate(rows):
            if length >= self.MIN_LENGTH and alpha and low_hash not in self.known_hashes:
                token = doc[i]
                word = token.lower_
                if word in self._fixes:
                    fix = self._fixes[word]
                else:
                    fix = self.suggest(word)
                    if len(self._fixes) < 100_000:
                        self._fixes[word] = fix
                if fix:
                    token.norm_ = fix
        return rows


def _inflection(a: str, b: str) -> bool:
    short, long_ = sorted((a, b), key=len)
    return long_.startswith(short) and long_[len(short):] in ("s", "d", "e", "es", "ed")


def _one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance exactly 1."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k in range(len(short)) if short[k] != long_[k]), len(short))
    return short[i:] == long_[i + 1:]


class _SentenceNegex(Negex):
    """negspacy's NegEx on a doc that is exactly one sentence (no sentencizer needed)."""

    def termination_boundaries(self, doc: Doc, terminating):
        starts = sorted({0, len(doc), *(t[1] for t in terminating)})
        return list(zip(starts, starts[1:]))

    def negex_on(self, doc: Doc, ents: list[Span]) -> set[int]:
        """Indices of the `ents` a cue flags, by `Negex.negex(doc)`'s rule (a preceding cue before the
        entity or a following cue after it, within its termination-bounded stretch), returned instead
        of set as Span extensions: spaCy's per-access Underscore objects cost more than the rule, and
        `doc.ents` is not re-read (it walks every token) once per stretch."""
        preceding, following, terminating = self.process_negations(doc)
        flagged: set[int] = set()
        for lo, hi in self.termination_boundaries(doc, terminating):
            pre = [m[1] for m in preceding if lo <= m[1] < hi]
            fol = [m[2] for m in following if lo <= m[1] < hi]
            if not (pre or fol or self.chunk_prefix):
                continue  # nothing in this stretch can flag an entity
            for i, ent in enumerate(ents):
                if not (lo <= ent.start and ent.end <= hi) or (self.ent_types and ent.label_ not in self.ent_types):
                    continue
                if (any(p < ent.start for p in pre) or any(f > ent.end for f in fol)
                        or any(ent.text.lower().startswith(c.lower()) for c in self.chunk_prefix)):
                    flagged.add(i)
        return flagged


_EXTRACTOR: MentionExtractor | None = None


def get_extractor() -> MentionExtractor:
    """Per-process singleton: building the matchers costs ~1 s, so workers build it once."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        _EXTRACTOR = MentionExtractor()
    return _EXTRACTOR
