"""Training speed: iterations/s, patches/s and data-wait share, per model, at batch 54.

For each model, on the chosen device, with 64×64 patches and batch 54 (seed 000), prints side
by side:

- **ours**: :func:`napari_pclesr.train.iter_train` on the sample phantom data (normalised,
  FoV patches precomputed, random flips/rotations, loss ``ssim+l1``, Adam, AMP on CUDA), timed
  between its per-iteration progress events after warm-up iterations;
- **bare loop**: the reference, a plain PyTorch loop on random tensors that already sit on the
  device (same network, loss, optimiser and precision), i.e. the speed with no data pipeline
  at all.

The ratio ours / bare shows what the pipeline costs; the data-wait share is the part of our
step time spent fetching batches (indexing, augmentation and, for host-resident patches, the
copy to the GPU).

Run ``python benchmarks/bench_train.py`` (CPU: 1 timed iteration per model, which takes minutes
for EDSR and DenseNet-SR; models over 5 M parameters are skipped unless named with
``--models``); on a GPU it times 50 iterations per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table

from napari_pclesr import losses, models
from napari_pclesr.data.patches import PairedSequences
from napari_pclesr.devices import autocast_dtype, select_device
from napari_pclesr.train import IterationDone, TrainConfig, iter_train

BATCH = 54
PATCH = 64
# On a CPU, models above this many parameters take minutes per iteration at batch 54.
CPU_PARAMETER_LIMIT = 5_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="*", default=None, help="default: all (CPU: small)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per model")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first iterations")
    parser.add_argument("--loss", default="ssim+l1")
    args = parser.parse_args()
    device = select_device(args.device)
    on_cpu = device.type == "cpu"
    timed = args.iters or (1 if on_cpu else 50)
    warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 5)
    sizes = {name: models.count_parameters(models.create(name)) for name in models.available()}
    names = args.models or sorted(sizes, key=sizes.get)  # smallest first
    print(
        f"device {device}, batch {BATCH}, {PATCH}x{PATCH} patches, loss {args.loss}, "
        f"{timed} timed iterations after {warmup} warm-up, torch threads "
        f"{torch.get_num_threads()}, AMP dtype {autocast_dtype(device)}"
    )
    data = PairedSequences.sample(n_sequences=6, n_frames=12, shape=(320, 320))
    print(f"sample data: {data}, {data.count_patches(PATCH)} patches in all")
    rows = []
    for name in names:
        size = sizes[name]
        if on_cpu and args.models is None and size > CPU_PARAMETER_LIMIT:
            print(f"{name}: skipped on the CPU ({size:,} parameters); name it with --models")
            continue
        bare = bare_loop_rate(name, device, args.loss, timed, warmup)
        ours, wait = pipeline_rate(name, device, args.loss, timed, warmup, data)
        rows.append(
            (name, f"{size:,}", ours, ours * BATCH, bare, bare * BATCH, ours / bare, 100 * wait)
        )
        print(f"{name}: ours {ours:.3g} it/s, bare {bare:.3g} it/s, data wait {100 * wait:.2g}%")
    print_table(
        f"Training speed on {device} (batch {BATCH}, {PATCH}x{PATCH})",
        (
            "model",
            "parameters",
            "ours it/s",
            "ours patches/s",
            "bare it/s",
            "bare patches/s",
            "ours/bare",
            "data wait %",
        ),
        rows,
    )


def pipeline_rate(name, device, loss, timed, warmup, data) -> tuple[float, float]:
    """Iterations/s and data-wait share of the real training loop after ``warmup``."""
    config = TrainConfig(
        model=name,
        loss=loss,
        iterations=warmup + timed,
        batch_size=BATCH,
        patch_size=PATCH,
        val_every=10**9,  # validation runs only after the last iteration, outside the timing
        log_every=1,
        device=str(device),
    )
    stamps, shares = [], []
    for event in iter_train(config, data=data):
        if isinstance(event, IterationDone):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())
            shares.append(event.data_wait_share)
    elapsed = stamps[-1] - stamps[warmup - 1] if warmup else stamps[-1] - stamps[0]
    counted = timed if warmup else timed - 1
    return counted / elapsed, sum(shares[warmup:]) / len(shares[warmup:])


def bare_loop_rate(name, device, loss, timed, warmup) -> float:
    """Iterations/s of a plain loop on device-resident random batches."""
    torch.manual_seed(0)
    model = models.create(name).to(device)
    criterion = losses.create(loss).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    lr = torch.rand(BATCH, 1, PATCH, PATCH, device=device)
    hr = torch.rand(BATCH, 1, PATCH, PATCH, device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            prediction = model(lr)
        value = criterion(prediction.float(), hr)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()
        return value.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(timed):
        step()
    return timed / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
