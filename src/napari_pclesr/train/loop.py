"""The training loop: :func:`iter_train` (a generator of events) and :func:`train`.

The loop is the same for every objective (:mod:`napari_pclesr.train.objectives`): it sets up
the run (yielding :class:`TrainingPreparing` events while the objective loads and cuts its
data), then calls the objective's step once per iteration (one or more optimiser steps: for the
supervised objective, a batch of normalised patches through the network under autocast on CUDA,
the loss in float32 and an Adam step). It averages the logged terms between reports, validates
every ``val_every`` iterations and writes ``best.pt`` / ``last.pt``, handles stop requests,
exact resume and early stopping. Under ``torchrun`` the networks are wrapped in
DistributedDataParallel, each process trains on its own shard of the patches, and only rank 0
writes files.
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
from pathlib import Path

import numpy as np
import torch

from napari_pclesr.devices import autocast_dtype
from napari_pclesr.train import distributed
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
    TrainingPreparing,
    TrainingStarted,
    TrainResult,
    ValidationDone,
)
from napari_pclesr.train.objectives import create_objective
from napari_pclesr.train.paired_data import load_training_data

__all__ = ["TrainingDivergedError", "iter_train", "load_training_data", "train"]

# The settings that must not change when a run is resumed (they define the networks and data).
_FIXED_ON_RESUME = (
    "model",
    "hparams",
    "scale",
    "patch_size",
    "seed",
    "split",
    "data",
    "objective",
    "discriminator",
    "lr_data",
    "layout",
    "fibres",
    "frame_step",
    "target_domain",
    "target_data",
)


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
    data : PairedSequences, LRRecordings or tuple, optional
        The data: a collection that is split by sequence (``config.split``), or a ready
        ``(train, val)`` or ``(train, val, test)`` tuple of collections. By default the data
        named by ``config.data`` (or, for the cycle objective, ``config.lr_data``) are loaded
        (see :func:`load_training_data`). :class:`~napari_pclesr.data.LRRecordings` (LR
        without HR) suit the cycle objective only.
    callback : callable, optional
        Called with every event (see :mod:`napari_pclesr.train.events`); returning ``False``
        asks the run to stop.
    stop_event : threading.Event, optional
        Set it (e.g. from another thread) to stop the run after the current iteration.

    Returns
    -------
    TrainResult
        None when a stop was requested before the set-up was done (nothing was trained).

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
    The first event, :class:`TrainingPreparing`, comes at once, before any data are read.
    Closing the generator early also writes ``last.pt`` (single-process runs). A stop
    requested during set-up (single process) ends the run at the next preparation step: nothing
    is trained or written, and the result is None.
    """
    yield TrainingPreparing("starting", 0, 0)
    run = _TrainingRun(config)
    try:
        for event in run.set_up(model, data):
            yield event
            if stop_event is not None and stop_event.is_set() and not run.context.enabled:
                return None
        yield from run.run(stop_event)
    finally:
        run.close()
    return run.result


class _TrainingRun:
    """The state of one training session (set-up, loop, checkpoints)."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.context, self.device = distributed.setup(config.device)
        self.result: TrainResult | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def set_up(self, model, data) -> Generator[TrainingPreparing, None, None]:
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
        self.amp_dtype = autocast_dtype(self.device) if config.amp else None
        self.objective = create_objective(config, self.context, self.device, self.amp_dtype)
        yield from self.objective.prepare(data, self.checkpoint_in)
        yield TrainingPreparing("building the networks", 0, 1)
        self.model_name = config.model
        self.model = model if model is not None else _create_model(config)
        if getattr(self.model, "scale", 1) != config.scale:
            raise ValueError(
                f"the model upscales ×{getattr(self.model, 'scale', 1)} but the config says "
                f"scale={config.scale}; make them agree."
            )
        self.objective.build(self.model)
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
        yield TrainingPreparing("building the networks", 1, 1)

    def _restore(self, checkpoint: dict) -> None:
        state = checkpoint["resume"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.objective.load_state_dict(state)
        self.iteration = int(checkpoint["iteration"])
        self.history = TrainingHistory.from_dict(checkpoint["history"])
        self.best_val_loss = state.get("best_val_loss")
        self.best_iteration = state.get("best_iteration")
        self.bad_validations = int(state.get("bad_validations", 0))
        ranks = state["ranks"]
        if len(ranks) == self.context.world_size:
            own = ranks[self.context.rank]
            self.objective.load_rank_state(own)
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
        config, context, objective = self.config, self.context, self.objective
        yield TrainingStarted(
            device=str(self.device),
            world_size=context.world_size,
            model=self.model_name,
            n_parameters=sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            n_train_patches=objective.data.n_train_patches,
            n_val_patches=objective.data.n_val_patches,
            start_iteration=self.iteration,
            iterations=config.iterations,
            amp_dtype=None if self.amp_dtype is None else str(self.amp_dtype).split(".")[-1],
            objective=objective.name,
            terms=objective.terms,
            score=objective.score_name,
        )
        start_iteration = self.iteration
        session_start = time.perf_counter()
        window = _Window(self.device, objective.terms)
        total_wait = total_step = 0.0
        stopped_early = False
        requested = stop_event is not None and stop_event.is_set()
        stopped_by_request = context.any(requested, self.device)  # stopped while preparing
        self.model.train()
        try:
            while self.iteration < config.iterations and not stopped_by_request:
                terms = objective.step(self.iteration)
                self.iteration += 1
                window.add(terms, objective.take_data_wait())
                report_due = self.iteration % config.log_every == 0
                validation_due = self.iteration % config.val_every == 0
                last = self.iteration == config.iterations
                if report_due or validation_due or last:
                    means, wait, step = window.flush(context)
                    if not all(math.isfinite(value) for value in means.values()):
                        raise self._diverged(window.first_non_finite(self.iteration), "loss")
                    total_wait += wait
                    total_step += step
                    loss = means.get(objective.primary, float("nan"))
                    self.history.add_report(self.iteration, loss, means)
                    done = self.iteration - start_iteration
                    rate = done / max(time.perf_counter() - session_start, 1e-9)
                    yield IterationDone(
                        iteration=self.iteration,
                        iterations=config.iterations,
                        loss=loss,
                        lr=objective.lr,
                        eta_s=(config.iterations - self.iteration) / rate,
                        iterations_per_s=rate,
                        memory_mb=_memory_mb(self.device),
                        data_wait_share=wait / step if step > 0 else 0.0,
                        terms=means,
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
            if not context.enabled and self.iteration > start_iteration:
                with contextlib.suppress(TrainingDivergedError):
                    self._write("last")
            raise
        self.model.eval()
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
            normalisation=objective.data.normalisation,
            device=str(self.device),
            elapsed_s=time.perf_counter() - session_start,
            data_wait_share=total_wait / total_step if total_step > 0 else 0.0,
        )
        context.barrier()
        yield TrainingFinished(self.result)

    # -- validation and checkpoints -------------------------------------------------------------

    def _validate_and_save(self) -> Generator[TrainingEvent, None, None]:
        val_loss, val_ssim, scores = self.objective.validate()
        if not math.isfinite(val_loss):
            raise self._diverged(self.iteration, "validation loss")
        is_best = self.best_val_loss is None or val_loss < self.best_val_loss
        if is_best:
            self.best_val_loss, self.best_iteration = val_loss, self.iteration
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        self.history.add_validation(self.iteration, val_loss, val_ssim, scores)
        yield ValidationDone(
            iteration=self.iteration,
            val_loss=val_loss,
            val_ssim=val_ssim,
            is_best=is_best,
            best_val_loss=self.best_val_loss,
            best_iteration=self.best_iteration,
            scores=scores,
        )
        if is_best:
            yield from self._save("best")
        yield from self._save("last")

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
            {**self.objective.rank_state(), "rng": _get_rng_state()}
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
            "normalisation": self.objective.data.normalisation.to_dict(),
            "config": config.to_dict(),
            "history": self.history.to_dict(),
            "split": self.objective.data.split_names(),
            "objective": self.objective.name,
            **self.objective.checkpoint_extras(),
            "resume": {
                **self.objective.state_dict(),
                "best_val_loss": self.best_val_loss,
                "best_iteration": self.best_iteration,
                "bad_validations": self.bad_validations,
                "epoch": self.objective.data.epoch,
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
    """Sums of the logged terms and times since the last report (the sums stay on the device).

    Each term is averaged over the iterations that computed it. The sum of each iteration's
    terms is kept for :meth:`first_non_finite`.
    """

    def __init__(self, device: torch.device, terms: tuple[str, ...]):
        self.device = device
        self.terms = terms
        self._flushed: list[torch.Tensor] = []
        self._reset()

    def _reset(self) -> None:
        # Row 0: sums, row 1: counts, per term in the objective's fixed order.
        self.sums = torch.zeros((2, len(self.terms)), dtype=torch.float64, device=self.device)
        self.totals: list[torch.Tensor] = []  # per iteration: the sum of its terms
        self.wait = 0.0
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], wait: float) -> None:
        for index, name in enumerate(self.terms):
            if name in terms:
                self.sums[0, index] += terms[name].double()
                self.sums[1, index] += 1
        self.totals.append(torch.stack([value.double() for value in terms.values()]).sum())
        self.wait += wait

    def flush(self, context) -> tuple[dict[str, float], float, float]:
        """Means of the terms over the window (and over processes), data-wait time, total."""
        totals = context.all_reduce_sum(self.sums)
        values = totals.tolist()  # waits for the device: time it after
        means = {
            name: total / count
            for name, total, count in zip(self.terms, values[0], values[1], strict=True)
            if count > 0
        }
        elapsed = time.perf_counter() - self.start
        wait = self.wait
        self._flushed = self.totals
        self._reset()
        return means, wait, elapsed

    def first_non_finite(self, last_iteration: int) -> int:
        """The iteration of the first non-finite term of the flushed window (on this process;
        its last iteration when only another process saw one)."""
        finite = torch.isfinite(torch.stack(self._flushed)).cpu().tolist()
        first = finite.index(False) if False in finite else len(finite) - 1
        return last_iteration - len(finite) + 1 + first


# -- helpers ------------------------------------------------------------------------------------


def _create_model(config: TrainConfig) -> torch.nn.Module:
    from napari_pclesr import models

    if config.model is None:
        raise ValueError("config.model is None: pass a network with train(..., model=network).")
    return models.create(config.model, scale=config.scale, **config.hparams)


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
