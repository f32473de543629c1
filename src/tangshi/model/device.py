"""Where a model runs and in what precision: `--device` (auto | cpu | cuda) and `--precision`.

Training, evaluation and writing all resolve their device here, so none of them imports the others
to find out; `autocast_dtype` says which autocast dtype `--precision` means on a device, or why it
cannot be used there.
"""

from __future__ import annotations

import torch

from tangshi.config import ConfigError


class DeviceError(ConfigError):
    """A --device or --precision this machine cannot run; the message names the option."""


def resolve_device(name: str) -> torch.device:
    """The torch device for `--device` (auto: CUDA when there is one, else the CPU)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--precision` on `device` (None = fp32), or a DeviceError saying why not."""
    if precision == "auto":
        has_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
        return torch.bfloat16 if has_bf16 else None
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise DeviceError("--precision fp16 needs --device cuda; on a CPU use bf16 (or fp32)")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("--precision bf16: this GPU has no bf16; use fp16 or fp32")
    if device.type == "cpu" and not cpu_has_bf16():
        raise DeviceError("--precision bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX); use fp32")
    return torch.bfloat16


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix multiplies in hardware (oneDNN's own test)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
