"""Checkpoints as a folder, verified on load, the last ``train.keep_checkpoints`` of them kept:

  OUT/checkpoint/        the newest (the path to pass to finetune / answer)
  OUT/checkpoint.1/      the one saved before it, ``checkpoint.2/`` the one before that, ...

Each folder holds
  model.safetensors      weights + queue buffers (tied weights handled by safetensors.torch.save_model)
  optimizer.safetensors  AdamW state tensors, keyed '<param index>.<name>'
  optimizer.json         AdamW param groups (hyper-parameters)
  config.json            the full QFTConfig, backbones given by name/path replaced by their architecture
  tokenizer/             the tokenizer (so a checkpoint is self-contained)
  trainer.json           step, seed, world size, last metrics, and the size + sha256 of every other file
                         (written last: a folder whose trainer.json reads and whose files match it is complete)
No pickle anywhere.

A save writes ``checkpoint.tmp/`` in full (files fsynced), then rotates by renames only: the oldest kept folder
is dropped, ``checkpoint.N`` -> ``checkpoint.N+1``, ``checkpoint`` -> ``checkpoint.1``, ``checkpoint.tmp`` ->
``checkpoint``. Whatever instant a save is killed at, every kept checkpoint exists under a ``checkpoint[.N]``
name, newest first by N. A folder found damaged on resume is never deleted before a new save is complete; that
save moves it aside to ``<name>.damaged``.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .config import QFTConfig
from .data.tokenizer import TextTokenizer

TRAINER = "trainer.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it (one line)."""


def self_contained(cfg: QFTConfig, model: torch.nn.Module) -> QFTConfig:
    """The config with every backbone loaded by name/path replaced by its architecture (transformers config),
    so a checkpoint rebuilds offline, without the original hub name or directory."""
    m = dataclasses.replace(cfg.model)

    def arch(module) -> dict:
        c = module.config
        d = {k: v for k, v in c.to_diff_dict().items() if not k.startswith("_") and k != "transformers_version"}
        return {**d, "model_type": c.model_type}

    if m.vision_backbone:
        vc = model.image_encoder.backbone.config
        m.vision_config, m.vision_backbone = arch(model.image_encoder.backbone), None
        m.image_channels = getattr(vc, "num_channels", m.image_channels)
        m.image_size = getattr(vc, "image_size", m.image_size)
    if m.text_backbone:
        m.text_config, m.text_backbone = arch(model.text_encoder.backbone), None
    if m.decoder_backbone:
        m.decoder_config, m.decoder_backbone = arch(model.decoder), None
    return QFTConfig(cfg.name, m, dataclasses.replace(cfg.data, tokenizer=None), cfg.train)


# ----------------------------------------------------------------------------------------------------
# the kept folders


def slot(folder: str | Path, i: int) -> Path:
    """The i-th newest kept checkpoint: ``folder`` itself for 0, ``folder.i`` after it."""
    folder = Path(folder)
    return folder if i == 0 else folder.with_name(f"{folder.name}.{i}")


def slots(folder: str | Path) -> list[Path]:
    """The checkpoint folders that exist, newest first (``folder``, ``folder.1``, ``folder.2``, ...)."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return []
    pat = re.compile(re.escape(folder.name) + r"(?:\.(\d+))?")
    found = []
    for p in folder.parent.iterdir():
        m = pat.fullmatch(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1) or 0), p))
    return [p for _, p in sorted(found)]


# ----------------------------------------------------------------------------------------------------
# verification


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's header and length (None: it parses and its data is all there)."""
    size = path.stat().st_size
    if size < 8:
        return f"truncated ({size} bytes, not even a header length)"
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8:
            return f"truncated or not safetensors (a {n}-byte header in a {size}-byte file)"
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            return f"safetensors header does not parse ({type(e).__name__}: {e})"
    if size < 8 + n + end:
        return f"truncated ({size} of {8 + n + end} bytes)"
    if size > 8 + n + end:
        return f"{size - 8 - n - end} bytes of trailing data after the tensors"
    return None


def verify_checkpoint(folder: str | Path, optimizer: bool = False) -> dict:
    """The trainer state of a complete, undamaged checkpoint; otherwise CheckpointError naming the file.

    Checks trainer.json parses, every file it records has its size and sha256, and the safetensors headers parse
    with all their data present. A checkpoint of an older version (no hashes in trainer.json) gets the header
    checks only. ``optimizer``: the AdamW state (needed to resume) must be there too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: missing")
    tj = folder / TRAINER
    if not tj.is_file():
        raise CheckpointError(f"{tj}: missing")
    try:
        state = json.loads(tj.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{tj}: not valid JSON ({e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{tj}: no integer 'step'")
    need = ["model.safetensors", "config.json"] + (["optimizer.safetensors", "optimizer.json"] if optimizer else [])
    for name in need:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing")
    files = state.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise CheckpointError(f"{tj}: 'files' is not a mapping")
        for rel, rec in files.items():
            p = folder / rel
            if not p.is_file():
                raise CheckpointError(f"{p}: missing (listed in trainer.json)")
            size = p.stat().st_size
            if size != rec.get("bytes"):
                what = "truncated" if size < rec.get("bytes", 0) else "longer than saved"
                raise CheckpointError(f"{p}: {what} ({size} bytes; trainer.json recorded {rec.get('bytes')})")
            if _sha256(p) != rec.get("sha256"):
                raise CheckpointError(f"{p}: sha256 differs from the one recorded in trainer.json")
    for name in ("model.safetensors", "optimizer.safetensors"):
        p = folder / name
        if p.is_file() and (problem := safetensors_problem(p)):
            raise CheckpointError(f"{p}: {problem}")
    return state


@dataclasses.dataclass
class Found:
    """What ``find_checkpoint`` saw: the newest usable checkpoint (or None), its trainer state, one line per
    newer folder it skipped, and those folders (to be moved aside, not deleted, by the next save)."""
    path: Path | None
    state: dict | None
    problems: list[str]
    damaged: list[Path]


def find_checkpoint(folder: str | Path, optimizer: bool = True) -> Found:
    """The newest kept checkpoint of ``folder`` that verifies, skipping damaged ones."""
    folder = Path(folder)
    problems, damaged = [], []
    found = slots(folder)
    if found and found[0] != folder:
        problems.append(f"{folder}: missing (a save was interrupted)")
    for p in found:
        try:
            return Found(p, verify_checkpoint(p, optimizer), problems, damaged)
        except CheckpointError as e:
            problems.append(str(e))
            damaged.append(p)
    return Found(None, None, problems, damaged)


# ----------------------------------------------------------------------------------------------------
# save / load


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree_via_rename(p: Path) -> None:
    """Delete a folder so that a kill half-way leaves no half-deleted ``checkpoint[.N]`` behind."""
    gone = p.with_name(p.name + ".drop")
    shutil.rmtree(gone, ignore_errors=True)
    os.rename(p, gone)
    shutil.rmtree(gone, ignore_errors=True)


def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    cfg: QFTConfig, tokenizer: TextTokenizer, trainer_state: dict, *, keep: int = 2,
                    damaged: list[Path] | tuple = (), replace: bool = False) -> Path:
    """Write a checkpoint to ``folder`` atomically, keeping the ``keep`` newest (this one included).

    ``damaged``: folders found unreadable (``Found.damaged``), moved aside to ``<name>.damaged`` once this
    save is complete. ``replace``: drop every older checkpoint (a run begun from step 0 replaces an earlier
    run's)."""
    folder = Path(folder)
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    tmp = folder.with_name(folder.name + ".tmp")
    for stale in (tmp, *folder.parent.glob(glob.escape(folder.name) + "*.drop")):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    if optimizer is not None:
        sd = optimizer.state_dict()
        tensors = {f"{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
                   for i, st in sd["state"].items() for k, v in st.items()}
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"]}, indent=1))
    self_contained(cfg, model).save(tmp / "config.json")
    tokenizer.save(tmp / "tokenizer")
    files = {}
    for p in sorted(q for q in tmp.rglob("*") if q.is_file()):
        with open(p, "rb+") as fh:  # data on disk before trainer.json says the folder is complete
            os.fsync(fh.fileno())
        files[p.relative_to(tmp).as_posix()] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    state = {k: v for k, v in trainer_state.items() if k != "files"}
    with open(tmp / TRAINER, "w") as fh:
        fh.write(json.dumps({**state, "files": files}, indent=1))
        fh.flush()
        os.fsync(fh.fileno())
    for d in {tmp, *(p.parent for p in tmp.rglob("*"))}:
        _fsync(d)

    # rotate: renames only, so every kept checkpoint is always under a checkpoint[.N] name, newest first
    damaged = {Path(d) for d in damaged}
    existing = slots(folder)
    for p in existing:
        if p in damaged:
            aside = p.with_name(p.name + ".damaged")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(p, aside)
    good = [p for p in existing if p not in damaged]
    kept = [] if replace else good[: keep - 1]
    for p in good:
        if p not in kept:
            _rmtree_via_rename(p)
    index = {p: (0 if p == folder else int(p.name.rsplit(".", 1)[1])) for p in kept}
    # kept[i] becomes slot i + 1: moves up in reverse order, then moves down in order (no name is ever taken)
    for i in reversed(range(len(kept))):
        if index[kept[i]] < i + 1:
            os.rename(kept[i], slot(folder, i + 1))
    for i in range(len(kept)):
        if index[kept[i]] > i + 1:
            os.rename(kept[i], slot(folder, i + 1))
    os.rename(tmp, folder)
    _fsync(folder.parent)
    return folder


def load_config_from(folder: str | Path) -> QFTConfig:
    return QFTConfig.from_dict(json.loads((Path(folder) / "config.json").read_text()))


def load_checkpoint(folder: str | Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, verify: bool = True) -> dict:
    """Load weights (+ optimizer state) in place; returns the trainer state. ``verify``: check the files first
    (CheckpointError naming the damaged one); pass False only for a folder ``find_checkpoint`` just verified."""
    folder = Path(folder)
    state = verify_checkpoint(folder, optimizer is not None) if verify else json.loads((folder / TRAINER).read_text())
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: checkpoint does not match the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")
    if optimizer is not None:
        flat = load_file(str(folder / "optimizer.safetensors"))
        opt_state: dict[int, dict] = {}
        for key, v in flat.items():
            i, name = key.split(".", 1)
            opt_state.setdefault(int(i), {})[name] = v
        groups = json.loads((folder / "optimizer.json").read_text())["param_groups"]
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return state


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, config) from a checkpoint folder, model in eval mode: for fine-tuning / inference.
    The folder is verified first (CheckpointError naming a damaged or missing file)."""
    from .qft import QFT

    folder = Path(folder)
    verify_checkpoint(folder)
    cfg = load_config_from(folder)
    tok = TextTokenizer.load(folder / "tokenizer")
    model = QFT(cfg.model, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id)
    load_checkpoint(folder, model, verify=False)
    return model.to(device).eval(), tok, cfg
