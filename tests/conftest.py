"""Shared pytest fixtures."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parents[1]

# A test must never fail by chance: Hypothesis derives its examples from the test itself (the
# same examples on every run and machine) instead of drawing new ones and remembering failures.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.load_profile("deterministic")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The team's ``shared/`` folder beside the checkout; skips the test when it is absent."""
    path = Path(os.environ.get("PCLESR_SHARED", REPO_ROOT.parent / "shared"))
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path}")
    return path


@pytest.fixture(scope="session")
def raw_bundle_frames(shared_dir):
    """The real raw fibre-bundle camera frames: (object frame, flat-field background)."""
    tifffile = pytest.importorskip("tifffile")
    frames = []
    for name in ("tissue_paper.tif", "tissue_paper_back.tif"):
        path = shared_dir / "data" / name
        if not path.is_file():
            pytest.skip(f"{path} not found")
        frames.append(tifffile.imread(path))
    return tuple(frames)


@pytest.fixture(autouse=True)
def fixed_global_seeds():
    """Seed the global random generators before every test, so that code drawing from them
    (``torch.rand`` without a generator, weight initialisation) is the same whatever ran
    before."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - the legacy global state is what is being fixed
    torch = sys.modules.get("torch")
    if torch is not None:  # not imported yet: still at its fixed default seed
        torch.manual_seed(0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run torch on one thread in tests that use it: tiny tensors run fastest and steadiest so,
    and intra-op threads only compete with each other on a 2-core CI machine."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_fsrcnn(path, scale: int = 1) -> Path:
    """Save a checkpoint of a tiny random FSRCNN (d=8, s=4, m=1: receptive-field radius 7 at
    ×1) whose normalisation maps the 2nd and 98th percentiles to [0, 1], for inference tests."""
    import torch

    from napari_pclesr import models
    from napari_pclesr.data.patches import Normalisation
    from napari_pclesr.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    net = models.create("fsrcnn", scale=scale, features=8, shrink_features=4, mapping_layers=1)
    checkpoint = {
        "model": {"name": "fsrcnn", "hparams": net.hparams, "scale": scale},
        "state_dict": net.state_dict(),
        "normalisation": Normalisation(percentiles=(2.0, 98.0)).to_dict(),
        "config": {},
        "history": {},
        "iteration": 0,
    }
    return save_checkpoint(checkpoint, path)
