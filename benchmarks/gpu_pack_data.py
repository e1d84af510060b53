"""CIFAR-10's python-layout files packed small enough to travel to a lent GPU machine, and unpacked there.

The device tool carries at most 64 MiB a call and the six batch files hold 184 MB of pixels that xz shrinks only
to 142 MB (these pixels are decoded JPEG, which leaves little for a byte-level compressor). Each batch's 10,000
images are instead laid out as one 3200x3200 RGB mosaic and stored as lossless WebP (about 0.49 of the raw
bytes), and the rest of the pickle (labels, file names, its framing) as a "skeleton" with the pixels cut out.
``unpack`` splices the decoded pixels back at their offset, so the rebuilt files are byte-identical and the
official SHA256SUMS checks them. Two parts (``--parts 2``) of 44 MiB each travel in two calls::

    python benchmarks/gpu_pack_data.py pack ../shared/data .gpu/pack --parts 2   # here
    python benchmarks/gpu_pack_data.py unpack .gpu/pack .gpu/data              # there, once every part arrived
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, features

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
SIDE = 32
ROW = 3 * SIDE * SIDE  # one image: its R plane, G plane and B plane, 32 x 32 each, as the python layout stores it


def to_mosaic(pixels: np.ndarray) -> np.ndarray:
    """N rows of 3072 bytes -> one G*32 x G*32 x 3 image, G = ceil(sqrt(N)), padded with black images (10,000
    images: a 3200 x 3200 mosaic, well under WebP's 16383-pixel side)."""
    n = len(pixels)
    g = int(np.ceil(np.sqrt(n)))
    padded = np.zeros((g * g, ROW), np.uint8)
    padded[:n] = pixels
    return padded.reshape(g, g, 3, SIDE, SIDE).transpose(0, 3, 1, 4, 2).reshape(g * SIDE, g * SIDE, 3)


def from_mosaic(image: np.ndarray, n: int) -> np.ndarray:
    g = image.shape[0] // SIDE
    return image.reshape(g, SIDE, g, SIDE, 3).transpose(0, 2, 4, 1, 3).reshape(g * g, ROW)[:n]


def pack(src: Path, dst: Path, parts: int) -> None:
    folder = src / "cifar-10-batches-py"
    missing = [n for n in [*BATCHES, "batches.meta"] if not (folder / n).is_file()]
    if missing or not (src / "SHA256SUMS").is_file():
        raise SystemExit(
            f"{src} needs cifar-10-batches-py/ ({', '.join(missing) or 'complete'}) and SHA256SUMS beside it"
        )
    if dst.exists() and any(dst.iterdir()):
        raise SystemExit(f"{dst} is not empty: pack into a new folder (stale parts would mix with new ones)")
    if not features.check("webp"):
        raise SystemExit(
            "this Pillow was built without WebP: install a Pillow wheel from PyPI (pip install pillow)"
        )
    dst.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(BATCHES):
        blob = (folder / name).read_bytes()
        start, size = _pixel_block(blob)
        pixels = np.frombuffer(blob, np.uint8, size, start).reshape(-1, ROW)
        part = dst / f"part{k * parts // len(BATCHES)}"
        part.mkdir(exist_ok=True)
        out = io.BytesIO()
        Image.fromarray(to_mosaic(pixels)).save(out, format="WEBP", lossless=True, quality=100, method=4)
        (part / f"{name}.webp").write_bytes(out.getvalue())
        (part / f"{name}.skeleton").write_bytes(blob[:start] + blob[start + size :])
        (part / f"{name}.json").write_text(json.dumps({"offset": start, "images": len(pixels)}))
        print(f"{name}: {len(blob):,} -> {out.tell():,} + {len(blob) - size:,} bytes in {part.name}")
    # copyfile, not copy: the shared data is read-only, and a copied mode would make the pack read-only too.
    shutil.copyfile(folder / "batches.meta", dst / "part0" / "batches.meta")
    shutil.copyfile(src / "SHA256SUMS", dst / "part0" / "SHA256SUMS")


def _pixel_block(blob: bytes) -> tuple[int, int]:
    """(offset, length) of the pixels: the first string opcode ('T', Python 2's str; 'B', bytes) whose 4-byte
    length is a whole number of images. The pickle's header (dict keys, the array's dtype and shape: short strings)
    comes before them; ``unpack`` checks the rebuilt files against SHA256SUMS in any case."""
    at = 0
    while True:
        hits = [h for h in (blob.find(b"T", at), blob.find(b"B", at)) if h >= 0]
        if not hits:
            raise SystemExit("no pixel block in the pickle: is this CIFAR-10's python layout?")
        at = min(hits)
        length = int.from_bytes(blob[at + 1 : at + 5], "little")
        if length >= ROW and length % ROW == 0 and at + 5 + length <= len(blob):
            return at + 5, length
        at += 1


def unpack(src: Path, dst: Path) -> None:
    """Rebuild the files into ``dst``; SHA256SUMS is written there last, once every file matched it, so its
    presence means a checked copy."""
    files = {p.name: p for p in src.glob("part*/*")}
    needed = [f"{n}.{ext}" for n in BATCHES for ext in ("webp", "skeleton", "json")] + [
        "batches.meta",
        "SHA256SUMS",
    ]
    missing = [n for n in needed if n not in files]
    if missing:
        raise SystemExit(
            f"{src}: {', '.join(missing)} missing: carry every part (part0, part1, ...) before unpacking"
        )
    sums = {}
    for line in files["SHA256SUMS"].read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            sums[fields[1].lstrip("*")] = fields[0]
        elif fields:
            raise SystemExit(f"SHA256SUMS: {line!r} is not 'DIGEST  NAME'")
    unlisted = [n for n in [*BATCHES, "batches.meta"] if f"cifar-10-batches-py/{n}" not in sums]
    if unlisted:
        raise SystemExit(f"SHA256SUMS lists no sum for {', '.join(unlisted)}: nothing could check them")
    folder = dst / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    (dst / "SHA256SUMS").unlink(missing_ok=True)
    bad = []
    for name in [*BATCHES, "batches.meta"]:
        if name == "batches.meta":
            blob = files[name].read_bytes()
        else:
            where = json.loads(files[f"{name}.json"].read_text())
            skeleton = files[f"{name}.skeleton"].read_bytes()
            pixels = from_mosaic(np.asarray(Image.open(files[f"{name}.webp"]).convert("RGB")), where["images"])
            blob = skeleton[: where["offset"]] + pixels.tobytes() + skeleton[where["offset"] :]
        if hashlib.sha256(blob).hexdigest() != sums[f"cifar-10-batches-py/{name}"]:
            bad.append(f"cifar-10-batches-py/{name}")
        (folder / name).write_bytes(blob)
    if bad:
        raise SystemExit(f"rebuilt files differ from SHA256SUMS: {', '.join(bad)}")
    shutil.copyfile(files["SHA256SUMS"], dst / "SHA256SUMS")
    print(f"unpacked {len(BATCHES)} batches into {folder}; SHA256SUMS match")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("src", type=Path, help="the folder holding cifar-10-batches-py/ and SHA256SUMS")
    a.add_argument("dst", type=Path)
    a.add_argument("--parts", type=int, default=2, choices=range(1, 7), help="2 for the device tool (44 MiB each)")
    b = sub.add_parser("unpack")
    b.add_argument("src", type=Path)
    b.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.src, args.dst, args.parts)
    else:
        unpack(args.src, args.dst)


if __name__ == "__main__":
    sys.exit(main())
