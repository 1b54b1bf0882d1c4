"""Put a trained checkpoint into the package as ``pretrained:NAME``.

    python scripts/ship_pretrained.py RUN/best.pt NAME

Keeps what inference and fine-tuning need (network, weights, normalisation, the training
config and history, the iteration); drops the optimiser, schedule and random states that only
a resumed run uses, and the machine's paths (``out_dir``, ``resume``). The result is written
with fresh SHA-256 digests to ``src/napari_pclesr/pretrained/NAME.pt``; the model card in
``docs/models.md`` says how the run was made and how it scores (``pclesr evaluate``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_pclesr.train.checkpoint import load_checkpoint, save_checkpoint

PACKAGE_FOLDER = Path(__file__).resolve().parents[1] / "src" / "napari_pclesr" / "pretrained"
KEPT = ("kind", "iteration", "model", "state_dict", "normalisation", "config", "history", "split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    shipped = {key: checkpoint[key] for key in KEPT if key in checkpoint}
    shipped["config"] = {**shipped["config"], "out_dir": None, "resume": None}
    path = save_checkpoint(shipped, PACKAGE_FOLDER / f"{args.name}.pt")
    print(f"{path}: {path.stat().st_size / 2**20:.2f} MB, iteration {shipped['iteration']}")


if __name__ == "__main__":
    main()
