"""REPORTS -> OUT: the whole `qa-build` run.

reports (readers) -> sections -> sentences -> mentions -> labels -> QA -> Parquet.
Work is split into fixed-size batches of reports handled by a process pool; each worker builds Arrow
record batches, and the parent writes them in input order, so the output does not depend on the number
of workers and memory stays bounded (at most a few batches are in flight).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections import Counter, deque
from itertools import chain
from operator import itemgetter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from qa_builder import __version__
from qa_builder.hedges import apply_report_context
from qa_builder.labels import report_labels
from qa_builder.mentions import MentionExtractor, ParserConfig, get_extractor
from qa_builder.qa.card import (STATS_COLUMNS, empty_partial_stats, load_source_info, merge_partial_stats,
                                partial_stats, write_data_card)
from qa_builder.qa.difference import (DifferenceQuestions, build_difference, concept_states, encode_states,
                                      find_study_dates, load_study_dates)
from qa_builder.qa.generate import QAConfig, balance_table, get_generator
from qa_builder.review.overrides import Overrides, empty_tally, merge_tally
from qa_builder.review.overrides import finish as finish_overrides
from qa_builder.reports import RawReport, Reject, detect_format, iter_reports, passthrough_columns, report_sections
from qa_builder.sentences import split_sentences
from qa_builder.tables import SECTION_COLUMNS, OutFolder, OutputError, TableWriters, output_error, table_schemas

# Sections whose text is evidence; others (indication, history ...) are context only.
EVIDENCE_SECTIONS = ("findings", "impression")


@dataclass
class BuildConfig:
    workers: int = 0                 # worker processes; 0 = one per CPU core
    batch_size: int = 512            # reports per task (also the Parquet row-group granularity)
    parser: ParserConfig = field(default_factory=ParserConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    progress: bool = True            # show a progress line on stderr
    overrides: str | None = None     # review sheet applied per report (qa_builder.review.overrides)


# -- one report -------------------------------------------------------------------------------

def parse_report(raw: RawReport, extractor: MentionExtractor) -> tuple[dict, list[dict], list[dict]]:
    """(report row, sentence rows, mention rows) for one report."""
    given = report_sections(raw)
    sections = {name: given.get(name) or None for name in SECTION_COLUMNS}
    report = {"report_id": raw.report_id, "subject_id": raw.subject_id, "study_id": raw.study_id,
              **sections, "source": raw.source, **raw.extra}
    sentences: list[dict] = []
    mentions: list[dict] = []
    context = None  # (sentence id, its context) of the rare sentences report-level rules read
    for section in EVIDENCE_SECTIONS:
        for sentence in split_sentences(sections[section]):
            sentence_id = len(sentences)
            sentences.append({"sentence_id": sentence_id, "section": section, "sentence": sentence})
            rows, ctx = extractor.extract_sentence(sentence)
            if ctx is not None:
                context = (context or []) + [(sentence_id, ctx)]
            for base in rows:
                row = {"report_id": raw.report_id, "mention_id": len(mentions), "section": section,
                       "sentence_id": sentence_id}
                row.update(base)
                mentions.append(row)
    if context and mentions:  # an explanation ("This may be artifact.") or an anaphoric change
        explains = [None] * len(sentences)
        for sentence_id, (found, _) in context:
            explains[sentence_id] = found
        apply_report_context(sentences, mentions, explains, extractor.lexicon)
    return report, sentences, mentions


# -- one batch (runs in a worker) ---------------------------------------------------------------

_WORKER: dict = {}

# Python's cyclic GC is triggered by allocation counts, and a build allocates millions of small
# tuples/dicts that live until their batch is written, while the caches and spaCy's vocabulary are
# long-lived: default thresholds spend ~40% of a worker's CPU re-scanning them. The rows hold no
# reference cycles, so collect rarely (cycles are still collected, just in bigger, rarer passes).
_GC_THRESHOLD = (50_000, 20, 20)


@contextlib.contextmanager
def _rare_gc() -> Iterator[None]:
    """Raise the GC thresholds for the duration of a build (restored afterwards: `build` is also a
    library call)."""
    old = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _init_worker(parser: ParserConfig, qa: QAConfig, schemas: dict[str, pa.Schema], child: bool = False,
                 spill: str | None = None, overrides=None) -> None:
    if child:
        # Everything inherited from the parent (matchers, lexicon, caches) is permanent here: the GC
        # never scans it again, which also keeps its pages shared copy-on-write.
        gc.freeze()
        gc.set_threshold(*_GC_THRESHOLD)
    extractor = get_extractor()
    if extractor.config != parser:
        extractor = MentionExtractor(extractor.lexicon, parser)
    _WORKER["extractor"] = extractor
    _WORKER["qa"] = get_generator(qa)
    _WORKER["schemas"] = schemas
    _WORKER["spill"] = spill
    _WORKER["overrides"] = overrides


def process_batch(items: list[RawReport | Reject]) -> dict[str, pa.RecordBatch | dict]:
    """Parse a batch; returns one Arrow record batch per table (built here, in the worker, so the
    parent only writes) plus counters under "_stats"."""
    extractor: MentionExtractor = _WORKER["extractor"]
    generator = _WORKER["qa"]
    overrides = _WORKER.get("overrides")
    tally = empty_tally() if overrides is not None else None
    qa_config: QAConfig = generator.config
    diff: list[tuple] | None = [] if qa_config.difference else None  # per report: what difference QA needs
    date_col, time_col = qa_config.study_date_column, qa_config.study_time_column
    hits, misses = extractor.cache_hits, extractor.cache_misses
    warnings = 0
    reports: list[dict] = []
    findings: list[dict] = []
    labels: list[tuple] = []
    qa_rows: list[tuple] = []
    rejects: list[tuple] = []
    for item in items:
        if isinstance(item, Reject):
            rejects.append((item.source, item.report_id, item.reason))
            continue
        try:
            report, sentences, mentions = parse_report(item, extractor)
            if not (report["findings"] or report["impression"]):
                rejects.append((item.source, item.report_id, "no findings or impression text after sectioning"))
                continue
            pairs = generator.rows(report, sentences, mentions)
        except Exception as exc:  # noqa: BLE001 - one bad report must not sink the corpus
            reason = f"parser error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            rejects.append((item.source, item.report_id, reason[:300]))
            continue
        if overrides is not None:
            pairs = overrides.apply(pairs, tally)
        warnings += bool(item.warnings)
        reports.append(report)
        findings.extend(mentions)
        rid = item.report_id
        labels.extend((rid, s, l, v) for s, l, v in report_labels(mentions, extractor.lexicon))
        qa_rows.extend(pairs)
        if diff is not None:
            subject, study = report["subject_id"], report["study_id"]
            diff.append((rid, subject, study, report.get(date_col) if date_col else None,
                         report.get(time_col) if time_col else None, generator.split_of(rid, subject, study),
                         encode_states(concept_states(mentions))))
    schemas = _WORKER["schemas"]
    result: dict = {
        "reports": _dict_batch(schemas["reports"], reports),
        "findings": _dict_batch(schemas["findings"], findings),
        "labels": _tuple_batch(schemas["labels"], labels),
        "qa": _tuple_batch(schemas["qa"], qa_rows),
        "rejects": _tuple_batch(schemas["rejects"], rejects),
    }
    # The data card's counts, per batch here so the parent never re-reads qa.parquet.
    result["_card"] = partial_stats(result["qa"])
    result["_stats"] = {"cache_hits": extractor.cache_hits - hits, "cache_misses": extractor.cache_misses - misses,
                        "reports_with_warnings": warnings}
    if tally is not None:
        result["_review"] = tally
    if diff is not None:
        result["_diff"] = diff
    return result


def _dict_batch(schema: pa.Schema, rows: list[dict]) -> pa.RecordBatch:
    if rows and all(name in rows[0] for name in schema.names):
        # One C-level itemgetter call per row instead of a dict lookup per cell (findings: 19 columns).
        return _tuple_batch(schema, list(map(itemgetter(*schema.names), rows)))
    return pa.RecordBatch.from_arrays(
        [pa.array([r.get(name) for r in rows], type=schema.field(name).type) for name in schema.names], schema=schema)


def _tuple_batch(schema: pa.Schema, rows: list[tuple]) -> pa.RecordBatch:
    # Transposed through one flat list: zip(*rows) walks every row tuple once per column, which is
    # cache-miss bound (4x slower on a 12k-row qa batch).
    k = len(schema)
    flat = list(chain.from_iterable(rows))
    columns = [flat[i::k] for i in range(k)]
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, schema)], schema=schema)


# -- handing a batch's tables to the parent -----------------------------------------------------
#
# A batch's tables are ~10 KB per report. Pickled through the pool's pipe, a worker blocks until the
# parent's result thread (which needs the GIL) has read all of it: ~20 ms per 512-report batch, 12 %
# of a worker's time. Written as Arrow IPC files to a scratch folder instead, the pipe carries a
# file name and the parent memory-maps the file (no copy, no unpickling).

class Spilled(NamedTuple):
    path: str      # Arrow IPC file holding one record batch
    num_rows: int


def _spill_root() -> str:
    """RAM-backed /dev/shm when it has room (Linux), else the temp folder ($TMPDIR)."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= 1 << 30 and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


def _spill_batch(items: list[RawReport | Reject]) -> dict:
    """process_batch in a worker, with the record batches written to the scratch folder."""
    result = process_batch(items)
    folder = _WORKER["spill"]
    _WORKER["spilled"] = n = _WORKER.get("spilled", 0) + 1
    for name, batch in list(result.items()):
        if isinstance(batch, pa.RecordBatch):
            path = os.path.join(folder, f"{os.getpid()}-{n}-{name}.arrow")
            try:
                with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
                    writer.write_batch(batch)
            except OSError:  # scratch space full or gone: send this table through the pipe instead
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            result[name] = Spilled(path, batch.num_rows)
    return result


def _unspill(result: dict) -> dict:
    """The parent's side of _spill_batch: record batches memory-mapped from the files (then unlinked:
    the mapping stays valid until the batch is dropped)."""
    for name, value in result.items():
        if isinstance(value, Spilled):
            with pa.memory_map(value.path) as source:
                result[name] = pa.ipc.open_file(source).get_batch(0)
            os.unlink(value.path)
    return result


# -- the run ----------------------------------------------------------------------------------

def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _input_digest(path: Path) -> str:
    """sha256 over the input bytes (files in sorted order for folders)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty() or os.environ.get("QA_BUILD_PROGRESS") == "1"
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, rejected: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < 0.5):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        end = "\n" if final else "\r"
        print(f"qa-build: {done:,} reports ({rejected:,} rejected), {rate:,.0f} reports/s", end=end,
              file=sys.stderr, flush=True)


def build(reports: Path, out: Path, config: BuildConfig | None = None, fmt: str | None = None,
          id_column: str | None = None, source: str | None = None,
          finish: Callable[[Path, dict], None] | None = None) -> dict:
    """Run the whole build; returns the manifest (also written to OUT/manifest.json).

    OUT is locked for the whole run and its files switch all at once (qa_builder.tables: OutFolder,
    TableWriters.commit); `finish(folder, manifest)`, when given, runs last on the complete staged
    tables (--gold writes accuracy.json there), so what it writes is part of the same switch.
    Problems with OUT raise OutputError (one line)."""
    with _rare_gc():
        out = Path(out)
        folder = OutFolder(out)
        try:
            manifest = _build(reports, out, config or BuildConfig(), fmt, id_column, source, finish, folder)
        except BaseException as exc:
            folder.close(ok=False)
            if isinstance(exc, OSError) and _about_out(exc, out):
                raise output_error(out, exc) from exc
            raise
        folder.close(ok=True)
        return manifest


def _about_out(exc: OSError, out: Path) -> bool:
    """Is this error about writing OUT (pyarrow's errors name no file) rather than reading the input?"""
    if exc.filename is None:
        return True
    try:
        return Path(os.path.abspath(exc.filename)).is_relative_to(os.path.abspath(out))
    except (TypeError, ValueError):
        return False


def _build(reports: Path, out: Path, config: BuildConfig, fmt: str | None, id_column: str | None,
           source: str | None, finish: Callable[[Path, dict], None] | None, folder: OutFolder) -> dict:
    started = time.perf_counter()
    reports = Path(reports)
    # Read before anything is written: a bad sheet is a one-line error and leaves OUT untouched.
    overrides = Overrides(config.overrides, config.qa.language, config.qa.extra_templates) if config.overrides else None
    dates, dates_file = _study_dates(reports, fmt, config.qa)
    passthrough = passthrough_columns(reports, fmt, id_column)
    for col in (config.qa.study_date_column, config.qa.study_time_column):
        if col is not None and col not in passthrough:
            raise ValueError(f"{reports}: no column {col!r} for study dates (columns kept: {passthrough[:12]})")
    notes = folder.open()  # checks OUT, locks it, finishes a killed run's switch, removes stale staging
    schemas = table_schemas(passthrough)
    writers = TableWriters(out, schemas)
    workers = config.workers or os.cpu_count() or 1
    progress = _Progress(config.progress)
    done = rejected = 0

    skipped: Counter = Counter()
    items = iter_reports(reports, fmt, id_column, skipped)
    batches = _batches(items, config.batch_size)

    stats = {"cache_hits": 0, "cache_misses": 0, "reports_with_warnings": 0}

    card_counts = empty_partial_stats()
    review_tally = empty_tally()
    diff_entries: list[tuple] = []

    def consume(result: dict) -> None:
        nonlocal done, rejected
        for key, value in result.pop("_stats").items():
            stats[key] += value
        merge_partial_stats(card_counts, result.pop("_card"))
        if "_review" in result:
            merge_tally(review_tally, result.pop("_review"))
        if "_diff" in result:
            diff_entries.extend(result.pop("_diff"))
        for name, batch in result.items():
            writers.write(name, batch)
        done += result["reports"].num_rows
        rejected += result["rejects"].num_rows
        progress.update(done, rejected)

    try:
        # Build the matchers before forking so workers share them copy-on-write.
        _init_worker(config.parser, config.qa, schemas, overrides=overrides)
        if workers == 1:
            for batch in batches:
                consume(process_batch(batch))
        else:
            ctx = mp.get_context("fork")
            with tempfile.TemporaryDirectory(prefix="qa-build-", dir=_spill_root()) as spill, \
                    ctx.Pool(workers, initializer=_init_worker,
                             initargs=(config.parser, config.qa, schemas, True, spill, overrides)) as pool:
                pending: deque = deque()
                for batch in batches:
                    pending.append(pool.apply_async(_spill_batch, (batch,)))
                    if len(pending) >= 2 * workers:
                        consume(_unspill(pending.popleft().get()))
                while pending:
                    consume(_unspill(pending.popleft().get()))
        progress.update(done, rejected, final=True)
        difference = None
        if config.qa.difference:  # pairs need every report: made here, once all are read
            difference = _difference(diff_entries, dates, dates_file, config.qa, writers)
            diff_entries = []
        if config.qa.balance_yes_no:  # drops rows: the card is counted again from the new table
            writers.replace("qa", lambda table: balance_table(table, config.qa))
            card_counts = None
        writers.close()
        fmt = fmt or detect_format(reports)
        review = None
        if overrides is not None:
            review = finish_overrides(overrides, review_tally, _type_rows(writers.stage, card_counts))
        write_card(writers.stage, source or fmt, reports, config.qa, writers.rows, counts=card_counts,
                   answer_accuracy=review, difference=difference)
        manifest = {
            "tool": "qa-build", "version": __version__,
            "input": str(reports), "input_sha256": _input_digest(reports), "format": fmt,
            "config": {"parser": asdict(config.parser), "qa": config.qa.to_dict(), "batch_size": config.batch_size},
            "lexicon_sha256": _WORKER["extractor"].lexicon.digest,
            "rows": dict(writers.rows),
            # Kept rows with a problem worth knowing, e.g. bytes that were not UTF-8 (decoded with replacement).
            "reports_with_warnings": stats["reports_with_warnings"],
            # Files of an input folder that were not read (hidden, another type), by reason.
            "skipped_files": dict(sorted(skipped.items())),
        }
        if difference is not None:
            manifest["difference"] = difference
        if review is not None:
            manifest["overrides"] = review
        manifest["config_sha256"] = hashlib.sha256(json.dumps(manifest["config"], sort_keys=True).encode()).hexdigest()
        # Wall time and worker count vary run to run, so they live apart from the deterministic tables.
        manifest["run"] = {"wall_seconds": round(time.perf_counter() - started, 3), "workers": workers,
                           "sentence_cache_hits": stats["cache_hits"], "sentences_parsed": stats["cache_misses"]}
        if notes:  # what the start of the run repaired in OUT (a killed run's switch, stale staging)
            manifest["run"]["repaired"] = notes
        if finish is not None:
            finish(writers.stage, manifest)
        return writers.commit(manifest)  # manifest.json (with every file's sha256) written last
    except BaseException:
        writers.abort()
        raise


def _type_rows(folder: Path, counts: dict | None) -> dict[str, int]:
    """Rows per question type of the qa.parquet written in `folder` (from the card's counts when kept)."""
    if counts is not None:
        return dict(counts["by_question_type"])
    import pyarrow.parquet as pq

    return dict(Counter(pq.read_table(folder / "qa.parquet", columns=["question_type"]).column(0).to_pylist()))


def _study_dates(reports: Path, fmt: str | None, qa: QAConfig) -> tuple[dict | None, str | None]:
    """study_id -> datetime from the dates file (given, or MIMIC-CXR's metadata beside a files/ tree);
    None when the dates come from CSV columns or there are none."""
    if not qa.difference or qa.study_date_column:
        return None, None
    path = Path(qa.study_dates) if qa.study_dates else None
    if path is None and (fmt or detect_format(reports)) == "mimic":
        path = find_study_dates(reports)
    if path is None:
        return None, None
    return load_study_dates(path), str(path)


def _difference(entries: list[tuple], dates: dict | None, dates_file: str | None, qa: QAConfig,
                writers: TableWriters) -> dict:
    """diff_qa.parquet and its manifest block (pairing counts, rows per type and source, days between)."""
    gen = get_generator(qa)
    questions = DifferenceQuestions(gen.templates, gen.concepts, qa.seed, gen.sep, gen.yes, gen.no, gen.none)
    rows, summary = build_difference(entries, questions, dates, qa.max_prior_days)
    schema = writers.schemas["diff_qa"]
    for i in range(0, len(rows), 65_536):
        writers.write("diff_qa", _tuple_batch(schema, rows[i:i + 65_536]))
    by_type: dict[str, dict[str, int]] = {}
    for r in rows:
        t = by_type.setdefault(r[7], {})
        t[r[10]] = t.get(r[10], 0) + 1
    dates_from = dates_file or (f"columns {qa.study_date_column}" + (f", {qa.study_time_column}" if qa.study_time_column
                                                                      else "") if qa.study_date_column else None)
    return {"dates": dates_from, **summary, "rows_by_type_and_source": {t: dict(sorted(v.items()))
                                                                       for t, v in sorted(by_type.items())}}


def write_card(folder: Path, fmt: str, reports: Path, qa: QAConfig, rows: dict[str, int],
               accuracy: dict | None = None, counts: dict | None = None, answer_accuracy: dict | None = None,
               difference: dict | None = None) -> None:
    """data_card.md + stats.json for the qa.parquet in `folder`; `counts`: its merged partial_stats
    when the caller has them, else they are counted from the file; `answer_accuracy`: the manifest's
    `overrides` block of a build with a review sheet."""
    import pyarrow.parquet as pq

    source = {**load_source_info(fmt), "input": str(reports)}
    if counts is None:
        # Only the columns the statistics read: the question and evidence texts would triple the memory.
        counts = partial_stats(pq.read_table(folder / "qa.parquet", columns=list(STATS_COLUMNS)))
    write_data_card(folder, counts, rows["reports"], config=qa, source_info=source, accuracy=accuracy,
                    rejects_count=rows["rejects"], answer_accuracy=answer_accuracy, difference=difference)
