"""Lexicons as data: findings, attribute words and context cues, loaded into typed records.

The YAML files beside this module are the reviewable source of truth; this module only validates
them and adds the mechanical variants (simple plurals) so reviewers need not list them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from qa_builder.yamlio import YAMLError, load_yaml

LEXICON_DIR = Path(__file__).resolve().parent
LEXICON_FILES = ("findings.yaml", "modifiers.yaml", "context.yaml")
CONTEXT_KINDS = ("negation", "uncertainty", "lean", "probable", "historical")
TERMSET_KEYS = ("preceding", "following", "pseudo", "termination")

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
CHESTXRAY14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia", "No Finding",
)


class LexiconError(ValueError):
    """A lexicon file is malformed; the message names the file and entry."""


@dataclass(frozen=True, slots=True)
class Predicate:
    subjects: tuple[str, ...]    # "heart size", "cardiac silhouette"
    predicates: tuple[str, ...]  # "enlarged", "at the upper limits of normal"


@dataclass(frozen=True, slots=True)
class Concept:
    name: str                    # canonical snake_case name
    chexpert: str | None         # CheXpert-14 label it counts towards
    chestxray14: str | None      # ChestX-ray14 label it counts towards
    region: str                  # anatomical region (middle-granularity QA)
    terms: tuple[str, ...]       # lower-cased phrases incl. generated plurals
    predicates: tuple[Predicate, ...]
    claims: tuple[Claim, ...] = ()  # generic terms that name this concept when located in its organ
    suggestive: frozenset[str] = frozenset()  # terms that suggest it without naming it: at most uncertain
    alternatives: frozenset[str] = frozenset()  # terms naming it as one of two alternatives ("nodule/mass")


@dataclass(frozen=True, slots=True)
class Claim:
    terms: tuple[str, ...]       # matched text (lower-cased) of another concept's mention, e.g. "lesion"
    locations: tuple[str, ...]   # canonical location values (modifiers.yaml) that make it this concept


@dataclass(frozen=True, slots=True)
class NormalStatement:
    concepts: tuple[str, ...]    # concepts a matching phrase negates
    phrases: tuple[str, ...]
    qualifier: str | None = None  # "acute" in "no acute bony abnormality": the negation is qualified


@dataclass(frozen=True, slots=True)
class Hedging:
    """context.yaml's differential / explanations / qualified_negation blocks (see qa_builder/hedges.py)."""
    connectors: tuple[str, ...] = ()         # "versus", "or", "/": findings joined by one are alternatives
    filler: tuple[str, ...] = ()             # other words allowed between two alternatives
    explainable: frozenset[str] = frozenset()  # concepts a benign cause can explain away
    causes: tuple[str, ...] = ()             # "subpleural fat", "artifact", "overlapping structures"
    hedged: tuple[str, ...] = ()             # "may be", "could represent": the finding stays possible
    definite: tuple[str, ...] = ()           # "related to", "represents": the finding is explained away
    anaphora: tuple[str, ...] = ()           # "This", "These findings": refer to the previous sentence
    restricting: frozenset[str] = frozenset()  # "large", "acute", "xxxx": the negation is qualified


@dataclass(frozen=True, slots=True)
class Lexicon:
    concepts: dict[str, Concept]
    modifiers: dict[str, dict[str, tuple[str, ...]]]   # group -> canonical value -> phrases
    termsets: dict[str, dict[str, tuple[str, ...]]]    # context kind -> negspacy termset
    normal_statements: tuple[NormalStatement, ...]
    real_words: frozenset[str]                          # never "corrected" as misspellings
    digest: str
    ignore: tuple[str, ...] = ()                        # phrases that contain a term but name no finding
    hedging: Hedging = Hedging()

    @property
    def label_targets(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """concept -> the (scheme, label) pairs it counts towards (built once; labels are per report)."""
        targets = _LABEL_TARGETS.get(self.digest)
        if targets is None:
            targets = _LABEL_TARGETS[self.digest] = {
                name: tuple((s, lab) for s, lab in (("chexpert", c.chexpert), ("chestxray14", c.chestxray14)) if lab)
                for name, c in self.concepts.items()
            }
        return targets


_LABEL_TARGETS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {}                                         # sha256 of the YAML files, for the manifest


def _plural(term: str) -> str | None:
    last = term.rsplit(" ", 1)[-1]
    if not last.isalpha() or len(last) < 3 or last.endswith("s"):
        return None
    if last.endswith("y") and last[-2] not in "aeiou":
        return term[:-1] + "ies"
    if last.endswith(("x", "ch", "sh")):
        return term + "es"
    return term + "s"


def _phrases(values, where: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
        raise LexiconError(f"{where}: expected a list of non-empty strings (quote YAML words like no/yes)")
    return tuple(v.strip().lower() for v in values)


def _load_yaml(path: Path):
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise LexiconError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None


def load_lexicon(directory: Path | str | None = None) -> Lexicon:
    directory = Path(directory) if directory else LEXICON_DIR
    paths = [directory / name for name in LEXICON_FILES]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()
    findings, modifiers, context = (_load_yaml(p) for p in paths)

    concepts: dict[str, Concept] = {}
    for name, spec in (findings or {}).get("concepts", {}).items():
        where = f"findings.yaml:{name}"
        if spec.get("chexpert") not in (None, *CHEXPERT_LABELS):
            raise LexiconError(f"{where}: unknown CheXpert label {spec.get('chexpert')!r}")
        if spec.get("chestxray14") not in (None, *CHESTXRAY14_LABELS):
            raise LexiconError(f"{where}: unknown ChestX-ray14 label {spec.get('chestxray14')!r}")
        terms = list(_phrases(spec.get("terms"), f"{where}.terms"))
        terms += [p for p in map(_plural, terms) if p]
        predicates = tuple(
            Predicate(_phrases(p.get("subjects"), f"{where}.predicates"), _phrases(p.get("predicates"), f"{where}.predicates"))
            for p in spec.get("predicates") or ()
        )
        claims = []
        for c in spec.get("claims") or ():
            claim_terms = list(_phrases(c.get("terms"), f"{where}.claims"))
            claim_terms += [p for p in map(_plural, claim_terms) if p]
            claims.append(Claim(tuple(dict.fromkeys(claim_terms)), _phrases(c.get("locations"), f"{where}.claims")))
        suggestive = list(_phrases(spec.get("suggestive"), f"{where}.suggestive"))
        suggestive += [p for p in map(_plural, suggestive) if p]
        alternatives = list(_phrases(spec.get("alternatives"), f"{where}.alternatives"))
        terms += suggestive + alternatives
        concepts[name] = Concept(name, spec.get("chexpert"), spec.get("chestxray14"), spec.get("region", "other"),
                                 tuple(dict.fromkeys(terms)), predicates, tuple(claims), frozenset(suggestive),
                                 frozenset(alternatives))

    groups = {
        group: {value: _phrases(phrases, f"modifiers.yaml:{group}.{value}") for value, phrases in values.items()}
        for group, values in (modifiers or {}).items()
    }
    for concept in concepts.values():
        for claim in concept.claims:
            unknown = [loc for loc in claim.locations if loc not in groups.get("location", {})]
            if unknown:
                raise LexiconError(f"findings.yaml:{concept.name}.claims: unknown locations {unknown} "
                                   "(not values of modifiers.yaml's location group)")
    termsets = {}
    for kind in CONTEXT_KINDS:
        block = context.get(kind) or {}
        termsets[kind] = {key: _phrases(block.get(key), f"context.yaml:{kind}.{key}") for key in TERMSET_KEYS}
    normals = []
    for i, entry in enumerate(context.get("normal_statements") or ()):
        unknown = [c for c in entry.get("concepts", ()) if c not in concepts]
        if unknown:
            raise LexiconError(f"context.yaml:normal_statements[{i}]: unknown concepts {unknown}")
        normals.append(NormalStatement(tuple(entry["concepts"]), _phrases(entry.get("phrases"), f"context.yaml:normal_statements[{i}]"),
                                       entry.get("qualifier")))
    real_words = frozenset(_phrases(context.get("real_words"), "context.yaml:real_words"))
    ignore = _phrases((findings or {}).get("ignore"), "findings.yaml:ignore")
    diff, expl, qual = (context.get(k) or {} for k in ("differential", "explanations", "qualified_negation"))
    unknown = [c for c in expl.get("applies_to") or () if c not in concepts]
    if unknown:
        raise LexiconError(f"context.yaml:explanations.applies_to: unknown concepts {unknown}")
    hedging = Hedging(
        connectors=_phrases(diff.get("connectors"), "context.yaml:differential.connectors"),
        filler=_phrases(diff.get("filler"), "context.yaml:differential.filler"),
        explainable=frozenset(expl.get("applies_to") or ()),
        causes=_phrases(expl.get("causes"), "context.yaml:explanations.causes"),
        hedged=_phrases(expl.get("hedged"), "context.yaml:explanations.hedged"),
        definite=_phrases(expl.get("definite"), "context.yaml:explanations.definite"),
        anaphora=_phrases(expl.get("anaphora"), "context.yaml:explanations.anaphora"),
        restricting=frozenset(_phrases(qual.get("restricting"), "context.yaml:qualified_negation.restricting")),
    )
    return Lexicon(concepts, groups, termsets, tuple(normals), real_words, digest, ignore, hedging)


@lru_cache(maxsize=4)
def default_lexicon() -> Lexicon:
    return load_lexicon()
