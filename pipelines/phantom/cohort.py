"""Clinical truth: subjects, their studies and how findings evolve from one study to the next.

Everything here is sampled from findings.yaml and report.yaml with the subject's clinical stream;
nothing depends on image rendering. Follow-up studies carry findings forward with a change
('increased', 'decreased', 'unchanged', 'resolved') and can add 'new' ones.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

from . import ids
from .anatomy import ZONES, Thorax
from .spec import concept_specs
from .truth import Finding, Study

EPOCH = dt.date(2110, 1, 1)   # MIMIC shifts dates into the 22nd century; so do we
CTR_BY_SEVERITY = {"mild": 0.55, "moderate": 0.61, "severe": 0.67}
CTR_UNCERTAIN = 0.52


def _choice(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    p = np.asarray([float(weights[k]) for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def planned_study_count(spec: dict, seed: int, subject_index: int) -> int:
    """How many studies this subject has (own stream: the planner needs it without sampling)."""
    weights = {int(k): v for k, v in spec["findings"]["studies_per_subject"].items()}
    return int(_choice(ids.rng(seed, subject_index, ids.STREAM_PLAN), weights))


def _ordered_severities(spec_entry: dict) -> list[str]:
    return list(spec_entry.get("severity", {}))


def _size_words(size_mm: float, rng) -> str:
    if size_mm < 10 or rng.random() < 0.3:
        return f"{int(round(size_mm))} mm"
    cm = round(size_mm / 10.0, 1)
    return f"{cm:g} cm"


def _set_size(f: Finding, size_mm: float, rng) -> None:
    f.size_mm = float(round(size_mm, 1))
    f.size = _size_words(f.size_mm, rng)
    if f.size.endswith("cm"):          # keep truth and wording in step after rounding
        f.size_mm = float(f.size.split()[0]) * 10.0
    else:
        f.size_mm = float(f.size.split()[0])


def new_finding(spec: dict, concept: str, rng: np.random.Generator) -> Finding:
    """Sample a fresh finding's attributes (laterality, location, severity, size, device details)."""
    s = concept_specs(spec)[concept]
    f = Finding(concept=concept, seed=int(rng.integers(2**31)))
    if "locations" in s:
        name = _choice(rng, s["locations"])
        loc = spec["findings"]["lung_locations"][name]
        f.laterality, f.zone, f.location = loc["side"], loc["zone"], loc["location"]
        f.variant = name                       # wording key into phrases.yaml location_words
    if "laterality" in s:
        f.laterality = _choice(rng, s["laterality"])
    if "location" in s:
        f.location = s["location"]
    if "severity" in s:
        f.severity = _choice(rng, s["severity"])
    if "size_mm" in s:
        lo, hi = s["size_mm"]
        _set_size(f, float(rng.uniform(lo, hi)), rng)
    if f.zone:
        z = ZONES[f.zone]
        f.anchor = (float(rng.uniform(*z["u"])), float(rng.uniform(*z["v"])), float(rng.uniform(*z["w"])))
    if concept == "rib_fracture":
        rib = int(rng.choice(s["ribs"]))
        f.variant = str(rib - 1)               # rendering index of the posterior rib
        f.location = f"{_ordinal(rib)} rib"
        f.anchor = (float(rng.random()), 0.0, 0.0)
    if s.get("device"):
        if "variants" in s:
            f.variant = _choice(rng, s["variants"])
        if concept == "central_venous_catheter":
            f.laterality = f.variant.split()[0]
        if concept == "pacemaker":
            f.location = "right atrium and right ventricle" if f.variant == "dual" else "right ventricle"
        if "tips" in s:
            f.tip = str(_choice(rng, s["tips"]))
            f.location = {"endotracheal_tube": f"{f.tip} cm above the carina"}.get(concept, f.tip)
    return f


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _evolve(spec: dict, prior: Finding, rng) -> Finding | None:
    """Next state of a finding that was present on the prior study (None: silently gone)."""
    s = concept_specs(spec)[prior.concept]
    course = s.get("course", {})
    f = Finding(**{**prior.__dict__})
    f.certainty = "positive"
    r = rng.random()
    resolve, inc, dec = course.get("resolve", 0.0), course.get("increase", 0.0), course.get("decrease", 0.0)
    if r < resolve:
        if s.get("device"):
            return None                        # removed devices are simply not mentioned
        f.certainty, f.change = "negative", "resolved"
        f.severity, f.size = None, None
        return f
    scale = _ordered_severities(s)
    r -= resolve
    if r < inc and (f.size_mm is not None or (f.severity in scale and scale.index(f.severity) < len(scale) - 1)):
        f.change = "increased"
        if f.size_mm is not None:
            hi = s["size_mm"][1]
            _set_size(f, min(f.size_mm + float(rng.uniform(2, 6)) * (1 + f.size_mm / 30), hi), rng)
        else:
            f.severity = scale[scale.index(f.severity) + 1]
        return f
    r -= inc
    if r < dec and f.severity in scale and scale.index(f.severity) > 0:
        f.change = "decreased"
        f.severity = scale[scale.index(f.severity) - 1]
        return f
    f.change = "unchanged"
    return f


def _findings_for_study(spec: dict, setting: str, prior: list[Finding] | None, rng,
                        hedge_rate: float) -> list[Finding]:
    concepts = concept_specs(spec)
    findings: dict[str, Finding] = {}
    if prior is not None:
        for p in prior:
            if p.drawn and not concepts[p.concept].get("interpretation"):
                nxt = _evolve(spec, p, rng)
                if nxt is not None:
                    findings[p.concept] = nxt
    boosts: dict[str, float] = {}
    new_rate = 1.0 if prior is None else spec["findings"]["new_rate"]
    for concept, s in concepts.items():
        if s.get("interpretation") or concept in findings:
            continue
        if prior is not None and s.get("first_study_only"):
            continue
        if any(findings.get(x) is not None and findings[x].drawn for x in s.get("excludes", [])):
            continue
        p = s["prevalence"][setting] * new_rate * boosts.get(concept, 1.0)
        if rng.random() < p:
            f = new_finding(spec, concept, rng)
            f.change = None if prior is None else "new"
            findings[concept] = f
            for target, factor in s.get("boost", {}).items():
                boosts[target] = boosts.get(target, 1.0) * factor
    # hedging: only for findings reported for the first time
    for f in findings.values():
        s = concepts[f.concept]
        if f.certainty == "positive" and s.get("hedge") and f.change in (None, "new") \
                and rng.random() < hedge_rate:
            f.certainty = "uncertain"
            if f.severity is not None:       # a hedged finding is a subtle one
                f.severity = _ordered_severities(s)[0]
    # interpretation: pneumonia as the reading of a consolidation / opacity
    for concept in ("consolidation", "lung_opacity"):
        f = findings.get(concept)
        pn = concepts[concept].get("pneumonia")
        if f is not None and f.certainty == "positive" and pn and "pneumonia" not in findings \
                and rng.random() < pn["rate"]:
            findings["pneumonia"] = Finding(
                concept="pneumonia", certainty="uncertain" if rng.random() < pn["uncertain"] else "positive",
                change=None)
    # explicit negations of absent concepts
    for concept, neg in spec["report"]["negations"].items():
        if concept in findings:
            continue
        if concept == "pneumonia" and any(findings.get(c) is not None and findings[c].drawn
                                          for c in ("consolidation", "lung_opacity")):
            continue
        if rng.random() < neg["rate"]:
            findings[concept] = Finding(concept=concept, certainty="negative")
    order = list(concepts)
    return sorted(findings.values(), key=lambda f: order.index(f.concept))


def _views(spec: dict, setting: str, rng) -> list[str]:
    st = spec["findings"]["settings"][setting]
    frontal = _choice(rng, st["frontal"])
    views = [frontal]
    if rng.random() < st["lateral"][frontal]:
        views.append("LATERAL")
    return views


def sample_subject(spec: dict, seed: int, subject_index: int, n_studies: int,
                   hedge_rate: float | None = None) -> tuple[Thorax, list[Study]]:
    """The subject's anatomy and its first `n_studies` studies (a prefix of its full history)."""
    rng = ids.rng(seed, subject_index, ids.STREAM_CLINICAL)
    thorax = Thorax.sample(ids.rng(seed, subject_index, ids.STREAM_ANATOMY))
    if hedge_rate is None:
        hedge_rate = spec["findings"]["hedge_rate"]
    settings = spec["findings"]["settings"]
    setting = _choice(rng, {k: v["share"] for k, v in settings.items()})
    sex = "F" if rng.random() < 0.48 else "M"
    age = int(np.clip(rng.normal(64, 16), 18, 98))
    date = EPOCH + dt.timedelta(days=int(rng.integers(0, 80 * 365)))
    subject = ids.subject_id(seed, subject_index)
    studies: list[Study] = []
    prior: list[Finding] | None = None
    for k in range(n_studies):
        if k:
            lo, hi = settings[setting]["interval_days"]
            date += dt.timedelta(days=int(rng.integers(lo, hi + 1)))
        seconds = int(rng.integers(0, 86400))
        findings = _findings_for_study(spec, setting, prior, rng, hedge_rate)
        ctr = thorax.ctr
        for f in findings:
            if f.concept == "cardiomegaly" and f.drawn:
                ctr = CTR_UNCERTAIN if f.certainty == "uncertain" else CTR_BY_SEVERITY[f.severity]
                ctr += float(rng.normal(0, 0.008))
        study = Study(
            subject_id=subject, study_id=ids.study_id(seed, subject_index, k), index=k,
            study_date=date.strftime("%Y%m%d"),
            study_time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{int(rng.integers(1000)):03d}",
            setting=setting, views=_views(spec, setting, rng), findings=findings,
            prior_study_id=studies[-1].study_id if studies else None, age=age, sex=sex,
            ctr=float(ctr))
        study.dicom_ids = [ids.dicom_id(seed, study.study_id, v, i) for i, v in enumerate(study.views)]
        studies.append(study)
        prior = findings
    return thorax, studies
