"""Recurrent layers whose recurrent matrix is unitary (complex) or orthogonal (real).

``h_t = σ(W h_{t-1} + V x_t + c)`` with ``W`` unitary, declared through
``unitary_parameter_names`` so ``projunn.param_groups`` puts it in the unitary group.
``UnitaryRNN`` runs a whole sequence: the input map ``V x_t + c`` is one product for all
steps; a real recurrence then runs as one autograd node (Note [fused recurrence]), a complex
one step by step through autograd.

Note [fused recurrence]
-----------------------
The time loop is what costs: T steps of a small product and a nonlinearity, each a few kernel
launches, and autograd's backward adds a node per operation and per step. For a real cell,
``_Recurrence`` runs the loop as one autograd function. Forward, per step, ``p_t = u_t + h_{t−1}Wᵀ``
(one ``addmm``) and ``h_t = σ(p_t)``, written into a time-major buffer, the only thing kept.
Backward walks the steps once in reverse, with three kernels per step,

    g_t = ∂L/∂h_t + δ_{t+1} W        (one ``addmm``)
    δ_t = g_t ⊙ σ'(p_t)              (a comparison and a multiplication)

and the rest is one product over all steps: ``∂L/∂u = δ``, ``∂L/∂W = Σ_t δ_tᵀ h_{t−1}`` (one
``(n × T·B)`` by ``(T·B × n)`` product, reading the kept outputs in place, instead of T rank-B
updates), ``∂L/∂h_0 = δ_1 W``, and for modReLU ``∂L/∂b = Σ δ ⊙ sgn(h)``. No pre-activation is
kept: with ``σ = relu``, ``σ'(p) = [p > 0]``, and with modReLU ``σ(p) = sgn(p)·relu(|p| + b)``,
``σ'(p) = [|p| + b > 0]·[p ≠ 0]`` (0 at ``p = 0``, as autograd's derivative of that formula); in
both cases that is ``[h_t ≠ 0]``, and ``sgn(p) = sgn(h_t)`` wherever it matters. The forward pass
computes exactly what the step-by-step loop computes; the gradient equals autograd's up to the
order of its sums (``test_fused_recurrence_equals_the_step_by_step_loop``).

It runs by default on CUDA, where the step-by-step loop is bound by kernel launches; on a CPU the
step-by-step loop was faster in the measurement that set this default (``docs/speed.md``): its
per-step gradient products stay in cache, where the fused backward's strided reads of ``∂L/∂h_t``
and its passes over all steps do not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import one_of, positive_int
from .init import INITIALISERS

__all__ = ["ModReLU", "UnitaryRNNCell", "UnitaryRNN"]

NONLINEARITIES = ("relu", "modrelu")


class ModReLU(nn.Module):
    """modReLU (Arjovsky et al., 2016): ``σ(z) = relu(|z| + b) · z / |z|``, one bias per feature.

    Computed as ``sgn(z) · relu(|z| + b)`` with ``sgn(0) = 0``, real or complex: at ``z = 0`` the
    output and its gradient are 0 (as expRNN's real ``sign(z) · relu(|z| + b)``), never NaN.
    ``b`` starts uniform in ``[-0.01, 0.01]``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(features).uniform_(-0.01, 0.01))

    def forward(self, z: Tensor) -> Tensor:
        return torch.sgn(z) * F.relu(z.abs() + self.bias)


class UnitaryRNNCell(nn.Module):
    """One step ``h' = σ(W h + V x + c)`` with ``W`` (``weight_hh``) unitary.

    Args:
        input_size: size of ``x``.
        hidden_size: size of ``h``.
        nonlinearity: ``"relu"`` (real only) or ``"modrelu"``.
        init: initialiser of ``W``, a key of ``projunn.init.INITIALISERS`` (``"haar"``, ``"identity"``,
            ``"henaff"``, ``"cayley"``, ...).
        complex: complex (unitary ``W``, complex ``V`` and ``h``) instead of real (orthogonal ``W``).
        dtype: the real dtype (``torch.float32`` by default); complex layers use its complex twin.
        bias: with ``relu``, a learnable bias ``c`` (``bias_ih``, zeros at the start); ``False``
            drops it (``h' = relu(W h + V x)``, the projUNN authors' copy and adding cells). With
            ``modrelu`` the bias is modReLU's own threshold, always there.
    """

    unitary_parameter_names = ("weight_hh",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: str = "modrelu",
        init: str = "haar",
        complex: bool = False,
        dtype: torch.dtype | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            positive_int(name, value)
        one_of("nonlinearity", nonlinearity, NONLINEARITIES)
        if complex and nonlinearity == "relu":
            raise ValueError("nonlinearity 'relu' is not defined for complex hidden states; use 'modrelu'")
        one_of("init", init, INITIALISERS)
        real = dtype or torch.get_default_dtype()
        weight_dtype = (torch.complex128 if real == torch.float64 else torch.complex64) if complex else real
        self.input_size, self.hidden_size = input_size, hidden_size
        self.nonlinearity, self.init, self.complex = nonlinearity, init, complex
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, dtype=weight_dtype))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, dtype=weight_dtype))
        if nonlinearity == "relu" and bias:
            self.bias_ih = nn.Parameter(torch.zeros(hidden_size, dtype=real))
        else:
            self.register_parameter("bias_ih", None)
        self.activation: nn.Module = nn.ReLU() if nonlinearity == "relu" else ModReLU(hidden_size).to(real)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            # Kaiming-normal input map (the expRNN / projUNN scripts' choice); a complex
            # weight splits the variance between its real and imaginary parts.
            std = math.sqrt(2.0 / self.input_size)
            self.weight_ih.normal_(0.0, std)
            INITIALISERS[self.init](self.weight_hh)

    def input_map(self, x: Tensor) -> Tensor:
        """``V x + c`` for ``x`` of shape ``(..., input_size)``."""
        u = F.linear(x.to(self.weight_ih.dtype), self.weight_ih)
        return u if self.bias_ih is None else u + self.bias_ih

    def recur(self, u: Tensor, h: Tensor, weight_hh_t: Tensor) -> Tensor:
        """``σ(u + h W^T)``: one step given the mapped input ``u`` and ``W^T``."""
        return self.activation(torch.addmm(u, h, weight_hh_t))

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        u = self.input_map(x)
        if h is None:
            h = u.new_zeros(u.shape)
        return self.recur(u, h, self.weight_hh.T)


def _modrelu(p: Tensor, bias: Tensor, out: Tensor | None = None) -> Tensor:
    """``sgn(p) · relu(|p| + b)`` (``ModReLU.forward``), optionally into ``out``."""
    return torch.mul(torch.sgn(p), F.relu(p.abs() + bias), out=out)


class _Recurrence(torch.autograd.Function):
    """``h_t = σ(u_t + h_{t−1} Wᵀ)`` for ``t = 1..T``, real, as one node (Note [fused recurrence]).

    ``u`` is ``(B, T, n)``, ``h0`` ``(B, n)``, ``weight_hh`` ``(n, n)``; ``bias`` is modReLU's
    threshold (``None``: ReLU). Returns all ``h_t``, ``(B, T, n)``."""

    @staticmethod
    def forward(ctx, u: Tensor, h0: Tensor, weight_hh: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        out = torch.empty((u.shape[1],) + h0.shape, dtype=u.dtype, device=u.device)  # time-major
        weight_hh_t, h = weight_hh.T, h0
        for t, u_t in enumerate(u.unbind(1)):
            p = torch.addmm(u_t, h, weight_hh_t)
            h = torch.clamp_min(p, 0, out=out[t]) if bias is None else _modrelu(p, bias, out=out[t])
        ctx.save_for_backward(out, h0, weight_hh, bias)
        return out.transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        out, h0, weight_hh, bias = ctx.saved_tensors
        grad = grad_out.transpose(0, 1)
        delta = torch.empty_like(out)
        g = grad[-1]
        for t in range(out.shape[0] - 1, -1, -1):
            torch.mul(g, out[t] != 0, out=delta[t])  # σ'(p_t) = [h_t ≠ 0], for ReLU and modReLU alike
            if t:
                g = torch.addmm(grad[t - 1], delta[t], weight_hh)
        grad_w = delta[0].mT @ h0
        if out.shape[0] > 1:  # Σ_t δ_tᵀ h_{t−1} in one product: the h_{t−1} are out[:-1], in place
            grad_w.addmm_(delta[1:].flatten(0, 1).mT, out[:-1].flatten(0, 1))
        grad_bias = None if bias is None else (delta * torch.sgn(out)).sum(dim=(0, 1))
        return delta.transpose(0, 1), delta[0] @ weight_hh, grad_w, grad_bias


class UnitaryRNN(UnitaryRNNCell):
    """A unitary RNN over whole sequences.

    ``forward(x, h0=None)`` takes ``x`` of shape ``(batch, time, input_size)`` and returns
    ``(outputs, h_last)`` with ``outputs`` of shape ``(batch, time, hidden_size)``, like
    ``torch.nn.RNN(batch_first=True)``. Arguments as for ``UnitaryRNNCell``. On CUDA a real RNN
    runs its time loop as one autograd node (Note [fused recurrence]), on the CPU step by step
    through autograd, as a complex one always does; the attribute ``fused`` (``True``/``False``)
    chooses for every device.
    """

    fused: bool | None = None

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"Expected input of shape (batch, time, {self.input_size}), got {tuple(x.shape)}")
        u = self.input_map(x)
        if h is None:
            h = u.new_zeros(u.shape[0], self.hidden_size)
        weight_hh = self.weight_hh  # one read of a parametrized weight per sequence
        fused = u.is_cuda if self.fused is None else self.fused
        if fused and not weight_hh.is_complex():
            bias = None if self.nonlinearity == "relu" else self.activation.bias
            dtype = weight_hh.dtype  # under autocast too: the recurrence runs in the weight's precision
            with torch.autocast(u.device.type, enabled=False):
                outputs = _Recurrence.apply(u.to(dtype), h.to(dtype), weight_hh, bias)
            return outputs, outputs[:, -1]
        outputs = []
        for u_t in u.unbind(1):
            h = self.recur(u_t, h, weight_hh.T)
            outputs.append(h)
        return torch.stack(outputs, 1), h
