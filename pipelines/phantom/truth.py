"""The generator's structured truth: what each study contains, independent of wording or pixels."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Finding:
    """One finding (or device) of one study, as the report words it and the images show it.

    `certainty` is what the report says: positive, uncertain (hedged) or negative (explicitly
    negated, including 'resolved'). Negative findings are not drawn. Uncertain ones are drawn
    with reduced conspicuity, which is what usually makes a radiologist hedge.
    """

    concept: str
    certainty: str = "positive"
    laterality: str | None = None
    location: str | None = None      # as worded: "right lower lobe", "4 cm above the carina"
    severity: str | None = None
    size: str | None = None          # as worded: "8 mm", "3.4 cm"
    change: str | None = None        # new / increased / decreased / unchanged / resolved
    # rendering-only attributes (kept out of truth.jsonl's reading-facing fields)
    zone: str | None = None          # key of anatomy.ZONES
    size_mm: float | None = None
    anchor: tuple[float, float, float] | None = None   # lung-local (u, v, w)
    variant: str | None = None       # device variant, fracture rib index, ...
    tip: str | None = None           # device tip position key
    seed: int = 0                    # shape seed, stable across a subject's studies

    @property
    def drawn(self) -> bool:
        return self.certainty in ("positive", "uncertain")

    @property
    def conspicuity(self) -> float:
        return 1.0 if self.certainty == "positive" else 0.6

    def public(self) -> dict:
        """The reading-facing fields written to truth.jsonl."""
        d = asdict(self)
        keep = ("concept", "certainty", "laterality", "location", "severity", "size", "change")
        out = {k: d[k] for k in keep}
        out["size_mm"] = self.size_mm
        return out


@dataclass
class Study:
    subject_id: str
    study_id: str
    index: int                       # 0 for the subject's first study
    study_date: str                  # YYYYMMDD
    study_time: str                  # HHMMSS.f
    setting: str                     # outpatient / inpatient / icu
    views: list[str]                 # e.g. ["PA", "LATERAL"]
    findings: list[Finding]
    prior_study_id: str | None
    age: int
    sex: str                         # M / F
    ctr: float                       # cardiothoracic ratio actually drawn
    dicom_ids: list[str] = field(default_factory=list)
