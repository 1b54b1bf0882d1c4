"""DistributedDataParallel smoke test: torchrun with 2 CPU processes and the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    import numpy as np
    import torch
    from scipy import ndimage as ndi

    from napari_pclesr.data.patches import PairedSequences
    from napari_pclesr.train import TrainConfig, TrainingStarted, train

    torch.set_num_threads(1)
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    rng = np.random.default_rng(0)
    hr = [ndi.gaussian_filter(rng.random((2, 32, 32)), (0, 1.5, 1.5)) for _ in range(6)]
    data = PairedSequences(hr, [ndi.gaussian_filter(s, (0, 1.5, 1.5)) for s in hr])
    config = TrainConfig(
        model="fsrcnn",
        hparams={"features": 8, "shrink_features": 4, "mapping_layers": 1},
        loss="l1",
        iterations=6,
        batch_size=4,
        patch_size=16,
        val_every=3,
        log_every=1,
        device="cpu",
        out_dir=os.path.join(out, "run"),
    )
    started = []
    result = train(
        config,
        data=data,
        callback=lambda e: started.append(e) if isinstance(e, TrainingStarted) else None,
    )
    torch.save(result.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(
            {
                "world_size": started[0].world_size,
                "train_loss": result.history.train_loss,
                "val_loss": result.history.val_loss,
                "best": None if result.best_checkpoint is None else str(result.best_checkpoint),
            },
            handle,
        )
    """
)


@pytest.mark.slow
def test_two_cpu_processes_train_in_lockstep(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(script),
        str(tmp_path),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in reports] == [2, 2]
    # Losses are averaged over the processes, so both report the same curve.
    assert reports[0]["train_loss"] == reports[1]["train_loss"]
    assert reports[0]["val_loss"] == reports[1]["val_loss"]
    assert len(reports[0]["train_loss"]) == 6
    # Only rank 0 writes: exactly one best and one last checkpoint, nothing else.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt"]
    assert reports[1]["best"] is None and reports[0]["best"].endswith("best.pt")
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["iteration"] == 6
    assert len(checkpoint["resume"]["ranks"]) == 2  # each process's batch order is kept
    # DDP keeps the replicas identical.
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(value, weights[0][key]), key
