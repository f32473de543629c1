"""One self-contained checkpoint folder: config.json, vocab.json, model.safetensors (+ resume state).

    config.json           the resolved RunConfig (data, model, train) and the tangshi version
    vocab.json            the vocabulary the model was trained with
    model.safetensors     the weights (a tied output matrix is stored once)
    trainer.json          step, epoch, position in the epoch, best loss, timing, optimizer groups
    trainer.safetensors   optimizer tensors and RNG states
    lines.safetensors     hashes of the training corpus's lines (copied lines are rejected)

A folder is written under a temporary name and renamed into place when complete, so a reader
(or a resumed run after SIGKILL) never sees a half-written checkpoint. Nothing is unpickled.

model.safetensors and trainer.safetensors carry a SHA-256 of their tensors in the file's own metadata
(`__metadata__["sha256"]`, `weights_sha256`), written at every save and checked at every load: damaged
bytes that leave every value finite are refused too. A file without it (written before) still loads.

config.json is not trusted: before anything is allocated, the tensor names and shapes it implies
(the model built on the meta device) are checked against the safetensors header and against this
machine's memory, so a config asking for terabytes is refused by name instead of exhausting memory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.overrides import TorchFunctionMode

from tangshi import __version__
from tangshi.config import ConfigError, ModelConfig, RunConfig
from tangshi.data.lineindex import LineIndex, LineIndexError
from tangshi.data.vocab import Vocab, VocabError, write_json_atomic
from tangshi.model.charrnn import CharRNN
from tangshi.model.kernels import int8_rows

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


CHECKSUM = "sha256"  # the metadata key of the tensors' SHA-256 (weights_sha256)


def weights_sha256(tensors: dict[str, Any]) -> str:
    """SHA-256 (hex) of the tensors' raw bytes (C order, as stored), one tensor after another in name order
    (Python's sorted). Torch tensors or numpy arrays; what `save_with_checksum` writes and `check_checksum` checks."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if isinstance(t, torch.Tensor):  # through uint8, which numpy holds whatever the dtype (bfloat16 too)
            t = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        h.update(np.ascontiguousarray(t).reshape(-1).view(np.uint8))
    return h.hexdigest()


def save_with_checksum(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """safetensors' `save_file` with the tensors' SHA-256 in the file's metadata (key "sha256")."""
    save_file(tensors, str(path), metadata={**(metadata or {}), CHECKSUM: weights_sha256(tensors)})


def check_checksum(tensors: dict[str, Any], metadata: dict[str, str] | None, path: Path, what: str = "weights") -> None:
    """Refuse tensors that do not match the SHA-256 saved with them; a file without one (older) is not checked."""
    saved = (metadata or {}).get(CHECKSUM)
    if saved is not None and weights_sha256(tensors) != saved:
        raise CheckpointError(
            f"{path}: its {what} do not match the checksum written with them (the file is damaged); "
            "copy it again from where it came from, or train again (for the bundled model, reinstall tangshi)"
        )


SCALE = ":scale"  # suffix of the per-row scales of an int8 matrix


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices as int8 with one float32 scale a row (symmetric, round to nearest); vectors as float16.

    A shipped model 4x smaller than float32; `_load_weights` turns them back into float32."""
    out = {}
    for name, t in tensors.items():
        if t.dim() == 2 and t.is_floating_point():
            out[name], out[name + SCALE] = int8_rows(t)
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
    extras: Sequence[Any] = (),
) -> Path:
    """Write a complete checkpoint folder atomically (temp folder, fsync, rename). `extras` are more
    files of the checkpoint, each an object that `.save(folder)`s itself (e.g. the word statistics)."""
    folder = Path(folder)
    weights = model_tensors(model)
    check_finite(weights, folder / "model.safetensors", "refusing to write")  # before anything is on disk
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        cfg = {"tangshi_version": __version__, **config.to_dict()}
        write_json_atomic(tmp / "config.json", cfg)
        vocab.save(tmp / "vocab.json")
        save_with_checksum(weights, tmp / "model.safetensors", metadata={"format": "pt"})
        if trainer is not None:
            save_with_checksum(trainer_tensors or {}, tmp / "trainer.safetensors")
            write_json_atomic(tmp / "trainer.json", trainer)
        if lines is not None:
            lines.save(tmp)
        for extra in extras:
            extra.save(tmp)
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


def write_size(
    model: CharRNN,
    trainer_tensors: dict[str, torch.Tensor] | None = None,
    lines: LineIndex | None = None,
) -> int:
    """About how many bytes `write` puts on disk: the tensors' bytes (the JSON files are small)."""
    tensors = [*model_tensors(model).values(), *(trainer_tensors or {}).values()]
    if lines is not None:
        tensors += lines.tensors().values()
    return sum(t.numel() * t.element_size() for t in tensors)


_NO_SPACE = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
_TOO_LARGE = ("File too large", "os error 27")


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` says the file system is full (or the quota used up), or that a file reached the
    file-size limit (`ulimit -f`, EFBIG), from Python or from safetensors."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return isinstance(e, (OSError, SafetensorError)) and any(s in str(e) for s in _NO_SPACE + _TOO_LARGE)


def is_file_too_large(e: BaseException) -> bool:
    """Whether `e` is the file-size limit (`ulimit -f`, EFBIG) rather than a full disk."""
    if isinstance(e, OSError) and e.errno == errno.EFBIG:
        return True
    return isinstance(e, (OSError, SafetensorError)) and any(s in str(e) for s in _TOO_LARGE)


def check_finite(tensors: dict[str, torch.Tensor], path: Path, doing: str = "refusing") -> None:
    """Refuse weights holding NaN or infinity (a diverged run, a damaged file), naming the file and the tensor."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            nan = int(torch.isnan(t).sum())
            raise CheckpointError(
                f"{path}: {doing}: tensor {name} holds {bad:,} non-finite values ({nan:,} NaN) of {t.numel():,}; "
                "the weights are damaged or the run diverged (train again, e.g. with a lower --lr)"
            )


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


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """A safetensors file's tensors and metadata (what safetensors' load_file reads, with the metadata)."""
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _load_safetensors(path: Path, what: str = "weights") -> dict[str, torch.Tensor]:
    """All the file's tensors, checked against the SHA-256 in its metadata where it has one."""
    try:
        tensors, metadata = _read_tensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    check_checksum(tensors, metadata, path, what)
    return tensors


Shapes = dict[str, tuple[int, ...]]


class _NoNormalInit(TorchFunctionMode):
    """Skips `normal_` (nn.init's and the tensor's): on the meta device it runs a Python decomposition
    that imports torch._dynamo, a second of every load; the shapes are all `expected_shapes` reads."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") == "normal_":
            return args[0] if args else kwargs.get("tensor", kwargs.get("self"))
        return func(*args, **kwargs)


def expected_shapes(cfg: ModelConfig) -> Shapes:
    """The names and shapes of the tensors model.safetensors holds for `cfg`; nothing is allocated
    (the model is built on the meta device)."""
    with torch.device("meta"), _NoNormalInit():
        model = CharRNN(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_weights:
        shapes.pop("head.weight")
    return shapes


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _check_fits(cfg: ModelConfig, shapes: Shapes, where: Path) -> None:
    """Refuse a model whose float32 weights alone exceed this machine's physical memory."""
    need = 4 * sum(math.prod(s) for s in shapes.values())
    have = physical_memory()
    if have is not None and need > have:
        raise CheckpointError(
            f"{where}: model.hidden_size {cfg.hidden_size} x num_layers {cfg.num_layers} "
            f"(vocab_size {cfg.vocab_size}, embedding_size {cfg.embedding_size}) needs {_gb(need)} of weights; "
            f"this machine has {_gb(have)}"
        )


def _header_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) from a safetensors header; no tensor data is read."""
    try:
        with safe_open(str(path), "pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _check_header(expected: Shapes, header: dict[str, tuple[tuple[int, ...], str]], path: Path) -> None:
    """The file's tensors against those config.json implies: names, shapes, int8 scales."""
    names = {k for k in header if not k.endswith(SCALE)}
    stray = {k for k in header if k.endswith(SCALE) and k[: -len(SCALE)] not in names}
    missing = sorted(set(expected) - names)
    extra = sorted(names - set(expected) | stray)
    if missing or extra:
        raise CheckpointError(
            f"{path}: tensors do not match config.json (missing: {', '.join(missing) or '-'}; "
            f"unexpected: {', '.join(extra) or '-'})"
        )
    for name, shape in expected.items():
        got, dtype = header[name]
        if got != shape:
            raise CheckpointError(f"{path}: tensor {name} has shape {got}, config.json implies {shape}")
        if dtype == "I8" and header.get(name + SCALE, ((), ""))[0] != shape[:1]:
            raise CheckpointError(f"{path}: int8 tensor {name} has no per-row scale {name + SCALE}")


def load_vocab(folder: str | Path) -> Vocab:
    """A checkpoint folder's vocabulary alone (what --init-from keeps); a missing or bad file is named."""
    f = Path(folder) / "vocab.json"
    if not f.is_file():
        raise CheckpointError(f"{folder}: no vocab.json (a checkpoint folder is expected)")
    try:
        return Vocab.load(f)
    except VocabError as e:
        raise CheckpointError(str(e)) from None


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
    where = str(folder / "config.json")
    try:
        config = RunConfig.from_dict(raw, where=where)
        config.model.validate(where)  # every size bounded before anything is built
        config.data.validate()
    except ConfigError as e:
        raise CheckpointError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    try:
        vocab = Vocab.load(folder / "vocab.json")
    except VocabError as e:
        raise CheckpointError(str(e)) from None
    if len(vocab) != config.model.vocab_size:
        raise CheckpointError(
            f"{folder}: vocab.json has {len(vocab)} tokens but config.json says vocab_size {config.model.vocab_size}"
        )
    weights = folder / "model.safetensors"
    try:
        shapes = expected_shapes(config.model)
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:  # sizes past what a tensor can hold
        m = config.model
        raise CheckpointError(
            f"{folder / 'config.json'}: model.hidden_size {m.hidden_size} x num_layers {m.num_layers} "
            f"(vocab_size {m.vocab_size}, embedding_size {m.embedding_size}) cannot be built: {str(e).splitlines()[0]}"
        ) from None
    _check_fits(config.model, shapes, folder / "config.json")
    _check_header(shapes, _header_shapes(weights), weights)
    model = CharRNN(config.model)  # only now is anything allocated
    _load_weights(model, _load_safetensors(weights), weights)
    model.to(device).eval()
    ckpt = Checkpoint(model, vocab, config, folder)
    try:
        ckpt.lines = LineIndex.load(folder)
    except LineIndexError as e:
        raise CheckpointError(str(e)) from None
    if (folder / "README.md").is_file():
        ckpt.card = (folder / "README.md").read_text("utf-8")
    if with_trainer:
        for name in ("trainer.json", "trainer.safetensors"):
            if not (folder / name).is_file():
                raise CheckpointError(f"{folder}: missing {name}, so training cannot resume from it")
        ckpt.trainer = _read_json(folder / "trainer.json")
        ckpt.trainer_tensors = _load_safetensors(folder / "trainer.safetensors", "tensors")
        check_finite(ckpt.trainer_tensors, folder / "trainer.safetensors", "cannot resume")
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
    check_finite(tensors, path, "cannot load")
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
