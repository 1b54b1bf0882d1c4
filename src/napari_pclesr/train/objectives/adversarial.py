"""SRGAN (Ledig et al. 2017): a content loss plus a small adversarial term, on (LR, HR) pairs."""

from __future__ import annotations

import torch

from napari_pclesr.train.objectives.gan import AdversarialTraining
from napari_pclesr.train.objectives.supervised import SupervisedObjective

__all__ = ["AdversarialObjective"]


class AdversarialObjective(AdversarialTraining, SupervisedObjective):
    """Generator loss ``content + adv_weight · adversarial`` (SRGAN; ``adv_weight`` 1e-3).

    ``content`` is ``config.loss`` (L1, MSE, SSIM or SSIM+L1) against the aligned HR patch;
    the discriminator learns to tell HR patches (real) from the generator's outputs (fake).
    The first ``pretrain_iterations`` train the generator on the content loss alone (SRResNet
    pre-training); D starts afterwards. Validation is the supervised one (content loss and
    SSIM on the validation patches), and the content loss picks ``best.pt``: the adversarial
    term has no meaning on its own once D changes.

    On patches at the rim of the field of view (``min_inside`` < 1), D sees real and fake
    patches with their pixels outside the FoV set to 0: those pixels count in no loss, so D
    must not tell real from fake by them (the HR's nearest-value fill there against whatever
    the generator makes of it), nor push the generator to imitate that fill.
    """

    name = "adversarial"
    terms = ("g_loss", "content", "adv", "d_loss", "d_real_acc", "d_fake_acc")
    primary = "g_loss"

    @property
    def score_name(self) -> str:
        return f"validation {self.config.loss} content loss"

    def build(self, generator: torch.nn.Module) -> None:
        super().build(generator)
        config = self.config
        self._build_discriminator(config.iterations - config.pretrain_iterations)

    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        config = self.config
        lr_batch, hr_batch, fov = self.data.next_batch()
        with self._autocast():
            fake = self.network(lr_batch).float()
        content = self.loss_fn(fake, hr_batch, fov)
        terms = {"content": content}
        loss = content
        if iteration >= config.pretrain_iterations:
            terms.update(
                self._adversarial_terms(iteration, fake * fov, hr_batch * fov, self._fresh_pair)
            )
            loss = content + config.adversarial_weight * terms["adv"]
        self._optimise(loss, self.optimizer, self.scaler, self.scheduler)
        terms["g_loss"] = loss
        return {name: value.detach() for name, value in terms.items()}

    def _fresh_pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        lr_batch, hr_batch, fov = self.data.next_batch()
        with torch.no_grad(), self._autocast():
            return hr_batch * fov, self.network(lr_batch).float() * fov

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, dict[str, float]]:
        content, ssim = self._validate_pairs()
        return content, ssim, {"content": content, "ssim": ssim}
