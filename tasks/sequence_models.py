"""Recurrent models for the sequence tasks: a unitary/orthogonal RNN and the LSTM and plain-RNN
baselines, each with a linear readout of every step (``readout="all"``) or of the last one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import projunn
from projunn.checks import one_of, positive_int

CELLS = ("unitary", "lstm", "rnn")
INPUT_INITS = ("default", "xavier", "uniform")
READOUT_INITS = ("default", "kaiming", "xavier")
BIAS_INITS = ("default", "zero")
READOUTS = ("all", "last")


class SequenceModel(nn.Module):
    """``(batch, time, input_size)`` → logits ``(batch, time, output_size)`` (``readout="all"``) or
    ``(batch, output_size)`` (``readout="last"``).

    Args:
        cell: ``"unitary"`` (``projunn.UnitaryRNN``), ``"lstm"`` or ``"rnn"`` (``torch.nn.RNN``, ReLU,
            orthogonal initial recurrent matrix, trained unconstrained).
        nonlinearity, init, complex, bias: of the unitary cell (see ``projunn.UnitaryRNNCell``).
        input_init: ``"default"`` (each cell's own: Kaiming-normal for the unitary cell, as the
            authors' pMNIST script and expRNN; torch's for LSTM and RNN), ``"xavier"``
            (Glorot-uniform, gain 1, as the authors' copy and adding scripts) or ``"uniform"``
            (U(−0.01, 0.01), scoRNN's).
        bias_init: ``"default"`` (each cell's own; modReLU's threshold U(−0.01, 0.01)) or ``"zero"``
            (every bias of the recurrent cell starts at 0, as scoRNN's modReLU).
        readout_init: ``"default"`` (``nn.Linear``'s), ``"kaiming"`` (normal, ReLU gain: the
            copy script) or ``"xavier"`` (uniform with gain ``readout_gain``: the adding script
            uses 0.5, scoRNN's TensorFlow readout 1); both of the latter zero the readout's bias.

    The expRNN and scoRNN baselines re-express the unitary matrix afterwards
    (``projunn.parametrizations.parametrize``).
    """

    probe_axis = "time"  # what the probes of ``forward`` index (``training.diagnostics``)

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_size: int,
        cell: str = "unitary",
        readout: str = "all",
        nonlinearity: str = "relu",
        init: str = "henaff",
        complex: bool = False,
        bias: bool = True,
        input_init: str = "default",
        bias_init: str = "default",
        readout_init: str = "default",
        readout_gain: float = 1.0,
    ) -> None:
        super().__init__()
        one_of("cell", cell, CELLS)
        one_of("input_init", input_init, INPUT_INITS)
        one_of("bias_init", bias_init, BIAS_INITS)
        one_of("readout_init", readout_init, READOUT_INITS)
        positive_int("hidden size", hidden_size)
        one_of("readout", readout, READOUTS)
        self.readout_steps = readout
        features = hidden_size
        if cell == "unitary":
            self.rnn: nn.Module = projunn.UnitaryRNN(input_size, hidden_size, nonlinearity, init, complex, bias=bias)
            features = 2 * hidden_size if complex else hidden_size
        elif cell == "lstm":
            self.rnn = nn.LSTM(input_size, hidden_size, batch_first=True)
        else:  # "rnn"
            self.rnn = nn.RNN(input_size, hidden_size, nonlinearity="relu", batch_first=True)
            nn.init.orthogonal_(self.rnn.weight_hh_l0)
        self.readout = nn.Linear(features, output_size)
        with torch.no_grad():
            weight_ih = self.rnn.weight_ih if cell == "unitary" else self.rnn.weight_ih_l0
            if input_init == "xavier":
                _xavier_uniform_(weight_ih)
            elif input_init == "uniform":
                (torch.view_as_real(weight_ih) if weight_ih.is_complex() else weight_ih).uniform_(-0.01, 0.01)
            if bias_init == "zero":
                for name, parameter in self.rnn.named_parameters():
                    if "bias" in name:
                        parameter.zero_()
            if readout_init != "default":
                if readout_init == "kaiming":
                    nn.init.kaiming_normal_(self.readout.weight, nonlinearity="relu")
                else:
                    _xavier_uniform_(self.readout.weight, readout_gain)
                self.readout.bias.zero_()

    def forward(self, x: Tensor, probes: Tensor | None = None) -> Tensor:
        """Logits; with ``probes`` (``(batch, time, hidden)``, zeros), the hidden states are
        ``h_t + probes[:, t]``, computed step by step (``unrolled``), so that the gradient of a loss
        with respect to ``probes[:, t]`` is the total ``∂L/∂h_t``, through all later steps."""
        if probes is not None:
            hidden = self.unrolled(x, probes)
        elif self.readout_steps == "last" and isinstance(self.rnn, projunn.UnitaryRNN):
            hidden = self.rnn(x)[1]  # an output of its own: no gradient of zeros for the other steps
        else:
            hidden = self.rnn(x)[0]
        if self.readout_steps == "last" and hidden.ndim == 3:
            hidden = hidden[:, -1]
        if hidden.is_complex():
            hidden = torch.cat([hidden.real, hidden.imag], dim=-1)
        if hidden.ndim == 3 and hidden.stride(1) > hidden.stride(0):
            # stored time-major (UnitaryRNN): read in place, and the gradient goes back time-major
            states = hidden.transpose(0, 1)
            if states.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
                return _ReadoutOfEveryStep.apply(states, self.readout.weight, self.readout.bias).transpose(0, 1)
            return self.readout(states).transpose(0, 1)
        return self.readout(hidden)

    def unrolled(self, x: Tensor, probes: Tensor) -> Tensor:
        """The hidden states, one step at a time with the cell's own equations and weights, each
        plus its probe: ``self.rnn(x)[0]`` when the probes are zero."""
        rnn, states = self.rnn, []
        if isinstance(rnn, projunn.UnitaryRNN):
            h, weight_hh_t = probes.new_zeros(probes[:, 0].shape), rnn.weight_hh.T
            for u_t, probe_t in zip(rnn.input_map(x).unbind(1), probes.unbind(1)):
                h = rnn.recur(u_t, h, weight_hh_t) + probe_t
                states.append(h)
            return torch.stack(states, 1)
        u = x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + rnn.bias_hh_l0
        h = c = probes.new_zeros(probes[:, 0].shape)
        for u_t, probe_t in zip(u.unbind(1), probes.unbind(1)):
            pre = u_t + h @ rnn.weight_hh_l0.T
            if isinstance(rnn, nn.LSTM):  # gates in torch's order: input, forget, cell, output
                i, f, g, o = pre.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                h = torch.relu(pre)
            h = h + probe_t
            states.append(h)
        return torch.stack(states, 1)

    def probe_shape(self, x: Tensor) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of the probes ``forward`` takes for the input ``x``: the hidden states'."""
        dtype = self.rnn.weight_hh.dtype if isinstance(self.rnn, projunn.UnitaryRNN) else x.dtype
        return (x.shape[0], x.shape[1], self.rnn.hidden_size), dtype


class _ReadoutOfEveryStep(torch.autograd.Function):
    """``F.linear(states, weight, bias)`` on the time-major states ``(T, B, n)`` of every step, its
    gradient of the states taken in products of ``projunn.rnn.BLOCK`` steps' rows: with few outputs
    (9 on copy) BLAS takes ``(rows × out)(out × n)`` faster in blocks of 4,096 rows than whole on the
    CPU, as it does the recurrence's input map (Note [fused recurrence] in ``projunn/rnn.py``; the
    step times in docs/speed.md). The values are ``F.linear``'s."""

    @staticmethod
    def forward(ctx, states: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(states, weight)
        ctx.has_bias = bias is not None
        return F.linear(states, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        states, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        rows, grad_rows = states.reshape(-1, states.shape[-1]), grad.reshape(-1, grad.shape[-1])
        grad_states = None
        if needs[0]:
            grad_states = torch.empty_like(states)
            flat, step = grad_states.view(-1, states.shape[-1]), projunn.rnn.BLOCK * states.shape[1]
            for r in range(0, len(rows), step):
                torch.mm(grad_rows[r : r + step], weight, out=flat[r : r + step])
        grad_weight = grad_rows.mT @ rows if needs[1] else None
        grad_bias = grad_rows.sum(0) if ctx.has_bias and needs[2] else None
        return grad_states, grad_weight, grad_bias


def _xavier_uniform_(weight: Tensor, gain: float = 1.0) -> None:
    """``nn.init.xavier_uniform_``; for a complex weight (which torch would fill with the real
    variance in each of its parts) the real and imaginary parts get half of it each, so that
    ``E|w|²`` is the real one's."""
    if not weight.is_complex():
        nn.init.xavier_uniform_(weight, gain)
        return
    fan_out, fan_in = weight.shape
    half = gain * math.sqrt(3.0 / (fan_in + fan_out))  # the real bound / sqrt(2)
    torch.view_as_real(weight).uniform_(-half, half)
