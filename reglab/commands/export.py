"""``reglab export RUN_DIR_OR_CHECKPOINT --format onnx|torchscript``: see :mod:`reglab.track.export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_export(args) -> int:
    from ..track.export import export

    info = export(
        Path(args.target),
        fmt=args.format,
        out=Path(args.output) if args.output else None,
        checkpoint=args.checkpoint,
        tta=args.tta,
        opset=args.opset,
    )
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    check = info["check"]
    print(
        f"wrote {info['path']} ({info['format']}: float32 RGB images in [0, 1], N x 3 x 32 x 32 -> logits "
        f"N x {info['num_classes']}; normalization inside{', flip TTA' if info['tta'] else ''})"
    )
    print(
        f"checked with {check['runtime']} on {check['images']} images: logits within "
        f"{check['max_abs_logit_diff']:.2g} of PyTorch's"
    )
    print(f"metadata: {info['metadata_file']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained model to ONNX or TorchScript (normalization inside)",
        description="Export the model of a run (or checkpoint) for inference elsewhere. The "
        "exported model takes float32 RGB images in [0, 1], N x 3 x 32 x 32, and "
        "returns logits; metadata (classes, mean, std, layout) goes to FILE.json.",
    )
    p.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="file to write (default: RUN_DIR/export/model.onnx or model.torchscript.pt)",
    )
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint of a run dir")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the logits of the image and its mirror (default: as the run was trained)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.set_defaults(func=cmd_export)
