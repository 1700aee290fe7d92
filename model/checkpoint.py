"""Checkpoints as a folder, written atomically (tmp folder + rename):

  model.safetensors      weights + queue buffers (tied weights handled by safetensors.torch.save_model)
  optimizer.safetensors  AdamW state tensors, keyed '<param index>.<name>'
  optimizer.json         AdamW param groups (hyper-parameters)
  trainer.json           step, seed, world size, last metrics
  config.json            the full QFTConfig, backbones given by name/path replaced by their architecture
  tokenizer/             the tokenizer (so a checkpoint is self-contained)
No pickle anywhere.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .config import QFTConfig
from .data.tokenizer import TextTokenizer


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


def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    cfg: QFTConfig, tokenizer: TextTokenizer, trainer_state: dict) -> Path:
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
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
    (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=1))
    for f in tmp.glob("*.safetensors"):  # data on disk before the rename makes it visible
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def find_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint folder, or its '.old' twin if a save was interrupted between the two renames."""
    folder = Path(folder)
    for f in (folder, folder.with_name(folder.name + ".old")):
        if (f / "trainer.json").exists():
            return f
    return None


def load_config_from(folder: str | Path) -> QFTConfig:
    return QFTConfig.from_dict(json.loads((Path(folder) / "config.json").read_text()))


def load_checkpoint(folder: str | Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load weights (+ optimizer state) in place; returns the trainer state."""
    folder = Path(folder)
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match the model (missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]})")
    if optimizer is not None:
        flat = load_file(str(folder / "optimizer.safetensors"))
        state: dict[int, dict] = {}
        for key, v in flat.items():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = v
        groups = json.loads((folder / "optimizer.json").read_text())["param_groups"]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    return json.loads((folder / "trainer.json").read_text())


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, config) from a checkpoint folder, model in eval mode: for fine-tuning / inference."""
    from .qft import QFT

    folder = Path(folder)
    cfg = load_config_from(folder)
    tok = TextTokenizer.load(folder / "tokenizer")
    model = QFT(cfg.model, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id)
    load_checkpoint(folder, model)
    return model.to(device).eval(), tok, cfg
