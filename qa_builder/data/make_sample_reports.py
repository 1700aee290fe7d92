#!/usr/bin/env python3
"""Write the embedded sample of chest radiograph reports and its truth file.

The reports are fictional and written for this project: every sentence comes from the hand-written
banks in ``sentence_banks.yaml`` (same folder), composed into MIMIC-CXR-style reports with a seeded
``random.Random``. Re-running gives byte-identical files.

    python qa_builder/data/make_sample_reports.py            # rewrites the files next to this script
    python qa_builder/data/make_sample_reports.py --out DIR  # writes DIR/sample_reports.csv, DIR/sample_truth.jsonl
    python qa_builder/data/make_sample_reports.py --check    # also renders every template many times and lints it

Outputs
  sample_reports.csv   report_id, subject_id, study_id, text (hard-wrapped, MIMIC-like layout)
  sample_truth.jsonl   one line per report: what the generator put in, one entry per
                       (sentence, concept): section, concept, certainty, laterality, severity,
                       change, location, size, temporality, lean, sentence.

Only the standard library and PyYAML are used; nothing from the project is imported.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
BANKS = HERE / "sentence_banks.yaml"
SEED = 20240917
MIN_REPORTS = 356
CERTAINTIES = ("positive", "negative", "uncertain")
ATTRS = ("lat", "sev", "chg", "loc", "size")
EVIDENCE_SECTIONS = ("findings", "impression")

# The concepts the sample must cover (positive, negative and uncertain, each at least MIN_COVER times).
CONCEPTS = (
    "atelectasis cardiomegaly enlarged_cardiomediastinum pleural_effusion pneumothorax consolidation "
    "pneumonia lung_opacity infiltration pulmonary_edema lung_nodule lung_mass emphysema fibrosis "
    "pleural_thickening hiatal_hernia fracture granuloma calcification scoliosis degenerative_spine "
    "bronchiectasis cavity hilar_enlargement pericardial_effusion subcutaneous_emphysema "
    "pneumomediastinum pneumoperitoneum elevated_hemidiaphragm tortuous_aorta endotracheal_tube "
    "enteric_tube central_venous_catheter swan_ganz_catheter chest_tube pacemaker sternotomy_wires "
    "surgical_clips prosthetic_valve tracheostomy spinal_hardware"
).split()
MIN_COVER = 3
TARGET_REPEATS = 4  # each (concept, certainty) is scheduled this many times
ICU_ONLY = {"endotracheal_tube", "enteric_tube", "central_venous_catheter", "swan_ganz_catheter",
            "chest_tube", "tracheostomy"}
REGION_ORDER = ("devices", "lungs", "pleura", "heart", "mediastinum", "bones", "abdomen")
# Findings that are not described together when both are present or uncertain.
EXCLUSIVE = ({"endotracheal_tube", "tracheostomy"},)

# Sentences that must appear verbatim (after joining wrapped lines) at least twice.
TRAPS = (
    "The heart is not enlarged.",
    "Heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Possible small right pleural effusion cannot be excluded.",
    "The left pleural effusion has resolved.",
    "The right hilum is enlarged.",
    "No acute cardiopulmonary process.",
    "Lungs are clear.",
    "Calcified granuloma in the left upper lobe.",
    "No effusion or pneumothorax.",
    "Bilateral effusions, left greater than right.",
    "Left basilar atelectasis and right upper lobe opacity.",
    "No interval change in the small right effusion.",
    "The right pleural effusion is no longer seen.",
    "The lungs are clear of consolidation or effusion.",
    "The chest radiograph is negative for pneumonia.",
    "The patient is status post median sternotomy and CABG.",
    "History of left rib fractures, which are healed.",
)
# Phrases that must occur somewhere in the sample.
PHRASES = ("clear of", "negative for", "versus", "may represent", "cannot be excluded",
           "suggestive of", "consistent with", "likely", "no longer seen", "status post", "history of")


# --------------------------------------------------------------------------------- normalisers
# Each choice of a keyed slot ({lat:...}, {sev:...}) is mapped to a canonical value here. The
# canonical values follow qa_builder/lexicon/modifiers.yaml (e.g. "tiny" -> trace, "mid lung" ->
# middle lobe, "lingula" -> left).
def norm_lat(s: str):
    t = s.lower()
    if re.search(r"\b(bilateral|bilaterally|bibasilar|bibasal|biapical|both)\b|greater than", t):
        return "bilateral"
    left = re.search(r"\b(left|lingula|lingular)\b", t)
    right = re.search(r"\bright\b", t)
    if left and right:
        return "bilateral"
    return "left" if left else "right" if right else None


SEV_WORDS = {"trace": "trace", "tiny": "trace", "minimal": "minimal", "minimally": "minimal",
             "small": "small", "mild": "mild", "mildly": "mild", "moderate": "moderate",
             "moderately": "moderate", "large": "large", "severe": "severe", "severely": "severe",
             "marked": "severe", "markedly": "severe", "extensive": "large"}
SEV_RE = re.compile(r"\b(" + "|".join(SEV_WORDS) + r")\b", re.I)


def norm_sev(s: str):
    m = SEV_RE.search(s)
    return SEV_WORDS[m.group(1).lower()] if m else None


CHG_RULES = (  # first match wins
    ("resolved", r"\bresolved\b|\bno longer\b|\bremoved\b|\bremoval\b|\bresolution\b"),
    ("unchanged", r"\bunchanged\b|\bstable\b|\bno (?:significant |interval )?change\b|\bsimilar\b|"
                  r"\bpersistent\b|\bnot significantly changed\b|\bagain (?:seen|noted)\b|\bknown\b"),
    ("new", r"\bnew\b|\bnewly\b|\binterval placement\b|\binterval development\b"),
    ("increased", r"\bincreas\w*|\bworse\w*|\blarger\b|\bprogress\w*|\benlarging\b"),
    ("decreased", r"\bdecreas\w*|\bimprov\w*|\bsmaller\b|\bresolving\b|\bdiminish\w*"),
)


def norm_chg(s: str):
    for value, pattern in CHG_RULES:
        if re.search(pattern, s, re.I):
            return value
    return None


LOC_RULES = (  # first match wins
    ("upper lobe", r"upper lobe"), ("middle lobe", r"middle lobe|mid lung|midlung"),
    ("lower lobe", r"lower lobe"), ("lingula", r"lingula"), ("retrocardiac", r"retrocardiac"),
    ("perihilar", r"perihilar"), ("costophrenic angle", r"costophrenic"),
    ("apex", r"\bapex\b|\bapices\b|apical"), ("base", r"\bbases?\b|basilar|\bbasal\b|bibasal"),
    ("upper lobe", r"upper lung"), ("lower lobe", r"lower lung"),
)


def norm_loc(s: str):
    for value, pattern in LOC_RULES:
        if re.search(pattern, s, re.I):
            return value
    return None


SIZE_RE = re.compile(r"\d+(?:\.\d+)?(?: x \d+(?:\.\d+)?)? ?(?:mm|cm)\b")


def norm_size(s: str):
    m = SIZE_RE.search(s)
    return m.group(0) if m else None


NORMALISE = {"lat": norm_lat, "sev": norm_sev, "chg": norm_chg, "loc": norm_loc, "size": norm_size}
VALID = {
    "lat": {"left", "right", "bilateral"},
    "sev": set(SEV_WORDS.values()),
    "chg": {"new", "increased", "decreased", "unchanged", "resolved"},
    "loc": {v for v, _ in LOC_RULES},
}


# ---------------------------------------------------------------------------------- templates
SLOT_RE = re.compile(r"\{([^{}]*)\}")
KEY = r"(?:lat|sev|chg|loc|size)[0-9]?"
KEYED_RE = re.compile(rf"^({KEY}(?:\+{KEY})*):(.*)$", re.S)


class BankError(ValueError):
    pass


class Template:
    """One sentence template and the findings it names (see the notation in sentence_banks.yaml)."""

    def __init__(self, entry, concept, certainty, where):
        if isinstance(entry, str):
            entry = {"text": entry}
        self.where = where
        self.text = entry["text"]
        self.followup = bool(entry.get("followup", False))
        primary = {"concept": concept, "certainty": certainty}
        primary.update({k: entry[k] for k in ATTRS if k in entry})
        primary["hist"] = bool(entry.get("hist", False))
        primary["lean"] = bool(entry.get("lean", False))
        self.mentions = [primary]
        for extra in entry.get("also", []) or []:
            m = {"concept": extra["concept"], "certainty": extra["certainty"]}
            m.update({k: extra[k] for k in ATTRS if k in extra})
            m["hist"] = bool(extra.get("hist", False))
            m["lean"] = bool(extra.get("lean", False))
            self.mentions.append(m)
        unknown = set(entry) - {"text", "followup", "hist", "lean", "also", *ATTRS}
        if unknown:
            raise BankError(f"{where}: unknown keys {sorted(unknown)}")
        self.parts = []  # str | ("slot", keys, options) | ("ref", key)
        pos = 0
        for m in SLOT_RE.finditer(self.text):
            self.parts.append(self.text[pos:m.start()])
            body = m.group(1)
            if body.startswith("="):
                self.parts.append(("ref", body[1:]))
            else:
                km = KEYED_RE.match(body)
                if km:
                    keys = [self._key(k) for k in km.group(1).split("+")]
                    raw = km.group(2).split("|")
                    options = []
                    for opt in raw:
                        values = {}
                        for attr, idx in keys:
                            values[(attr, idx)] = NORMALISE[attr](opt) if opt.strip() else None
                        if opt.strip() and all(v is None for v in values.values()):
                            raise BankError(f"{where}: choice {opt!r} of {km.group(1)} means nothing")
                        options.append((opt, values))
                    self.parts.append(("slot", keys, options))
                else:
                    if "|" not in body:
                        raise BankError(f"{where}: {{{body}}} is neither a choice nor a keyed slot")
                    self.parts.append(("slot", [], [(o, {}) for o in body.split("|")]))
            pos = m.end()
        self.parts.append(self.text[pos:])
        self.slot_keys = {k for p in self.parts if isinstance(p, tuple) and p[0] == "slot" for k in p[1]}
        concepts = [m["concept"] for m in self.mentions]
        if len(set(concepts)) != len(concepts):
            raise BankError(f"{where}: a concept is named twice in one sentence")
        for idx, m in enumerate(self.mentions):
            if m["concept"] not in CONCEPTS:
                raise BankError(f"{where}: unknown concept {m['concept']}")
            if m["certainty"] not in CERTAINTIES:
                raise BankError(f"{where}: bad certainty {m['certainty']}")
            if m["lean"] and m["certainty"] != "uncertain":
                raise BankError(f"{where}: lean on a finding that is not uncertain")
            for attr in ATTRS:
                if attr not in m:
                    continue
                v = m[attr]
                if (attr, idx) in self.slot_keys:
                    raise BankError(f"{where}: {attr} both fixed and chosen")
                if v == "same":
                    if idx == 0:
                        raise BankError(f"{where}: 'same' on the first finding")
                elif attr in VALID and v not in VALID[attr]:
                    raise BankError(f"{where}: bad {attr} value {v!r}")
        for p in self.parts:
            if isinstance(p, tuple) and p[0] == "ref" and (p[1], 0) not in self.slot_keys:
                raise BankError(f"{where}: {{={p[1]}}} refers to no slot")

    @staticmethod
    def _key(k):
        return (k[:-1], int(k[-1]) - 1) if k[-1].isdigit() else (k, 0)

    @property
    def single(self):
        return len(self.mentions) == 1

    def render(self, rng, cons=None, strict=()):
        """Render with constraints on the first finding's attributes.

        cons[attr] = value; attr in strict: the rendered value must equal it (None: not stated);
        otherwise the sentence may state it or leave it out. Attributes not in cons are free.
        Returns (sentence, mentions) or None when the template cannot satisfy the constraints.
        """
        cons = cons or {}
        first = self.mentions[0]

        def ok(attr, value):
            if attr == "hist":
                return True
            if attr not in cons:
                return True
            if attr in strict:
                return value == cons[attr]
            return value is None or value == cons[attr]

        if "hist" in cons and first["hist"] != cons["hist"]:
            return None
        for attr in ATTRS:
            if attr in first and not ok(attr, first[attr]):
                return None
            if attr in strict and cons.get(attr) is not None and attr not in first \
                    and (attr, 0) not in self.slot_keys:
                return None
        chosen = []
        values = {}
        for p in self.parts:
            if isinstance(p, tuple) and p[0] == "slot":
                opts = [o for o in p[2] if all(idx != 0 or ok(attr, v) for (attr, idx), v in o[1].items())]
                if not opts:
                    return None
                text, vals = rng.choice(opts)
                chosen.append(text)
                values.update(vals)
                for (attr, idx) in p[1]:
                    values[("_text", attr, idx)] = text
        out = []
        i = 0
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            elif p[0] == "slot":
                out.append(chosen[i])
                i += 1
            else:
                out.append(values[("_text", p[1], 0)].strip().lower())
        sentence = tidy("".join(out))
        mentions = []
        for idx, m in enumerate(self.mentions):
            row = {"concept": m["concept"], "certainty": m["certainty"]}
            for attr in ATTRS:
                if (attr, idx) in values:
                    row[attr] = values[(attr, idx)]
                else:
                    row[attr] = m.get(attr)
            row["hist"] = m["hist"]
            row["lean"] = m["lean"]
            mentions.append(row)
        for row in mentions[1:]:
            for attr in ATTRS:
                if row[attr] == "same":
                    row[attr] = mentions[0][attr]
        return sentence, mentions


def tidy(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+([,.;:])", r"\1", s)
    s = re.sub(r",\s*,", ",", s)
    if s and s[0].islower():
        s = s[0].upper() + s[1:]
    return s


class Banks:
    def __init__(self, path=BANKS):
        with open(path, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.raw = raw
        self.meta = {}
        self.findings = {}  # (concept, certainty) -> [Template]
        self.impression = {}
        for concept, spec in raw["concepts"].items():
            if concept not in CONCEPTS:
                raise BankError(f"unknown concept {concept}")
            self.meta[concept] = {k: spec.get(k) for k in ("region", "acute", "important", "evolve",
                                                            "family", "device", "notify")}
            for cert in CERTAINTIES:
                self.findings[(concept, cert)] = [
                    Template(e, concept, cert, f"{concept}.{cert}[{i}]")
                    for i, e in enumerate(spec.get(cert) or [])]
            for cert, entries in (spec.get("impression") or {}).items():
                self.impression[(concept, cert)] = [
                    Template(e, concept, cert, f"{concept}.impression.{cert}[{i}]")
                    for i, e in enumerate(entries or [])]
        missing = [c for c in CONCEPTS if c not in self.meta]
        if missing:
            raise BankError(f"concepts without a bank: {missing}")
        self.normal = {}
        for region, entries in raw["normal"].items():
            self.normal[region] = [self._fixed(e) for e in entries]
        self.normal_impression = [self._fixed(e) for e in raw["normal_impression"]]

    @staticmethod
    def _fixed(entry):
        if isinstance(entry, str):
            entry = {"text": entry}
        mentions = []
        for m in entry.get("mentions", []) or []:
            row = {"concept": m["concept"], "certainty": m["certainty"], "hist": False, "lean": False}
            for attr in ATTRS:
                row[attr] = m.get(attr)
            if row["concept"] not in CONCEPTS:
                raise BankError(f"unknown concept in {entry['text']!r}")
            mentions.append(row)
        return {"text": entry["text"], "blanket": bool(entry.get("blanket")), "mentions": mentions}

    def region(self, concept):
        return self.meta[concept]["region"]

    def family(self, concept):
        fam = self.meta[concept]["family"]
        return [c for c in CONCEPTS if fam and self.meta[c]["family"] == fam and c != concept]


# ------------------------------------------------------------------------------------- lint
LAT_WORD = re.compile(r"\b(left|right|bilateral|bilaterally|bibasilar|biapical|both|lingula|lingular)\b", re.I)
LAT_ALLOW = re.compile(r"\bright (atrium|ventricle|ventricular|heart)\b|\bclear bilaterally\b", re.I)
CHG_WORD = re.compile("|".join(p for _, p in CHG_RULES), re.I)


def lint(sentence: str, mentions) -> list[str]:
    """Words for laterality, severity or change that no truth entry of the sentence accounts for."""
    problems = []
    text = LAT_ALLOW.sub(" ", sentence)
    lats = {m["lat"] for m in mentions}
    for w in LAT_WORD.findall(text):
        v = norm_lat(w)
        if v not in lats and "bilateral" not in lats:
            problems.append(f"laterality word {w!r}")
    sevs = {m["sev"] for m in mentions}
    for w in SEV_RE.findall(sentence):
        if SEV_WORDS[w.lower()] not in sevs:
            problems.append(f"severity word {w!r}")
    if CHG_WORD.search(sentence):
        v = norm_chg(sentence)
        if v not in {m["chg"] for m in mentions}:
            problems.append(f"change word (reads as {v})")
    for m in mentions:
        if m["chg"] is not None and not CHG_WORD.search(sentence):
            problems.append(f"{m['concept']} has change {m['chg']} but no change word")
    return problems


# ------------------------------------------------------------------------------ report model
class Report:
    def __init__(self, banks, setting, followup):
        self.banks = banks
        self.setting = setting
        self.followup = followup
        self.used = {}  # concept -> certainty (findings-level)
        self.items = []  # dicts: region, sentence, mentions, primary
        self.blanket_regions = set()

    def compatible(self, mentions):
        for m in mentions:
            c, cert = m["concept"], m["certainty"]
            if c in self.used:
                return False
            for pair in EXCLUSIVE:
                if c in pair and cert != "negative" and any(
                        self.used.get(o, "negative") != "negative" for o in pair - {c}):
                    return False
            region = self.banks.region(c)
            if cert != "negative" and region in self.blanket_regions:
                return False
            for other in self.banks.family(c):
                if other not in self.used:
                    continue
                if (cert == "negative") != (self.used[other] == "negative"):
                    return False
        return True

    def region_active(self, region):
        return any(self.banks.region(c) == region and cert != "negative" for c, cert in self.used.items())

    def add(self, sentence, mentions, region, primary=True):
        for m in mentions:
            self.used[m["concept"]] = m["certainty"]
        self.items.append({"region": region, "sentence": sentence, "mentions": mentions, "primary": primary})


def attempt(rng, templates, report, cons=None, strict=(), single=False, followup=None):
    """Try the templates in random order; first one that renders and fits the report wins.

    `report` None: no compatibility check (impression restatements); `followup` then says whether
    sentences that refer to a prior study may be used.
    """
    if followup is None:
        followup = report.followup
    order = list(templates)
    rng.shuffle(order)
    for t in order:
        if single and not t.single:
            continue
        if t.followup and not followup:
            continue
        out = t.render(rng, cons, strict)
        if out is None:
            continue
        sentence, mentions = out
        if report is not None and not report.compatible(mentions):
            continue
        return sentence, mentions
    return None


def first_study_cons(report):
    # A first study has no comparison: no change may be stated.
    return ({"chg": None}, {"chg"}) if not report.followup else ({}, ())


class Generator:
    def __init__(self, banks, seed=SEED):
        self.banks = banks
        self.rng = random.Random(seed)
        rng = self.rng
        combos = [(c, cert) for c in CONCEPTS for cert in CERTAINTIES]
        self.op_queue = [x for x in combos if x[0] not in ICU_ONLY] * TARGET_REPEATS
        self.icu_queue = [x for x in combos if x[0] in ICU_ONLY] * TARGET_REPEATS
        rng.shuffle(self.op_queue)
        rng.shuffle(self.icu_queue)
        self.forced = []  # trap sentences that must appear: (concept, certainty, text)
        for concept, cert in combos:
            for t in banks.findings[(concept, cert)]:
                if "{" not in t.text and t.text in TRAPS:
                    self.forced += [(concept, cert, t)] * 2
        rng.shuffle(self.forced)
        self.lint_problems = []

    # ---- finding placement
    def place_target(self, report, queue, want=None, scan=40):
        """Pop the first target from the queue (within `scan`) that fits this report."""
        cons, strict = first_study_cons(report)
        for i, (concept, cert) in enumerate(queue[:scan]):
            if want and cert not in want:
                continue
            if concept in report.used:
                continue
            out = attempt(self.rng, self.banks.findings[(concept, cert)], report, cons, strict)
            if out:
                queue.pop(i)
                report.add(out[0], out[1], self.banks.region(concept))
                return True
        return False

    def place_forced(self, report, want=None):
        for i, (concept, cert, t) in enumerate(self.forced):
            if want and cert not in want:
                continue
            if t.followup and not report.followup:
                continue
            cons, strict = first_study_cons(report)
            out = t.render(self.rng, cons, strict)
            if out and report.compatible(out[1]):
                self.forced.pop(i)
                report.add(out[0], out[1], self.banks.region(concept))
                return True
        return False

    def place_common(self, report, choices):
        concept, cert = self.rng.choice(choices)
        if concept in report.used:
            return False
        cons, strict = first_study_cons(report)
        out = attempt(self.rng, self.banks.findings[(concept, cert)], report, cons, strict)
        if out:
            report.add(out[0], out[1], self.banks.region(concept))
            return True
        return False

    def carry(self, report, prior):
        """Re-describe findings of the previous study with a change."""
        rng = self.rng
        for inst in prior:
            evolve = self.banks.meta[inst["concept"]]["evolve"]
            if evolve not in ("evolving", "chronic", "device"):
                continue
            keep = 0.9 if evolve == "device" else 0.75
            if rng.random() > keep or inst["concept"] in report.used:
                continue
            if evolve == "evolving":
                chg = rng.choices(["unchanged", "increased", "decreased", "resolved", None],
                                  [30, 20, 25, 20, 5])[0]
            elif evolve == "device":
                chg = rng.choices(["unchanged", None, "resolved"], [50, 30, 20])[0]
            else:
                chg = rng.choices(["unchanged", None], [50, 50])[0]
            for attempt_chg in (chg, None):
                cert = "negative" if attempt_chg == "resolved" else "positive"
                cons = {"chg": attempt_chg, "hist": inst["hist"]}
                strict = {"chg"}
                if inst["lat"] is not None:
                    cons["lat"] = inst["lat"]
                    strict = strict | {"lat"}
                if inst["loc"] is not None:
                    cons["loc"] = inst["loc"]
                if attempt_chg in ("unchanged", None):
                    for a in ("sev", "size"):
                        if inst[a] is not None:
                            cons[a] = inst[a]
                out = attempt(rng, self.banks.findings[(inst["concept"], cert)], report, cons, strict)
                if out:
                    report.add(out[0], out[1], self.banks.region(inst["concept"]))
                    break

    def fill(self, report, regions, specific_p=0.3):
        """Normal statements for the regions that the findings leave free."""
        rng = self.rng
        for region in regions:
            entries = self.banks.normal.get(region, [])
            active = report.region_active(region)
            pool = [e for e in entries if (not e["blanket"] or not active) and report.compatible(e["mentions"])]
            if not pool:
                continue
            blankets = [e for e in pool if e["blanket"]]
            first = rng.choice(blankets) if blankets and rng.random() < 0.8 else rng.choice(pool)
            self._add_fixed(report, first, region)
            if rng.random() < specific_p:
                pool = [e for e in entries if not e["blanket"] and report.compatible(e["mentions"])]
                if pool:
                    self._add_fixed(report, rng.choice(pool), region)

    @staticmethod
    def _add_fixed(report, entry, region):
        mentions = [dict(m) for m in entry["mentions"]]
        if entry["blanket"]:
            report.blanket_regions.add(region)
        report.add(entry["text"], mentions, region, primary=False)

    # ---- impression
    def impression(self, report):
        rng = self.rng
        items = []

        def acute(m):
            return m["certainty"] != "negative" and self.banks.meta[m["concept"]]["acute"] and not m["hist"]

        for it in report.items:
            if not it["primary"]:
                continue
            m = it["mentions"][0]
            meta = self.banks.meta[m["concept"]]
            if acute(m):
                p = 1.0
            elif any(acute(x) for x in it["mentions"][1:]):
                # the acute finding is a second finding of the sentence: restate the sentence
                items.append((it["sentence"], [dict(x) for x in it["mentions"]]))
                continue
            elif m["certainty"] == "negative":
                p = 0.25 if (meta["notify"] and report.setting == "icu") else 0.05
            elif meta["important"]:
                p = 0.7
            else:
                p = 0.2
            if rng.random() >= p:
                continue
            cons = {a: m[a] for a in ATTRS}
            cons["hist"] = m["hist"]
            strict = {a for a in ATTRS if m[a] is None}
            key = (m["concept"], m["certainty"])
            out = None
            pool = self.banks.impression.get(key, [])
            if pool and rng.random() < 0.85:
                out = attempt(rng, pool, None, cons, strict, single=True, followup=report.followup)
            if out is None:
                # restate the findings sentence word for word, as many readers do
                out = (it["sentence"], [dict(x) for x in it["mentions"]])
            items.append(out)
        # "Otherwise, no acute process" only when every present/uncertain acute finding is restated
        restated = {x["concept"] for _, ms in items for x in ms}
        complete = all(m["concept"] in restated for it in report.items for m in it["mentions"] if acute(m))
        if report.setting == "icu" and any(self.banks.meta[c]["region"] == "devices" and v == "positive"
                                           for c, v in report.used.items()) and rng.random() < 0.35:
            dev = [it["sentence"] for it in report.items
                   if it["mentions"] and self.banks.region(it["mentions"][0]["concept"]) == "devices"]
            odd = any(re.search(r"recommend|coiled|\blow\b|not well|obscured|possibl|probable|likely|may ", d)
                      for d in dev)
            key = "neutral" if odd or rng.random() < 0.3 else "standard"
            items.append((rng.choice(self.banks.raw["devices_impression"][key]), []))
        if not items:
            pool = [e for e in self.banks.normal_impression if self._impression_ok(report, e["mentions"])]
            e = rng.choice(pool)
            items.append((e["text"], [dict(x) for x in e["mentions"]]))
        elif complete and rng.random() < 0.2:
            items.append((rng.choice(self.banks.raw["otherwise_impression"]), []))
        return items

    def _impression_ok(self, report, mentions):
        for m in mentions:
            if report.used.get(m["concept"], m["certainty"]) != m["certainty"]:
                return False
            for other in self.banks.family(m["concept"]):
                if other in report.used and (report.used[other] == "negative") != (m["certainty"] == "negative"):
                    return False
        # a normal impression must not contradict a present acute finding
        for it in report.items:
            for m in it["mentions"]:
                if m["certainty"] != "negative" and self.banks.meta[m["concept"]]["acute"] and not m["hist"]:
                    return False
        return True

    # ---- one study
    def study(self, setting, followup, prior, normal, brief=False):
        rng = self.rng
        report = Report(self.banks, setting, followup)
        if prior:
            self.carry(report, prior)
        if setting == "icu":
            for _ in range(rng.choice([1, 1, 2])):
                self.place_target(report, self.icu_queue)
            devices = [("endotracheal_tube", 0.7), ("enteric_tube", 0.6), ("central_venous_catheter", 0.7),
                       ("swan_ganz_catheter", 0.15), ("chest_tube", 0.2), ("pacemaker", 0.1),
                       ("sternotomy_wires", 0.15)]
            for concept, p in devices:
                if concept in report.used or rng.random() >= p:
                    continue
                if concept == "endotracheal_tube" and "tracheostomy" in report.used:
                    continue
                self.place_common(report, [(concept, "positive")])
            for _ in range(rng.choice([0, 1, 1, 2])):
                self.place_target(report, self.op_queue)
            if rng.random() < 0.6:
                self.place_common(report, [("pulmonary_edema", "positive"), ("pleural_effusion", "positive"),
                                           ("atelectasis", "positive"), ("lung_opacity", "positive"),
                                           ("pneumonia", "uncertain"), ("cardiomegaly", "positive")])
            if rng.random() < 0.3:
                self.place_forced(report)
        elif normal:
            if rng.random() < 0.35:
                self.place_forced(report, want={"negative"})
            for _ in range(rng.choice([0, 0, 1, 1, 2])):
                self.place_target(report, self.op_queue, want={"negative"})
        else:
            if rng.random() < 0.35:
                self.place_forced(report)
            for _ in range(rng.choice([1, 2, 2, 3])):
                self.place_target(report, self.op_queue)
            if rng.random() < 0.4:
                self.place_common(report, [("pleural_effusion", "positive"), ("atelectasis", "positive"),
                                           ("cardiomegaly", "positive"), ("lung_opacity", "positive"),
                                           ("emphysema", "positive"), ("granuloma", "positive"),
                                           ("degenerative_spine", "positive"), ("tortuous_aorta", "positive"),
                                           ("calcification", "positive"), ("pneumonia", "uncertain")])
        regions = ["lungs", "pleura", "heart", "mediastinum", "bones"]
        if rng.random() < 0.12:
            regions.append("abdomen")
        if not normal and rng.random() < 0.25:
            regions.remove(rng.choice(["mediastinum", "bones"]))
        if brief:
            # impression-only reports are short: one or two normal statements at most
            regions = rng.sample(["lungs", "pleura", "heart"], rng.choice([1, 2]))
        self.fill(report, regions, specific_p=0.0 if brief else 0.3)
        return report


# ----------------------------------------------------------------------------------- layout
def wrap(text, first=" ", rest=" ", width=78):
    return textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def order_items(rng, report):
    order = list(REGION_ORDER)
    if report.setting != "icu" and rng.random() < 0.4:
        # heart and mediastinum first, as many readers dictate
        order = ["devices", "heart", "mediastinum", "lungs", "pleura", "bones", "abdomen"]
    return sorted(report.items, key=lambda it: order.index(it["region"]))


def paragraphs(rng, sentences, max_per=4):
    """Split findings sentences into 1-3 paragraphs."""
    if len(sentences) <= max_per or rng.random() < 0.55:
        return [sentences]
    cut = rng.randint(2, len(sentences) - 2)
    return [sentences[:cut], sentences[cut:]]


SEX_WORDS = {"F": {"<woman>": "woman", "<Woman>": "Woman", "<female>": "female"},
             "M": {"<woman>": "man", "<Woman>": "Man", "<female>": "male"}}


def compose(rng, banks, report, imp_items, study_index, layout, sex="F"):
    """Return (text, truth mentions)."""
    setting = report.setting
    raw = banks.raw
    truth = []

    def record(section, sentence, mentions):
        for m in mentions:
            truth.append({
                "section": section, "concept": m["concept"], "certainty": m["certainty"],
                "laterality": m["lat"], "severity": m["sev"], "change": m["chg"],
                "location": m["loc"], "size": m["size"],
                "temporality": "historical" if m["hist"] else "current", "lean": m["lean"],
                "sentence": sentence,
            })

    def choose_fill(s):
        # {a|b} choices inside frame sentences (indication); no meaning attached
        return SLOT_RE.sub(lambda m: rng.choice(m.group(1).split("|")), s)

    items = order_items(rng, report)
    find_sents = [(it["sentence"], it["mentions"]) for it in items]
    blank = rng.choice(["", " "])
    lines = []
    upper = layout["header_case"] == "upper"

    def hdr(name):
        return name if upper else name.title().replace("(S)", "(s)")

    exam = rng.choice(raw["examination"][setting])
    indication = choose_fill(rng.choice(raw["indication"][setting]))
    for token, word in SEX_WORDS[sex].items():
        indication = indication.replace(token, word)
    comparison = rng.choice(raw["comparison"]["followup" if study_index else "first"])
    technique = rng.choice(raw["technique"][setting])

    if layout["wet_read"]:
        wet = imp_items[:2]
        lines.append(" WET READ: ___ ___ ___ {}:{:02d} {}".format(rng.randint(1, 12), rng.randint(0, 59),
                                                                 rng.choice(["AM", "PM"])))
        text = " ".join(s for s, _ in wet)
        lines.append(wrap(text, "  ", "  "))
        for s, ms in wet:
            record("wet_read", s, ms)
        lines.append(" " + "_" * 78)

    if layout["sections"] == "headerless":
        intro = rng.choice([
            f"{technique} Comparison is made to the prior study from ___." if study_index else
            f"{technique} No prior studies are available for comparison.",
            f"{rng.choice(['PA and lateral', 'Portable AP', 'Frontal and lateral'])} chest radiographs"
            f" dated ___ were reviewed{' and compared with ___' if study_index else ''}.",
        ])
        lines.append(wrap(intro))
        for para in paragraphs(rng, find_sents):
            lines.append(blank)
            lines.append(wrap(" ".join(s for s, _ in para)))
            for s, ms in para:
                record("findings", s, ms)
        lines.append(blank)
        lines.append(wrap(" ".join(s for s, _ in imp_items)))
        for s, ms in imp_items:
            record("impression", s, ms)
        return "\n".join(lines) + "\n", truth

    if layout["final_report"]:
        lines.append(" " * 33 + "FINAL REPORT")
    lines.append(f" {hdr('EXAMINATION')}:  {exam}")
    lines.append(blank)
    ind_name = "HISTORY" if layout["history_header"] else "INDICATION"
    lines.append(wrap(indication, f" {hdr(ind_name)}:  "))
    if layout["technique"]:
        lines.append(blank)
        lines.append(wrap(technique, f" {hdr('TECHNIQUE')}:  "))
    lines.append(blank)
    lines.append(wrap(comparison, f" {hdr('COMPARISON')}:  "))

    def section(name, sents, numbered=False):
        lines.append(blank)
        if numbered:
            lines.append(f" {hdr(name)}:")
            lines.append(blank)
            for n, (s, _) in enumerate(sents, 1):
                lines.append(wrap(s, f" {n}. ", " "))
            return
        paras = paragraphs(rng, sents) if name == "FINDINGS" else [sents]
        if layout["inline_headers"]:
            lines.append(wrap(" ".join(s for s, _ in paras[0]), f" {hdr(name)}:  "))
            rest = paras[1:]
        else:
            lines.append(f" {hdr(name)}:")
            rest = paras
        for para in rest:
            lines.append(blank)
            lines.append(wrap(" ".join(s for s, _ in para)))

    imp_name = "CONCLUSION" if layout["conclusion"] else "IMPRESSION"
    if layout["sections"] == "impression_only":
        # no FINDINGS: the whole description is the impression, findings before normal statements
        sents = [(it["sentence"], it["mentions"]) for it in items if it["primary"]]
        sents += [(it["sentence"], it["mentions"]) for it in items if not it["primary"]]
        if layout["numbered_impression"] and len(sents) >= 2:
            section(imp_name, sents, numbered=True)
        else:
            section(imp_name, sents)
        for s, ms in sents:
            record("impression", s, ms)
    else:
        section("FINDINGS", find_sents)
        for s, ms in find_sents:
            record("findings", s, ms)
        section(imp_name, imp_items, numbered=layout["numbered_impression"] and len(imp_items) >= 2)
        for s, ms in imp_items:
            record("impression", s, ms)
    if layout["recommendation"]:
        lines.append(blank)
        lines.append(wrap(rng.choice(raw["recommendation"]), f" {hdr('RECOMMENDATION(S)')}:  "))
    if layout["notification"]:
        lines.append(blank)
        lines.append(wrap(rng.choice(raw["notification"]), f" {hdr('NOTIFICATION')}:  "))
    if layout["addendum"]:
        lines.append(blank)
        lines.append(wrap(rng.choice(raw["addendum"]), f" {hdr('ADDENDUM')}:  "))
    return "\n".join(lines) + "\n", truth


def choose_layout(rng, report, sections):
    concepts = {c for c, v in report.used.items() if v != "negative"}
    return {
        "sections": sections,
        "header_case": "title" if rng.random() < 0.12 else "upper",
        "inline_headers": rng.random() < 0.35,
        "numbered_impression": rng.random() < 0.55,
        "conclusion": rng.random() < 0.04,
        "final_report": rng.random() < 0.92,
        "history_header": rng.random() < 0.15,
        "technique": rng.random() < 0.4,
        "wet_read": sections != "headerless" and rng.random() < 0.06,
        "addendum": sections != "headerless" and rng.random() < 0.04,
        "recommendation": sections != "headerless" and (
            rng.random() < (0.5 if concepts & {"lung_nodule", "lung_mass", "pneumonia", "fracture"} else 0.02)),
        "notification": sections != "headerless" and (
            rng.random() < (0.6 if concepts & {"pneumothorax", "pneumoperitoneum", "pneumomediastinum"} else 0.01)),
    }


# ------------------------------------------------------------------------------------ driver
def generate(seed=SEED, check=False):
    banks = Banks()
    gen = Generator(banks, seed)
    rng = gen.rng
    # patients and their studies
    subjects = []
    subj_ids, study_ids = set(), set()
    total = 0
    while total < MIN_REPORTS:
        n = rng.choices([1, 2, 3, 4], [56, 26, 12, 6])[0]
        setting = "icu" if rng.random() < 0.2 else "outpatient"
        sid = rng.randint(10_000_000, 19_999_999)
        while sid in subj_ids:
            sid = rng.randint(10_000_000, 19_999_999)
        subj_ids.add(sid)
        studies = []
        for _ in range(n):
            st = rng.randint(50_000_000, 59_999_999)
            while st in study_ids:
                st = rng.randint(50_000_000, 59_999_999)
            study_ids.add(st)
            studies.append(st)
        subjects.append((sid, setting, studies, rng.choice("FM")))
        total += n

    rows, truths = [], []
    for sid, setting, studies, sex in subjects:
        prior = []
        for k, st in enumerate(studies):
            normal = setting == "outpatient" and rng.random() < (0.42 if k == 0 else 0.3)
            sections = rng.choices(["standard", "impression_only", "headerless"], [85, 10, 5])[0]
            report = gen.study(setting, k > 0, prior if not normal or rng.random() < 0.5 else [], normal,
                               brief=sections == "impression_only")
            imp_items = gen.impression(report)
            layout = choose_layout(rng, report, sections)
            text, truth = compose(rng, banks, report, imp_items, k, layout, sex)
            for row in truth:
                probs = lint(row["sentence"], [_as_mention(r) for r in truth if r["sentence"] == row["sentence"]])
                if probs:
                    gen.lint_problems.append((f"s{st}", row["sentence"], probs))
            kind = "normal" if not any(r["certainty"] != "negative" for r in truth) else "abnormal"
            rows.append({"report_id": f"s{st}", "subject_id": str(sid), "study_id": str(st), "text": text})
            truths.append({"report_id": f"s{st}", "subject_id": str(sid), "study_id": str(st),
                           "study_index": k, "setting": setting, "kind": kind, "layout": layout,
                           "mentions": truth})
            prior = [_as_mention(r) for r in truth
                     if r["section"] == "findings" or layout["sections"] == "impression_only"]
            prior = [m for m in prior if m["certainty"] == "positive"]
            seen = set()
            prior = [m for m in prior if not (m["concept"] in seen or seen.add(m["concept"]))]
    if check:
        check_banks(banks, gen)
    return rows, truths, gen


def _as_mention(r):
    return {"concept": r["concept"], "certainty": r["certainty"], "lat": r["laterality"],
            "sev": r["severity"], "chg": r["change"], "loc": r["location"], "size": r["size"],
            "hist": r["temporality"] == "historical", "lean": r["lean"]}


def check_banks(banks, gen, samples=30):
    """Render every template many times and lint each sentence (catches un-annotated words)."""
    rng = random.Random(1)
    pools = list(banks.findings.items()) + list(banks.impression.items())
    for _, templates in pools:
        for t in templates:
            for _ in range(samples):
                out = t.render(rng)
                if out is None:
                    gen.lint_problems.append((t.where, t.text, ["does not render"]))
                    break
                probs = lint(*out)
                if probs:
                    gen.lint_problems.append((t.where, out[0], probs))
    for region, entries in banks.normal.items():
        for e in entries:
            probs = lint(e["text"], e["mentions"])
            if probs:
                gen.lint_problems.append((f"normal.{region}", e["text"], probs))


def coverage(truths, sections=EVIDENCE_SECTIONS):
    counts = Counter()
    for t in truths:
        for m in t["mentions"]:
            if m["section"] in sections:
                counts[(m["concept"], m["certainty"])] += 1
    return counts


def serialise(rows, truths):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["report_id", "subject_id", "study_id", "text"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    jl = "".join(json.dumps(t, ensure_ascii=False, separators=(",", ":")) + "\n" for t in truths)
    return buf.getvalue().encode("utf-8"), jl.encode("utf-8")


def study_dates(rows):
    """MIMIC-style study dates (subject_id, study_id, StudyDate, StudyTime), in report order: a subject's
    studies follow each other by 1 to 120 days. From hashes of the ids, not the generator's random
    stream, so the reports stay as they were."""
    import datetime as dt
    import hashlib

    def h(*parts):
        return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subject_id", "study_id", "StudyDate", "StudyTime"])
    last = {}
    for r in rows:
        sid, st = r["subject_id"], r["study_id"]
        if sid in last:
            day = last[sid] + dt.timedelta(days=1 + h(st, "gap") % 120)
        else:
            day = dt.date(2130, 1, 1) + dt.timedelta(days=h(sid, "first") % 3650)
        last[sid] = day
        secs = h(st, "time") % 86400
        w.writerow([sid, st, day.strftime("%Y%m%d"), f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}.000"])
    return buf.getvalue().encode("utf-8")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check", action="store_true", help="lint every template exhaustively")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    rows, truths, gen = generate(args.seed, args.check)
    errors = []
    seen = set()
    for where, sent, probs in gen.lint_problems:
        msg = f"lint: {sent!r}: {'; '.join(probs)}"
        if msg not in seen:
            seen.add(msg)
            errors.append(f"{msg} ({where})")
    cov = coverage(truths)
    for c in CONCEPTS:
        for cert in CERTAINTIES:
            if cov[(c, cert)] < MIN_COVER:
                errors.append(f"coverage: {c}/{cert} only {cov[(c, cert)]}")
    flat = " ".join(re.sub(r"\s+", " ", r["text"]) for r in rows)
    for trap in TRAPS:
        if flat.count(trap) < 2:
            errors.append(f"trap sentence appears {flat.count(trap)} times: {trap!r}")
    for phrase in PHRASES:
        if phrase not in flat.lower():
            errors.append(f"phrase never used: {phrase!r}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    csv_bytes, jl_bytes = serialise(rows, truths)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sample_reports.csv").write_bytes(csv_bytes)
    (args.out / "sample_truth.jsonl").write_bytes(jl_bytes)
    (args.out / "sample_study_dates.csv").write_bytes(study_dates(rows))
    if not args.quiet:
        n_m = sum(len(t["mentions"]) for t in truths)
        print(f"{len(rows)} reports, {len({r['subject_id'] for r in rows})} subjects, {n_m} truth entries "
              f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
