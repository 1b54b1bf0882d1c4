"""What the adversarial objectives share: the discriminator, its updates and its state."""

from __future__ import annotations

from collections.abc import Callable

import torch

from napari_pclesr import losses, models
from napari_pclesr.train.objectives.base import make_scheduler

__all__ = ["AdversarialTraining"]


class AdversarialTraining:
    """Mixin for :class:`~napari_pclesr.train.objectives.base.Objective` subclasses with a
    discriminator D.

    - D is :func:`napari_pclesr.models.create_discriminator` with ``config.discriminator``,
      trained with Adam (``config.discriminator_lr``, the same betas), its own schedule (over
      its own updates) and gradient scaler, and wrapped in DDP like the generator.
    - A D update sees real and fake patches in one forward pass (one batch-norm batch; under
      DDP a second forward before the backward pass would re-broadcast buffers that the first
      one's graph needs).
    - Instance noise (Sønderby et al. 2017; seed 001 via Arjovsky & Bottou): Gaussian noise of
      standard deviation σ(t) = ``initial_noise`` · max(0, 1 − t / ``noise_anneal``) on every
      input of D, in its updates and in the generator's adversarial term; each process draws
      it from its own seeded generator, saved for exact resume.
    - The generator's adversarial term runs D itself (not its DDP wrapper) with D's parameters
      frozen, so only the generator's gradients are computed and reduced.
    """

    def _build_discriminator(self, gan_iterations: int) -> None:
        config = self.config
        self.discriminator = models.create_discriminator(**config.discriminator)
        self.d_network = self._place(self.discriminator)
        self.d_optimizer = self._adam(self.discriminator, config.discriminator_lr)
        self.d_scheduler = make_scheduler(
            self.d_optimizer, config, max(1, gan_iterations) * config.d_steps
        )
        self.d_scaler = self._scaler()
        self.noise_generator = torch.Generator(self.device).manual_seed(
            config.seed * 1000 + self.context.rank + 900_001
        )
        self.noise_anneal = config.noise_anneal or config.iterations

    def _noise_sigma(self, iteration: int) -> float:
        return self.config.initial_noise * max(0.0, 1.0 - iteration / self.noise_anneal)

    def _with_noise(self, images: torch.Tensor, iteration: int) -> torch.Tensor:
        sigma = self._noise_sigma(iteration)
        if sigma == 0:
            return images
        noise = torch.randn(
            images.shape, generator=self.noise_generator, device=images.device, dtype=images.dtype
        )
        return images + sigma * noise

    def _adversarial_terms(
        self,
        iteration: int,
        fake: torch.Tensor,
        real: torch.Tensor,
        more_pairs: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """``config.d_steps`` D updates, then the generator's adversarial term on ``fake``.

        The first ``d_steps − 1`` updates use fresh (real, fake) pairs from ``more_pairs``; the
        last uses ``real`` and ``fake`` (detached). Returns D's terms of the last update and,
        as ``"adv"``, the adversarial term (with its graph, to add to the generator's loss).
        """
        for _ in range(self.config.d_steps - 1):
            self._update_discriminator(*more_pairs(), iteration)
        terms = self._update_discriminator(real, fake.detach(), iteration)
        terms["adv"] = self._generator_term(fake, real, iteration)
        return terms

    def _update_discriminator(
        self, real: torch.Tensor, fake: torch.Tensor, iteration: int
    ) -> dict[str, torch.Tensor]:
        config = self.config
        inputs = self._with_noise(torch.cat([real.float(), fake.float()]), iteration)
        with self._autocast():
            logits = self.d_network(inputs)
        real_logits, fake_logits = logits.float().split([len(real), len(fake)])
        loss = losses.discriminator_loss(
            real_logits, fake_logits, config.gan_loss, config.label_smoothing
        )
        self._optimise(loss, self.d_optimizer, self.d_scaler, self.d_scheduler)
        return {
            "d_loss": loss.detach(),
            "d_real_acc": (real_logits.detach() > 0).float().mean(),
            "d_fake_acc": (fake_logits.detach() < 0).float().mean(),
        }

    def _generator_term(
        self, fake: torch.Tensor, real: torch.Tensor, iteration: int
    ) -> torch.Tensor:
        relativistic = self.config.gan_loss == "ragan"
        inputs = torch.cat([real.float(), fake]) if relativistic else fake
        inputs = self._with_noise(inputs, iteration)
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                logits = self.discriminator(inputs).float()
        finally:
            self.discriminator.requires_grad_(True)
        if not relativistic:
            return losses.generator_adversarial_loss(logits, kind="bce")
        real_logits, fake_logits = logits.split([len(real), len(fake)])
        return losses.generator_adversarial_loss(fake_logits, real_logits.detach(), "ragan")

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The generator's optimiser state plus D's weights, optimiser, schedule and scaler."""
        return {
            **super().state_dict(),
            "discriminator": {
                "hparams": dict(self.discriminator.hparams),
                "state_dict": {
                    k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()
                },
            },
            "d_optimizer": self.d_optimizer.state_dict(),
            "d_scheduler": None if self.d_scheduler is None else self.d_scheduler.state_dict(),
            "d_scaler": self.d_scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.discriminator.load_state_dict(state["discriminator"]["state_dict"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        if self.d_scheduler is not None and state.get("d_scheduler") is not None:
            self.d_scheduler.load_state_dict(state["d_scheduler"])
        if state.get("d_scaler"):
            self.d_scaler.load_state_dict(state["d_scaler"])

    def rank_state(self) -> dict:
        """The data's per-process state plus this process's instance-noise generator."""
        return {**super().rank_state(), "noise": self.noise_generator.get_state()}

    def load_rank_state(self, state: dict) -> None:
        super().load_rank_state(state)
        self.noise_generator.set_state(state["noise"])
