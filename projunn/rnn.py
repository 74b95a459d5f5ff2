"""Recurrent layers whose recurrent matrix is unitary (complex) or orthogonal (real).

``h_t = σ(W h_{t-1} + V x_t + c)`` with ``W`` unitary, declared through
``unitary_parameter_names`` so ``projunn.param_groups`` puts it in the unitary group.
``UnitaryRNN`` runs a whole sequence as one autograd node (Note [fused recurrence]), real or
complex, on every device, its time loop in C++ on the CPU (Note [compiled recurrence]);
``fused = False`` runs it step by step through autograd instead.

Note [fused recurrence]
-----------------------
A training step of a recurrent task is the time loop: T steps of a small product and a
nonlinearity. Its floor is the products alone: T products ``(B × n)(n × n)`` forward, T backward
and the weight gradient. Step by step through autograd, each step adds several kernels, their
Python dispatch, autograd nodes, and fresh buffers for every intermediate; ``_Recurrence``
keeps to the products and one element-wise pass per step:

* Forward. The input map of all steps, ``X Vᵀ + c``, is one product per block of ``BLOCK`` steps
  (with 1 to 10 inputs, BLAS takes the tall product faster in blocks than whole), written
  time-major ``(T, B, n)`` into the buffer that becomes the outputs; step t then adds
  ``h_{t−1} Wᵀ`` in place (one ``addmm_``) and applies σ in place. Only the outputs are kept.
* Backward, in reverse, per step: ``g_t = ∂L/∂h_t + δ_{t+1} conj(W)`` (one ``addmm`` into a
  small rolling buffer) and ``δ_t = g_t ⊙ σ'(p_t)``. No pre-activation is kept: with ``σ = relu``
  ``σ'(p) = [h > 0]`` (one ``threshold_backward``); with real modReLU ``σ(p) = sgn(p)·relu(|p| + b)``,
  ``σ'(p) = [|p| + b > 0]·[p ≠ 0] = [h ≠ 0]`` (0 at ``p = 0``, as autograd's derivative of that
  formula) and ``∂L/∂b += g_t ⊙ sgn(h_t)``. Complex modReLU, ``h = p + b·p/|p|`` where active, has the
  symmetric real Jacobian ``I + (b/|p|)(I − e eᵀ)``, ``e = p/|p| = h/|h|``, so
  ``δ = [h ≠ 0]·(g + b/|p|·(g − e·Re(ē g)))`` and ``∂L/∂b += Re(ē g)``, with ``|p| = |h| − b``.
* The weight gradients ``Σ_t δ_tᵀ conj(h_{t−1})`` and ``Σ_t δ_tᵀ conj(x_t)`` (and ``Σ δ_t`` for c)
  are one product per block of ``BLOCK`` steps, while the block's δ are still in cache, instead of
  T rank-B updates or one product over a stored ``(T, B, n)`` δ; the input map's is summed
  transposed, ``conj(X)ᵀ δ``, the layout BLAS takes fastest with few inputs.
* The last state is an output of its own: a loss on ``h_T`` alone (the pMNIST readout) leaves the
  other outputs without a gradient (``set_materialize_grads(False)``), so no ``(T, B, n)`` tensor of
  zeros is made and read back.
* On a Linux CPU the outputs' buffer is marked for transparent huge pages before its first write:
  the first writes to a fresh 100 MB buffer fault in 25,000 4 KB pages, which cost as much as the
  forward's products on the development machine (``_large_empty``).

The outputs and gradients equal the step-by-step loop's to rounding, real and complex, ReLU and
modReLU, on the recurrent tasks' shapes (``test_fused_recurrence_equals_the_step_by_step_loop``);
the step times against the floor are in ``docs/speed.md`` (``python -m scripts.bench.rnn``).

Note [compiled recurrence]
--------------------------
In PyTorch the element-wise work of a step is several kernels: forward, ``clamp_min_`` (ReLU) or
five for modReLU (``sgn``, ``abs``, ``add``, ``relu``, ``mul``); backward, the copy of ``∂L/∂h_t``
into the product's output and ``threshold_backward``, or four for modReLU. On the CPU each is a
dispatch and a pass over a ``(B, n)`` block that is in cache anyway, and together they cost about
a fifth of a pMNIST step. ``csrc/recurrence.cpp`` runs the same loop in C++: per step the same
ATen product (``addmm_`` forward, ``mm`` backward, the same BLAS) and one element-wise pass, which
also adds ``∂L/∂h_t`` and accumulates modReLU's threshold gradient; the weight gradients are the
same block products. It is built on first use (``projunn/_kernels.py``) and taken by ``UnitaryRNN``
on the CPU (``compiled = False`` takes the PyTorch node above, which the GPU always runs). Real
results equal the PyTorch node's to rounding; complex ones differ by an ulp of ``|h|`` (libstdc++'s
``hypot`` against torch's vectorized one), which modReLU's ``b/(|h| − b)`` magnifies near ``h = 0``
(``test_fused_recurrence_equals_the_step_by_step_loop`` allows for it).
"""

from __future__ import annotations

import ctypes
import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _kernels
from .checks import one_of, positive_int
from .init import INITIALISERS
from .linalg import eager_under_compile

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


_relu_backward = torch.ops.aten.threshold_backward.grad_input  # g · [h > 0], in one pass
BLOCK = 32  # steps per weight-gradient product (Note [fused recurrence])


class _Recurrence(torch.autograd.Function):
    """``h_t = σ(W h_{t−1} + V x_t + c)`` for ``t = 1..T`` as one node (Note [fused recurrence]).

    ``x`` is time-major ``(T, B, m)`` (any strides, real or of the weights' dtype), ``h0``
    ``(B, n)``, ``weight_hh`` ``(n, n)``, ``weight_ih`` ``(n, m)``, ``bias_ih`` ``(n,)`` or ``None``;
    ``bias`` is modReLU's threshold (``None``: ReLU). Real or complex. Returns the outputs,
    time-major ``(T, B, n)`` and contiguous, and ``h_T``."""

    @staticmethod
    def forward(ctx, x, h0, weight_hh, weight_ih, bias_ih, bias, compiled=None):  # type: ignore[override]
        ctx.real_input, ctx.compiled = not x.is_complex(), compiled
        x = x.to(weight_ih.dtype).contiguous()
        out = _large_empty(x.shape[:2] + weight_hh.shape[:1], weight_hh)
        # the input map into the outputs' buffer, one product per block of BLOCK steps: with few
        # inputs (1 to 10) BLAS takes the tall product faster in blocks than whole on the CPU
        for t in range(0, len(out), BLOCK):
            rows, inputs = out[t : t + BLOCK].flatten(0, 1), x[t : t + BLOCK].flatten(0, 1)
            if bias_ih is None:
                torch.mm(inputs, weight_ih.T, out=rows)
            else:
                torch.addmm(bias_ih, inputs, weight_ih.T, out=rows)
        weight_hh_t, h = weight_hh.T, h0
        if compiled is not None:  # the same loop in C++ (Note [compiled recurrence])
            compiled.forward(out, h0, weight_hh_t, bias)
            h = out[-1] if len(out) else h0
        else:
            for p in out:  # p_t = V x_t + c + h_{t−1} Wᵀ in place, then h_t = σ(p_t) in place
                p.addmm_(h, weight_hh_t)
                h = p.clamp_min_(0) if bias is None else _modrelu(p, bias, out=p)
        ctx.save_for_backward(out, x, h0, weight_hh, weight_ih, bias)
        ctx.set_materialize_grads(False)  # an unused output gets no gradient of zeros
        return out, h.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, grad_last):  # type: ignore[override]
        out, x, h0, weight_hh, weight_ih, bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if ctx.compiled is not None:
            grads = ctx.compiled.backward(
                out, x, h0, weight_hh, weight_ih, bias, None if grad is None else grad.contiguous(), grad_last,
                list(needs[:5]), BLOCK,
            )  # fmt: skip
            grad_x = grads[0]
            if grad_x is not None and ctx.real_input and grad_x.is_complex():
                grad_x = grad_x.real
            return (grad_x, *grads[1:], None)
        T, B, n = out.shape
        weight_hh = weight_hh.conj()  # ∂/∂h of h Wᵀ is ·conj(W) (torch's convention for complex)
        delta = out.new_empty(min(BLOCK, T), B, n)  # δ_t of the block under way, in slot t mod BLOCK
        grad_hh = torch.zeros_like(weight_hh) if needs[2] else None  # (a frozen weight: no product)
        # the input map's weight gradient summed transposed, (in × n) += conj(x)ᵀ δ: with in ≪ n BLAS
        # takes it faster than δᵀ conj(x) on the CPU
        grad_ih_t = weight_ih.new_zeros(weight_ih.shape[::-1]) if needs[3] else None
        grad_bias_ih = out.new_zeros(n) if needs[4] else None
        grad_x = torch.empty_like(x) if needs[0] else None
        grad_bias = None if bias is None else out.new_zeros(B, n, dtype=bias.dtype)  # summed over B at the end
        for t in range(T - 1, -1, -1):
            d, h = delta[t % BLOCK], out[t]
            if t == T - 1:  # g_T = ∂L/∂h_T
                d.copy_(grad[t]) if grad is not None else d.zero_()
                if grad_last is not None:
                    d.add_(grad_last)
            elif grad is not None:  # g_t = ∂L/∂h_t + δ_{t+1} conj(W)
                torch.addmm(grad[t], delta[(t + 1) % BLOCK], weight_hh, out=d)
            else:
                torch.mm(delta[(t + 1) % BLOCK], weight_hh, out=d)
            if bias is None:  # δ_t = g_t · σ'(p_t) = g_t · [h_t ≠ 0]
                _relu_backward(d, h, 0, grad_input=d)
            elif not h.is_complex():  # and ∂L/∂b += g_t · sgn(h_t)
                s = torch.sgn(h)
                grad_bias.addcmul_(d, s)
                d.mul_(s.abs())
            else:
                _modrelu_backward(d, h, bias, grad_bias)
            if t % BLOCK == 0:  # the block of steps t..t+L−1: its weight gradients in one product each
                L = min(BLOCK, T - t)
                block = delta[:L].flatten(0, 1)
                if grad_hh is None:
                    pass
                elif t == 0:  # Σ δ_tᵀ conj(h_{t−1}), with h_{−1} = h0
                    grad_hh.addmm_(delta[0].mT, h0.conj())
                    if L > 1:
                        grad_hh.addmm_(delta[1:L].flatten(0, 1).mT, out[: L - 1].flatten(0, 1).conj())
                else:
                    grad_hh.addmm_(block.mT, out[t - 1 : t + L - 1].flatten(0, 1).conj())
                if grad_ih_t is not None:
                    grad_ih_t.addmm_(x[t : t + L].flatten(0, 1).conj().mT, block)
                if grad_bias_ih is not None:
                    grad_bias_ih += block.sum(0)
                if grad_x is not None:
                    torch.mm(block, weight_ih.conj(), out=grad_x[t : t + L].flatten(0, 1))
        grad_h0 = delta[0] @ weight_hh if needs[1] else None
        grad_ih = grad_ih_t.mT.contiguous() if grad_ih_t is not None else None
        if grad_x is not None and ctx.real_input and grad_x.is_complex():
            grad_x = grad_x.real
        return grad_x, grad_h0, grad_hh, grad_ih, grad_bias_ih, None if bias is None else grad_bias.sum(0), None


_HUGE_PAGE = 1 << 21
_madvise = None
if sys.platform == "linux":
    try:
        _madvise = ctypes.CDLL(None, use_errno=True).madvise
        _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        _madvise = None


def _large_empty(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """``torch.empty`` of ``like``'s dtype and device; on a Linux CPU, a buffer of several MB is
    first marked for transparent huge pages (``madvise(MADV_HUGEPAGE)``, a hint the kernel may
    ignore), so that its first writes fault in 2 MB pages instead of 4 KB ones (Note [fused
    recurrence]: 13 against 61 ms for the 97 MB of the copy task's outputs)."""
    buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
    size = buffer.numel() * buffer.element_size()
    if _madvise is not None and buffer.device.type == "cpu" and size >= 4 * _HUGE_PAGE:
        start = -(-buffer.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (buffer.data_ptr() + size) // _HUGE_PAGE * _HUGE_PAGE
        _madvise(start, end - start, 14)  # MADV_HUGEPAGE; an error (THP off) leaves 4 KB pages
    return buffer


def _modrelu_backward(d: Tensor, h: Tensor, bias: Tensor, grad_bias: Tensor) -> None:
    """Complex modReLU, in place on ``d`` (Note [fused recurrence]): with ``e = h/|h|`` and
    ``|p| = |h| − b`` where ``h ≠ 0``, ``δ = [h ≠ 0]·(g + b/|p|·(g − e·Re(ē g)))``, and
    ``∂L/∂b += Re(ē g)``."""
    active = h != 0
    magnitude = h.abs()
    e = torch.where(active, h / magnitude, 0)
    radial = (e.conj() * d).real
    grad_bias.add_(radial)
    scale = torch.where(active, bias / (magnitude - bias), 0)
    torch.mul(d + scale * (d - e * radial), active, out=d)


class UnitaryRNN(UnitaryRNNCell):
    """A unitary RNN over whole sequences.

    ``forward(x, h0=None)`` takes ``x`` of shape ``(batch, time, input_size)`` and returns
    ``(outputs, h_last)`` with ``outputs`` of shape ``(batch, time, hidden_size)``, like
    ``torch.nn.RNN(batch_first=True)``; ``outputs`` is a time-major tensor seen batch-first (a
    transposed view), and ``h_last`` a tensor of its own. Arguments as for ``UnitaryRNNCell``. The time
    loop runs as one autograd node (Note [fused recurrence]), on the CPU in C++ where that builds
    (Note [compiled recurrence]); set the attribute ``compiled = False`` for the node's PyTorch loop,
    ``fused = False`` to run step by step through autograd (the reference both are tested against).
    """

    fused: bool = True
    compiled: bool = True

    def forward(self, x: Tensor, h: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"Expected input of shape (batch, time, {self.input_size}), got {tuple(x.shape)}")
        weight_hh = self.weight_hh  # one read of a parametrized weight per sequence
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size, dtype=weight_hh.dtype)
        return self._time_loop(x, h, weight_hh)

    # Under torch.compile the loop stays eager: traced, it would be unrolled over every time step (T = 1000
    # for copy) into the products and element-wise passes it already runs (Note [fused recurrence]).
    @eager_under_compile("the time loop runs eagerly (UnitaryRNN._time_loop)")
    def _time_loop(self, x: Tensor, h: Tensor, weight_hh: Tensor) -> tuple[Tensor, Tensor]:
        if self.fused:
            bias = None if self.nonlinearity == "relu" else self.activation.bias
            with torch.autocast(x.device.type, enabled=False):  # the recurrence in the weight's precision
                compiled = _kernels.recurrence() if self.compiled and x.device.type == "cpu" else None
                outputs, last = _Recurrence.apply(
                    x.transpose(0, 1), h.to(weight_hh.dtype), weight_hh, self.weight_ih, self.bias_ih, bias, compiled
                )
            return outputs.transpose(0, 1), last
        u = self.input_map(x)
        outputs = []
        for u_t in u.unbind(1):
            h = self.recur(u_t, h, weight_hh.T)
            outputs.append(h)
        return torch.stack(outputs, 1), h
