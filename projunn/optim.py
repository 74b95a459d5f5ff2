"""Keep chosen parameters of any ``torch.optim`` optimizer exactly unitary.

``ProjUNN`` wraps an ordinary optimizer. Parameter groups marked ``"unitary": True``
(``projunn.param_groups`` builds them from a model) are stepped like this:

1. the base optimizer runs unchanged, so its statistics (momentum, RMSprop's and Adam's
   averages, ...) stay Euclidean, computed from the raw gradient;
2. the update ``ΔW`` it would have added to each unitary ``W`` is captured instead of
   applied (Note [capturing the base update]);
3. ``ΔW`` is approximated at rank k (``lsi`` or ``column`` sampling) and ``W`` is moved by
   projUNN-T or projUNN-D, which keeps it unitary, in O(k n²).

All other parameters get exactly the base optimizer's update.

Note [capturing the base update]
--------------------------------
Every ``torch.optim`` optimizer ends its step with ``p += update`` where ``update`` depends
on the gradient and the optimizer's state but not on ``p`` itself, except through weight
decay. So the base optimizer never sees a unitary parameter: it steps an update buffer of its own,
a leaf tensor of the same shape that holds zero, whose ``.grad`` is, for the step, the
parameter's gradient. After ``base.step()`` the update buffer holds ``ΔW``; it is read, then zeroed
(while it is in cache) for the next step. The base's state (momentum, running averages) is
keyed to the update buffers, which sit in the base's own groups where the parameters sit in
``ProjUNN``'s, in the same order, so ``state_dict()`` is the base's own format. This costs one
write pass instead of a copy of ``W`` and a subtraction, needs nothing from the base optimizer
but its public ``step``, and never swaps a tensor's storage (``p.data = ...``), which
``torch.compile`` does not follow: a compiled step is the eager step. ``ProjUNN``'s groups and
the base's share every entry but ``"params"`` (non-unitary groups are one dict); a step copies
``ProjUNN``'s entries (an ``lr`` set by a scheduler) into the base's unitary groups first.

Weight decay is set to zero on unitary groups: ``W ↦ (1 − λ)W`` has no component along the
unitary manifold (its tangent projection ``½(W^H W − W^H W)`` is zero and its polar factor is
``W``), so it could only pollute the rank-k sketch. An optimizer whose step reads the parameter's value (``Adafactor``
scales it by ``RMS(W)``) gets a copy of ``W`` in the update buffer instead, and ``ΔW`` is the
update buffer minus ``W`` afterwards (a copy and a subtraction more). Optimizers that use ``p`` in
other ways (``LBFGS`` re-evaluates the closure at trial points, ``ASGD`` averages ``p``) and
``SparseAdam`` (sparse gradients only) are refused. ``tests/library/test_optim.py`` checks every
optimizer torch ships: at ``k = n``, the matrix moves to the projection of exactly the update
the optimizer makes on an unconstrained copy.

Note [compiled steps]
--------------------
``torch.compile`` of a function that calls ``ProjUNN.step`` traces the base optimizer's step on the
update buffers (what torch's compiled optimizers fuse into a few loops) and runs the projection (sketch,
projUNN-T/D, drift control: ``_update_unitary``) eagerly inside it, by ``torch.compiler.disable``:
the step equals the eager one to float32 rounding (``tests/library/test_compile.py``). Traced, the projection
was worse on every count: its sketches come from ``ProjUNN``'s own generator, which dynamo cannot
trace (inductor would draw other numbers, so a compiled run would not be the eager run), so each
matrix broke the graph at its draw; each distinct matrix shape recompiled the resumed frames (past
dynamo's limit of 8 recompiles it silently runs eager); and six small matrices took about 5 minutes
to compile (17 graphs, on the 2-core CPU beside two training runs), for a step whose cost is LAPACK
(QR, eigh or SVD) and BLAS products that inductor calls as external kernels anyway. A whole step,
projection included, is captured in a CUDA graph by ``torch.cuda.graph`` on the ``capturable`` path
(Note [sync-free steps] in ``projunn.updates``).

Drift control: float32 rounding pulls ``W`` off the manifold in a random walk, measured at
about ``0.3·sqrt(n)·eps·sqrt(steps)`` (n = 256: 1.8e-4 after 100,000 steps; ``scripts/bench/unitarity_drift.py``).
Every ``reproject_every`` steps ``ProjUNN`` estimates each unitary matrix's error
``‖W^H W − I‖_F`` in O(n²) and replaces the matrices above ``reproject_tol`` by their polar
factor (an SVD, O(n³), needed every few thousand steps). An ``n × p`` matrix is measured by its
smaller Gram matrix in O(n·p) and re-projected by its thin SVD in O(n·p·min(n, p)); its error is
``‖W^H W − I_p‖_F`` (``‖W W^H − I_n‖_F`` when wide), and ``n`` in the default tolerance is ``min(n, p)``.
"""

from __future__ import annotations

import cmath
import inspect
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .checks import floating, matrix, one_of, positive_int
from .declare import as_matrix, unitary_tolerance
from .linalg import (
    add_low_rank,
    eager_under_compile,
    estimate_unitarity_error,
    full_precision,
    polar,
    reduced_matmul_precision,
    unitarity_error,
)
from .samplers import SAMPLERS, lsi
from .updates import PROJECTORS, low_rank_step

__all__ = [
    "ProjUNN",
    "NonFiniteUpdateWarning",
    "captured_fraction",
    "resolve_optimizer",
]

_UNSUPPORTED = {
    "LBFGS": "it re-evaluates the closure at trial points",
    "ASGD": "it averages the parameter's value",
    "SparseAdam": "it takes sparse gradients only, and a unitary matrix's gradient is dense",
}
# Optimizers whose update reads the parameter's value, not only its gradient and their state
# (Note [capturing the base update]).
_READS_THE_WEIGHT = {"Adafactor": "scales its step by the parameter's RMS"}


class NonFiniteUpdateWarning(RuntimeWarning):
    """A unitary matrix was left unchanged because its update held NaN or Inf."""


def resolve_optimizer(optimizer: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """The ``torch.optim`` class named ``optimizer`` (or the class itself), checked usable as a base."""
    if isinstance(optimizer, str):
        cls = getattr(torch.optim, optimizer, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
            raise ValueError(
                f"Unknown base optimizer {optimizer!r}; expected a torch.optim optimizer such as "
                "'SGD', 'RMSprop', 'Adam' or 'AdamW'"
            )
    elif isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        cls = optimizer
    else:
        raise ValueError(f"Expected a torch.optim.Optimizer subclass or its name, got {optimizer!r}")
    if cls.__name__ in _UNSUPPORTED:
        raise ValueError(f"{cls.__name__} cannot be wrapped by ProjUNN: {_UNSUPPORTED[cls.__name__]}")
    return cls


def _check_options(projector: Any, rank: Any, sampler: Any) -> None:
    if not callable(projector):
        one_of("projector", projector, PROJECTORS)
    if not callable(sampler):
        one_of("sampler", sampler, SAMPLERS)
    positive_int("rank k", rank)


# A rank-k sampler: (G, k, generator=None) -> (a, b), a b^H ≈ G (projunn.samplers).
Sampler = Callable[..., tuple[Tensor, Tensor]]
# A projector: (W, a, b) -> the unitary matrix that replaces W after the step ΔW = a b^H
# (projunn.projunn_t and projunn.projunn_d are two).
Projector = Callable[[Tensor, Tensor, Tensor], Tensor]


def _sampler(sampler: str | Sampler) -> Sampler:
    return sampler if callable(sampler) else SAMPLERS[sampler]


def _check_unitary_param(p: Tensor, rank: int, batch_dims: int | None = None) -> None:
    matrix(p, "a unitary parameter")
    if batch_dims is not None:
        positive_int("batch_dims", batch_dims, 0, p.ndim - 2, expected=f"None or an integer in 0..{p.ndim - 2}")
    W = as_matrix(p, batch_dims)
    n, cols = W.shape[-2:]
    if rank > min(n, cols):
        if n == cols:
            raise ValueError(f"rank k must be in 1..n={n}, got {rank}")
        raise ValueError(f"rank k must be in 1..min(n, p)={min(n, cols)} for a {n} × {cols} matrix, got {rank}")
    floating(p, "unitary parameter")
    error = unitarity_error(W).max().item()
    if not error <= unitary_tolerance(W):
        gram = "W^H W" if n >= cols else "W W^H"
        shape = f"shape {tuple(p.shape)}" if W is p else f"shape {tuple(p.shape)}, matrix {tuple(W.shape)}"
        hint = (
            "; for a convolution kernel read as one matrix, give the group batch_dims=0 (projunn.param_groups "
            "does for a kernel declared by projunn.orthogonal_)"
            if batch_dims is None and p.ndim > 2
            else ""
        )
        raise ValueError(
            f"A parameter marked unitary ({shape}) is not unitary: ‖{gram} − I‖_F = {error:.3g}; "
            f"initialise it with projunn.init (e.g. haar_), projunn.polar or projunn.orthogonal_{hint}"
        )


def _default_reproject_tol(W: Tensor) -> float:
    # A fresh matrix has error ≈ 0.3·sqrt(n)·eps and the drift grows like 0.3·sqrt(n)·eps·sqrt(steps):
    # this re-projects every few thousand steps and keeps n = 256, float32 below 4e-5
    # (scripts/bench/unitarity_drift.py).
    # An n × p matrix: the size of its smaller Gram matrix.
    return 20 * math.sqrt(min(W.shape[-2:])) * torch.finfo(W.dtype).eps


class ProjUNN(torch.optim.Optimizer):
    """Run any ``torch.optim`` optimizer and keep its unitary parameter groups unitary.

    Args:
        params: tensors or parameter-group dicts, as for any ``torch.optim`` optimizer. Groups
            with ``"unitary": True`` hold square (or batched square, ``(..., n, n)``) unitary or
            orthogonal matrices, or rectangular ones ``(..., n, p)`` with orthonormal columns
            (``n > p``) or rows (``n < p``); a group may set its own ``lr``, ``projector``, ``rank``
            and ``sampler``, and ``batch_dims`` (Note [the matrix of a parameter] in
            ``projunn.declare``: its tensors' matrices are not in their last two dimensions).
            ``param_groups(model, unitary_lr=...)`` builds such groups.
        optimizer: the base optimizer class or its name in ``torch.optim`` (default ``"RMSprop"``).
        projector: ``"T"`` (tangent, geodesic step) or ``"D"`` (direct, polar factor of ``W + ΔW``),
            or a function ``projector(W, a, b) -> W⁺`` that returns the unitary matrices replacing
            ``W`` (``(..., n, p)``) after the step ``ΔW = a b^H`` (``projunn.projunn_t`` and
            ``projunn.projunn_d`` are two such; their low-rank form, which updates ``W`` in place,
            serves the names); module-level, so that ``state_dict()`` can be saved, and reading
            nothing on the host for a ``capturable`` optimizer. Matrices whose result is not finite
            keep their value, as with the named projectors.
        rank: k, the rank of the approximation of each update (1..min(n, p)).
        sampler: ``"lsi"`` (random sketch), ``"column"`` (column sampling), or a function
            ``sampler(G, k, generator=None) -> (a, b)`` with ``a b^H`` a rank-k approximation of
            the update ``G`` (``(..., n, p)``; ``a``: ``(..., n, k)``, ``b``: ``(..., p, k)``), as
            those two are (``projunn.samplers``); a module-level function, so that ``state_dict()``
            can be saved.
        reproject_every: every this many steps, estimate each unitary matrix's drift from the
            manifold (O(n²)); ``None`` never checks.
        reproject_tol: re-project (polar factor) matrices whose error ``‖W^H W − I‖_F`` exceeds
            this; ``None`` uses ``20·sqrt(n)·eps(dtype)`` (``n = min(n, p)`` for an ``n × p``
            matrix); ``0`` re-projects at every check.
        seed: seed of the sampler's own random generator; ``None`` draws it from torch's global
            generator, so ``torch.manual_seed`` (or Lightning's ``seed_everything``) fixes it and
            every process of a distributed run draws the same sketches.
        capturable: step without reading anything on the host (Note [sync-free steps] in
            ``projunn.updates``), so that a step can be captured in a CUDA graph and never stalls
            the CPU: the generator lives on the parameters' device, non-finite updates are skipped
            by masks on the device and reported (``NonFiniteUpdateWarning``) at the next drift
            check, the one host read, every ``reproject_every`` steps. ``None`` (default): on
            when the unitary parameters are on a CUDA device. The ``lsi`` sampler only. A base
            optimizer that has a ``capturable`` argument (``Adam``, ``RMSprop``, ...) gets
            ``capturable=True`` too on CUDA, unless given otherwise.
        **kwargs: the base optimizer's own arguments (``lr``, ``momentum``, ``betas``, ...).
            A ``weight_decay`` given here applies to the other groups only: unitary groups get
            0 (decay cannot keep a matrix unitary); a unitary group that asks for a non-zero
            ``weight_decay`` itself is a ``ValueError``.

    Setting ``track_captured = True`` makes each step record, in ``captured[parameter]``, the
    fraction of the base optimizer's update that the rank-k step keeps (``captured_fraction``):
    what tells which k a run needs (a pass over the update each time: set it on the steps you read).
    Setting ``track_steps = True`` makes each step record, in ``step_norms[parameter]``, a tensor of
    three Frobenius norms (the largest over a batch of matrices): the base optimizer's proposal
    ``‖ΔW‖``, the part the rank-k step keeps ``‖a bᴴ‖``, and the step taken ``‖W⁺ − W‖`` (NaN for a
    custom projector): a loss spike's step, seen afterwards (``training.diagnostics.LossSpikes``).

    The generator's state and step count are part of ``state_dict()``. When a unitary update
    is not finite (a NaN/Inf gradient), the matrix keeps its value and a
    ``NonFiniteUpdateWarning`` is issued; other parameters follow the base optimizer. A base
    optimizer with state (momentum, running averages: RMSprop, Adam) has then taken the
    non-finite gradient in too, so later updates of that matrix stay non-finite and it stays
    frozen: stop the run or reload a checkpoint (a training loop should stop on a non-finite loss).

    Example::

        opt = ProjUNN(param_groups(model, unitary_lr=1e-4), "RMSprop", lr=1e-3, rank=1)
        loss = model(x).pow(2).mean(); loss.backward(); opt.step(); opt.zero_grad()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        optimizer: str | type[torch.optim.Optimizer] = "RMSprop",
        *,
        projector: str | Projector = "T",
        rank: int = 1,
        sampler: str | Sampler = "lsi",
        reproject_every: int | None = 100,
        reproject_tol: float | None = None,
        seed: int | None = None,
        capturable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        cls = resolve_optimizer(optimizer)
        _check_options(projector, rank, sampler)
        if reproject_every is not None:
            positive_int("reproject_every", reproject_every, expected="a positive integer or None")
        if reproject_tol is not None and not reproject_tol >= 0:
            raise ValueError(f"reproject_tol must be >= 0 or None, got {reproject_tol!r}")
        self._unitary_defaults = {"projector": projector, "rank": rank, "sampler": sampler}
        self._has_weight_decay = "weight_decay" in inspect.signature(cls.__init__).parameters
        # torch.optim's own bookkeeping (step hooks, profiling) on the groups, then the base
        # optimizer on the same group dicts; both share one list of groups and one state.
        super().__init__([self._prepare_group(g) for g in _as_groups(params)], {})
        devices = {p.device for p, _ in self._unitary()}
        self.capturable = any(d.type == "cuda" for d in devices) if capturable is None else bool(capturable)
        if self.capturable:
            if len(devices) > 1:
                raise ValueError(
                    f"capturable needs every unitary parameter on one device, got {sorted(map(str, devices))}"
                )
            if any(_sampler(g["sampler"]) is not lsi for g in self.param_groups if g.get("unitary")):
                raise ValueError(
                    "capturable steps need sampler 'lsi' (column sampling takes an SVD, which reads the device)"
                )
            on_cuda = all(d.type == "cuda" for d in devices)
            if on_cuda and "capturable" in inspect.signature(cls.__init__).parameters:
                kwargs.setdefault("capturable", True)
        groups = self.param_groups
        self.base = cls([_with_update_buffers(g) for g in groups], **kwargs)
        self._reads_weight = cls.__name__ in _READS_THE_WEIGHT
        self._share_base(groups)
        self.reproject_every = reproject_every
        self.reproject_tol = reproject_tol
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        device = next(iter(devices)) if self.capturable and devices else torch.device("cpu")
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._skipped: Tensor | None = None  # capturable: the count of non-finite updates not yet reported
        self.track_captured = False  # when set, each step records captured_fraction per unitary parameter
        self.captured: dict[Tensor, Tensor] = {}
        self.track_steps = False  # when set, each step records step_norms per unitary parameter
        self.step_norms: dict[Tensor, Tensor] = {}
        self.steps = 0

    def _share_base(self, groups: list[dict[str, Any]]) -> None:
        """Point at the base optimizer's state and defaults and at its groups, where a unitary one
        is a dict of ours with ``groups``' parameters (Note [capturing the base update]); after
        ``__init__`` and ``load_state_dict``, which give the base new ones."""
        self.param_groups = [
            {**base, "params": ours["params"]} if ours.get("unitary", False) else base
            for ours, base in zip(groups, self.base.param_groups)
        ]
        buffer_of = {
            p: leaf
            for ours, base in zip(self.param_groups, self.base.param_groups)
            if ours is not base
            for p, leaf in zip(ours["params"], base["params"])
        }
        self.base.state = self.state = _State(self.base.state, buffer_of)
        self.defaults = self.base.defaults

    def _sync_groups(self) -> None:
        """Our unitary groups' entries (an ``lr`` a scheduler set, ...) into the base's."""
        for ours, base in zip(self.param_groups, self.base.param_groups):
            if ours is not base:
                for key, value in ours.items():
                    if key != "params":
                        base[key] = value

    # torch.optim.Optimizer pickles only (defaults, state, param_groups); keep everything.
    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._unitary_defaults.items())
        return f"ProjUNN({options},\n{self.base!r})"

    def _prepare_group(self, group: dict[str, Any]) -> dict[str, Any]:
        group = dict(group)
        if not group.get("unitary", False):
            return group
        for key, value in self._unitary_defaults.items():
            group.setdefault(key, value)
        _check_options(group["projector"], group["rank"], group["sampler"])
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            _check_unitary_param(p, group["rank"], group.get("batch_dims"))
        group["params"] = params
        if group.get("weight_decay", 0) != 0:
            raise ValueError(
                f"weight_decay must be 0 on a unitary group, got {group['weight_decay']!r}: "
                "decay does not move a unitary matrix (see projunn.optim)"
            )
        if self._has_weight_decay:
            group["weight_decay"] = 0.0
        return group

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "base" not in self.__dict__:  # called by torch.optim.Optimizer.__init__
            super().add_param_group(param_group)
            return
        group = self._prepare_group(param_group)
        self.base.add_param_group(_with_update_buffers(group))
        base = self.base.param_groups[-1]
        self.param_groups.append({**base, "params": group["params"]} if base is not group else base)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict`` (its groups hold the update buffers where ours hold the
        unitary parameters, in the same order) and ours: step count and sketch generator."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        self._sync_groups()
        state = self.base.state_dict()
        state["projunn"] = {"steps": self.steps, "generator": self.generator.get_state()}
        for hook in self._optimizer_state_dict_post_hooks.values():
            state = hook(self, state) or state
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("projunn", None)
        if extra is None:
            raise ValueError("Not a ProjUNN state dict: it has no 'projunn' entry (saved from a plain optimizer?)")
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        groups = self.param_groups
        self.base.load_state_dict(state_dict)
        self._share_base(groups)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)
        self.steps = extra["steps"]
        try:
            self.generator.set_state(extra["generator"])
        except RuntimeError as error:
            raise ValueError(
                f"the saved sketch generator does not fit this optimizer's, on {self.generator.device} "
                f"(capturable={self.capturable}): {error}"
            ) from None

    def _unitary(self) -> list[tuple[Tensor, dict[str, Any]]]:
        return [(p, g) for g in self.param_groups if g.get("unitary", False) for p in g["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step of the base optimizer, with projUNN updates on the unitary groups.

        A closure (as Lightning passes) is evaluated once, with gradients enabled, before
        the update.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stepped = []  # (parameter, group, its update buffer): Note [capturing the base update]
        for p, group, leaf in self._update_buffers():
            if p.grad is not None:
                leaf.grad = p.grad
                if self._reads_weight:
                    leaf.copy_(p)
                stepped.append((p, group, leaf))
        self._sync_groups()
        try:
            self._base_step()
        except BaseException:
            for _, _, leaf in stepped:
                leaf.zero_()
            raise
        finally:
            for _, _, leaf in stepped:
                leaf.grad = None
        if self._reads_weight:  # the update buffer held W: the update is what the base added to it
            for p, _, leaf in stepped:
                leaf.sub_(p)
        self._update_unitary(stepped)
        return loss

    @eager_under_compile("the projection runs eagerly: Note [compiled steps]")
    def _update_unitary(self, stepped: list[tuple[Tensor, dict[str, Any], Tensor]]) -> None:
        if reduced_matmul_precision():  # the user's TF32 / bf16 setting: not for the projection
            with full_precision():
                self._project_all(stepped)
        else:
            self._project_all(stepped)

    def _project_all(self, stepped: list[tuple[Tensor, dict[str, Any], Tensor]]) -> None:
        for p, group, delta in stepped:
            self._project(p, delta, group)
        self.steps += 1
        if self.reproject_every is not None and self.steps % self.reproject_every == 0:
            self._reproject()

    def _base_step(self) -> None:
        """The base optimizer's step, without the step-hook wrapper that ``torch.optim`` puts on every
        optimizer class: ``ProjUNN.step`` has already run the hooks (global ones included), so they
        run once per step, with this optimizer as their argument."""
        step = type(self.base).step
        if getattr(step, "hooked", False) and hasattr(step, "__wrapped__"):
            step.__wrapped__(self.base)
        else:
            self.base.step()

    def _update_buffers(self) -> list[tuple[Tensor, dict[str, Any], Tensor]]:
        """Each unitary parameter, its group and its update buffer in the base optimizer (Note [capturing
        the base update]). An update buffer follows its parameter to another device or dtype (a model moved
        after the optimizer was made), keeping the base's state."""
        out = []
        for ours, base in zip(self.param_groups, self.base.param_groups):
            if ours is base:
                continue
            for i, (p, leaf) in enumerate(zip(ours["params"], base["params"])):
                if leaf.shape != p.shape or leaf.dtype != p.dtype or leaf.device != p.device:
                    new = base["params"][i] = self.state.buffer_of[p] = _update_buffer(p)
                    if dict.__contains__(self.state, leaf):
                        dict.__setitem__(self.state, new, dict.pop(self.state, leaf))
                    leaf = new
                out.append((p, ours, leaf))
        return out

    def _project(self, W: Tensor, delta: Tensor, group: dict[str, Any]) -> None:
        batch_dims = group.get("batch_dims")  # Note [the matrix of a parameter] in projunn.declare
        matrix, delta = as_matrix(W, batch_dims), as_matrix(delta, batch_dims)
        a, b = _sampler(group["sampler"])(delta, group["rank"], generator=self.generator)
        if self.track_captured:
            self.captured[W] = captured_fraction(delta, a, b)
        if self.track_steps:  # (the step taken is added below, once it is known)
            nan = torch.full((), float("nan"), dtype=delta.real.dtype, device=delta.device)
            norms = [torch.linalg.matrix_norm(delta).amax(), _product_norm(a, b.mH).amax(), nan]
            self.step_norms[W] = torch.stack(norms)
        delta.zero_()
        projector = group["projector"]
        if callable(projector):
            self._custom_step(W, matrix, a, b, projector)
            return
        if self.capturable:  # the finite updates, chosen on the device (Note [sync-free steps])
            L, R = low_rank_step(matrix, a, b, projector, sync_free=True)
            ok = (_finite(L) & _finite(R))[..., None, None]
            skipped = (~ok).sum()
            self._skipped = skipped if self._skipped is None else self._skipped + skipped
            L, R = torch.where(ok, L, 0), torch.where(ok, R, 0)
            self._track_step(W, L, R)
            _add_into(W, matrix, L, R)
            return
        try:  # One cheap test for the common case: NaN/Inf in a or b reach R.
            L, R = low_rank_step(matrix, a, b, projector)
            finite = cmath.isfinite(R.sum().item())  # (Tensor.isfinite is several kernels)
        except torch.linalg.LinAlgError:  # eigh (T) or SVD (D) refused NaN/Inf
            finite = False
        if not finite:
            L, R = self._finite_step(matrix, a, b, projector)
        self._track_step(W, L, R)
        _add_into(W, matrix, L, R)

    def _track_step(self, W: Tensor, L: Tensor, R: Tensor) -> None:
        if self.track_steps:
            self.step_norms[W][2] = _product_norm(L, R).amax()

    def _custom_step(self, W: Tensor, matrix: Tensor, a: Tensor, b: Tensor, projector: Projector) -> None:
        """``W ← projector(W, a, b)`` read as matrices, each matrix whose result is not finite kept
        (counted on the device when capturable, else a warning now)."""
        new = projector(matrix, a, b)
        if not isinstance(new, Tensor) or new.shape != matrix.shape:
            got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise ValueError(
                f"projector {getattr(projector, '__name__', projector)!r} must return the new matrix, "
                f"shape {tuple(matrix.shape)}, got {got}"
            )
        ok = _finite(new)
        if self.capturable:
            skipped = (~ok).sum()
            self._skipped = skipped if self._skipped is None else self._skipped + skipped
        elif not ok.all():
            warnings.warn(
                f"projUNN step {self.steps}: the update of a unitary parameter of shape {tuple(matrix.shape)} "
                f"was not finite (NaN/Inf gradient?) for {int((~ok).sum())} of {ok.numel()} matrices; "
                "they keep their value",
                NonFiniteUpdateWarning,
                stacklevel=4,
            )
        new = torch.where(ok[..., None, None], new, matrix)
        if matrix.data_ptr() == W.data_ptr() and (matrix.ndim == 2 or matrix.is_contiguous()):
            matrix.copy_(new)
        else:
            W.copy_(new.reshape(W.shape))

    def _finite_step(self, W: Tensor, a: Tensor, b: Tensor, projector: str) -> tuple[Tensor, Tensor]:
        """The step with every matrix whose update is not finite left unchanged (and a warning)."""
        ok = _finite(a) & _finite(b)
        mask = ok[..., None, None]
        L, R = low_rank_step(W, torch.where(mask, a, 0), torch.where(mask, b, 0), projector)
        ok &= _finite(R)  # with finite a and b, only the exp/SVD of a huge step can overflow
        if not ok.all():
            warnings.warn(
                f"projUNN step {self.steps}: the update of a unitary parameter of shape {tuple(W.shape)} "
                f"was not finite (NaN/Inf gradient?) for {int((~ok).sum())} of {ok.numel()} matrices; "
                "they keep their value",
                NonFiniteUpdateWarning,
                stacklevel=4,
            )
            R = torch.where(ok[..., None, None], R, 0)
        return L, R

    def _reproject(self) -> None:
        if self._skipped is not None:
            skipped, self._skipped = int(self._skipped), None
            if skipped:
                warnings.warn(
                    f"projUNN steps up to {self.steps}: {skipped} updates of unitary matrices were not finite "
                    "(NaN/Inf gradient?); those matrices kept their value",
                    NonFiniteUpdateWarning,
                    stacklevel=3,
                )
        for W, group in self._unitary():
            matrix = as_matrix(W, group.get("batch_dims"))
            tol = _default_reproject_tol(matrix) if self.reproject_tol is None else self.reproject_tol
            drifted = estimate_unitarity_error(matrix, self.generator) > tol
            if drifted.any():
                new = torch.where(drifted[..., None, None], polar(matrix), matrix)
                W.copy_(new if new.shape == W.shape else new.reshape(W.shape))


def _product_norm(L: Tensor, R: Tensor) -> Tensor:
    """``‖L R‖_F`` per matrix of skinny factors ``L`` (n × r) and ``R`` (r × m), from r × r products:
    ``‖L R‖_F² = tr(Lᴴ L R Rᴴ)``."""
    return torch.einsum("...ij,...ji->...", L.mH @ L, R @ R.mH).real.clamp_min(0).sqrt()


def captured_fraction(G: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``‖a b^H‖_F / ‖G‖_F`` per matrix of a ``(..., n, n)`` update ``G`` and its rank-k approximation
    ``a b^H``: how much of the base optimizer's update the step keeps (1 when ``G`` has rank ≤ k;
    at most 1 for both samplers, which project ``G`` on k directions). ``‖a b^H‖_F² = tr(a^H a b^H b)``,
    so it costs one pass over ``G`` for its norm. 0 for a zero update."""
    kept = _product_norm(a, b.mH)
    total = torch.linalg.matrix_norm(G)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(total.dtype).tiny), 0)


def _add_into(W: Tensor, matrix: Tensor, L: Tensor, R: Tensor) -> None:
    """``W ← W + L R`` where ``matrix`` is ``W`` read as matrices (``as_matrix``): in place through
    the view, or into ``W`` by a copy when ``as_matrix`` could not make one (non-contiguous ``W``)."""
    if matrix.data_ptr() == W.data_ptr() and (matrix.ndim == 2 or matrix.is_contiguous()):
        add_low_rank(matrix, L, R, inplace=True)
    else:
        W.copy_(add_low_rank(matrix, L, R).reshape(W.shape))


class _State(defaultdict):
    """The base optimizer's state, keyed by its update buffers, where a unitary parameter reads as its
    update buffer: ``opt.state[W]`` is ``W``'s momentum or running averages, as with any torch optimizer
    (Note [capturing the base update])."""

    def __init__(self, state: dict[Tensor, Any], buffer_of: dict[Tensor, Tensor]) -> None:
        super().__init__(dict, state)
        self.buffer_of = buffer_of

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self.buffer_of.get(key, key))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(self.buffer_of.get(key, key), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self.buffer_of.get(key, key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self.buffer_of.get(key, key), default)

    def __reduce__(self) -> tuple:  # (defaultdict's would call __init__ with its factory alone)
        return _State, (dict(self), self.buffer_of)


def _update_buffer(p: Tensor) -> Tensor:
    """The zero leaf the base optimizer steps for ``p`` (Note [capturing the base update])."""
    return torch.zeros_like(p, memory_format=torch.contiguous_format)


def _with_update_buffers(group: dict[str, Any]) -> dict[str, Any]:
    """The base optimizer's copy of a unitary group, its parameters replaced by update buffers;
    another group itself."""
    if not group.get("unitary", False):
        return group
    return {**group, "params": [_update_buffer(p) for p in group["params"]]}


def _finite(x: Tensor) -> Tensor:
    return torch.isfinite(x).all(dim=-1).all(dim=-1)


def _as_groups(params: Any) -> list[dict[str, Any]]:
    if isinstance(params, Tensor):
        raise TypeError("params argument given to ProjUNN should be an iterable of Tensors or dicts, but got a Tensor")
    params = list(params)
    if not params:
        raise ValueError("ProjUNN got an empty parameter list")
    if isinstance(params[0], dict):
        return params
    return [{"params": params}]
