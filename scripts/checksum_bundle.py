"""Write the SHA-256 of the bundled model's tensors into its model.safetensors (issue 38), tensors unchanged.

    python scripts/checksum_bundle.py [FOLDER]    # default: src/tangshi/bundled

The tensors are read, saved again with the same metadata plus "sha256" (`checkpoint.save_with_checksum`),
read back and compared with the originals, each with torch.equal (dtype, shape and every value); the file is
replaced only when all match. Nothing is unpickled.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from tangshi.model.checkpoint import CHECKSUM, save_with_checksum, weights_sha256

FOLDER = Path(__file__).resolve().parents[1] / "src" / "tangshi" / "bundled"


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def main() -> int:
    path = (Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER) / "model.safetensors"
    before, meta = read(path)
    tmp = path.with_name(".model.safetensors.tmp")
    save_with_checksum(before, tmp, {k: v for k, v in meta.items() if k != CHECKSUM})
    after, new_meta = read(tmp)
    same = sorted(before) == sorted(after) and all(
        before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]) for k in before
    )
    if not same or new_meta[CHECKSUM] != weights_sha256(before):
        tmp.unlink()
        sys.exit(f"checksum_bundle: {path}: the tensors read back differ; the file is left as it was")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"{path}: {len(before)} tensors equal (torch.equal) before and after; sha256 {new_meta[CHECKSUM]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
