"""Training objectives: what a run optimises, on the one loop of :mod:`napari_pclesr.train.loop`.

=============  ====================================================  ==========================
name           generator loss                                        data
=============  ====================================================  ==========================
supervised     ``loss`` (L1, MSE, SSIM, SSIM+L1) against HR          (LR, HR) pairs
adversarial    content ``loss`` + 1e-3 × adversarial (SRGAN)         (LR, HR) pairs
cycle          l_Vec + l_Adv + l_Reg (seed 001)                      LR (+ fibre layout) only
=============  ====================================================  ==========================
"""

from __future__ import annotations

from napari_pclesr.train.objectives.base import Objective

__all__ = ["Objective", "create_objective"]


def create_objective(config, context, device, amp_dtype) -> Objective:
    """The objective named by ``config.objective``."""
    if config.objective == "adversarial":
        from napari_pclesr.train.objectives.adversarial import AdversarialObjective as chosen
    elif config.objective == "cycle":
        from napari_pclesr.train.objectives.cycle import CycleObjective as chosen
    else:
        from napari_pclesr.train.objectives.supervised import SupervisedObjective as chosen
    return chosen(config, context, device, amp_dtype)
