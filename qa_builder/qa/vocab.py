"""Loading the YAML data QA generation runs on: concepts.yaml and templates/<language>.yaml.

Everything here runs once per config (the generator caches it), never per report.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from qa_builder.yamlio import load_yaml

PACKAGE_DIR = Path(__file__).resolve().parent
CONCEPTS_FILE = PACKAGE_DIR / "concepts.yaml"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

# Placeholders a question template may use (checked at load time so a typo fails early, not mid-run).
PLACEHOLDERS = frozenset({"name", "np", "the", "region", "side"})
# finding: listed as an abnormality when positive; device / variant (normal variant): never listed.
KINDS = ("finding", "device", "variant")


@dataclass(frozen=True)
class ConceptInfo:
    id: str
    name: str
    np: str
    the: str
    region: str
    kind: str  # 'finding' | 'device' | 'variant'
    plural: bool
    order: int  # position in concepts.yaml; unknown concepts sort after, by id
    # (question type, value) answers the name already gives: "spine" for the location of scoliosis
    implied: frozenset[tuple[str, str]] = frozenset()
    # question types never asked of it ("What degree of fracture?" is no radiological grading)
    skip: frozenset[str] = frozenset()


def _load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = load_yaml(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at top level")
    return data


def _concept_info(cid: str, entry: Mapping[str, Any] | None, order: int, regions: Mapping[str, Any]) -> ConceptInfo:
    entry = entry or {}
    name = str(entry.get("name") or cid.replace("_", " "))
    region = str(entry.get("region") or "other")
    if region not in regions:
        raise ValueError(f"concept {cid!r}: unknown region {region!r} (known: {sorted(regions)})")
    kind = str(entry.get("kind") or "finding")
    if kind not in KINDS:
        raise ValueError(f"concept {cid!r}: kind must be one of {KINDS}, got {kind!r}")
    return ConceptInfo(
        id=cid,
        name=name,
        np=str(entry.get("np") or name),
        the=str(entry.get("the") or f"the {name}"),
        region=region,
        kind=kind,
        plural=bool(entry.get("plural", False)),
        order=order,
        implied=_implied(cid, entry.get("implied")),
        skip=frozenset(str(q) for q in entry.get("no_questions") or ()),
    )


def _implied(cid: str, spec: Any) -> frozenset[tuple[str, str]]:
    if not spec:
        return frozenset()
    if not isinstance(spec, Mapping) or not all(isinstance(v, list) for v in spec.values()):
        raise ValueError(f"concept {cid!r}: implied must map question types to lists of values")
    return frozenset((str(q), str(v).lower()) for q, vs in spec.items() for v in vs)


def load_concepts(path: str | Path | None = None) -> tuple[dict[str, ConceptInfo], dict[str, list[str]]]:
    """concepts.yaml -> ({concept id: ConceptInfo}, {region id: keyword regexes}) in file order."""
    data = _load_yaml(Path(path) if path else CONCEPTS_FILE)
    regions = {str(k): [str(p) for p in (v or [])] for k, v in (data.get("regions") or {}).items()}
    if "other" not in regions:
        regions["other"] = []
    concepts = {
        str(cid): _concept_info(str(cid), entry, i, regions)
        for i, (cid, entry) in enumerate((data.get("concepts") or {}).items())
    }
    for pats in regions.values():
        for p in pats:
            re.compile(p)  # fail on a bad pattern here, with the pattern in the traceback
    return concepts, regions


def load_same_fact(path: str | Path | None = None) -> dict[str, tuple[int, int]]:
    """concepts.yaml `same_fact` -> {concept id: (group number, rank in its group)}."""
    data = _load_yaml(Path(path) if path else CONCEPTS_FILE)
    out: dict[str, tuple[int, int]] = {}
    for g, group in enumerate(data.get("same_fact") or ()):
        if not isinstance(group, list) or len(group) < 2:
            raise ValueError(f"concepts.yaml: same_fact[{g}] must list two or more concepts")
        for rank, cid in enumerate(group):
            out[str(cid)] = (g, rank)
    return out


def unknown_concept(cid: str, regions: Mapping[str, Any]) -> ConceptInfo:
    """A concept the lexicon emits but concepts.yaml lacks: display name from snake_case, region other."""
    return _concept_info(cid, None, 1 << 30, regions)


def _merge(base: dict, extra: Mapping, replace_lists: bool) -> dict:
    """Recursive merge: mappings merge, lists append (or replace), scalars override."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v, replace_lists)
        elif isinstance(v, list) and isinstance(out.get(k), list) and not replace_lists:
            out[k] = list(out[k]) + [x for x in v if x not in out[k]]
        else:
            out[k] = v
    return out


def template_path(language: str) -> Path:
    """A language name ('en') is looked up in the package templates/; anything path-like is a file."""
    if language.endswith((".yaml", ".yml")) or "/" in language or "\\" in language:
        return Path(language)
    return TEMPLATES_DIR / f"{language}.yaml"


def load_templates(language: str = "en", extra: tuple[str, ...] = ()) -> dict:
    """The language file, then each extra file merged on top (lists appended unless `mode: replace`)."""
    path = template_path(language)
    if not path.exists():
        available = sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no templates for language {language!r} ({path}); available: {available}")
    tpl = _load_yaml(path)
    for extra_path in extra:
        more = _load_yaml(Path(extra_path))
        replace = str(more.pop("mode", "append")) == "replace"
        tpl = _merge(tpl, more, replace)
    return tpl


def check_question_templates(questions: Mapping[str, Any], required: set[str]) -> None:
    """Every required question type has >= 1 template; every template uses known placeholders only."""
    missing = sorted(t for t in required if not questions.get(t))
    if missing:
        raise ValueError(f"templates lack questions for types {missing}")
    for qtype, variants in questions.items():
        if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
            raise ValueError(f"templates: questions.{qtype} must be a list of strings")
        for v in variants:
            for _, field, _, _ in string.Formatter().parse(v):
                if field is not None and field not in PLACEHOLDERS:
                    raise ValueError(f"templates: questions.{qtype}: unknown placeholder {{{field}}} in {v!r}; allowed: {sorted(PLACEHOLDERS)}")
