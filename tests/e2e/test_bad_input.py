"""Bad input, one table: every case runs the real CLI (``reglab.cli.main``, what ``python -m reglab`` calls)
and must exit non-zero with exactly one line on stderr saying what is wrong, no traceback, and every file
that existed before (a trained run, the datasets, a sweep directory) byte-for-byte intact.

The cases run in one driver interpreter (a fresh ``python`` with warnings shown every time, stdout and stderr
redirected per case at the file-descriptor level), so a warning or a C-level message would show up as an
extra line. ``python tests/e2e/test_bad_input.py`` prints the table with the real messages (docs/reliability.md).

Disk full is real where the machine allows a user namespace: the driver then runs under ``unshare -rm``
and mounts a small tmpfs for that case; elsewhere the checkpoint writer is made to fail with ENOSPC.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script (`python tests/e2e/test_bad_input.py`), not only under pytest
from tests.helpers.cifar_files import write_cifar10, write_pickle  # noqa: E402
from tests.helpers.configs import SWEEP_TINY, TINY_300  # noqa: E402

USERNS = (
    bool(shutil.which("unshare"))
    and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
)

SYN = TINY_300


@dataclass
class Case:
    id: str
    argv: list[str]
    words: list[str]  # must appear in the error line
    code: int = 2  # expected exit status (predict too: one error line per unreadable file)
    special: str = ""  # "enospc": run with a nearly full disk under the run dir
    trains: bool = False  # training starts before the failure: its progress lines may precede the error
    absent: list[str] = field(default_factory=list)  # paths that must not exist afterwards
    what: str = ""  # the table's first column


# ----------------------------------------------------------------------------------------------------------
# Files the cases point at


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def huge_png(w: int, h: int) -> bytes:
    """A PNG header announcing w x h pixels (a decompression bomb: a few bytes on disk)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def make_world(root: Path) -> dict[str, Path]:
    """A trained one-epoch run, fake CIFAR-10 folders (good, truncated, wrong shape, bad checksum, hostile),
    images and recipes. Returns named paths."""
    from PIL import Image

    from reglab.config import load_config
    from reglab.train import run

    p: dict[str, Path] = {"root": root, "marker": root / "PWNED"}
    p["run"] = root / "run"
    run(load_config(None, [*SYN, "train.epochs=1", f"run.dir={p['run']}"]))

    for name in ("data_trunc", "data_shape", "data_sums", "data_evil", "data_short"):  # data_short: 20 per file
        write_cifar10(root / name, per_batch=20, n_test=10)
    batch = root / "data_trunc" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    write_pickle(
        root / "data_shape" / "cifar-10-batches-py" / "data_batch_1",
        {b"data": np.zeros((20, 3000), np.uint8), b"labels": [0] * 20},
    )
    folder = root / "data_sums" / "cifar-10-batches-py"
    sums = [f"{hashlib.sha256((folder / f).read_bytes()).hexdigest()}  {f}" for f in sorted(os.listdir(folder))]
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    with open(folder / "data_batch_2", "r+b") as fh:  # flip one pixel byte: same size, same structure
        fh.seek(-100, 2)
        byte = fh.read(1)
        fh.seek(-100, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    (root / "data_evil" / "cifar-10-batches-py" / "data_batch_1").write_bytes(
        pickle.dumps({"data": Exploit(p["marker"])}, protocol=2)
    )

    p["evil_ckpt"] = root / "evil" / "checkpoints" / "best.safetensors"
    p["evil_ckpt"].parent.mkdir(parents=True)
    p["evil_ckpt"].write_bytes(pickle.dumps({"model": Exploit(p["marker"])}))
    shutil.copy(p["run"] / "config.yaml", root / "evil" / "config.yaml")  # a run directory, but hostile
    orphan = root / "orphan"  # a run's files without its config.yaml (deleted, or copied by hand)
    (orphan / "checkpoints").mkdir(parents=True)
    shutil.copy(p["run"] / "metrics.jsonl", orphan / "metrics.jsonl")
    shutil.copy(p["run"] / "checkpoints" / "last.safetensors", orphan / "checkpoints" / "last.safetensors")
    p["evil_pt"] = root / "model.pt"
    p["evil_pt"].write_bytes(pickle.dumps(Exploit(p["marker"])))

    img = root / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    full = img / "full.png"
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(full)
    (img / "truncated.png").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    (img / "empty.jpg").write_bytes(b"")
    (img / "notes.png").write_text("not an image\n")
    (img / "bomb.png").write_bytes(huge_png(30000, 30000))
    (img / "folder.png").mkdir()
    os.symlink("/proc/self/mem", img / "ioerror.png")  # reading it fails with EIO
    (img / "locked.png").write_bytes(full.read_bytes())
    os.chmod(img / "locked.png", 0)
    Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8), "L").save(img / "gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(img / "rgba.png")
    Image.fromarray((rng.integers(0, 65536, (40, 30))).astype(np.uint16)).save(img / "gray16.png")
    Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)).save(img / "large.jpg", quality=70)
    p["img"] = img

    os.mkfifo(img / "pipe.png")  # opening it for reading would block forever
    p["latin1_yaml"] = root / "latin1.yaml"
    p["latin1_yaml"].write_bytes(b"run:\n  name: caf\xe9\n")
    p["dup_yaml"] = root / "dup.yaml"
    p["dup_yaml"].write_text("optim:\n  lr: 0.1\ntrain:\n  epochs: 3\noptim:\n  lr: 0.5\n")
    p["linked"] = root / "linked"  # a run whose confusion_test.png is a link to a file outside
    shutil.copytree(p["run"], p["linked"])
    (root / "outside").mkdir()
    (root / "outside" / "notes.txt").write_text("notes\n")
    (p["linked"] / "confusion_test.png").symlink_to(root / "outside" / "notes.txt")
    p["nobest"] = root / "nobest"  # best.safetensors replaced by a folder
    shutil.copytree(p["run"], p["nobest"])
    (p["nobest"] / "checkpoints" / "best.safetensors").unlink()
    (p["nobest"] / "checkpoints" / "best.safetensors").mkdir()
    for name, edit in (
        ("two_classes", lambda m: m.__setitem__("classes", ["cat", "dog"])),
        ("huge_model", lambda m: m["model"]["__dict__"].__setitem__("channels", [100000] * 3)),
        ("nested", None),
    ):
        crafted = root / f"ckpt_{name}"
        shutil.copytree(p["run"], crafted)
        for ck in ("best", "last"):
            f = crafted / "checkpoints" / f"{ck}.safetensors"
            from safetensors import safe_open
            from safetensors.torch import load_file, save_file

            with safe_open(str(f), "pt") as fh:
                meta = fh.metadata()
            tree = json.loads(meta["reglab"])
            if edit is not None:
                edit(tree["__dict__"]["meta"]["__dict__"])
            text = json.dumps(tree) if edit is not None else "[" * 100000 + "]" * 100000
            save_file(load_file(str(f)), str(f), metadata={"format": meta["format"], "reglab": text})
        p[f"ckpt_{name}"] = crafted
    p["broken_yaml"] = root / "broken.yaml"
    p["broken_yaml"].write_text("train:\n  epochs: 3\n  batch_size: [1, 2\noptim:\n  lr: 0.1\n")
    p["typo_yaml"] = root / "typo.yaml"
    p["typo_yaml"].write_text("trian:\n  epochs: 3\n")
    p["list_yaml"] = root / "list.yaml"
    p["list_yaml"].write_text("- optim.lr=0.1\n")

    # Sweeps: a sweep file searching lr and the widths, one that sets cli_overrides by hand, and a sweep directory
    # started with train.epochs=2 on the command line (set up, no trial run: the refusals come before any)
    import yaml

    from reglab.sweep import parse_sweep
    from reglab.sweep.storage import prepare

    sweep = {
        "name": "tiny",
        "recipe": "quick",
        "overrides": [o for o in SWEEP_TINY if not o.startswith("model.channels")] + ["train.epochs=1"],
        "trials": 2,
        "space": {"optim.lr": {"type": "logfloat", "low": 1e-3, "high": 0.5}, "model.channels": [[8, 16, 32]]},
    }
    p["sweep_yaml"] = root / "sweep-lr.yaml"
    p["sweep_yaml"].write_text(yaml.safe_dump(sweep))
    p["sweep_cli_yaml"] = root / "sweep-cli.yaml"
    p["sweep_cli_yaml"].write_text(yaml.safe_dump({**sweep, "cli_overrides": ["train.epochs=2"]}))
    spec = parse_sweep(sweep, "tiny")
    spec.cli_overrides = ["train.epochs=2"]
    p["sweep_dir"] = root / "sweep_dir"
    prepare(spec, p["sweep_dir"])
    return p


def cases(p: dict[str, Path]) -> list[Case]:
    r, img, out = str(p["run"]), p["img"], p["root"] / "out"
    t = lambda name, *args, words, what="", **kw: Case(  # noqa: E731  a train case into its own run dir
        name,
        ["train", "quick", *SYN, *args, f"run.dir={out / name}"],
        words,
        absent=[str(out / name)],
        what=what,
        **kw,
    )
    pr = lambda name, file, words, what: Case(  # noqa: E731
        name, ["predict", r, str(img / file)], [str(img / file), *words], what=what
    )
    # A file without read permission is readable to root (and inside `unshare -r`): tested only where it counts.
    locked_words = ["permission denied"] if os.geteuid() != 0 and not USERNS else []
    no_cuda = not torch.cuda.is_available()
    return [
        # -- config -------------------------------------------------------------------------------------
        Case("yaml", ["train", str(p["broken_yaml"])], ["not valid YAML", "line 4"], what="malformed YAML recipe"),
        Case("yaml-list", ["train", str(p["list_yaml"])], ["must hold a mapping"], what="recipe that is a list"),
        t(
            "unknown-key",
            "optim.lrr=0.1",
            words=["optim.lrr", "did you mean 'lr'"],
            what="unknown key (near miss)",
        ),
        Case(
            "unknown-section",
            ["train", str(p["typo_yaml"])],
            ["'trian'", "did you mean 'train'"],
            what="unknown section in a recipe",
        ),
        t("bad-override", "optim.lr", words=["must look like section.key=value"], what="override without ="),
        t("type-int", "train.epochs=abc", words=["train.epochs", "expected int"], what="wrong type (int)"),
        t("type-float", "optim.lr=[0.1]", words=["optim.lr", "expected float"], what="wrong type (float)"),
        t("type-choice", "optim.name=sgdd", words=["did you mean 'sgd'"], what="unknown choice"),
        t("lr-zero", "optim.lr=0", words=["optim.lr=0", "must be > 0"], what="lr = 0"),
        t("lr-negative", "optim.lr=-0.1", words=["optim.lr=-0.1", "must be > 0"], what="lr < 0"),
        t("lr-nan", "optim.lr=.nan", words=["optim.lr", "finite"], what="lr = NaN"),
        t("batch-zero", "train.batch_size=0", words=["train.batch_size=0", ">= 1"], what="batch size 0"),
        t(
            "batch-huge",
            "train.batch_size=1000",
            words=["train.batch_size=1000", "larger than the 200"],
            what="batch size > training set",
        ),
        t("epochs-zero", "train.epochs=0", words=["train.epochs=0", ">= 1"], what="epochs < 1"),
        t(
            "alpha-negative",
            "mix.mixup_alpha=-0.2",
            words=["mix.mixup_alpha=-0.2", ">= 0"],
            what="mixup α < 0 (α = 0 means off)",
        ),
        t("cutmix-negative", "mix.cutmix_alpha=-1", words=["mix.cutmix_alpha", ">= 0"], what="cutmix α < 0"),
        t(
            "alpha-zero-beta",
            "mix.lam_y=beta",
            words=["mix.mixup_alpha > 0"],
            what="α = 0 where a Beta(α, α) draw is needed",
        ),
        t("prob-high", "mix.prob=1.5", words=["mix.prob=1.5", "[0, 1]"], what="probability > 1"),
        t("prob-low", "mix.switch_prob=-0.1", words=["mix.switch_prob", "[0, 1]"], what="probability < 0"),
        t("erasing-p", "aug.erasing_p=2", words=["aug.erasing_p", "[0, 1]"], what="erasing probability > 1"),
        t("dropout-one", "model.dropout=1.0", words=["model.dropout", "[0, 1)"], what="dropout = 1"),
        t(
            "smoothing-one",
            "train.label_smoothing=1",
            words=["train.label_smoothing", "[0, 1)"],
            what="label smoothing = 1",
        ),
        t(
            "val-size",
            "data.val_size=300",
            words=["data.val_size=300", "smaller than the 300"],
            what="val_size ≥ training set",
        ),
        t("val-negative", "data.val_size=-5", words=["data.val_size", ">= 0"], what="val_size < 0"),
        *(
            [t("cuda", "run.device=cuda", words=["run.device=cuda", "CUDA"], what="CUDA requested, none present")]
            if no_cuda
            else []
        ),
        t("device", "run.device=gpu", words=["run.device", "auto, cpu, cuda"], what="unknown device"),
        t("seed-huge", "run.seed=1180591620717411303424", words=["run.seed", "2^32"], what="seed beyond 2^32"),
        t("threads-negative", "run.threads=-1", words=["run.threads=-1", "or null"], what="threads < 0"),
        t(
            "threads-zero",
            "run.threads=0",
            words=["run.threads=0", "null for torch's default"],
            what="threads = 0 (null means all cores)",
        ),
        t(
            "min-lr-above-lr",
            "sched.min_lr=10",
            "optim.lr=0.3",
            words=["sched.min_lr=10.0 is above optim.lr=0.3"],
            what="sched.min_lr above optim.lr",
        ),
        t(
            "override-not-utf8",
            "run.name=caf\udce9",
            words=["not valid UTF-8", "\\xe9"],
            what="override with a non-UTF-8 byte",
        ),
        Case(
            "out-uncreatable",
            ["augment", "preview", "quick", "data.dataset=synthetic", "data.val_size=100", "-o", "/proc/rl/g.png"],
            ["cannot write or read /proc/rl", "No such file or directory", "-o/--out"],
            what="output in a folder that cannot be created",
        ),
        Case(
            "out-format",
            [
                "augment",
                "preview",
                "quick",
                "data.dataset=synthetic",
                "data.val_size=100",
                "-o",
                str(out / "g.txt"),
            ],
            ["-o", "g.txt", "cannot write a .txt image", "name a .png file"],
            absent=[str(out / "g.txt")],
            what="preview output with an extension no image format has",
        ),
        Case(
            "yaml-latin1",
            ["train", str(p["latin1_yaml"])],
            ["is not UTF-8 text (byte 0xe9 on line 2)"],
            what="recipe with a non-UTF-8 byte",
        ),
        Case(
            "yaml-duplicate",
            ["train", str(p["dup_yaml"])],
            ["duplicate key 'optim' (first at line 1)"],
            what="recipe with a key given twice",
        ),
        Case(
            "recipe-unknown",
            ["train", "quik"],
            ["recipe 'quik' not found (did you mean 'quick'?)", "`reglab recipes` lists all"],
            what="recipe name with a typo (the nearest names, not all 50)",
        ),
        Case(
            "recipe-dir",
            ["train", str(p["img"])],
            ["is a directory, not a YAML file"],
            what="recipe path that is a directory",
        ),
        # -- data ---------------------------------------------------------------------------------------
        Case(
            "data-missing",
            ["train", "data.download=false", "--data-dir", str(p["root"] / "nowhere"), f"run.dir={out / 'dm'}"],
            ["cifar10 not found", "--data-dir", "REGLAB_DATA"],
            absent=[str(out / "dm")],
            what="missing data dir (downloads off)",
        ),
        Case(
            "data-truncated",
            ["train", "--data-dir", str(p["root"] / "data_trunc"), f"run.dir={out / 'dt'}"],
            ["data_batch_1", "not a readable CIFAR batch"],
            absent=[str(out / "dt")],
            what="truncated data file",
        ),
        Case(
            "data-shape",
            ["train", "--data-dir", str(p["root"] / "data_shape"), f"run.dir={out / 'ds'}"],
            ["data_batch_1", "(N, 3072)", "(20, 3000)"],
            absent=[str(out / "ds")],
            what="data file of the wrong size (shape)",
        ),
        Case(
            "data-short",
            ["data", "check", "--data-dir", str(p["root"] / "data_short")],
            ["data_batch_1", "holds 20 images, expected 10000"],
            what="data file with fewer images than the official one (no SHA256SUMS)",
        ),
        Case(
            "data-checksum",
            ["data", "check", "--data-dir", str(p["root"] / "data_sums")],
            ["checksum mismatch for data_batch_2"],
            what="corrupted data file (SHA256SUMS mismatch)",
        ),
        Case(
            "data-hostile",
            ["train", "--data-dir", str(p["root"] / "data_evil"), f"run.dir={out / 'de'}"],
            ["refusing to load posix.system"],
            absent=[str(out / "de"), str(p["marker"])],
            what="data file crafted to run code when unpickled",
        ),
        # -- checkpoints and run directories ------------------------------------------------------------
        Case(
            "run-exists",
            ["train", "quick", *SYN, f"run.dir={r}"],
            ["already holds a run", "--resume", "--overwrite"],
            what="existing run dir without --resume",
        ),
        Case(
            "run-orphan",
            ["train", "quick", *SYN, f"run.dir={p['root'] / 'orphan'}"],
            ["holds files of a run", "metrics.jsonl", "checkpoints/last.safetensors", "--overwrite"],
            what="run dir with a run's files but no config.yaml",
        ),
        Case(
            "resume-nothing",
            ["train", "--resume", str(p["root"] / "img")],
            ["not a reglab run directory"],
            what="--resume of a folder that is not a run",
        ),
        Case(
            "resume-recipe", ["train", "quick", "--resume", r], ["drop the recipe"], what="--resume with a recipe"
        ),
        Case(
            "resume-arch",
            ["train", "--resume", r, "train.epochs=2", "model.channels=[16,32,64]"],
            ["--resume continues", "it cannot change model.channels=[16, 32, 64] (saved: [8, 16, 32])"],
            what="resume with another architecture",
        ),
        Case(
            "resume-classes",
            ["train", "--resume", r, "train.epochs=2", "data.synthetic_classes=5"],
            ["it cannot change data.synthetic_classes=5 (saved: 10)"],
            what="resume with another class count",
        ),
        Case(
            "resume-optim",
            ["train", "--resume", r, "train.epochs=2", "optim.name=adam"],
            ["it cannot change optim.name='adam' (saved: 'sgd')"],
            what="resume with another optimizer",
        ),
        Case(
            "ckpt-hostile",
            ["eval", str(p["evil_pt"])],
            ["not a readable reglab checkpoint", "refused"],
            absent=[str(p["marker"])],
            what="checkpoint crafted to run code (pickle)",
        ),
        Case(
            "ckpt-hostile-run",
            ["predict", str(p["evil_ckpt"].parent.parent), str(img / "full.png")],
            ["not a readable reglab checkpoint"],
            absent=[str(p["marker"])],
            what="hostile pickle named best.safetensors",
        ),
        Case(
            "disk-full",
            ["train", "--resume", "{DISK}/run", "train.epochs=2", "--quiet"],
            ["No space left on device", "previous checkpoint is unchanged"],
            special="enospc",
            trains=True,
            what="disk full while saving",
        ),
        Case(
            "eval-linked-output",
            ["eval", str(p["linked"])],
            ["confusion_test.png is a symbolic link"],
            what="eval output that is a symlink to a file outside",
        ),
        Case(
            "best-not-a-file",
            ["eval", str(p["nobest"])],
            ["best.safetensors is a folder", "--checkpoint last"],
            what="best checkpoint replaced by a folder",
        ),
        Case(
            "ckpt-classes",
            ["predict", str(p["ckpt_two_classes"]), str(img / "full.png")],
            ["not a valid reglab checkpoint: meta.classes has 2 names for 10 classes"],
            what="checkpoint metadata: 2 class names for 10 outputs",
        ),
        Case(
            "ckpt-huge-model",
            ["predict", str(p["ckpt_huge_model"]), str(img / "full.png")],
            ["not a valid reglab checkpoint: meta.model.channels"],
            what="checkpoint metadata: channels [100000]*3",
        ),
        Case(
            "ckpt-nested",
            ["train", "--resume", str(p["ckpt_nested"])],
            ["not a valid reglab checkpoint: metadata is nested deeper than 64 levels"],
            what="checkpoint metadata: JSON nested 100000 deep",
        ),
        Case(
            "export-opset",
            ["export", r, "--opset", "999", "-o", str(out / "m.onnx")],
            ["--opset 999 is not an ONNX opset"],
            absent=[str(out / "m.onnx")],
            what="export --opset 999",
        ),
        Case(
            "export-opset-zero",
            ["export", r, "--opset", "0", "-o", str(out / "m.onnx")],
            ["--opset 0 is not an ONNX opset"],
            absent=[str(out / "m.onnx")],
            what="export --opset 0",
        ),
        # -- sweeps -------------------------------------------------------------------------------------
        Case(
            "sweep-resume-overrides",
            ["sweep", str(p["sweep_dir"] / "sweep.yaml"), "train.epochs=3"],
            ["was started with other command-line overrides: train.epochs=3 (saved: 2)", "-o DIR"],
            what="sweep resumed with other command-line overrides",
        ),
        Case(
            "sweep-searched-key",
            ["sweep", str(p["sweep_yaml"]), "-o", str(out / "sw1"), "optim.lr=0.1"],
            ["optim.lr: searched by", "drop it from the command line"],
            absent=[str(out / "sw1")],
            what="sweep: command-line value for a searched key",
        ),
        Case(
            "sweep-searched-under",
            ["sweep", str(p["sweep_yaml"]), "-o", str(out / "sw2"), "model.channels.0=16"],
            ["model.channels.0 (overlaps the searched model.channels)", "drop it from the command line"],
            absent=[str(out / "sw2")],
            what="sweep: command-line value for a key under a searched one",
        ),
        Case(
            "sweep-cli-overrides",
            ["sweep", str(p["sweep_cli_yaml"]), "-o", str(out / "sw3"), "train.epochs=2"],
            ["cli_overrides is written by reglab sweep", "not set by hand"],
            absent=[str(out / "sw3")],
            what="sweep file that sets cli_overrides (reglab's record)",
        ),
        Case(
            "sweep-saved-elsewhere",
            ["sweep", str(p["sweep_dir"] / "sweep.yaml"), "-o", str(out / "sw4"), "train.epochs=2"],
            ["records the command-line overrides (cli_overrides) of the sweep in", "resume that sweep with -o"],
            absent=[str(out / "sw4")],
            what="a sweep directory's sweep.yaml run into another directory",
        ),
        # -- predict ------------------------------------------------------------------------------------
        Case(
            "top-k",
            ["predict", r, str(img / "full.png"), "--top-k", "0"],
            ["--top-k must be >= 1"],
            what="predict --top-k 0",
        ),
        pr("img-missing", "missing.png", ["file not found; check the path"], "image file missing"),
        pr("img-truncated", "truncated.png", ["truncated"], "truncated image"),
        pr("img-empty", "empty.jpg", ["not an image file", "empty"], "empty image file"),
        pr("img-text", "notes.png", ["not an image file"], "text file named .png"),
        pr("img-huge", "bomb.png", ["too large", "900000000 pixels"], "huge image (30000 x 30000 header)"),
        pr("img-dir", "folder.png", ["is a directory"], "a directory"),
        pr("img-fifo", "pipe.png", ["is a FIFO, not an image file"], "a FIFO (would block forever)"),
        pr("img-ioerror", "ioerror.png", ["cannot read the file", "Input/output error"], "unreadable (I/O error)"),
        *([pr("img-locked", "locked.png", locked_words, "unreadable (no permission)")] if locked_words else []),
    ]


GOOD_IMAGES = ["gray.png", "rgba.png", "gray16.png", "large.jpg"]

# ----------------------------------------------------------------------------------------------------------
# The driver: one interpreter, each case with its own stdout/stderr files


DRIVER = r"""
import hashlib, json, os, shutil, subprocess, sys, traceback, warnings
warnings.simplefilter("always")
from pathlib import Path
import reglab.cli

spec = json.loads(Path(sys.argv[1]).read_text())
protect = [Path(p) for p in spec["protect"]]

def digests():
    out = {}
    for root in protect:
        for p in sorted(root.rglob("*")):
            if p.name == ".reglab.lock":  # the run-directory lock: holds the pid of the last process that locked it
                continue
            if p.is_file() and not p.is_symlink() and os.access(p, os.R_OK) and p.stat().st_mode & 0o444:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

def disk_full(case, workdir):
    # A tmpfs with just enough room for the run's small files, not for a new checkpoint.
    disk = workdir / "disk"
    disk.mkdir()
    real = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode == 0
    shutil.copytree(spec["run"], disk / "run")
    if real:
        free = lambda: shutil.disk_usage(disk).free
        with open(disk / "filler", "wb") as fh:
            while free() > 40_000:
                fh.write(b"\0" * min(4096, free() - 40_000))
                fh.flush()
    else:
        import reglab.train.checkpoint as ck
        def full(fd, data):
            os.write(fd, data[:100])
            os.close(fd)
            raise OSError(28, "No space left on device")
        ck.write_file = full
    before = {p.name: p.read_bytes() for p in (disk / "run" / "checkpoints").iterdir()}
    return disk, real, before

results = []
for case in spec["cases"]:
    workdir = Path(spec["tmp"]) / ("case-" + case["id"])
    workdir.mkdir(parents=True)
    extra = {}
    argv = case["argv"]
    if case["special"] == "enospc":
        disk, real, before = disk_full(case, workdir)
        argv = [a.replace("{DISK}", str(disk)) for a in argv]
    start = digests()
    saved = os.dup(1), os.dup(2)
    out = os.open(workdir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(workdir / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(out, 1); os.dup2(err, 2)
    try:
        code = reglab.cli.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = "exception"
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    for fd in (out, err, *saved):
        os.close(fd)
    end = digests()
    changed = sorted(k for k in start if end.get(k) != start[k])
    if case["special"] == "enospc":
        ck = disk / "run" / "checkpoints"
        now = {p.name: p.read_bytes() for p in ck.iterdir()}
        extra = {"real_disk_full": real, "checkpoints_intact": now == before,
                 "leftovers": sorted(p.name for p in ck.iterdir() if p.name.startswith("."))}
        import reglab.train.checkpoint as ckmod
        extra["last_epoch"] = ckmod.load_checkpoint(ck / "last.safetensors")["epoch"]
        if real:
            subprocess.run(["umount", str(disk)])
    results.append({"id": case["id"], "code": code, "stdout": (workdir / "stdout").read_text(),
                    "stderr": (workdir / "stderr").read_text(), "changed": changed, **extra})
Path(sys.argv[2]).write_text(json.dumps(results))
"""


def run_driver(world: dict[str, Path], all_cases: list[Case], extra_argvs: list[list[str]] = ()) -> dict:
    tmp = world["root"] / "driver"
    tmp.mkdir(exist_ok=True)
    spec = {
        "cases": [c.__dict__ for c in all_cases]
        + [{"id": f"good{i}", "argv": a, "special": ""} for i, a in enumerate(extra_argvs)],
        "protect": [
            str(world["run"]),
            *(
                str(world["root"] / d)
                for d in (
                    "data_trunc",
                    "data_shape",
                    "data_sums",
                    "data_evil",
                    "orphan",
                    "outside",
                    "linked",
                    "nobest",
                    "ckpt_two_classes",
                    "ckpt_huge_model",
                    "ckpt_nested",
                    "sweep_dir",
                )
            ),
        ],
        "run": str(world["run"]),
        "tmp": str(tmp / "work"),
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGLAB_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", COLUMNS="200")
    cmd = [sys.executable, "-c", DRIVER, str(tmp / "spec.json"), str(tmp / "results.json")]
    if USERNS:
        cmd = ["unshare", "-rm", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r["id"]: r for r in json.loads((tmp / "results.json").read_text())}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def results(world):
    good = [["predict", str(world["run"]), *(str(world["img"] / f) for f in GOOD_IMAGES)]]
    return run_driver(world, cases(world), good)


def _case_ids():
    # The ids are fixed; the paths inside the cases are only known once the world exists.
    probe = {
        k: Path("/x")
        for k in (
            "root",
            "run",
            "img",
            "marker",
            "evil_ckpt",
            "evil_pt",
            "broken_yaml",
            "typo_yaml",
            "list_yaml",
            "latin1_yaml",
            "dup_yaml",
            "linked",
            "nobest",
            "ckpt_two_classes",
            "ckpt_huge_model",
            "ckpt_nested",
            "sweep_yaml",
            "sweep_cli_yaml",
            "sweep_dir",
        )
    }
    return [c.id for c in cases(probe)]


@pytest.mark.parametrize("case_id", _case_ids())
def test_bad_input(world, results, case_id):
    case = {c.id: c for c in cases(world)}[case_id]
    res = results[case_id]
    assert res["code"] == case.code, res
    err = res["stderr"]
    assert "Traceback" not in err and "Traceback" not in res["stdout"], err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if case.trains:  # the progress display of the epoch that ran, then the error
        lines = [ln for ln in lines if not re.match(r"(reglab: \S+ \| |epoch |reglab: note: )", ln)]
    assert len(lines) == 1, err
    line = lines[0]
    if case.code == 2:
        assert line.startswith("reglab: error: "), line
    for w in case.words:
        assert w in line, (w, line)
    assert res["changed"] == [], res["changed"]  # a trained run and the datasets: nothing lost or altered
    for path in case.absent:
        assert not Path(path).exists(), path
    if case.special == "enospc":
        assert res["checkpoints_intact"] and res["leftovers"] == [] and res["last_epoch"] == 1, res


def test_disk_full_was_real_where_possible(results):
    """With user namespaces available (as on the team's machines) the disk-full case hit a real ENOSPC."""
    if not USERNS:
        pytest.skip("no user namespaces: the disk-full case used a simulated ENOSPC")
    assert results["disk-full"]["real_disk_full"], results["disk-full"]


def test_grayscale_rgba_16bit_and_large_images_are_predicted(world, results):
    res = results["good0"]
    assert res["code"] == 0 and res["stderr"] == "", res
    lines = res["stdout"].splitlines()
    assert [ln.split(": ")[0] for ln in lines] == [str(world["img"] / f) for f in GOOD_IMAGES]
    assert all("class" in ln and "%" in ln for ln in lines), lines


def markdown_table(world: dict[str, Path], results: dict) -> str:
    rows = ["| input | command | exit | message |", "|---|---|---|---|"]
    root = str(world["root"])
    for c in cases(world):
        res = results[c.id]
        msg = [ln for ln in res["stderr"].splitlines() if ln.strip()][-1].replace(root, "…")
        out = f"run.dir={world['root'] / 'out'}"
        cmd = " ".join(a for a in c.argv if a not in SYN and not a.startswith(out)).replace(root, "…")
        cmd = cmd.replace("{DISK}", "…").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        msg = msg.replace("|", "\\|")
        rows.append(f"| {c.what or c.id} | `reglab {cmd}` | {res['code']} | {msg} |")
    return "\n".join(rows)


if __name__ == "__main__":  # print the table for docs/reliability.md
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="reglab-bad-"))
    w = make_world(root)
    print(markdown_table(w, run_driver(w, cases(w))))
