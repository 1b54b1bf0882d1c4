"""``pclesr models``: list the pretrained networks shipped in the package, the registered
networks with their parameter counts, and the baselines with their parameters."""

from __future__ import annotations

import argparse
import json

SCALES = (1, 2, 4, 8)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the pretrained networks, the SR networks and the baselines",
        description=(
            "List the pretrained networks shipped in the package, the registered SR networks "
            "with their parameter counts at scales 1, 2, 4 and 8 and their default "
            "hyper-parameters, and the non-learned baselines with their default parameters."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def model_table() -> list[dict]:
    """One entry per registered network: name, summary, defaults and parameter counts."""
    import torch

    from napari_pclesr import models

    rows = []
    for name in models.available():
        counts = {}
        for scale in SCALES:
            # On the meta device no memory is allocated, so even the large EDSR is instant.
            with torch.device("meta"):
                counts[scale] = models.count_parameters(models.create(name, scale=scale))
        spec = models.spec(name)
        rows.append(
            {
                "name": name,
                "summary": spec.summary,
                "hparams": models.default_hparams(name),
                "parameters": counts,
            }
        )
    return rows


def baseline_table() -> list[dict]:
    """One entry per baseline: name and default parameters."""
    from napari_pclesr import baselines

    return [{"name": n, "params": baselines.default_params(n)} for n in baselines.available()]


def pretrained_table() -> list[dict]:
    """One entry per pretrained network shipped in the package (:func:`pretrained.describe`)."""
    from napari_pclesr import pretrained

    return [pretrained.describe(name) for name in pretrained.available()]


def run(args: argparse.Namespace) -> int:
    networks, others, shipped = model_table(), baseline_table(), pretrained_table()
    if args.json:
        print(
            json.dumps({"models": networks, "pretrained": shipped, "baselines": others}, indent=2)
        )
        return 0
    print(
        "Pretrained networks (use the name wherever a checkpoint is accepted; cards in "
        "docs/models.md):"
    )
    for row in shipped:
        hparams = ", ".join(f"{k}={v}" for k, v in row["hparams"].items()) or "defaults"
        print(
            f"  {row['name']:<22}{row['model']} ×{row['scale']} ({hparams}); "
            f"{row['iterations']:,} iterations on {row['data']} data, {row['loss']} loss; "
            f"{row['megabytes']} MB"
        )
    if not shipped:
        print("  (none installed)")
    print()
    print("SR networks (1-channel input; trainable parameters at each scale):")
    header = f"  {'name':<13}" + "".join(f"{'×' + str(s):>13}" for s in SCALES) + "  description"
    print(header)
    for row in networks:
        counts = "".join(f"{row['parameters'][s]:>13,}" for s in SCALES)
        print(f"  {row['name']:<13}{counts}  {row['summary']}")
        defaults = ", ".join(f"{k}={v}" for k, v in row["hparams"].items())
        print(f"  {'':<13}defaults: {defaults}")
    print("\nBaselines (no trainable parameters; scales 1, 2, 4, 8):")
    for row in others:
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items()) or "-"
        print(f"  {row['name']:<16}{params}")
    return 0
