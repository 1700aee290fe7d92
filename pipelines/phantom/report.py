"""Write a MIMIC-CXR-style report for a study from its truth, tracking what each sentence says.

Every truth finding is mentioned at least once, always with the certainty recorded in the truth
(positive, hedged, negated/resolved), so labels derived from the mentions equal labels derived
from the truth. Wording comes from phrases.yaml / report.yaml; nothing clinical is decided here.
"""
from __future__ import annotations

import string
import textwrap
from dataclasses import dataclass, field

import numpy as np

from .spec import concept_specs
from .truth import Finding, Study

WRAP = 78
_FORMATTER = string.Formatter()


@dataclass
class Mention:
    section: str      # findings / impression
    concept: str
    certainty: str
    sentence: str


@dataclass
class Report:
    text: str
    mentions: list[Mention] = field(default_factory=list)


def _slots_needed(template: str) -> set[str]:
    return {name for _, name, _, _ in _FORMATTER.parse(template) if name}


def _fill(template: str, slots: dict) -> str | None:
    """Format, or None when the template needs a slot this finding does not have.

    '{Sev}' is the same slot as '{sev}': the capital only documents that it starts the sentence
    (sentences are capitalised as a whole).
    """
    slots = {**slots, **{k[:1].upper() + k[1:]: v for k, v in slots.items()}}
    for name in _slots_needed(template):
        if slots.get(name) in (None, ""):
            return None
    text = template.format(**slots)
    return " ".join(text.split())


def _article(phrase: str) -> str:
    first = phrase.split()[0].lower() if phrase else ""
    vowel_sound = first[:1] in "aeio" or first.startswith(("8", "11 ", "18 ", "11.", "18."))
    vowel_sound = vowel_sound or first in ("11", "18") or first.startswith(("ng ", "et ")) or first in ("ng", "et")
    return "an" if vowel_sound else "a"


def _wrap(text: str) -> list[str]:
    """Hard-wrap like MIMIC (one leading space); never split 'right-sided' across lines."""
    return textwrap.wrap(text, WRAP, initial_indent=" ", subsequent_indent=" ", break_on_hyphens=False)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} or {items[1]}"
    return ", ".join(items[:-1]) + f", or {items[-1]}"


class Phraser:
    def __init__(self, spec: dict, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        self.phrases = spec["phrases"]
        self.report = spec["report"]

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    # --- slots --------------------------------------------------------------------------------
    def slots(self, f: Finding) -> dict:
        s = {"sev": f.severity, "size": f.size,
             "sevly": self.phrases["severity_adverbs"].get(f.severity) if f.severity else None,
             "side": f.laterality if f.laterality in ("left", "right") else None}
        locs = self.phrases["location_words"]
        if f.variant in locs:
            s["loc_adj"] = self.pick(locs[f.variant]["adj"])
            s["loc_in"] = self.pick(locs[f.variant]["in"])
        if f.concept == "rib_fracture" and f.location:
            s["rib"] = f.location.split()[0]
        wording = self.phrases["concepts"][f.concept]
        if "names" in wording:
            names = wording["names"]
            options = names[f.variant] if isinstance(names, dict) else names
            s["name"] = _fill(self.pick(options), s)
            s["a_name"] = f"{_article(s['name'])} {s['name']}"
            tip_key = f.variant if f.concept == "pacemaker" else f.tip
            s["tip"] = self.pick(wording["tip_words"][str(tip_key)])
        return s

    def noun_phrase(self, f: Finding, slots: dict, plain: bool = False) -> str:
        wording = self.phrases["concepts"][f.concept]
        bilateral = f.laterality == "bilateral"
        for key in (["plain_np", "np"] if plain else ["np"]):
            options = wording.get(f"{key}_bilateral" if bilateral and f"{key}_bilateral" in wording else key, [])
            filled = [t for t in (_fill(o, slots) for o in options) if t]
            if filled:
                return self.pick(filled)
        raise ValueError(f"no noun phrase for {f.concept} with slots {slots}")

    def _is_plural(self, f: Finding, np_text: str) -> bool:
        return f.laterality == "bilateral" and np_text.split()[-1].endswith("s") and \
            not self.phrases["concepts"][f.concept].get("mass_noun")

    # --- sentences ---------------------------------------------------------------------------
    @staticmethod
    def state(f: Finding) -> str:
        if f.certainty == "negative":
            if f.change != "resolved":
                raise ValueError("plain negatives go through negation lists")
            return "resolved"
        if f.certainty == "uncertain":
            return "uncertain_new" if f.change == "new" else "uncertain"
        return f.change or "present"

    def sentence(self, f: Finding, impression: bool = False) -> str:
        wording = self.phrases["concepts"][f.concept]
        state = self.state(f)
        slots = self.slots(f)
        if wording.get("generic", True) is False:
            sentences = wording["sentences"]
            options = sentences.get(state) or sentences.get(state.replace("_new", ""))
            if options is None:
                if state == "resolved":
                    raise ValueError(f"{f.concept}: no wording for 'resolved'")
                options = sentences["present"]
            filled = [t for t in (_fill(o, slots) for o in options) if t]
            return _cap(self.pick(filled))
        frames = self.report["impression_frames" if impression else "frames"]
        options = frames.get(state) or frames[state.replace("_new", "")]
        np_text = self.noun_phrase(f, slots, plain=state == "resolved")
        plain = self.noun_phrase(f, slots, plain=True)
        plural = self._is_plural(f, np_text)
        mass = wording.get("mass_noun", False)
        art = "" if plural or mass else _article(np_text) + " "
        art_plain = "" if plural or mass else _article(plain) + " "
        art_new = "" if plural or mass else "a "
        frame_slots = {
            "np": np_text, "Np": np_text, "a_np": art + np_text, "A_np": art + np_text,
            "the_np": "the " + np_text, "The_np": "the " + np_text,
            "plain_np": plain, "the_plain_np": "the " + plain, "The_plain_np": "the " + plain,
            "a_plain_np": art_plain + plain, "a_new_np": f"{art_new}new {np_text}",
            "A_new_np": f"{art_new}new {np_text}",
            "is": "are" if plural else "is", "has": "have" if plural else "has", "sev": f.severity,
        }
        filled = [t for t in (_fill(o, frame_slots) for o in options) if t]
        return _cap(self.pick(filled))

    def negation(self, concepts: list[str]) -> str:
        nouns = [self.pick(self.phrases["concepts"][c]["negated"]) for c in concepts]
        frame = self.pick(self.report["negation_frames"])
        return _cap(frame.format(list=_join_list(nouns)))

    def pneumonia_suffix(self, pneumonia: Finding) -> str:
        return self.pick(self.phrases["concepts"]["pneumonia"]["suffix"][pneumonia.certainty])


class ReportWriter:
    """Assembles sections from sentences and keeps the concept mentions of every sentence."""

    def __init__(self, spec: dict, rng: np.random.Generator):
        self.spec = spec
        self.rng = rng
        self.p = Phraser(spec, rng)
        self.cfg = spec["report"]
        self.concepts = concept_specs(spec)

    def write(self, study: Study) -> Report:
        rng, cfg = self.rng, self.cfg
        mentions: list[Mention] = []
        by_concept = {f.concept: f for f in study.findings}
        r = rng.random()
        layout = "impression_only" if r < cfg["impression_only"] else \
            "findings_only" if r < cfg["impression_only"] + cfg["findings_only"] else "both"

        findings_sents: list[tuple[str, list[Mention]]] = []
        impression_sents: list[tuple[str, list[Mention]]] = []
        target = impression_sents if layout == "impression_only" else findings_sents
        sec_body = "impression" if layout == "impression_only" else "findings"

        def emit(bucket, section, text, tagged):
            bucket.append((text, [Mention(section, c, cert, text) for c, cert in tagged]))

        pneumonia = by_concept.get("pneumonia")
        pneumonia_in_body = pneumonia is not None and pneumonia.drawn and (
            layout == "findings_only" or (layout == "both" and rng.random() < 0.3))
        order = cfg["topic_orders"][int(rng.integers(len(cfg["topic_orders"])))]
        for topic in order:
            members = [c for c in cfg["topics"][topic] if c in by_concept]
            stated = [by_concept[c] for c in members
                      if c != "pneumonia" and (by_concept[c].drawn or by_concept[c].change == "resolved")]
            negated = [c for c in members if by_concept[c].certainty == "negative"
                       and by_concept[c].change != "resolved"]
            if topic == "lungs" and not any(f.drawn for f in stated) and rng.random() < 0.5:
                negated = self._normal_statement("lungs_normal", negated, target, sec_body, emit)
            for f in stated:
                emit(target, sec_body, self.p.sentence(f), [(f.concept, f.certainty)])
            if topic == "lungs" and pneumonia_in_body:
                emit(target, sec_body, self.p.sentence(pneumonia), [("pneumonia", pneumonia.certainty)])
            if topic == "heart":
                negated = self._heart_normals(negated, target, sec_body, emit)
            if "pneumonia" in negated and layout != "findings_only":
                negated.remove("pneumonia")          # said in the impression instead
            if negated:
                emit(target, sec_body, self.p.negation(negated), [(c, "negative") for c in negated])
            if topic == "bones" and not stated and rng.random() < 0.3:
                self._normal_statement("bones_normal", [], target, sec_body, emit)

        if layout != "findings_only":
            self._impression(study, by_concept, layout, impression_sents, emit)
        for _, ms in findings_sents + impression_sents:
            mentions.extend(ms)
        text = self._layout(study, findings_sents if layout != "impression_only" else None,
                            impression_sents if layout != "findings_only" else None)
        return Report(text=text, mentions=mentions)

    def _normal_statement(self, key, negated, bucket, section, emit):
        """Say one normal statement; returns the negations it did not already cover."""
        choice = self.p.pick(self.cfg[key])
        emit(bucket, section, self.p.pick(choice["text"]), [(c, "negative") for c in choice["concepts"]])
        return [c for c in negated if c not in choice["concepts"]]

    def _heart_normals(self, negated, bucket, section, emit):
        """Normal heart/mediastinum statements for the negated ones; a combined statement when
        both are negated (60 %), else one statement each."""
        wanted = {c for c in ("cardiomegaly", "enlarged_cardiomediastinum") if c in negated}
        if wanted:
            options = [h for h in self.cfg["heart_normal"] if set(h["concepts"]) == wanted]
            if len(wanted) == 2 and self.rng.random() >= 0.6:
                options = [h for h in self.cfg["heart_normal"] if len(h["concepts"]) == 1]
            for chosen in options:
                emit(bucket, section, self.p.pick(chosen["text"]),
                     [(c, "negative") for c in chosen["concepts"]])
        return [c for c in negated if c not in wanted]

    def _impression(self, study, by_concept, layout, bucket, emit):
        rng = self.rng
        pneumonia = by_concept.get("pneumonia")
        topic_of = {c: t for t, cs in self.cfg["topics"].items() for c in cs}
        rank = {"lungs": 0, "pleura": 1, "heart": 2, "bones": 3, "devices": 4}
        items = []
        for f in study.findings:
            if f.concept == "pneumonia":
                continue
            is_device = self.concepts[f.concept].get("device", False)
            if f.drawn and not is_device:
                items.append(f)
            elif f.change == "resolved" and rng.random() < 0.5:
                items.append(f)
            elif f.drawn and is_device and rng.random() < 0.35:
                items.append(f)
        items.sort(key=lambda f: rank[topic_of[f.concept]])
        if layout == "impression_only":
            items = []      # the body sentences are already in the impression bucket
        pneumonia_pending = pneumonia is not None and pneumonia.drawn and layout != "findings_only"
        for f in items:
            text = self.p.sentence(f, impression=True)
            tagged = [(f.concept, f.certainty)]
            if pneumonia_pending and f.concept in ("consolidation", "lung_opacity") and f.drawn \
                    and text.endswith(".") and rng.random() < 0.7:
                text = f"{text[:-1]}, {self.p.pneumonia_suffix(pneumonia)}."
                tagged.append(("pneumonia", pneumonia.certainty))
                pneumonia_pending = False
            emit(bucket, "impression", text, tagged)
        if pneumonia_pending:
            emit(bucket, "impression", self.p.sentence(pneumonia), [("pneumonia", pneumonia.certainty)])
        has_positive = any(f.drawn for f in study.findings
                           if not self.concepts[f.concept].get("device"))
        if not has_positive and layout != "impression_only":
            emit(bucket, "impression", self.p.pick(self.cfg["impression_normal"]), [])
        elif not has_positive and layout == "impression_only" and rng.random() < 0.5:
            emit(bucket, "impression", self.p.pick(self.cfg["impression_normal"]), [])
        if pneumonia is not None and pneumonia.certainty == "negative":
            emit(bucket, "impression", self.p.negation(["pneumonia"]), [("pneumonia", "negative")])

    # --- layout ------------------------------------------------------------------------------
    def _layout(self, study: Study, findings, impression) -> str:
        rng, cfg, p = self.rng, self.cfg, self.p
        key = "+".join(("PA" if "PA" in study.views else "AP", "LATERAL")) if "LATERAL" in study.views \
            else study.views[0]
        sexword = "woman" if study.sex == "F" else "man"
        eligible = [i for i in cfg["indications"]
                    if not i.get("when") or any(c in i["when"] and f.drawn
                                                for f in study.findings for c in [f.concept])]
        specific = [i for i in eligible if i.get("when")]
        indication = p.pick(specific if specific and rng.random() < 0.6 else
                            [i for i in eligible if not i.get("when")])["text"].format(sexword=sexword)
        comparison = p.pick(cfg["comparisons"]["followup" if study.index else "first"])

        lines = ["                                 FINAL REPORT"]
        lines += self._field("EXAMINATION", p.pick(cfg["examinations"][key]), inline=True)
        lines += self._field("INDICATION", indication, inline=True)
        if rng.random() < cfg["technique_rate"]:
            lines += self._field("TECHNIQUE", p.pick(cfg["techniques"][key]), inline=True)
        lines += self._field("COMPARISON", comparison, inline=True)
        if findings is not None:
            text = " ".join(s for s, _ in findings)
            lines += self._field("FINDINGS", text, inline=rng.random() >= cfg["header_on_own_line"])
        if impression is not None:
            sents = [s for s, _ in impression]
            if findings is not None and len(sents) > 1 and rng.random() < cfg["numbered_impression"]:
                lines += [" IMPRESSION:", " "]
                for i, s in enumerate(sents, 1):
                    lines += _wrap(f"{i}. {s}")
                lines.append(" ")
            else:
                lines += self._field("IMPRESSION", " ".join(sents),
                                     inline=rng.random() >= cfg["header_on_own_line"])
        return "\n".join(lines).rstrip() + "\n"

    @staticmethod
    def _field(header: str, text: str, inline: bool) -> list[str]:
        if inline:
            return _wrap(f"{header}:  {text}") + [" "]
        return [f" {header}:", " "] + _wrap(text) + [" "]


def write_report(spec: dict, study: Study, rng: np.random.Generator) -> Report:
    """Write the report. Normal statements ("The lungs are clear.") negate concepts the study
    truth may not list yet: those are added to study.findings as negatives, so that the truth
    always equals what the report says."""
    report = ReportWriter(spec, rng).write(study)
    known = {f.concept for f in study.findings}
    added = [m.concept for m in report.mentions if m.concept not in known]
    if added:
        order = list(concept_specs(spec))
        study.findings.extend(Finding(concept=c, certainty="negative") for c in dict.fromkeys(added))
        study.findings.sort(key=lambda f: order.index(f.concept))
    return report
