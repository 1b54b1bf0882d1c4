"""Speed of the SR networks, side by side with plain reference implementations.

For each model at 576×576, ×1, batch 1 and batch 8, on the chosen device, prints the time per
frame, frames per second, GFLOP per frame and achieved GFLOP/s of our implementation and of an
independent plain-PyTorch reference of the same network, loaded with the SAME weights; the
outputs are checked to agree to float tolerance.

The references follow the public code the field uses, re-written for one channel (torchSR
cannot be imported without torchvision, which does not work with our torch wheel):

- FSRCNN as yjn870/FSRCNN-pytorch writes it (ConvTranspose2d last layer, NCHW);
- EDSR as sanghyun-son/EDSR-PyTorch writes it (fixed MeanShift 1×1 convs, tail conv with bias,
  ``res = body(x).mul(res_scale); res += x``, NCHW);
- DenseNet-SR by concatenation, the way the paper's Eq. (1) reads (NCHW).

Run ``python benchmarks/bench_models.py`` (the full run takes several minutes on a 2-core CPU),
``--quick`` for a smoke test, and ``--formulations`` for the FSRCNN last-layer study. On CUDA the
models also run under autocast (bf16, or fp16 on GPUs without bf16), timed with
``torch.cuda.synchronize()``, and the real-time target (>= 25 frames/s at 576²) is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from napari_pclesr import models
from napari_pclesr.devices import autocast_dtype, select_device
from napari_pclesr.models.fsrcnn import FORMULATIONS

DEFAULT_MODELS = ("fsrcnn", "edsr", "densenet_sr")
REAL_TIME_FPS = 25.0


# --- reference implementations -------------------------------------------------------------


class ReferenceFSRCNN(nn.Module):
    """FSRCNN as yjn870/FSRCNN-pytorch writes it (one channel, ConvTranspose2d, NCHW)."""

    def __init__(self, scale=1, features=56, shrink_features=12, mapping_layers=4):
        super().__init__()
        d, s = features, shrink_features
        self.first_part = nn.Sequential(nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d))
        mid = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(mapping_layers):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(
            d, 1, 9, stride=scale, padding=4, output_padding=scale - 1
        )

    def forward(self, x):
        return self.last_part(self.mid_part(self.first_part(x)))


class _ReferenceMeanShift(nn.Conv2d):
    """EDSR-PyTorch's MeanShift for one channel: a fixed 1×1 conv that adds sign·mean."""

    def __init__(self, mean, sign):
        super().__init__(1, 1, 1)
        self.weight.data.fill_(1.0)
        self.bias.data.fill_(sign * mean)
        for p in self.parameters():
            p.requires_grad = False


class _ReferenceResBlock(nn.Module):
    def __init__(self, features, res_scale):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x):
        res = self.body(x).mul(self.res_scale)
        res += x
        return res


class ReferenceEDSR(nn.Module):
    """EDSR as sanghyun-son/EDSR-PyTorch writes it, for one channel."""

    def __init__(self, scale=1, blocks=16, features=64, res_scale=1.0, mean=0.5):
        super().__init__()
        self.sub_mean = _ReferenceMeanShift(mean, -1)
        self.add_mean = _ReferenceMeanShift(mean, +1)
        self.head = nn.Sequential(nn.Conv2d(1, features, 3, padding=1))
        body = [_ReferenceResBlock(features, res_scale) for _ in range(blocks)]
        body.append(nn.Conv2d(features, features, 3, padding=1))
        self.body = nn.Sequential(*body)
        upsampler = []
        for _ in range(int(math.log2(scale))):
            upsampler += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        self.tail = nn.Sequential(nn.Sequential(*upsampler), nn.Conv2d(features, 1, 3, padding=1))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        res = self.body(x)
        res += x
        return self.add_mean(self.tail(res))

    def load_from(self, ours: models.EDSR) -> None:
        """Copy the weights of our EDSR (its learned mean goes into the fixed mean shifts)."""
        blocks = len(ours.body)
        mapping = {"head.": "head.0.", "body_tail.": f"body.{blocks}.", "upsampler.": "tail.0."}
        state = {}
        for key, value in ours.state_dict().items():
            if key == "mean":
                continue
            if key == "tail.weight":
                state["tail.1.weight"] = value
                continue
            new = key.replace(".conv1.", ".body.0.").replace(".conv2.", ".body.2.")
            for old_prefix, new_prefix in mapping.items():
                if new.startswith(old_prefix):
                    new = new_prefix + new[len(old_prefix) :]
            state[new] = value
        state["tail.1.bias"] = torch.zeros(1)
        mean = ours.mean.detach().reshape(1)
        state["sub_mean.weight"] = torch.ones(1, 1, 1, 1)
        state["sub_mean.bias"] = -mean
        state["add_mean.weight"] = torch.ones(1, 1, 1, 1)
        state["add_mean.bias"] = mean
        self.load_state_dict(state)


class _ReferenceDenseBlock(nn.Module):
    def __init__(self, in_channels, layers, growth):
        super().__init__()
        self.in_channels = in_channels
        self.layers = nn.ModuleList(
            nn.Conv2d(in_channels + i * growth, growth, 3, padding=1) for i in range(layers)
        )

    def forward(self, x):
        stack = x
        for conv in self.layers:
            stack = torch.cat([stack, F.relu(conv(stack))], dim=1)
        return stack[:, self.in_channels :]


class ReferenceDenseNetSR(nn.Module):
    """Izadi et al.'s DenseNet written plainly: concatenation, NCHW."""

    def __init__(self, scale=1, low_features=64, blocks=12, layers=8, growth=16):
        super().__init__()
        width = layers * growth
        self.low_level = nn.Sequential(
            nn.Conv2d(1, low_features, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(low_features, width, 3, padding=1),
            nn.ReLU(),
        )
        self.dense = nn.Sequential(
            *(_ReferenceDenseBlock(width, layers, growth) for _ in range(blocks))
        )
        upsampler = []
        for _ in range(int(math.log2(scale))):
            upsampler += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2)]
        self.upsampler = nn.Sequential(*upsampler)
        self.integration = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.integration(self.upsampler(self.dense(self.low_level(x)))))


REFERENCES = {
    "fsrcnn": ReferenceFSRCNN,
    "edsr": ReferenceEDSR,
    "edsr_large": ReferenceEDSR,
    "densenet_sr": ReferenceDenseNetSR,
}


def reference_for(model: nn.Module) -> nn.Module:
    """A reference implementation of ``model`` (built by ``models.create``), same weights."""
    reference = REFERENCES[model.arch](**model.hparams)
    if isinstance(reference, ReferenceEDSR):
        reference.load_from(model)
    else:
        reference.load_state_dict(model.state_dict())
    return reference


# --- measurement ---------------------------------------------------------------------------


def gflop_per_frame(model_name: str, hparams: dict, size: int) -> float:
    """GFLOP (2 per multiply-add) of one size×size frame, counted on the reference network
    on the meta device (no computation)."""
    with torch.device("meta"):
        network = REFERENCES[model_name](**hparams)
        frame = torch.empty(1, 1, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        network(frame)
    return counter.get_total_flops() / 1e9


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_models(networks, frames, device, dtype, repeats):
    """Time each network's ``network(frames)``, interleaved so that a change in the machine's
    load hits them alike.

    Returns, per network, the best and the median seconds per call and the last output.
    """
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    times = [[] for _ in networks]
    outputs = [None] * len(networks)
    with torch.inference_mode(), autocast:
        for network in networks:
            network(frames)  # warm-up (oneDNN/cuDNN kernel selection, allocator)
        _synchronize(device)
        for _ in range(repeats):
            for index, network in enumerate(networks):
                start = time.perf_counter()
                outputs[index] = network(frames)
                _synchronize(device)
                times[index].append(time.perf_counter() - start)
    return [
        (min(t), statistics.median(t), out.float()) for t, out in zip(times, outputs, strict=True)
    ]


def _tolerance(dtype, reference_output: torch.Tensor) -> float:
    # fp32 sums in another order differ by ~1e-6; reduced precision by its own rounding.
    # Relative to the output's magnitude, which random weights do not keep near 1.
    magnitude = max(1.0, reference_output.abs().max().item())
    return (1e-4 if dtype is None else 5e-2) * magnitude


def bench_model(name, size, batches, device, dtypes, repeats, generator, hparams=None):
    """Rows of the comparison table for one model; raises AssertionError on a mismatch."""
    model = models.create(name, **(hparams or {})).eval()
    reference = reference_for(model).eval()
    model.to(device)
    reference.to(device)
    gflop = gflop_per_frame(name, model.hparams, size)
    rows = []
    for batch in batches:
        frames = torch.rand(batch, 1, size, size, generator=generator).to(device)
        for dtype in dtypes:
            precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
            (ref_best, ref_median, ref_out), (best, median, out) = time_models(
                [reference, model], frames, device, dtype, repeats
            )
            difference = (out - ref_out).abs().max().item()
            assert difference <= _tolerance(dtype, ref_out), (
                f"{name}: our output differs from the reference by {difference:.3g}"
            )
            for impl, t_best, t_median in (
                ("reference", ref_best, ref_median),
                ("ours", best, median),
            ):
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        "precision": precision,
                        "impl": impl,
                        "ms_per_frame": 1e3 * t_best / batch,
                        "median_ms_per_frame": 1e3 * t_median / batch,
                        "fps": batch / t_best,
                        "gflop_per_frame": gflop,
                        "gflops": gflop * batch / t_best,
                        "speedup": ref_best / best if impl == "ours" else 1.0,
                        "max_abs_diff": difference,
                    }
                )
    return rows


def bench_formulations(size, batches, device, repeats, generator):
    """FSRCNN ×1: every last-layer formulation, channels-last and NCHW, against the reference."""
    model = models.create("fsrcnn").eval()
    reference = reference_for(model).eval().to(device)
    model.to(device)
    rows = []
    for batch in batches:
        frames = torch.rand(batch, 1, size, size, generator=generator).to(device)
        variants = {"reference (ConvTranspose2d, NCHW)": reference}
        for layout, memory_format in (
            ("channels_last", torch.channels_last),
            ("NCHW", torch.contiguous_format),
        ):
            for formulation in FORMULATIONS:
                variant = copy.deepcopy(model).to(memory_format=memory_format)
                variant.formulation = formulation
                variants[f"{formulation}, {layout}"] = variant
        timings = time_models(list(variants.values()), frames, device, None, repeats)
        ref_out = timings[0][2]
        for label, (best, _, out) in zip(variants, timings, strict=True):
            difference = (out - ref_out).abs().max().item()
            assert difference <= _tolerance(None, ref_out), (label, difference)
            rows.append((label, batch, best, difference))
    return rows


# --- command line --------------------------------------------------------------------------


def _print_table(rows, device):
    header = (
        f"{'model':<12} {'batch':>5} {'prec':>5} {'impl':<10} {'ms/frame':>9} {'median':>9} "
        f"{'frames/s':>9} {'GFLOP/fr':>9} {'GFLOP/s':>8} {'speedup':>8} {'max|diff|':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:<12} {row['batch']:>5} {row['precision']:>5} {row['impl']:<10} "
            f"{row['ms_per_frame']:>9.1f} {row['median_ms_per_frame']:>9.1f} {row['fps']:>9.2f} "
            f"{row['gflop_per_frame']:>9.2f} {row['gflops']:>8.1f} "
            f"{row['speedup']:>7.2f}x {row['max_abs_diff']:>9.1e}"
        )
    if device.type == "cuda":
        for row in rows:
            if row["impl"] == "ours" and row["precision"] != "fp32":
                verdict = "yes" if row["fps"] >= REAL_TIME_FPS else "NO"
                print(
                    f"real time (>= {REAL_TIME_FPS:g} frames/s): {row['model']} batch "
                    f"{row['batch']} {row['precision']}: {verdict}"
                )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--size", type=int, default=576, help="frame side in pixels (576)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--no-amp", action="store_true", help="on CUDA, time fp32 only (no autocast rows)"
    )
    parser.add_argument(
        "--formulations", action="store_true", help="also time FSRCNN's last-layer formulations"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 48×48 frames, batches 1 and 2, one repeat, small DenseNet and EDSR",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size, batches, repeats = args.size, args.batches, args.repeats
    small = {}
    if args.quick:
        size, batches, repeats = 48, [1, 2], 1
        small = {"edsr": {"blocks": 2}, "densenet_sr": {"blocks": 2}, "edsr_large": {"blocks": 1}}
    dtypes = [None]
    amp = autocast_dtype(device)
    if amp is not None and not args.no_amp:
        dtypes.append(amp)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{size}×{size} frames, ×1, best of {repeats} timed runs after a warm-up"
    )
    generator = torch.Generator().manual_seed(0)
    rows = []
    for name in args.models:
        rows += bench_model(
            name, size, batches, device, dtypes, repeats, generator, small.get(name)
        )
    _print_table(rows, device)
    if args.formulations:
        print("\nFSRCNN ×1 last layer (whole network timed), ms per frame:")
        for label, batch, seconds, difference in bench_formulations(
            size, batches, device, repeats, generator
        ):
            print(
                f"  batch {batch}: {label:<36} {1e3 * seconds / batch:>8.1f} ms  "
                f"max|diff| {difference:.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
