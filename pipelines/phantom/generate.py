"""Orchestration: plan subjects, render them (optionally in worker processes), stream outputs.

Work is split by subject (a subject's studies depend on each other). Workers write per-study
files themselves and hand back small table rows; the parent writes the tables in subject order
(Pool.imap keeps order), so the output is identical for any --workers.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import cohort, ids, outputs, spec as spec_mod
from .labels import chexpert_labels, csv_value
from .raster import bbox
from .render import FIELD_OF_VIEW_MM, SubjectRenderer
from .report import write_report

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Options:
    out: str
    n: int = 300
    seed: int = 0
    size: int = 256
    workers: int = 1
    dicom: bool = False
    jpeg: bool = False
    hedge_rate: float | None = None
    progress: bool = True

    @property
    def image_ext(self) -> str:
        return ".jpg" if self.jpeg else ".png"


def plan(spec: dict, seed: int, n: int) -> list[tuple[int, int]]:
    """(subject index, number of studies) until n studies are planned."""
    tasks, total, index = [], 0, 0
    while total < n:
        count = min(cohort.planned_study_count(spec, seed, index), n - total)
        tasks.append((index, count))
        total += count
        index += 1
    return tasks


def _study_dir(out: Path, subject_id: str) -> Path:
    return out / "files" / f"p{subject_id[:2]}" / f"p{subject_id}"


def render_subject(spec: dict, opts: Options, subject_index: int, n_studies: int) -> list[dict]:
    """Render, write per-study files, and return the table rows of each study."""
    out = Path(opts.out)
    thorax, studies = cohort.sample_subject(spec, opts.seed, subject_index, n_studies, opts.hedge_rate)
    renderer = SubjectRenderer(thorax, opts.size)
    spacing_mm = FIELD_OF_VIEW_MM / opts.size
    results = []
    for study in studies:
        report = write_report(spec, study, ids.rng(opts.seed, subject_index, ids.STREAM_CLINICAL, 100 + study.index))
        labels = chexpert_labels(spec, [(m.concept, m.certainty) for m in report.mentions])
        subject_dir = _study_dir(out, study.subject_id)
        outputs.write_bytes(subject_dir / f"s{study.study_id}.txt", report.text.encode("utf-8"))
        split = outputs.split_of(study.subject_id)
        key = "+".join(("PA" if "PA" in study.views else "AP", "LATERAL")) if "LATERAL" in study.views \
            else study.views[0]
        metadata, boxes, coco_images, split_rows, images_truth = [], [], [], [], []
        drawn_in: dict[str, list[str]] = {}
        for number, (view, dicom_id) in enumerate(zip(study.views, study.dicom_ids)):
            rng = ids.rng(opts.seed, subject_index, ids.STREAM_IMAGE, study.index, number)
            image, instances = renderer.render(study, view, rng)
            rel_image = (subject_dir / f"s{study.study_id}" / f"{dicom_id}{opts.image_ext}").relative_to(out)
            data = outputs.encode_jpeg(image) if opts.jpeg else outputs.encode_png(image)
            outputs.write_bytes(out / rel_image, data)
            if opts.dicom:
                outputs.write_dicom((out / rel_image).with_suffix(".dcm"), image, dicom_id=dicom_id,
                                    study=study, view=view, spacing_mm=spacing_mm)
            metadata.append([dicom_id, study.subject_id, study.study_id, outputs.PROCEDURE[key], view,
                             opts.size, opts.size, study.study_date, study.study_time, "CHEST",
                             outputs.VIEW_MEANING[view], "Erect" if view != "AP" else "Recumbent"])
            split_rows.append([dicom_id, study.study_id, study.subject_id, split])
            annotations, counters = [], {}
            for inst in instances:
                box = bbox(inst.mask)
                if box is None:
                    continue
                k = counters.get(inst.concept, 0)
                counters[inst.concept] = k + 1
                rel_mask = f"masks/{dicom_id}/{inst.concept}_{k}.png"
                outputs.write_bytes(out / rel_mask, outputs.encode_mask(inst.mask))
                boxes.append([dicom_id, study.study_id, inst.concept, *box, inst.laterality or "",
                              inst.severity or "", inst.certainty, view, rel_mask])
                annotations.append({"finding": inst.concept, "bbox": list(box), "area": int(inst.mask.sum()),
                                    "iscrowd": 0, "mask_file": rel_mask, "laterality": inst.laterality,
                                    "severity": inst.severity, "certainty": inst.certainty})
                drawn_in.setdefault(inst.concept, []).append(dicom_id)
            coco_images.append({"image": {"file_name": str(rel_image), "width": opts.size, "height": opts.size,
                                          "dicom_id": dicom_id, "study_id": study.study_id,
                                          "subject_id": study.subject_id, "view": view},
                                "annotations": annotations})
            images_truth.append({"dicom_id": dicom_id, "view": view, "path": str(rel_image)})
        findings = []
        for f in study.findings:
            item = f.public()
            item["chexpert"] = spec_mod.chexpert_of(spec, f.concept)
            item["drawn_in"] = sorted(set(drawn_in.get(f.concept, [])), key=study.dicom_ids.index)
            findings.append(item)
        truth = {"report_id": f"s{study.study_id}", "study_id": study.study_id, "subject_id": study.subject_id,
                 "study_index": study.index, "prior_study_id": study.prior_study_id,
                 "study_date": study.study_date, "setting": study.setting, "age": study.age, "sex": study.sex,
                 "ctr": round(study.ctr, 3), "split": split,
                 "report_path": str((subject_dir / f"s{study.study_id}.txt").relative_to(out)),
                 "images": images_truth, "findings": findings,
                 "chexpert": {k: v for k, v in labels.items()},
                 "mentions": [{"section": m.section, "concept": m.concept, "certainty": m.certainty,
                               "sentence": m.sentence} for m in report.mentions]}
        results.append({
            "metadata": metadata, "boxes": boxes, "split": split_rows, "coco_images": coco_images,
            "chexpert": [[study.subject_id, study.study_id, *[csv_value(v) for v in labels.values()]]],
            "truth": truth,
        })
    return results


# --- worker plumbing ------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(opts: Options) -> None:
    _WORKER["opts"] = opts
    _WORKER["spec"] = spec_mod.load()


def _work(task: tuple[int, int]) -> list[dict]:
    return render_subject(_WORKER["spec"], _WORKER["opts"], *task)


def _summarise(spec: dict, tables: outputs.TableWriter, stats: dict) -> dict:
    return {"generator": "pipelines.phantom", "version": GENERATOR_VERSION, **stats,
            "templates_hash": spec_mod.templates_hash(),
            "images": tables.image_count, "annotations": tables.annotation_count}


def generate(opts: Options) -> dict:
    """Write the corpus; returns the manifest (also written to OUT/phantom_manifest.json)."""
    if opts.size < 64:
        raise ValueError("--size must be at least 64")
    spec = spec_mod.load()
    out = Path(opts.out)
    outputs.prepare_out(out)
    manifest_path = out / outputs.MANIFEST
    manifest_path.write_text(json.dumps({"complete": False}) + "\n")   # marks OUT as ours
    tasks = plan(spec, opts.seed, opts.n)
    categories = spec_mod.drawable_concepts(spec)
    devices = {c for c, s in spec_mod.concept_specs(spec).items() if s.get("device")}
    tables = outputs.TableWriter(out, categories, devices)
    label_counts = {name: {"1.0": 0, "0.0": 0, "-1.0": 0} for name in spec_mod.CHEXPERT_LABELS}
    certainty_counts = {"positive": 0, "uncertain": 0, "negative": 0}
    start = time.perf_counter()
    progress = _progress(opts)
    try:
        if opts.workers > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(opts.workers, initializer=_init_worker, initargs=(opts,)) as pool:
                for results in pool.imap(_work, tasks, chunksize=max(1, min(16, len(tasks) // (opts.workers * 8)))):
                    _consume(results, tables, label_counts, certainty_counts, progress)
        else:
            for task in tasks:
                _consume(render_subject(spec, opts, *task), tables, label_counts, certainty_counts, progress)
    finally:
        if progress is not None:
            progress.close()
    elapsed = time.perf_counter() - start
    drawn = certainty_counts["positive"] + certainty_counts["uncertain"]
    stats = {"seed": opts.seed, "n_studies": opts.n, "n_subjects": len(tasks), "size": opts.size,
             "image_format": "jpeg" if opts.jpeg else "png", "dicom": opts.dicom,
             "field_of_view_mm": FIELD_OF_VIEW_MM,
             "hedge_rate": opts.hedge_rate if opts.hedge_rate is not None else spec["findings"]["hedge_rate"],
             "hedged_share_of_reported_findings": round(certainty_counts["uncertain"] / drawn, 4) if drawn else 0.0,
             "finding_certainty_counts": certainty_counts, "chexpert_counts": label_counts,
             "categories": categories}
    manifest = _summarise(spec, tables, stats)
    tables.close(info={"description": "radqa phantom: synthetic chest radiographs (boxes of drawn findings)",
                       "version": str(GENERATOR_VERSION), "seed": opts.seed})
    manifest["complete"] = True
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    manifest["seconds"] = elapsed          # reported, never written (outputs stay byte-identical)
    return manifest


def _progress(opts: Options):
    if not opts.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=opts.n, unit="study", desc="phantom", file=sys.stderr, disable=None)


def _consume(results, tables, label_counts, certainty_counts, progress) -> None:
    for result in results:
        tables.add_study(result)
        for row in result["chexpert"]:
            for name, value in zip(spec_mod.CHEXPERT_LABELS, row[2:]):
                if value:
                    label_counts[name][value] += 1
        for f in result["truth"]["findings"]:
            certainty_counts[f["certainty"]] += 1
    if progress is not None:
        progress.update(len(results))
