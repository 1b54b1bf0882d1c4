"""``pclesr train``: train a super-resolution network (supervised, SRGAN or the unsupervised
cycle GAN), with a progress bar."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a super-resolution network (checkpoints best.pt and last.pt)",
        description=(
            "Train a network on (HR, LR) pairs: the 'sample' phantom sequences, or a folder "
            "with hr/ and optionally lr/ sub-folders of TIFF stacks (one per sequence; without "
            "lr/ the LR is simulated). --objective adversarial trains SRGAN (content loss plus "
            "an adversarial term); --objective cycle trains seed 001's unsupervised GAN, which "
            "needs no HR: give real recordings with --lr-data and their fibre layout with "
            "--layout (auto by default). Writes OUT/best.pt and OUT/last.pt; a folder that "
            "holds another run is refused unless --overwrite is given. Ctrl-C or SIGTERM stops "
            "after the current iteration, saves last.pt and exits with status 3; --resume "
            "OUT/last.pt continues. Under torchrun it trains with DistributedDataParallel."
        ),
    )
    parser.add_argument(
        "--objective",
        choices=("supervised", "adversarial", "cycle"),
        default="supervised",
        help="what to train (default supervised)",
    )
    parser.add_argument("--model", default="edsr", help="network name (default edsr)")
    parser.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="network hyper-parameter, repeatable (e.g. --hparam blocks=8)",
    )
    parser.add_argument("--loss", default="ssim+l1", help="l1, mse, ssim or ssim+l1 (default)")
    parser.add_argument(
        "--data",
        default="sample",
        help="'sample' (phantoms), 'mixed' (phantoms and natural images through several bundles "
        "and noise levels: the shipped models' data) or a folder (default sample)",
    )
    parser.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of the sample or mixed data, repeatable (e.g. --data-option "
        "n_sequences=192 --data-option blurred_share=0.1)",
    )
    parser.add_argument(
        "--min-inside",
        type=float,
        default=0.3,
        help="train on patches with at least this share of pixels inside the field of view; "
        "the pixels outside do not count in the loss (default 0.3; 1: no rim patches)",
    )
    parser.add_argument(
        "--layout",
        default=None,
        help="fibre layout: a file (.csv/.npy/.npz; for simulated LR too), and for cycle also "
        "a raw bundle frame (cores detected) or 'auto' (pitch measured from the recording; the "
        "default for --lr-data)",
    )
    parser.add_argument("--iters", type=int, default=1000, help="total iterations (default 1000)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    parser.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from these weights (a checkpoint or pretrained:NAME): fine-tuning with a "
        "fresh optimiser and schedule",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its best.pt and last.pt are removed)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=54, help="patches per step (54)")
    parser.add_argument("--patch-size", type=int, default=64, help="LR patch side (64)")
    parser.add_argument("--scale", type=int, default=1, help="upscaling factor (1)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    parser.add_argument(
        "--schedule", choices=("none", "cosine", "step"), default="none", help="lr schedule"
    )
    parser.add_argument("--val-every", type=int, default=500, help="validation period (500)")
    parser.add_argument("--log-every", type=int, default=10, help="report period (10)")
    parser.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--no-augment", action="store_true", help="no flips or rotations")
    parser.add_argument(
        "--fresh-noise", action="store_true", help="new simulated noise at every epoch"
    )
    parser.add_argument("--sigma-mult", type=float, default=0.05, help="simulation sigma_mult")
    parser.add_argument("--sigma-add", type=float, default=0.01, help="simulation sigma_add")
    gan = parser.add_argument_group("adversarial and cycle objectives")
    gan.add_argument(
        "--disc-hparam",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="discriminator hyper-parameter, repeatable (features, dense, pool, spectral_norm)",
    )
    gan.add_argument("--d-lr", type=float, default=None, help="discriminator lr (default --lr)")
    gan.add_argument("--d-steps", type=int, default=1, help="D updates per G update (1)")
    gan.add_argument("--gan-loss", choices=("bce", "ragan"), default="bce", help="GAN loss")
    gan.add_argument(
        "--adv-weight", type=float, default=None, help="adversarial weight (1e-3 / cycle 1)"
    )
    gan.add_argument(
        "--pretrain-iters", type=int, default=0, help="generator-only iterations first (0)"
    )
    gan.add_argument(
        "--instance-noise",
        type=float,
        default=None,
        help="initial std of the noise on D's inputs (cycle 0.1, adversarial 0)",
    )
    gan.add_argument(
        "--noise-anneal", type=int, default=None, help="iterations to anneal it to 0 (all)"
    )
    gan.add_argument(
        "--label-smoothing", type=float, default=0.0, help="one-sided: real label 1 - this"
    )
    cycle = parser.add_argument_group("cycle objective (seed 001)")
    cycle.add_argument(
        "--lr-data",
        default=None,
        help="LR recording(s) without HR: .mkt, video, TIFF stack, or a folder of them",
    )
    cycle.add_argument(
        "--target-domain",
        choices=("natural", "unpaired", "paired", "rescaled"),
        default="natural",
        help="the discriminator's real patches (default natural)",
    )
    cycle.add_argument(
        "--target-data", default=None, help="folder of natural images or of HR-hat stacks"
    )
    cycle.add_argument("--fibres", type=int, default=None, help="fibres in the FoV for auto")
    cycle.add_argument("--frame-step", type=int, default=1, help="use every N-th LR frame (1)")
    cycle.add_argument("--vec-weight", type=float, default=1.0, help="weight of l_Vec (1)")
    cycle.add_argument("--reg-weight", type=float, default=1.0, help="weight of l_Reg (1)")
    cycle.add_argument(
        "--vec-normalisation",
        choices=("lr", "separate"),
        default="lr",
        help="fibre vectors to [0, 1] with the LR's range (default) or each its own",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from napari_pclesr import pretrained
    from napari_pclesr.cli._common import EXIT_OK, EXIT_STOPPED, refuse_overwriting_inputs
    from napari_pclesr.train import TrainConfig, iter_train
    from napari_pclesr.train.events import (
        CheckpointSaved,
        IterationDone,
        TrainingFinished,
        TrainingPreparing,
        TrainingStarted,
        ValidationDone,
    )
    from napari_pclesr.train.paired_data import GENERATED_DATA

    config = TrainConfig(
        model=args.model,
        hparams=parse_hparams(args.hparam),
        scale=args.scale,
        loss=args.loss,
        iterations=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=None if args.schedule == "none" else args.schedule,
        val_every=args.val_every,
        log_every=args.log_every,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        amp=not args.no_amp,
        out_dir=str(args.out),
        resume=None if args.resume is None else str(args.resume),
        init_weights=args.init,
        overwrite=args.overwrite,
        patch_size=args.patch_size,
        augment_flips=not args.no_augment,
        augment_rot90=not args.no_augment,
        fresh_noise_per_epoch=args.fresh_noise,
        sigma_mult=args.sigma_mult,
        sigma_add=args.sigma_add,
        data=args.data,
        data_options=parse_hparams(args.data_option, "--data-option"),
        min_inside=args.min_inside,
        layout=args.layout,
        objective=args.objective,
        discriminator=parse_hparams(args.disc_hparam, "--disc-hparam"),
        d_lr=args.d_lr,
        d_steps=args.d_steps,
        gan_loss=args.gan_loss,
        adv_weight=args.adv_weight,
        pretrain_iterations=args.pretrain_iters,
        instance_noise=args.instance_noise,
        noise_anneal=args.noise_anneal,
        label_smoothing=args.label_smoothing,
        vec_weight=args.vec_weight,
        reg_weight=args.reg_weight,
        vec_normalisation=args.vec_normalisation,
        lr_data=args.lr_data,
        fibres=args.fibres,
        frame_step=args.frame_step,
        target_domain=args.target_domain,
        target_data=args.target_data,
    )
    data_folders = (
        [] if args.data in GENERATED_DATA else [Path(args.data) / "hr", Path(args.data) / "lr"]
    )
    layout = None if args.layout == "auto" else args.layout
    refuse_overwriting_inputs(
        [args.out / "best.pt", args.out / "last.pt"],
        [layout, args.lr_data, args.target_data, pretrained.resolve(args.init), *data_folders],
    )
    main_process = int(os.environ.get("RANK", "0")) == 0
    bar = ProgressBar(sys.stderr, enabled=main_process)
    stop = threading.Event()
    result = None
    with _stop_on_interrupt(stop, bar):
        for event in iter_train(config, stop_event=stop):
            if isinstance(event, TrainingPreparing):
                if event.detail:
                    bar.message(f"{event.stage}: {event.detail}")
            elif isinstance(event, TrainingStarted):
                bar.message(
                    f"training {event.model} ({event.n_parameters:,} parameters, objective "
                    f"{event.objective}) on {event.device} x{event.world_size}"
                    f"{', ' + event.amp_dtype if event.amp_dtype else ''}: "
                    f"{event.n_train_patches} training / {event.n_val_patches} validation "
                    f"patches, iterations {event.start_iteration} -> {event.iterations}; "
                    f"best.pt by {event.score}"
                )
            elif isinstance(event, IterationDone):
                bar.update(event)
            elif isinstance(event, ValidationDone):
                mark = " (best)" if event.is_best else ""
                scores = ", ".join(f"{name} {value:.4g}" for name, value in event.scores.items())
                bar.message(
                    f"iteration {event.iteration}: val loss {event.val_loss:.5f}, "
                    f"val SSIM {event.val_ssim:.4f}{mark} [{scores}]"
                )
            elif isinstance(event, CheckpointSaved) and event.kind == "last":
                bar.note(f"saved {event.path}")
            elif isinstance(event, TrainingFinished):
                result = event.result
    if main_process and result is not None:
        how = (
            "stopped on request"
            if result.stopped_by_request
            else ("stopped early" if result.stopped_early else "done")
        )
        best = (
            f"best val loss {result.best_val_loss:.5f} at iteration {result.best_iteration} "
            f"({result.best_checkpoint})"
            if result.best_checkpoint
            else "no validation yet"
        )
        print(
            f"{how}: {result.iterations} iterations in {result.elapsed_s:.1f} s, data wait "
            f"{100 * result.data_wait_share:.1f}% of step time; {best}; last: "
            f"{result.last_checkpoint}",
            file=sys.stderr,
        )
    return EXIT_STOPPED if result is not None and result.stopped_by_request else EXIT_OK


def parse_hparams(items: list[str], option: str = "--hparam") -> dict:
    """``["blocks=8", "res_scale=0.1"]`` -> ``{"blocks": 8, "res_scale": 0.1}`` (JSON values,
    else strings)."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} needs KEY=VALUE, got {item!r}.")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return values


# Short names of the logged terms on the progress bar.
_SHORT = {"d_loss": "D", "d_real_acc": "acc_real", "d_fake_acc": "acc_fake"}


class ProgressBar:
    """A one-line text progress bar, redrawn at most 10 times a second."""

    width = 30

    def __init__(self, stream, enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self._last_draw = 0.0
        self._line = ""

    def update(self, event) -> None:
        now = time.monotonic()
        final = event.iteration == event.iterations
        if not self.enabled or (now - self._last_draw < 0.1 and not final):
            return
        self._last_draw = now
        filled = round(self.width * event.iteration / event.iterations)
        memory = f" {event.memory_mb:.0f} MB" if event.memory_mb is not None else ""
        terms = "".join(
            f" {_SHORT.get(name, name)} {value:.3g}"
            for name, value in event.terms.items()
            if name not in ("loss", "g_loss")
        )
        self._line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {event.iteration}/{event.iterations} "
            f"loss {event.loss:.5f}{terms} lr {event.lr:.2g} {event.iterations_per_s:.2f} it/s "
            f"ETA {format_seconds(event.eta_s)}{memory}"
        )
        self.stream.write("\r" + self._line)
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line above the bar."""
        if not self.enabled:
            return
        self.stream.write("\r" + " " * len(self._line) + "\r" + text + "\n")
        if self._line:
            self.stream.write(self._line)
        self.stream.flush()

    def note(self, text: str) -> None:
        """Show ``text`` after the bar until the next redraw."""
        if self.enabled and self._line:
            self.stream.write(f"\r{self._line}  {text}")
            self.stream.flush()


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``"1h02m05s"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class _stop_on_interrupt:
    """First Ctrl-C or SIGTERM: stop after this iteration (saving last.pt); a second aborts."""

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: threading.Event, bar: ProgressBar):
        self.stop, self.bar = stop, bar
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handle) for number in self.signals}
        return self

    def _handle(self, signum, frame):
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.bar.message(f"{name}: stopping after this iteration (Ctrl-C again to abort)...")

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        if self.bar.enabled and self.bar._line:
            self.bar.stream.write("\n")
        return False
