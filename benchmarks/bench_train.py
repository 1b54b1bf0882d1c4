"""Training speed: iterations/s, patches/s and data-wait share, per model and per objective.

Part 1, the supervised objective, for each model, on the chosen device, with 64×64 patches and
batch 54 (seed 000), prints side by side:

- **ours**: :func:`napari_pclesr.train.iter_train` on the sample phantom data (normalised,
  FoV patches precomputed, random flips/rotations, loss ``ssim+l1``, Adam, AMP on CUDA), timed
  between its per-iteration progress events after warm-up iterations;
- **bare loop**: the reference, a plain PyTorch loop on random tensors that already sit on the
  device (same network, loss, optimiser and precision), i.e. the speed with no data pipeline
  at all.

The ratio ours / bare shows what the pipeline costs; the data-wait share is the part of our
step time spent fetching batches (indexing, augmentation and, for host-resident patches, the
copy to the GPU).

Part 2, the adversarial objectives (``--objectives``, SRGAN generator by default, batch 54,
64×64): iterations/s of our loop (``adversarial``: content loss + GAN; ``cycle``: seed 001 with
the natural-image target domain) next to a bare loop that does the same generator and
discriminator updates on device-resident random tensors, and the Voronoi vectorisation's share
of a cycle step: the time of ``pool_slots`` and l_Vec (forward and backward) on a batch of 54
real slot maps, over the time of a whole step. Target: under 10 %.

Run ``python benchmarks/bench_train.py`` (CPU: 1 timed iteration per model, which takes minutes
for EDSR, DenseNet-SR and SRGAN; models over 5 M parameters are skipped unless named with
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
from _timing import median_seconds, print_table

from napari_pclesr import losses, models
from napari_pclesr.data.patches import PairedSequences, patch_corners
from napari_pclesr.devices import autocast_dtype, select_device
from napari_pclesr.simulate import VoronoiPooling, pool_slots
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
    parser.add_argument(
        "--objectives",
        nargs="*",
        default=["supervised", "adversarial", "cycle"],
        help="which parts to run (supervised: the per-model table)",
    )
    parser.add_argument("--gan-model", default="srgan", help="generator of the GAN objectives")
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
    if "supervised" in args.objectives:
        supervised_table(args, names, sizes, device, timed, warmup, data)
    gan = [name for name in args.objectives if name != "supervised"]
    if gan:
        objectives_table(args, gan, device, timed, warmup, data)


def supervised_table(args, names, sizes, device, timed, warmup, data) -> None:
    """Part 1: the supervised loop and a bare loop, per model."""
    on_cpu = device.type == "cpu"
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


def objectives_table(args, objectives, device, timed, warmup, data) -> None:
    """Part 2: the GAN objectives' loop, a bare GAN loop, and the Voronoi share of a step."""
    rows = []
    pooling_s = voronoi_seconds(data, device)
    for objective in objectives:
        ours, wait = pipeline_rate(
            args.gan_model, device, args.loss, timed, warmup, data, objective=objective
        )
        bare = bare_gan_rate(args.gan_model, device, args.loss, timed, warmup, objective)
        share = 100 * pooling_s * ours if objective == "cycle" else float("nan")
        rows.append(
            (objective, args.gan_model, ours, ours * BATCH, bare, ours / bare, 100 * wait, share)
        )
        print(f"{objective}: ours {ours:.3g} it/s, bare {bare:.3g} it/s, Voronoi {share:.2g}%")
    print(
        f"Voronoi vectorisation (pool_slots + l_Vec, forward + backward): {1e3 * pooling_s:.3g} ms"
    )
    print_table(
        f"GAN objectives on {device} (batch {BATCH}, {PATCH}x{PATCH}; Voronoi target < 10 %)",
        (
            "objective",
            "generator",
            "ours it/s",
            "ours patches/s",
            "bare it/s",
            "ours/bare",
            "data wait %",
            "Voronoi % of step",
        ),
        rows,
    )


def voronoi_seconds(data, device, repeats: int = 20) -> float:
    """Seconds of the Voronoi vectorisation of one batch (forward and backward) on real slots."""
    layout = data.fibre_layout(0)
    pooling = VoronoiPooling(layout)
    corners = patch_corners(data.fov_mask(0), PATCH)
    chosen = corners[torch.arange(BATCH) % len(corners)]
    slots = torch.from_numpy(pooling.slot_maps(chosen, PATCH).astype("int64")).to(device)
    k = pooling.max_fibres_per_patch(PATCH)
    target = torch.rand(BATCH, k, device=device)
    sr = torch.rand(BATCH, 1, PATCH, PATCH, device=device, requires_grad=True)

    def vectorise():
        means, valid = pool_slots(sr, slots, k)
        losses.fibre_vector_loss(target, means, valid).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return median_seconds(vectorise, repeats=repeats, warmup=3)


def pipeline_rate(
    name, device, loss, timed, warmup, data, objective="supervised"
) -> tuple[float, float]:
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
        objective=objective,
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

    return steps_per_second(step, timed, warmup)


def bare_gan_rate(name, device, loss, timed, warmup, objective) -> float:
    """Iterations/s of a plain GAN loop on device-resident random batches: one D update on
    real and fake patches, then a generator update with the content (adversarial) or l_Reg
    (cycle, standing in for l_Vec + l_Reg) loss plus the adversarial term."""
    torch.manual_seed(0)
    generator = models.create(name).to(device)
    discriminator = models.create_discriminator().to(device)
    criterion = losses.create(loss).to(device)
    optimisers = [torch.optim.Adam(n.parameters(), lr=1e-4) for n in (generator, discriminator)]
    dtype = autocast_dtype(device)
    scalers = [torch.amp.GradScaler(device.type, enabled=dtype == torch.float16) for _ in "gd"]
    lr = torch.rand(BATCH, 1, PATCH, PATCH, device=device)
    real = torch.rand(BATCH, 1, PATCH, PATCH, device=device)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()

    def update(value, index):
        optimisers[index].zero_grad(set_to_none=True)
        scalers[index].scale(value).backward()
        scalers[index].step(optimisers[index])
        scalers[index].update()

    def step():
        with autocast():
            fake = generator(lr).float()
            logits = discriminator(torch.cat([real, fake.detach()])).float()
        update(losses.discriminator_loss(logits[:BATCH], logits[BATCH:]), 1)
        discriminator.requires_grad_(False)
        with autocast():
            adversarial = losses.generator_adversarial_loss(discriminator(fake).float())
        discriminator.requires_grad_(True)
        if objective == "cycle":
            content = losses.row_column_loss(fake, lr)
        else:
            content = criterion(fake, real)
        update(content + 1e-3 * adversarial, 0)
        return adversarial.item()

    return steps_per_second(step, timed, warmup)


def steps_per_second(step, timed: int, warmup: int) -> float:
    """Calls of ``step`` per second over ``timed`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(timed):
        step()
    return timed / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
