"""One self-contained checkpoint folder: config.json, vocab.json, model.safetensors (+ resume state).

    config.json           the resolved RunConfig (data, model, train) and the tangshi version
    vocab.json            the vocabulary the model was trained with
    model.safetensors     the weights (a tied output matrix is stored once)
    trainer.json          step, epoch, position in the epoch, best loss, timing, optimizer groups
    trainer.safetensors   optimizer tensors and RNG states
    lines.safetensors     hashes of the training corpus's lines (copied lines are rejected)

A folder is written under a temporary name and renamed into place when complete, so a reader
(or a resumed run after SIGKILL) never sees a half-written checkpoint. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tangshi import __version__
from tangshi.config import ConfigError, RunConfig
from tangshi.lineindex import LineIndex
from tangshi.model import CharRNN
from tangshi.vocab import Vocab, VocabError, write_json_atomic

REQUIRED = ("config.json", "vocab.json", "model.safetensors")
STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the folder and the file."""


@dataclass
class Checkpoint:
    model: CharRNN
    vocab: Vocab
    config: RunConfig
    path: Path
    trainer: dict[str, Any] | None = None  # trainer.json
    trainer_tensors: dict[str, torch.Tensor] | None = None  # trainer.safetensors
    card: str = ""
    lines: LineIndex | None = None  # lines.safetensors: the training corpus's lines, hashed


def model_tensors(model: CharRNN) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_weights:
        state.pop("head.weight")
    return state


SCALE = ":scale"  # suffix of the per-row scales of an int8 matrix


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices as int8 with one float32 scale a row (symmetric, round to nearest); vectors as float16.

    A shipped model 4x smaller than float32; `_load_weights` turns them back into float32."""
    out = {}
    for name, t in tensors.items():
        if t.dim() == 2 and t.is_floating_point():
            scale = t.float().abs().amax(dim=1).clamp(min=1e-12) / 127
            out[name] = torch.round(t.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[name + SCALE] = scale.contiguous()
        else:
            out[name] = t.half() if t.is_floating_point() else t
    return out


def _dequantize(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in tensors.items() if not k.endswith(SCALE)}
    for name, t in out.items():
        if t.dtype == torch.int8:
            scale = tensors.get(name + SCALE)
            if scale is None or scale.shape != (t.shape[0],):
                raise CheckpointError(f"{path}: int8 tensor {name} has no per-row scale {name + SCALE}")
            out[name] = t.float() * scale.float()[:, None]
    return out


def write(
    folder: str | Path,
    model: CharRNN,
    vocab: Vocab,
    config: RunConfig,
    trainer: dict[str, Any] | None = None,
    trainer_tensors: dict[str, torch.Tensor] | None = None,
    card: str | None = None,
    lines: LineIndex | None = None,
) -> Path:
    """Write a complete checkpoint folder atomically (temp folder, fsync, rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        cfg = {"tangshi_version": __version__, **config.to_dict()}
        write_json_atomic(tmp / "config.json", cfg)
        vocab.save(tmp / "vocab.json")
        save_file(model_tensors(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if trainer is not None:
            save_file(trainer_tensors or {}, str(tmp / "trainer.safetensors"))
            write_json_atomic(tmp / "trainer.json", trainer)
        if lines is not None:
            lines.save(tmp)
        if card:
            (tmp / "README.md").write_text(card, "utf-8")
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        _swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _swap_into_place(tmp: Path, folder: Path) -> None:
    old = folder.parent / f".old-{folder.name}"
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    fd = os.open(folder.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(run_dir: Path) -> None:
    """Finish a swap that a kill interrupted: `.old-X` without `X` is put back."""
    for old in run_dir.glob(".old-*"):
        target = run_dir / old.name[len(".old-") :]
        if not target.exists():
            os.replace(old, target)
    for tmp in run_dir.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def latest_step_dir(run_dir: Path) -> Path | None:
    steps = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name))]
    return max(steps)[1] if steps else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def load(folder: str | Path, device: str | torch.device = "cpu", with_trainer: bool = False) -> Checkpoint:
    """Load and check a checkpoint folder; any missing or mismatched file is named."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder}: missing {name} (a checkpoint needs {', '.join(REQUIRED)})")
    raw = _read_json(folder / "config.json")
    raw.pop("tangshi_version", None)
    try:
        config = RunConfig.from_dict(raw, where=str(folder / "config.json"))
        config.model.validate()
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    try:
        vocab = Vocab.load(folder / "vocab.json")
    except VocabError as e:
        raise CheckpointError(str(e)) from None
    if len(vocab) != config.model.vocab_size:
        raise CheckpointError(
            f"{folder}: vocab.json has {len(vocab)} tokens but config.json says vocab_size {config.model.vocab_size}"
        )
    model = CharRNN(config.model)
    _load_weights(model, _load_safetensors(folder / "model.safetensors"), folder / "model.safetensors")
    model.to(device).eval()
    ckpt = Checkpoint(model, vocab, config, folder)
    ckpt.lines = LineIndex.load(folder)
    if (folder / "README.md").is_file():
        ckpt.card = (folder / "README.md").read_text("utf-8")
    if with_trainer:
        for name in ("trainer.json", "trainer.safetensors"):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder}: missing {name}, so training cannot resume from it")
        ckpt.trainer = _read_json(folder / "trainer.json")
        ckpt.trainer_tensors = _load_safetensors(folder / "trainer.safetensors")
    return ckpt


def _load_weights(model: CharRNN, tensors: dict[str, torch.Tensor], path: Path) -> None:
    tensors = _dequantize(tensors, path)
    expected = model_tensors(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{path}: tensors do not match config.json (missing: {', '.join(missing) or '-'}; "
            f"unexpected: {', '.join(extra) or '-'})"
        )
    for name, t in expected.items():
        if tensors[name].shape != t.shape:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, config.json implies {tuple(t.shape)}"
            )
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
