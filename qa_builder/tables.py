"""Arrow schemas of the output tables, a streaming Parquet writer and the OUT folder's protocol.

The schemas here are the contract documented in README.md; `model/` reads these files without
importing this package.

OUT protocol (README "Damaged rows, odd files and the output folder"):
* one writer at a time: a run holds a POSIX lock (fcntl.lockf) on OUT/.qa-build.lock from start to
  end; the OS releases it when the process dies, however it dies. A second run is refused.
* a run writes every file in OUT/.partial-PID/; when all are written and fsynced, manifest.json
  (with the sha256 and size of every other file) is written there too and the folder is renamed
  OUT/.commit: from then on the new generation is complete and the switch can always be finished.
* the switch: the old manifest.json is removed first (no manifest = OUT is being switched), old
  outputs the new generation lacks are removed, the new files are renamed in, manifest.json last.
  A run killed mid-switch leaves OUT/.commit behind; the next run (under the lock) finishes it
  before it starts. `verify_out(OUT)` checks a folder against its manifest.
* `.partial-PID` folders whose process is gone are removed at the start of a run.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from qa_builder.qa.difference import DIFF_SCHEMA
from qa_builder.qa.schema import QA_SCHEMA

SECTION_COLUMNS = ("findings", "impression", "indication", "comparison", "history", "technique", "examination")

FINDINGS_SCHEMA = pa.schema([
    ("report_id", pa.string()), ("mention_id", pa.int32()), ("section", pa.string()),
    ("sentence_id", pa.int32()), ("sentence", pa.string()), ("start", pa.int32()), ("end", pa.int32()),
    ("text", pa.string()), ("concept", pa.string()), ("certainty", pa.string()),
    ("laterality", pa.string()), ("location", pa.string()), ("severity", pa.string()),
    ("descriptor", pa.string()), ("size", pa.string()), ("change", pa.string()),
    ("temporality", pa.string()), ("chexpert", pa.string()), ("chestxray14", pa.string()),
    ("differential", pa.bool_()), ("qualifier", pa.string()), ("explanation", pa.string()),
    ("probable", pa.bool_()),
])
LABELS_SCHEMA = pa.schema([
    ("report_id", pa.string()), ("scheme", pa.string()), ("label", pa.string()), ("value", pa.int8()),
])
REJECTS_SCHEMA = pa.schema([("source", pa.string()), ("report_id", pa.string()), ("reason", pa.string())])


# Columns of long, mostly distinct text (per table). Not findings.sentence: sentences recur across
# reports ("No pneumothorax."), and its dictionary pages make the file smaller.
FREE_TEXT_COLUMNS = {
    "reports": ("source", *SECTION_COLUMNS),
    "qa": ("qa_id", "answer", "evidence_text"),
    "diff_qa": ("qa_id", "answer"),
    "rejects": ("source", "reason"),
}


def reports_schema(passthrough: list[str]) -> pa.Schema:
    fixed = ["report_id", "subject_id", "study_id", *SECTION_COLUMNS, "source"]
    extra = [c for c in passthrough if c not in fixed]
    return pa.schema([(name, pa.string()) for name in fixed + extra])


def table_schemas(passthrough: list[str]) -> dict[str, pa.Schema]:
    return {
        "reports": reports_schema(passthrough),
        "findings": FINDINGS_SCHEMA,
        "labels": LABELS_SCHEMA,
        "qa": QA_SCHEMA,
        "rejects": REJECTS_SCHEMA,
        "diff_qa": DIFF_SCHEMA,
    }


# Every file a run may write in OUT. A run removes the ones its own generation does not have (an
# accuracy.json of an earlier --gold run must not outlive the tables it measured).
OUTPUT_FILES = ("reports.parquet", "findings.parquet", "labels.parquet", "qa.parquet", "rejects.parquet", "diff_qa.parquet",
                "stats.json", "data_card.md", "accuracy.json", "manifest.json")
LOCK_NAME = ".qa-build.lock"
COMMIT_NAME = ".commit"
MANIFEST = "manifest.json"


class OutputError(Exception):
    """OUT cannot be used or written (one line): a file in its place, no permission, no space, another
    run writing it."""


def _why(exc: OSError) -> str:
    """The OS's words for an OSError, also for pyarrow's ('... Detail: [errno 28] No space left ...')."""
    m = re.search(r"\[errno (\d+)\]", str(exc))
    if m:
        return os.strerror(int(m.group(1)))
    if exc.strerror:
        return exc.strerror
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def output_error(out: Path, exc: OSError, doing: str = "cannot write") -> OutputError:
    return OutputError(f"{out}: {doing} ({_why(exc)})".replace("\n", " "))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: set[str] = set()          # OUT folders this process writes (POSIX locks do not exclude threads)
_HELD_LOCK = threading.Lock()


class OutFolder:
    """OUT for one run: checked, locked, an interrupted commit finished, stale staging removed.

    `open()` raises OutputError (one line) when OUT cannot be used; `close(ok)` releases the lock and,
    when the run failed and created OUT itself, removes OUT again (nothing half-written)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.created = False
        self.fd: int | None = None
        self.key = ""
        self.notes: list[str] = []   # what open() repaired or removed

    def open(self) -> list[str]:
        out = self.out
        try:
            exists = out.exists()
            if exists and not out.is_dir():
                raise OutputError(f"{out}: exists and is not a folder")
            if not exists:
                try:
                    out.mkdir(parents=True)
                    self.created = True
                except FileExistsError:
                    if not out.is_dir():
                        raise OutputError(f"{out}: exists and is not a folder") from None
        except OSError as exc:
            raise output_error(out, exc, "cannot create the output folder") from None
        key = os.path.realpath(out)
        with _HELD_LOCK:
            if key in _HELD:
                raise OutputError(f"{out} is being written by PID {os.getpid()} (this process)")
            _HELD.add(key)
            self.key = key
        try:
            self._lock()
            self._repair()
            self._remove_stale()
        except BaseException:
            self.close(ok=False)
            raise
        return self.notes

    def _lock(self) -> None:
        path = self.out / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise output_error(self.out, exc) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                who = f"PID {holder}" if holder.isdigit() else "another process"
                raise OutputError(f"{self.out} is being written by {who} (another qa-build); "
                                  "wait for it to finish or choose another OUT") from None
            raise output_error(self.out, exc, "cannot lock") from None
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            raise output_error(self.out, exc) from None

    def _repair(self) -> None:
        commit = self.out / COMMIT_NAME
        if commit.is_dir():
            try:
                switch(self.out)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise OutputError(f"{self.out}: a run was killed while switching tables and its {COMMIT_NAME} "
                                  f"cannot be completed ({exc}); remove {commit} and rerun") from None
            self.notes.append(f"{self.out}: finished the table switch of a run that was killed during it")

    def _remove_stale(self) -> None:
        for path in sorted(self.out.glob(".partial-*")):
            suffix = path.name[len(".partial-"):]
            pid = int(suffix) if suffix.isdigit() else None
            if pid is None or pid == os.getpid() or not _pid_alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                self.notes.append(f"{self.out}: removed {path.name}, left by a run that did not finish")

    def close(self, ok: bool) -> None:
        """Release the lock (idempotent); after a failed run, remove OUT if this run created it and it
        holds nothing else."""
        if self.fd is not None:
            if not ok and self.created:  # leave no trace of a failed run in an OUT it created
                try:
                    if os.listdir(self.out) == [LOCK_NAME]:
                        os.unlink(self.out / LOCK_NAME)
                        self.out.rmdir()
                except OSError:
                    pass
            os.close(self.fd)  # releases the lock
            self.fd = None
        elif not ok and self.created:
            try:
                self.out.rmdir()
            except OSError:
                pass
        if self.key:
            with _HELD_LOCK:
                _HELD.discard(self.key)
            self.key = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def switch(out: Path) -> None:
    """Move the complete generation in OUT/.commit into OUT (see the module docstring); idempotent, so
    a run killed half-way through it is finished by the next."""
    commit = out / COMMIT_NAME
    manifest = commit / MANIFEST
    if manifest.exists():
        listed = set(json.loads(manifest.read_text(encoding="utf-8"))["files"])
        (out / MANIFEST).unlink(missing_ok=True)  # first: OUT without a manifest is being switched
        for name in OUTPUT_FILES:
            if name != MANIFEST and name not in listed:
                (out / name).unlink(missing_ok=True)
        for name in sorted(os.listdir(commit)):
            if name != MANIFEST:
                os.replace(commit / name, out / name)
        _fsync_dir(out)
        os.replace(manifest, out / MANIFEST)  # last: the switch is done
        _fsync_dir(out)
    shutil.rmtree(commit)


def verify_out(out: Path | str) -> list[str]:
    """Problems of a qa-build output folder ([] = complete and consistent): no manifest, a switch that
    was interrupted, a file whose size or sha256 differs from the manifest's."""
    out = Path(out)
    problems = []
    if (out / COMMIT_NAME).exists():
        problems.append(f"{out / COMMIT_NAME}: a run was killed while switching tables (the next qa-build "
                        "into this OUT finishes it)")
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return problems + [f"{out / MANIFEST}: missing (OUT is being written, or a run was killed)"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return problems + [f"{out / MANIFEST}: unreadable or without 'files' ({exc})"]
    for name, meta in sorted(files.items()):
        path = out / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != meta["bytes"] or _sha256(path) != meta["sha256"]:
            problems.append(f"{path}: differs from manifest.json (size or sha256)")
    return problems


class TableWriters:
    """One ParquetWriter per table in a staging folder OUT/.partial-PID; `commit(manifest)` makes the
    folder one complete generation (manifest.json with every file's sha256 last) and switches it into
    OUT. A crash before the switch leaves OUT as it was plus the staging folder (removed by the next
    run); a crash during it leaves OUT/.commit, which the next run finishes. Never a truncated table.
    Run under an `OutFolder` (the lock)."""

    def __init__(self, out: Path, schemas: dict[str, pa.Schema]):
        self.out = out
        self.stage = out / f".partial-{os.getpid()}"
        shutil.rmtree(self.stage, ignore_errors=True)
        self.stage.mkdir(parents=True)
        self.schemas = schemas
        self.writers = {name: self._open(name) for name in schemas}
        self.rows = {name: 0 for name in schemas}
        self.committed = False

    def _open(self, name: str) -> pq.ParquetWriter:
        # Fixed writer options so that the same rows give the same bytes. Free-text columns (nearly
        # every value distinct) skip dictionary encoding and min/max statistics: both cost write time
        # and buy nothing there; ids and categorical columns keep them (filters on report_id or concept).
        schema = self.schemas[name]
        keyed = [f.name for f in schema if f.name not in FREE_TEXT_COLUMNS.get(name, ())]
        return pq.ParquetWriter(self.stage / f"{name}.parquet", schema, compression="zstd", compression_level=3,
                                write_statistics=keyed, use_dictionary=keyed)

    def replace(self, name: str, transform) -> None:
        """Rewrite one staged table as `transform(table)` (a corpus-level pass, e.g. yes/no balancing)."""
        self.writers[name].close()
        table = transform(pq.read_table(self.stage / f"{name}.parquet"))
        self.writers[name] = self._open(name)
        self.writers[name].write_table(table)
        self.rows[name] = table.num_rows

    def write(self, name: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.writers[name].write_batch(batch)
            self.rows[name] += batch.num_rows

    def close(self) -> None:
        """Finish the Parquet files in the staging folder (readable there before `commit`)."""
        for w in self.writers.values():
            w.close()
        self.writers = {}

    def commit(self, manifest: dict) -> dict:
        """Write manifest.json (plus `files`: sha256 and size of every staged file) and switch the
        staged generation into OUT; returns the manifest."""
        self.close()
        files = {}
        for path in sorted(self.stage.iterdir()):
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            files[path.name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        manifest["files"] = files
        data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        with open(self.stage / MANIFEST, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.stage)
        commit = self.out / COMMIT_NAME
        if commit.exists():  # only after a failed switch of this same run's OUT lock: finish it first
            switch(self.out)
        os.replace(self.stage, commit)  # the generation is complete: from here on it goes in
        self.committed = True
        _fsync_dir(self.out)
        switch(self.out)
        return manifest

    def abort(self) -> None:
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
        if not self.committed:
            shutil.rmtree(self.stage, ignore_errors=True)
