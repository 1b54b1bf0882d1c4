"""Seed 001's unsupervised adversarial SR with the Voronoi cycle consistency (no HR needed)."""

from __future__ import annotations

import math

import numpy as np
import torch

from napari_pclesr import losses
from napari_pclesr.simulate.voronoi import pool_slots
from napari_pclesr.train.fibre_data import FibreTrainingData
from napari_pclesr.train.objectives.base import Objective, make_scheduler
from napari_pclesr.train.objectives.gan import AdversarialTraining

__all__ = ["CycleObjective"]


class CycleObjective(AdversarialTraining, Objective):
    """Generator loss ``vec_weight·l_Vec + adv_weight·l_Adv + reg_weight·l_Reg`` (seed 001).

    - l_Vec: the fibre vector V̂(SR) of the super-resolved patch (Voronoi-cell means on the SR
      grid, :func:`~napari_pclesr.simulate.voronoi.pool_slots`) against V(I_LR), the LR's
      fibre values, both in [0, 1] (:func:`napari_pclesr.losses.fibre_vector_loss`).
    - l_Adv = −log D(SR) (or the relativistic form), D telling target-domain patches from SR
      patches (:class:`~napari_pclesr.train.objectives.gan.AdversarialTraining`).
    - l_Reg: row and column means of SR against LR (:func:`napari_pclesr.losses
      .row_column_loss`).

    The first ``pretrain_iterations`` use l_Vec and l_Reg alone.

    Validation, on the validation patches (held-out frames or recordings): l_Vec, l_Reg, the
    mean GCF of the SR and LR patches and their difference ΔGCF, and with HR the mean SSIM;
    as a reference, ``vec_identity``, the l_Vec of the input itself (what a network that
    changes nothing scores).
    ``best.pt`` is chosen by 1 − SSIM when the data have HR (the direct measure of quality),
    otherwise by ``vec_weight·l_Vec + reg_weight·l_Reg``, the fidelity to the measured fibre
    signals. GCF never chooses: noise raises it (seed 001, §4.1).
    """

    name = "cycle"
    terms = ("g_loss", "vec", "reg", "adv", "d_loss", "d_real_acc", "d_fake_acc")
    primary = "g_loss"

    def __init__(self, config, context, device, amp_dtype):
        super().__init__(config, context, device, amp_dtype)
        self.data = FibreTrainingData(config, context, device)
        self._references: dict[str, float] | None = None

    @property
    def score_name(self) -> str:
        if self.data.has_hr:
            return "1 - validation SSIM against HR"
        return "validation vec_weight * l_Vec + reg_weight * l_Reg"

    def build(self, generator: torch.nn.Module) -> None:
        config = self.config
        self.generator = generator
        self.network = self._place(generator)
        self.optimizer = self._adam(generator, config.lr)
        self.scheduler = make_scheduler(self.optimizer, config, config.iterations)
        self.scaler = self._scaler()
        self._build_discriminator(config.iterations - config.pretrain_iterations)

    def checkpoint_extras(self) -> dict:
        return {"fibre_layouts": list(self.data.layout_notes)}

    # -- the loop -------------------------------------------------------------------------------

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        config = self.config
        lr_batch, slots, vectors, *hr = self.data.next_batch()
        with self._autocast():
            sr = self.network(lr_batch).float()
        terms, _ = self._cycle_terms(sr, lr_batch, slots, vectors)
        loss = config.vec_weight * terms["vec"] + config.reg_weight * terms["reg"]
        if iteration >= config.pretrain_iterations:
            real = hr[0] if hr and config.target_domain == "paired" else None
            real = self.data.next_target() if real is None else real
            terms.update(self._adversarial_terms(iteration, sr, real, self._fresh_pair))
            loss = loss + config.adversarial_weight * terms["adv"]
        self._optimise(loss, self.optimizer, self.scaler, self.scheduler)
        terms["g_loss"] = loss
        return {name: value.detach() for name, value in terms.items()}

    def _cycle_terms(self, sr, lr_batch, slots, vectors):
        """l_Vec and l_Reg of a batch, and the number of real fibre entries."""
        sr_vectors, valid = pool_slots(sr, slots, self.data.k)
        terms = {
            "vec": losses.fibre_vector_loss(
                vectors, sr_vectors, valid, self.config.vec_normalisation
            ),
            "reg": losses.row_column_loss(sr, lr_batch),
        }
        return terms, valid.sum()

    def _fresh_pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        lr_batch, _, _, *hr = self.data.next_batch()
        real = hr[0] if self.config.target_domain == "paired" else self.data.next_target()
        with torch.no_grad(), self._autocast():
            return real, self.network(lr_batch).float()

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, dict[str, float]]:
        from napari_pclesr.metrics import gcf

        config, scale = self.config, self.config.scale
        self.generator.eval()
        references = self._references is None
        # l_Vec numerator and real entries, l_Reg, SSIM, GCF of SR, patches; then the
        # references (computed once): GCF of LR, l_Vec numerator of the input itself.
        sums = torch.zeros(8, dtype=torch.float64, device=self.device)
        for lr_batch, slots, vectors, *hr in self.data.validation_batches(2 * config.batch_size):
            with self._autocast():
                sr = self.generator(lr_batch).float()
            terms, real_entries = self._cycle_terms(sr, lr_batch, slots, vectors)
            count = len(lr_batch)
            sums[0] += terms["vec"].double() * real_entries
            sums[1] += real_entries
            sums[2] += terms["reg"].double() * count
            if hr:
                sums[3] += losses.ssim(sr.clamp(0, 1), hr[0]).double().sum()
            sums[4] += float(np.sum(gcf(sr.clamp(0, 1)[:, 0].cpu().numpy())))
            sums[5] += count
            if references:
                sums[6] += float(np.sum(gcf(lr_batch[:, 0].clamp(0, 1).cpu().numpy())))
                identity = lr_batch.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
                sums[7] += self._cycle_terms(identity, lr_batch, slots, vectors)[0]["vec"] * (
                    real_entries
                )
        self.context.all_reduce_sum(sums)
        self.generator.train()
        if references:
            self._references = {
                "gcf_lr": float(sums[6] / sums[5]),
                "vec_identity": float(sums[7] / sums[1].clamp_min(1)),
            }
        scores = {
            "vec": float(sums[0] / sums[1].clamp_min(1)),
            "reg": float(sums[2] / sums[5]),
            "gcf": float(sums[4] / sums[5]),
            **self._references,
        }
        scores["delta_gcf"] = scores["gcf"] - scores["gcf_lr"]
        ssim = math.nan
        if self.data.has_hr:
            ssim = scores["ssim"] = float(sums[3] / sums[5])
            score = 1.0 - ssim
        else:
            score = config.vec_weight * scores["vec"] + config.reg_weight * scores["reg"]
        return score, ssim, scores
