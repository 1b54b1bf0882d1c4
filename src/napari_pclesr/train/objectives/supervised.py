"""The supervised objective: a content loss between the network's output and the HR patch."""

from __future__ import annotations

import torch

from napari_pclesr import losses
from napari_pclesr.train.objectives.base import Objective, make_scheduler
from napari_pclesr.train.paired_data import PairedTrainingData

__all__ = ["SupervisedObjective"]


class SupervisedObjective(Objective):
    """Minimise ``config.loss`` between the network's output and the aligned HR patch.

    One Adam step per iteration. Validation: the mean loss and the mean SSIM (output clipped to
    [0, 1]) over the validation patches; the loss picks ``best.pt``.
    """

    name = "supervised"
    terms = ("loss",)
    primary = "loss"

    def __init__(self, config, context, device, amp_dtype):
        super().__init__(config, context, device, amp_dtype)
        self.data = PairedTrainingData(config, context, device)

    @property
    def score_name(self) -> str:
        return f"validation {self.config.loss} loss"

    def build(self, generator: torch.nn.Module) -> None:
        config = self.config
        self.generator = generator
        self.network = self._place(generator)
        self.loss_fn = losses.create(config.loss).to(self.device)
        self.optimizer = self._adam(generator, config.lr)
        self.scheduler = make_scheduler(self.optimizer, config, config.iterations)
        self.scaler = self._scaler()

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        lr_batch, hr_batch = self.data.next_batch()
        with self._autocast():
            prediction = self.network(lr_batch)
        loss = self.loss_fn(prediction.float(), hr_batch)
        self._optimise(loss, self.optimizer, self.scaler, self.scheduler)
        return {"loss": loss.detach()}

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, dict[str, float]]:
        loss, ssim = self._validate_pairs()
        return loss, ssim, {"loss": loss, "ssim": ssim}

    def _validate_pairs(self) -> tuple[float, float]:
        """Mean content loss and mean SSIM over the validation patches of all processes."""
        self.generator.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for lr, hr in self.data.validation_batches(2 * self.config.batch_size):
            with self._autocast():
                prediction = self.generator(lr)
            prediction = prediction.float()
            count = len(lr)
            sums[0] += self.loss_fn(prediction, hr).double() * count
            sums[1] += losses.ssim(prediction.clamp(0, 1), hr).double().sum()
            sums[2] += count
        self.context.all_reduce_sum(sums)
        self.generator.train()
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])
