"""``pclesr demo``: the main job on generated data, end to end.

1. Simulate: unseen tissue phantoms through a bundle of 30,000 fibres no model has seen.
2. Apply the pretrained networks shipped in the package.
3. Fine-tune the pretrained FSRCNN briefly on phantom pairs (from scratch if none is installed).
4. Run the baselines (unsharp masking, Wiener, Richardson–Lucy, TV deconvolution).
5. Score everything against the HR (SSIM, PSNR, GCF, ΔGCF, Tot_cs, noise ratio, t-tests), write
   the table (CSV and Markdown), a labelled figure with zoomed insets and the checkpoints, and
   say plainly which method comes first by SSIM and by Tot_cs.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
import time
from pathlib import Path

import numpy as np

TEST_SEED_OFFSET = 1000  # the test phantoms' seeds lie far from the training sequences'
BASELINES = ("unsharp", "wiener", "richardson_lucy", "tv")
QUICK_BASELINES = ("unsharp", "wiener")
FINE_TUNED = "FSRCNN fine-tuned"
#: What the demo writes into its folder (besides the marker and the sr_*.tif files).
OUTPUTS = (
    "hr.tif",
    "lr.tif",
    "layout.csv",
    "scores.csv",
    "scores.md",
    "figure.png",
    "run",
)
#: Marks a folder written by the demo, whose outputs a later demo may replace.
MARKER = ".pclesr-demo"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on generated sample data",
        description=(
            "Simulate pCLE LR frames of unseen tissue phantoms, apply the pretrained networks, "
            "fine-tune one briefly, run the baselines, and score everything against the HR "
            "(table as CSV and Markdown, a labelled figure, the checkpoints)."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--view", action="store_true", help="open the results in napari")
    parser.add_argument("--size", type=int, default=None, help="test frame side (default 384)")
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms, layout and noise")
    parser.add_argument(
        "--iterations", type=int, default=None, help="fine-tuning iterations (default 100)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="patches per iteration")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--test-frames", type=int, default=None, help="test frames (default 4)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    config = training_config(args, settings)  # checks the settings before anything is done
    claim_folder(args.out)
    hr, lr, fov = simulate_test_sequence(settings, args.out)
    methods = _pretrained_methods()
    if methods:
        names = ", ".join(methods.values())
        _say(f"[2/5] pretrained networks: {names}")
    else:
        _say("[2/5] no pretrained network is installed; the demo trains FSRCNN from scratch")
    checkpoint = fine_tune(config, settings)
    methods[FINE_TUNED if methods else "FSRCNN"] = checkpoint
    methods.update({name: name for name in settings["baselines"]})
    results = super_resolve_all(lr, methods, fov, args.device)
    table = score_and_report(results, hr, lr, fov, args.out)
    verdict(table, learned=[name for name in methods if name not in settings["baselines"]])
    if args.view:
        view(args.out, hr, lr, results)
    return 0


def _settings(args) -> dict:
    quick = args.quick
    settings = {
        "size": args.size or (192 if quick else 384),
        "frames": args.test_frames or (2 if quick else 4),
        "iterations": args.iterations or (20 if quick else 100),
        "train_size": 128 if quick else 256,
        "train_sequences": 3 if quick else 8,
        "baselines": QUICK_BASELINES if quick else BASELINES,
        "seed": args.seed,
    }
    for key in ("size", "frames", "iterations"):
        if settings[key] < 1:
            raise ValueError(f"--{key.replace('frames', 'test-frames')} must be at least 1.")
    if settings["size"] < 64:
        raise ValueError(f"--size must be at least 64 pixels, got {settings['size']}.")
    return settings


def _pretrained_methods() -> dict[str, str]:
    """Table label → ``pretrained:NAME``, for the installed pretrained networks."""
    from napari_pclesr import pretrained

    return {f"{name} (pretrained)": f"{pretrained.PREFIX}{name}" for name in pretrained.available()}


def claim_folder(out: Path) -> None:
    """Create ``out`` for the demo, or refuse it if it holds files the demo did not write.

    A folder of an earlier demo (it holds the marker file) is reused: its outputs are replaced.
    """
    out.mkdir(parents=True, exist_ok=True)
    if (out / MARKER).is_file():
        return
    clashes = [name for name in OUTPUTS if (out / name).exists()]
    clashes += sorted(p.name for p in out.glob("sr_*.tif"))
    if clashes:
        raise FileExistsError(
            errno.EEXIST,
            f"{out} already holds {', '.join(clashes)}, which pclesr demo did not write and "
            "would replace; choose another --out folder.",
        )
    (out / MARKER).write_text("Written by pclesr demo; a later demo replaces its outputs.\n")


def simulate_test_sequence(settings: dict, out: Path):
    from napari_pclesr import FibreLayout, Simulator
    from napari_pclesr.data import phantom_sequence
    from napari_pclesr.fibre import fibre_count_for
    from napari_pclesr.io import write_image

    shape = (settings["size"], settings["size"])
    start = time.perf_counter()
    seed = settings["seed"] + TEST_SEED_OFFSET
    hr = phantom_sequence(settings["frames"], shape, seed=seed).frames
    layout = FibreLayout.synthetic(shape, fibre_count_for(shape), seed=seed)
    simulator = Simulator(layout)
    simulation = {"sigma_mult": 0.05, "sigma_add": 0.01, "seed": seed}  # seed 000's noise
    lr = simulator.simulate(hr, **simulation)
    hr = hr * simulator.fov_mask  # HR-hat exists only inside the field of view
    _say(
        f"[1/5] simulated {len(hr)} unseen test frames of {shape[0]}x{shape[1]} through "
        f"{layout.n_fibres:,} fibres in {time.perf_counter() - start:.1f} s"
    )
    for earlier in out.glob("sr_*.tif"):  # an earlier demo's, which may have had other methods
        earlier.unlink()
    layout.save(out / "layout.csv")
    write_image(out / "hr.tif", hr)
    write_image(out / "lr.tif", lr, layout="layout.csv", simulator=simulation)
    return hr, lr, simulator.fov_mask


def training_config(args, settings: dict):
    """The fine-tuning settings (``ValueError`` for a bad iteration count or batch size)."""
    from napari_pclesr import pretrained
    from napari_pclesr.train import TrainConfig

    start = "pretrained:fsrcnn" if "fsrcnn" in pretrained.available() else None
    iterations = settings["iterations"]
    return TrainConfig(
        model="fsrcnn",
        loss="ssim+l1",
        iterations=iterations,
        batch_size=args.batch_size,
        patch_size=48,
        lr=2e-4 if start else 1e-3,  # fine-tuning takes smaller steps than a fresh start
        schedule="cosine",
        val_every=max(1, iterations // 3),
        seed=settings["seed"],
        device=args.device,
        out_dir=str(args.out / "run"),
        init_weights=start,
        overwrite=True,  # the run of an earlier demo in this folder (claim_folder checks)
    )


def fine_tune(config, settings: dict) -> Path:
    from napari_pclesr.cli.train import ProgressBar
    from napari_pclesr.data import PairedSequences
    from napari_pclesr.train import IterationDone, ValidationDone, iter_train

    what = "fine-tuning pretrained FSRCNN" if config.init_weights else "training FSRCNN"
    _say(f"[3/5] {what} (SSIM+L1) for {config.iterations} iterations on phantom pairs")
    shape = (settings["train_size"], settings["train_size"])
    data = PairedSequences.sample(
        n_sequences=settings["train_sequences"], n_frames=4, shape=shape, seed=settings["seed"]
    )
    bar = ProgressBar(sys.stderr)
    for event in iter_train(config, data=data):
        if isinstance(event, IterationDone):
            bar.update(event)
        elif isinstance(event, ValidationDone):
            bar.message(f"      iteration {event.iteration}: validation SSIM {event.val_ssim:.4f}")
    sys.stderr.write("\n")
    checkpoint = Path(config.out_dir) / "best.pt"
    _say(f"      done -> {checkpoint}")
    return checkpoint


def super_resolve_all(lr: np.ndarray, methods: dict, fov: np.ndarray, device: str) -> dict:
    from napari_pclesr.infer import super_resolve

    results = {}
    start = time.perf_counter()
    for name, source in methods.items():
        results[name] = super_resolve(lr, source, device=device, fov_mask=fov)
    _say(f"[4/5] super-resolved with {', '.join(methods)} in {time.perf_counter() - start:.1f} s")
    return results


def score_and_report(results: dict, hr, lr, fov, out: Path):
    from napari_pclesr._atomic import atomic_path
    from napari_pclesr.io import write_image
    from napari_pclesr.metrics import compare, evaluate_methods

    for name, sr in results.items():
        write_image(out / f"sr_{_file_name(name)}.tif", sr, model=name)
    table = compare(evaluate_methods(results, hr, lr, mask=fov))
    table.to_csv(out / "scores.csv")
    with atomic_path(out / "scores.md") as temporary:
        temporary.write_text(table.to_markdown(), encoding="utf-8")
    save_figure(out / "figure.png", hr, lr, results, fov)
    _say("[5/5] scores against the HR phantoms (mean ± std over the test frames):")
    print(table, flush=True)
    written = "hr.tif, lr.tif, sr_*.tif, layout.csv, scores.csv, scores.md, figure.png, run/"
    _say(f"wrote {out}/: {written}")
    return table


def verdict(table, learned: list[str]) -> None:
    """Say which method is first by SSIM and by Tot_cs, and whether it is one of ours."""
    methods = [row for row in table.rows if row.name != table.baseline]
    for key, label in (("ssim", "SSIM"), ("tot_cs", "Tot_cs")):
        first = max(methods, key=lambda row: row.mean[key])
        ours = max((row for row in methods if row.name in learned), key=lambda row: row.mean[key])
        if first.name in learned:
            _say(f"first by {label}: {first.name} ({first.mean[key]:.4f})")
        else:
            _say(
                f"first by {label}: {first.name} ({first.mean[key]:.4f}), NOT our model: the best "
                f"of ours, {ours.name}, scores {ours.mean[key]:.4f}."
            )


def save_figure(path: Path, hr, lr, results: dict, fov, frames: int = 2) -> None:
    """LR | each method | HR for a few frames, with titles and a zoomed inset in each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_pclesr._atomic import atomic_path

    panels = {"LR": lr, **results, "HR": hr}
    rows = min(frames, len(hr))
    size = hr.shape[-1]
    zoom = max(16, size // 6)
    figure, axes = plt.subplots(
        rows, len(panels), figsize=(2.2 * len(panels), 2.4 * rows), squeeze=False
    )
    for row in range(rows):
        low, high = np.percentile(hr[row][fov], (0.5, 99.5))
        top, left = _detailed_corner(hr[row], fov, zoom)
        for column, (name, stack) in enumerate(panels.items()):
            ax = axes[row, column]
            ax.imshow(stack[row], cmap="gray", vmin=low, vmax=high)
            ax.add_patch(
                plt.Rectangle((left, top), zoom, zoom, fill=False, edgecolor="yellow", lw=0.8)
            )
            inset = ax.inset_axes((0.6, 0.0, 0.4, 0.4))
            inset.imshow(
                stack[row][top : top + zoom, left : left + zoom],
                cmap="gray",
                vmin=low,
                vmax=high,
                interpolation="nearest",
            )
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_edgecolor("yellow")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name, fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def _detailed_corner(image: np.ndarray, fov: np.ndarray, zoom: int) -> tuple[int, int]:
    """Top-left corner of the ``zoom``-sided square inside the FoV with the most detail."""
    from scipy import ndimage

    detail = np.abs(ndimage.laplace(image.astype(np.float64))) * fov
    inside = ndimage.minimum_filter(fov.astype(np.uint8), size=zoom, mode="constant") > 0
    score = ndimage.uniform_filter(detail, size=zoom, mode="constant")
    score[~inside] = -1.0
    centre_row, centre_col = np.unravel_index(int(np.argmax(score)), score.shape)
    top = int(np.clip(centre_row - zoom // 2, 0, image.shape[0] - zoom))
    left = int(np.clip(centre_col - zoom // 2, 0, image.shape[1] - zoom))
    return top, left


def view(out: Path, hr, lr, results: dict) -> None:
    """Open the results in napari, when a display exists."""
    import os

    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        _say("--view: no display found (DISPLAY is not set); open the outputs in napari later.")
        return
    import napari

    viewer = napari.Viewer(title=f"pclesr demo: {out}")
    viewer.add_image(hr, name="HR")
    for name, sr in results.items():
        viewer.add_image(sr, name=name, visible=False)
    viewer.add_image(lr, name="LR")
    viewer.grid.enabled = True
    napari.run()


def _file_name(name: str) -> str:
    """``"fsrcnn (pretrained)"`` → ``"fsrcnn_pretrained"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
