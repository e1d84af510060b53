"""benchmarks/gpu_pack_data.py as a real process: CIFAR-10's python-layout files packed into parts and rebuilt
byte for byte; a missing part or a changed byte is refused with a message."""

from __future__ import annotations

import hashlib

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
    assert proc.returncode != 0 and "parts missing for data_batch_1, data_batch_2, data_batch_3" in proc.stderr
