"""Certified robustness of a 1-Lipschitz classifier, and the margin loss that trains for it.

A network ``f`` that is 1-Lipschitz in the L2 norm (``‖f(x) − f(y)‖ ≤ ‖x − y‖``; e.g.
``tasks.vision_models.OrthogonalMLP``) cannot change its prediction within a ball around ``x`` that is
too small for its logit margin (Tsuzuku, Sato & Sugiyama, *Lipschitz-Margin Training*, NeurIPS
2018, Proposition 2): with ``z = f(x)``, label ``y`` and margin ``M = z_y − max_{j≠y} z_j``, each
difference ``z_y − z_j`` is √2-Lipschitz (``|(e_y − e_j)ᵀ(f(x) − f(x'))| ≤ ‖e_y − e_j‖ ‖x − x'‖``),
so ``M > √2·ε`` means ``argmax f(x') = y`` for every ``‖x' − x‖ ≤ ε``. The **certified
accuracy** at radius ``ε`` is the fraction of inputs classified correctly with ``M > √2·ε``;
at ``ε = 0`` it is the accuracy (ties aside). The radius is in the space of the network's
inputs: for the MNIST task, pixels in [0, 1] (``standardize: false``), where the field's
benchmark radius is ``ε = 1.58`` (Anil, Lucas & Grosse, ICML 2019, who introduced the GroupSort
/ MaxMin activation for such networks; Li et al., NeurIPS 2019). A bound is only as good as
the Lipschitz constant behind it: with weights whose ``‖W^H W − I‖_F ≤ δ``, each layer's
constant is at most ``sqrt(1 + δ)``, so for the unitarity errors these runs log (≤ 1e-5) the
certified radii are exact to about ``2·10⁻⁵`` relative.

Training for margins: ``lipschitz_margin_classification`` is the cross-entropy of the logits with
``√2·margin`` added to every wrong class (Tsuzuku et al.'s Lipschitz-margin training with the
Lipschitz constant 1), divided by a ``temperature``: a 1-Lipschitz network's logits move at most
by the input's norm (about 9 for an MNIST digit in [0, 1]), so the usual cross-entropy saturates
early; ``temperature < 1`` sharpens it (Béthune et al., *Pay attention to your loss*, NeurIPS 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def logit_margin(logits: Tensor, targets: Tensor) -> Tensor:
    """``z_y − max_{j≠y} z_j`` per row of ``logits (B, classes)``, ``targets (B,)``: negative when misclassified."""
    true = logits.gather(-1, targets[:, None]).squeeze(-1)
    others = logits.scatter(-1, targets[:, None], -math.inf)
    return true - others.amax(-1)


def certified_accuracy(logits: Tensor, targets: Tensor, radius: float) -> Tensor:
    """The fraction of rows whose prediction is correct and certified at L2 radius ``radius`` for a
    1-Lipschitz network: margin ``> √2·radius`` (the module docstring). ``radius = 0``: the rows with
    a positive margin, the accuracy without ties."""
    if not radius >= 0:
        raise ValueError(f"Invalid radius: {radius}")
    return (logit_margin(logits, targets) > math.sqrt(2) * radius).float().mean()


def cert_name(radius: float) -> str:
    """The metric's name: ``cert_acc_0.5``, ``cert_acc_1.0``, ``cert_acc_1.58``."""
    return f"cert_acc_{float(radius)}"


def lipschitz_margin_classification(
    logits: Tensor,
    targets: Tensor,
    radii: Sequence[float] = (),
    margin: float = 0.0,
    temperature: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss and metrics of a 1-Lipschitz classifier: ``cross_entropy((z + √2·margin·(1 − e_y)) /
    temperature, y)``, the accuracy (``acc``) and ``cert_acc_<ε>`` for each radius in ``radii``."""
    shifted = logits + math.sqrt(2) * margin * (1 - F.one_hot(targets, logits.shape[-1]).to(logits.dtype))
    loss = F.cross_entropy(shifted / temperature, targets)
    with torch.no_grad():
        metrics = {"acc": (logits.argmax(-1) == targets).float().mean()}
        metrics.update({cert_name(r): certified_accuracy(logits, targets, r) for r in radii})
    return loss, metrics
