"""benchmarks/gpu_pack_data.py as a real process: CIFAR-10's python-layout files packed into parts and rebuilt
byte for byte; a missing part or a changed byte is refused with a message."""

from __future__ import annotations

import hashlib

import numpy as np

from tests.helpers.processes import run_python

NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def packed(fake_cifar10, tmp_path):
    src = fake_cifar10.root
    sums = [f"{hashlib.sha256((src / 'cifar-10-batches-py' / n).read_bytes()).hexdigest()}  cifar-10-batches-py/{n}"
            for n in NAMES]  # fmt: skip
    (src / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    proc = run_python("benchmarks/gpu_pack_data.py", "pack", str(src), str(tmp_path / "pack"), "--parts", "2")
    assert proc.returncode == 0, proc.stderr
    return src, tmp_path / "pack"


def test_pack_then_unpack_rebuilds_every_file_byte_for_byte(fake_cifar10, tmp_path):
    src, pack = packed(fake_cifar10, tmp_path)
    assert {p.name for p in pack.iterdir()} == {"part0", "part1"}
    assert (pack / "part0" / "data_batch_1.webp").is_file() and (pack / "part1" / "test_batch.webp").is_file()
    proc = run_python("benchmarks/gpu_pack_data.py", "unpack", str(pack), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "SHA256SUMS match" in proc.stdout
    for n in NAMES:
        rebuilt = (tmp_path / "out" / "cifar-10-batches-py" / n).read_bytes()
        assert rebuilt == (src / "cifar-10-batches-py" / n).read_bytes(), n


def test_unpack_refuses_a_missing_part_and_a_changed_byte(fake_cifar10, tmp_path):
    _, pack = packed(fake_cifar10, tmp_path)
    skeleton = pack / "part1" / "test_batch.skeleton"
    blob = bytearray(skeleton.read_bytes())
    blob[-20] ^= 1  # a byte of the file names, after the pixels
    skeleton.write_bytes(bytes(blob))
    proc = run_python("benchmarks/gpu_pack_data.py", "unpack", str(pack), str(tmp_path / "out"))
    assert proc.returncode != 0 and "differ from SHA256SUMS: cifar-10-batches-py/test_batch" in proc.stderr
    assert "Traceback" not in proc.stderr
    for f in (pack / "part0").iterdir():
        f.unlink()
    (pack / "part0").rmdir()
    proc = run_python("benchmarks/gpu_pack_data.py", "unpack", str(pack), str(tmp_path / "out2"))
    assert proc.returncode != 0 and "data_batch_1.webp, data_batch_1.skeleton" in proc.stderr
    assert "carry every part" in proc.stderr and "Traceback" not in proc.stderr


def test_the_mosaic_tiles_images_row_by_row_and_sums_must_cover_every_file(fake_cifar10, tmp_path):
    from PIL import Image

    src, pack = packed(fake_cifar10, tmp_path)
    mosaic = np.asarray(Image.open(pack / "part0" / "data_batch_1.webp"))
    side = 32 * int(np.ceil(np.sqrt(40)))  # 40 images a fake batch: a 7 x 7 grid, its last 9 tiles black
    assert mosaic.shape == (side, side, 3)
    x = fake_cifar10.train_x[:40]
    np.testing.assert_array_equal(mosaic[:32, 32:64], x[1].reshape(3, 32, 32).transpose(1, 2, 0))
    np.testing.assert_array_equal(mosaic[32:64, :32], x[7].reshape(3, 32, 32).transpose(1, 2, 0))
    assert not mosaic[-32:, -32:].any()
    sums = pack / "part0" / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "test_batch" not in line))
    proc = run_python("benchmarks/gpu_pack_data.py", "unpack", str(pack), str(tmp_path / "out"))
    assert proc.returncode != 0 and "SHA256SUMS lists no sum for test_batch" in proc.stderr
    assert not (tmp_path / "out" / "SHA256SUMS").exists()  # its presence would mean a checked copy
