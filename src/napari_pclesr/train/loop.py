"""The supervised training loop: :func:`iter_train` (a generator of events) and :func:`train`.

One iteration draws a batch of normalised patches, runs the network (under autocast on CUDA),
computes the loss in float32 and takes an Adam step. Every ``val_every`` iterations the
network is scored on the validation patches and ``best.pt`` / ``last.pt`` are written. Under
``torchrun`` the network is wrapped in DistributedDataParallel, each process trains on its own
shard of the patches, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import threading
import time
import warnings
from collections.abc import Callable, Generator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from napari_pclesr.data.patches import Normalisation, PairedSequences
from napari_pclesr.devices import autocast_dtype
from napari_pclesr.train import distributed
from napari_pclesr.train.batches import PatchSampler
from napari_pclesr.train.checkpoint import (
    check_run_folder,
    load_checkpoint,
    non_finite_weight,
    save_checkpoint,
)
from napari_pclesr.train.config import TrainConfig
from napari_pclesr.train.events import (
    CheckpointSaved,
    IterationDone,
    TrainingEvent,
    TrainingFinished,
    TrainingHistory,
    TrainingStarted,
    TrainResult,
    ValidationDone,
)

__all__ = ["TrainingDivergedError", "iter_train", "load_training_data", "train"]

# The settings that must not change when a run is resumed (they define the network and data).
_FIXED_ON_RESUME = ("model", "hparams", "scale", "patch_size", "seed", "split", "data")


class TrainingDivergedError(ValueError):
    """The training loss or the weights became NaN or infinite; nothing after that was saved.

    Attributes
    ----------
    iteration : int
        The first iteration known to be non-finite.
    """

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration


def train(
    config: TrainConfig,
    *,
    model: torch.nn.Module | None = None,
    data=None,
    callback: Callable[[TrainingEvent], bool | None] | None = None,
    stop_event: threading.Event | None = None,
) -> TrainResult:
    """Train a network as configured; returns when done, stopped early or asked to stop.

    Parameters
    ----------
    config : TrainConfig
    model : torch.nn.Module, optional
        A network to train instead of ``models.create(config.model, ...)``; it maps
        (B, 1, H, W) to (B, 1, s·H, s·W) with s = ``config.scale``.
    data : PairedSequences or tuple, optional
        The data: a collection that is split by sequence (``config.split``), or a ready
        ``(train, val)`` or ``(train, val, test)`` tuple of collections. By default the data
        named by ``config.data`` are loaded (see :func:`load_training_data`).
    callback : callable, optional
        Called with every event (see :mod:`napari_pclesr.train.events`); returning ``False``
        asks the run to stop.
    stop_event : threading.Event, optional
        Set it (e.g. from another thread) to stop the run after the current iteration.

    Returns
    -------
    TrainResult

    Notes
    -----
    A stopped run writes ``last.pt`` (when ``config.out_dir`` is set), from which
    ``config.replace(resume=...)`` continues exactly where it stopped.
    """
    stop_event = stop_event if stop_event is not None else threading.Event()
    events = iter_train(config, model=model, data=data, stop_event=stop_event)
    while True:
        try:
            event = next(events)
        except StopIteration as finished:
            return finished.value
        if callback is not None and callback(event) is False:
            stop_event.set()


def iter_train(
    config: TrainConfig,
    *,
    model: torch.nn.Module | None = None,
    data=None,
    stop_event: threading.Event | None = None,
) -> Generator[TrainingEvent, None, TrainResult]:
    """Train as :func:`train` does, yielding the progress events; returns the result.

    Suits a GUI worker thread: iterate it, show the events, and set ``stop_event`` to stop.
    Closing the generator early also writes ``last.pt`` (single-process runs).
    """
    run = _TrainingRun(config, model, data)
    try:
        yield from run.run(stop_event)
    finally:
        run.close()
    return run.result


def load_training_data(config: TrainConfig) -> PairedSequences:
    """The data named by ``config.data``: ``"sample"`` phantoms, or a folder of TIFF stacks."""
    layout = None
    if config.layout is not None:
        from napari_pclesr import FibreLayout

        layout = FibreLayout.from_file(config.layout)
    if config.data == "sample":
        if layout is not None:
            raise ValueError(
                "--layout applies to folder data; the sample data use synthetic bundles."
            )
        return PairedSequences.sample(seed=config.seed, scale=config.scale)
    return PairedSequences.from_folder(config.data, layout=layout, scale=config.scale)


class _TrainingRun:
    """The state of one training session (set-up, loop, checkpoints)."""

    def __init__(self, config: TrainConfig, model, data):
        self.config = config
        self.context, self.device = distributed.setup(config.device)
        try:
            self._set_up(model, data)
        except BaseException:
            distributed.teardown(self.context)
            raise

    # -- set-up ---------------------------------------------------------------------------------

    def _set_up(self, model, data) -> None:
        from napari_pclesr.train.memory import check_batch_fits

        config = self.config
        # The cheap checks first: a refused run must not wait for the data.
        replaced = check_run_folder(
            config.out_dir, resume=config.resume, overwrite=config.overwrite
        )
        check_batch_fits(config, self.device, model)
        self.checkpoint_in = load_checkpoint(config.resume) if config.resume else None
        if self.checkpoint_in is not None:
            _check_resumable(config, self.checkpoint_in)
        _seed_everything(config.seed)
        self.train_data, self.val_data, self.test_data = _split(data, config)
        self._check_patches()
        self.lr_options = {
            "seed": config.seed,
            "sigma_mult": config.sigma_mult,
            "sigma_add": config.sigma_add,
        }
        if self.checkpoint_in is not None:
            self.normalisation = Normalisation.from_dict(self.checkpoint_in["normalisation"])
        else:
            self.normalisation = Normalisation()
        self.model_name = config.model
        self.model = model if model is not None else _create_model(config)
        if getattr(self.model, "scale", 1) != config.scale:
            raise ValueError(
                f"the model upscales ×{getattr(self.model, 'scale', 1)} but the config says "
                f"scale={config.scale}; make them agree."
            )
        self.model.to(self.device)
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.network = self.model
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        from napari_pclesr import losses

        self.loss_fn = losses.create(config.loss).to(self.device)
        self.ssim_fn = losses.ssim
        self.amp_dtype = autocast_dtype(self.device) if config.amp else None
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, betas=config.betas, eps=config.eps
        )
        self.scheduler = _make_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self._build_patches()
        self.history = TrainingHistory()
        self.iteration = 0
        self.best_val_loss: float | None = None
        self.best_iteration: int | None = None
        self.bad_validations = 0
        self.best_path = self.last_path = None
        self.out_dir = Path(config.out_dir) if config.out_dir is not None else None
        if self.out_dir is not None and self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.checkpoint_in is not None:
            self._restore(self.checkpoint_in)
        if self.context.is_main:
            for path in replaced:  # the new run is ready: no file of the old one may remain
                path.unlink(missing_ok=True)
        self.result: TrainResult | None = None

    def _check_patches(self) -> None:
        size = self.config.patch_size
        for part, collection in (("training", self.train_data), ("validation", self.val_data)):
            for index in range(len(collection)):
                height, width = collection.lr_shape(index)
                if size > min(height, width):
                    raise ValueError(
                        f"patch size {size} is bigger than the {height}x{width} LR frames of "
                        f"sequence {collection.names[index]}; use a patch size <= "
                        f"{min(height, width)}."
                    )
            if collection.count_patches(size) == 0:
                raise ValueError(
                    f"no {size}x{size} patch of the {part} sequences lies entirely inside the "
                    "field of view; use a smaller patch size or larger frames."
                )

    def _build_patches(self) -> None:
        config = self.config
        epoch = 0
        if self.checkpoint_in is not None and config.fresh_noise_per_epoch:
            epoch = max(0, int(self.checkpoint_in["resume"]["epoch"]))
        lr, hr = self._train_patches(epoch)
        self.sampler = PatchSampler(
            lr,
            hr,
            config.batch_size,
            self.device,
            seed=config.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
            flips=config.augment_flips,
            rot90=config.augment_rot90,
        )
        self.n_train_patches = len(lr)
        rank, world = self.context.rank, self.context.world_size
        val_lr, val_hr, _ = self.val_data.patches(
            self.normalisation, config.patch_size, **self.lr_options
        )
        self.n_val_patches = len(val_lr)
        self.val_lr = torch.from_numpy(val_lr[rank::world])[:, None]
        self.val_hr = torch.from_numpy(val_hr[rank::world])[:, None]

    def _train_patches(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        lr, hr, _ = self.train_data.patches(
            self.normalisation, self.config.patch_size, epoch=epoch, **self.lr_options
        )
        return torch.from_numpy(lr)[:, None], torch.from_numpy(hr)[:, None]

    def _restore(self, checkpoint: dict) -> None:
        state = checkpoint["resume"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(checkpoint["iteration"])
        self.history = TrainingHistory.from_dict(checkpoint["history"])
        self.best_val_loss = state.get("best_val_loss")
        self.best_iteration = state.get("best_iteration")
        self.bad_validations = int(state.get("bad_validations", 0))
        ranks = state["ranks"]
        if len(ranks) == self.context.world_size:
            own = ranks[self.context.rank]
            self.sampler.load_state_dict(own["sampler"])
            _set_rng_state(own["rng"])
        else:
            warnings.warn(
                f"the checkpoint was written by {len(ranks)} process(es), this run has "
                f"{self.context.world_size}; the batch order restarts (the curve continues but "
                "not batch for batch).",
                stacklevel=3,
            )
        for kind in ("best", "last"):
            path = self.out_dir / f"{kind}.pt" if self.out_dir is not None else None
            if path is not None and path.is_file():
                setattr(self, f"{kind}_path", path)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None) -> Generator[TrainingEvent, None, None]:
        config, context = self.config, self.context
        yield TrainingStarted(
            device=str(self.device),
            world_size=context.world_size,
            model=self.model_name,
            n_parameters=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            n_train_patches=self.n_train_patches,
            n_val_patches=self.n_val_patches,
            start_iteration=self.iteration,
            iterations=config.iterations,
            amp_dtype=None if self.amp_dtype is None else str(self.amp_dtype).split(".")[-1],
        )
        start_iteration = self.iteration
        session_start = time.perf_counter()
        window = _Window(self.device)
        total_wait = total_step = 0.0
        stopped_early = stopped_by_request = False
        self.network.train()
        try:
            while self.iteration < config.iterations:
                step_start = time.perf_counter()
                self._maybe_new_epoch()
                lr_batch, hr_batch = self.sampler.next_batch()
                fetched = time.perf_counter()
                loss = self._step(lr_batch, hr_batch)
                self.iteration += 1
                window.add(loss, fetched - step_start)
                report_due = self.iteration % config.log_every == 0
                validation_due = self.iteration % config.val_every == 0
                last = self.iteration == config.iterations
                if report_due or validation_due or last:
                    mean_loss, wait, step = window.flush(context)
                    if not math.isfinite(mean_loss):
                        raise self._diverged(window.first_non_finite(self.iteration), "loss")
                    total_wait += wait
                    total_step += step
                    self.history.iteration.append(self.iteration)
                    self.history.train_loss.append(mean_loss)
                    done = self.iteration - start_iteration
                    rate = done / max(time.perf_counter() - session_start, 1e-9)
                    yield IterationDone(
                        iteration=self.iteration,
                        iterations=config.iterations,
                        loss=mean_loss,
                        lr=self.optimizer.param_groups[0]["lr"],
                        eta_s=(config.iterations - self.iteration) / rate,
                        iterations_per_s=rate,
                        memory_mb=_memory_mb(self.device),
                        data_wait_share=wait / step if step > 0 else 0.0,
                    )
                if validation_due or last:
                    yield from self._validate_and_save()
                    window.restart_clock()  # validation time is not step time
                    if config.patience is not None and self.bad_validations >= config.patience:
                        stopped_early = not last
                        break
                requested = stop_event is not None and stop_event.is_set()
                if (report_due or not context.enabled) and context.any(requested, self.device):
                    stopped_by_request = not last
                    if not (validation_due or last):
                        yield from self._save("last")
                    break
        except GeneratorExit:
            # The consumer closed the generator (e.g. a GUI worker quit): keep a usable file
            # (unless the weights are no longer finite: then the earlier file is kept).
            if not context.enabled:
                with contextlib.suppress(TrainingDivergedError):
                    self._write("last")
            raise
        self.network.eval()
        self.result = TrainResult(
            model=self.model,
            iterations=self.iteration,
            best_checkpoint=self.best_path,
            last_checkpoint=self.last_path,
            best_val_loss=self.best_val_loss,
            best_iteration=self.best_iteration,
            stopped_early=stopped_early,
            stopped_by_request=stopped_by_request,
            history=self.history,
            normalisation=self.normalisation,
            device=str(self.device),
            elapsed_s=time.perf_counter() - session_start,
            data_wait_share=total_wait / total_step if total_step > 0 else 0.0,
        )
        context.barrier()
        yield TrainingFinished(self.result)

    def _maybe_new_epoch(self) -> None:
        if not self.sampler.epoch_done:
            return
        next_epoch = self.sampler.epoch + 1
        if self.config.fresh_noise_per_epoch and self.train_data.simulated and next_epoch > 0:
            self.sampler.set_patches(*self._train_patches(next_epoch))
        self.sampler.start_epoch()

    def _step(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            prediction = self.network(lr_batch)
        loss = self.loss_fn(prediction.float(), hr_batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- validation and checkpoints -------------------------------------------------------------

    def _validate_and_save(self) -> Generator[TrainingEvent, None, None]:
        val_loss, val_ssim = self._validate()
        if not math.isfinite(val_loss):
            raise self._diverged(self.iteration, "validation loss")
        is_best = self.best_val_loss is None or val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss, self.best_iteration = val_loss, self.iteration
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        self.history.val_iteration.append(self.iteration)
        self.history.val_loss.append(val_loss)
        self.history.val_ssim.append(val_ssim)
        yield ValidationDone(
            iteration=self.iteration,
            val_loss=val_loss,
            val_ssim=val_ssim,
            is_best=is_best,
            best_val_loss=self.best_val_loss,
            best_iteration=self.best_iteration,
        )
        if is_best:
            yield from self._save("best")
        yield from self._save("last")

    @torch.inference_mode()
    def _validate(self) -> tuple[float, float]:
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        step = 2 * self.config.batch_size
        for start in range(0, len(self.val_lr), step):
            lr = self.val_lr[start : start + step].to(self.device, non_blocking=True)
            hr = self.val_hr[start : start + step].to(self.device, non_blocking=True)
            with self._autocast():
                prediction = self.model(lr)
            prediction = prediction.float()
            count = len(lr)
            sums[0] += self.loss_fn(prediction, hr).double() * count
            sums[1] += self.ssim_fn(prediction.clamp(0, 1), hr).double().sum()
            sums[2] += count
        self.context.all_reduce_sum(sums)
        self.model.train()
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])

    def _save(self, kind: str) -> Generator[TrainingEvent, None, None]:
        # Every process takes part (its random state goes into the file); rank 0 writes.
        path = self._write(kind)
        if path is not None:
            yield CheckpointSaved(path=path, kind=kind, iteration=self.iteration)

    def _write(self, kind: str) -> Path | None:
        # Every process holds the same weights, so all raise together.
        if non_finite_weight(dict(self.model.named_parameters())) is not None:
            raise self._diverged(self.iteration, "weights")
        rank_states = self.context.gather_objects(
            {"sampler": self.sampler.state_dict(), "rng": _get_rng_state()}
        )
        if self.out_dir is None or not self.context.is_main:
            return None
        path = save_checkpoint(self._checkpoint(kind, rank_states), self.out_dir / f"{kind}.pt")
        setattr(self, f"{kind}_path", path)
        return path

    def _checkpoint(self, kind: str, rank_states: list) -> dict:
        config = self.config
        # Registry networks know all their hyper-parameters (defaults included): store those.
        hparams = dict(getattr(self.model, "hparams", config.hparams))
        hparams.pop("scale", None)
        return {
            "kind": kind,
            "iteration": self.iteration,
            "model": {"name": self.model_name, "hparams": hparams, "scale": config.scale},
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "normalisation": self.normalisation.to_dict(),
            "config": config.to_dict(),
            "history": self.history.to_dict(),
            "split": {
                "train": list(self.train_data.names),
                "val": list(self.val_data.names),
                "test": list(self.test_data.names) if self.test_data is not None else [],
            },
            "resume": {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "best_val_loss": self.best_val_loss,
                "best_iteration": self.best_iteration,
                "bad_validations": self.bad_validations,
                "epoch": self.sampler.epoch,
                "ranks": rank_states,
            },
        }

    def _diverged(self, iteration: int, what: str) -> TrainingDivergedError:
        saved = [path for path in (self.best_path, self.last_path) if path is not None]
        kept = (
            f"{' and '.join(str(path) for path in saved)} keep the last finite weights"
            if saved
            else "no checkpoint had been written yet"
        )
        lower = self.config.lr / 10
        return TrainingDivergedError(
            f"training diverged: the {what} became NaN or infinite at iteration {iteration} "
            f"(learning rate {self.config.lr:g}); training stopped and {kept}. Train again "
            f"with a lower learning rate (e.g. --lr {lower:g}, TrainConfig(lr={lower:g})).",
            iteration,
        )

    def close(self) -> None:
        distributed.teardown(self.context)


class _Window:
    """The losses and times since the last report (the losses stay on the device)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._flushed: list[torch.Tensor] = []
        self._reset()

    def _reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.wait = 0.0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, wait: float) -> None:
        self.losses.append(loss)
        self.wait += wait

    def flush(self, context) -> tuple[float, float, float]:
        """Mean loss over the window (and over processes), data-wait time, total time.

        The window's losses are kept for :meth:`first_non_finite`.
        """
        window = torch.stack(self.losses).double()
        count = torch.tensor(float(len(self.losses)), device=self.device, dtype=torch.float64)
        totals = torch.stack([window.sum(), count])
        context.all_reduce_sum(totals)
        mean = float(totals[0] / totals[1])  # .item() waits for the device: time it after
        elapsed = time.perf_counter() - self.start
        wait = self.wait
        self._flushed = self.losses
        self._reset()
        return mean, wait, elapsed

    def first_non_finite(self, last_iteration: int) -> int:
        """The iteration of the first non-finite loss of the flushed window (on this process;
        its last iteration when only another process saw one)."""
        finite = torch.isfinite(torch.stack(self._flushed)).cpu().tolist()
        first = finite.index(False) if False in finite else len(finite) - 1
        return last_iteration - len(finite) + 1 + first


# -- helpers ------------------------------------------------------------------------------------


def _split(data, config: TrainConfig):
    if data is None:
        data = load_training_data(config)
    if isinstance(data, PairedSequences):
        train_data, val_data, test_data = data.split(config.split, seed=config.seed)
    elif isinstance(data, tuple | list) and len(data) in (2, 3):
        train_data, val_data = data[0], data[1]
        test_data = data[2] if len(data) == 3 else None
    else:
        raise ValueError(
            "data must be a PairedSequences collection or a (train, val[, test]) tuple of them, "
            f"got {type(data).__name__}."
        )
    if len(val_data) == 0:
        raise ValueError(
            "the validation part has no sequence; give more sequences or a larger validation "
            "fraction in config.split."
        )
    return train_data, val_data, test_data


def _create_model(config: TrainConfig) -> torch.nn.Module:
    from napari_pclesr import models

    if config.model is None:
        raise ValueError("config.model is None: pass a network with train(..., model=network).")
    return models.create(config.model, scale=config.scale, **config.hparams)


def _make_scheduler(optimizer, config: TrainConfig):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations)
    if config.schedule == "step":
        step = config.step_size or max(1, config.iterations // 3)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=config.gamma)
    return None


def _check_resumable(config: TrainConfig, checkpoint: dict) -> None:
    saved = checkpoint["config"]
    changed = [
        f"{key} ({saved.get(key)!r} -> {config.to_dict()[key]!r})"
        for key in _FIXED_ON_RESUME
        if key in saved and saved[key] != config.to_dict()[key]
    ]
    if changed:
        raise ValueError(
            f"cannot resume from {config.resume}: these settings differ from the checkpoint's: "
            f"{', '.join(changed)}. Use the checkpoint's settings, or start a new run."
        )
    if "resume" not in checkpoint:
        raise ValueError(f"{config.resume} holds no training state to resume from.")


# The global random states are seeded and saved because code outside this package (custom
# networks, user callbacks) may draw from them; everything here uses its own generators.
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def _get_rng_state() -> dict:
    numpy_state = np.random.get_state()  # noqa: NPY002
    state = {
        "python": random.getstate(),
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *numpy_state[2:],
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in value)
    return value


def _memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == "mps":
        return torch.mps.current_allocated_memory() / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
