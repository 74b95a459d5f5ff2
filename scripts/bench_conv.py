"""Orthogonal full-width convolutions against ordinary ones (float32, CPU or CUDA). A benchmark, not a test.

1. The paper's ResNet9 (tasks/vision_models.py) training step at batch 64 on CIFAR-shaped random data:
   time of forward+backward and of the optimizer step, for the standard network (3×3
   convolutions, BatchNorm, RMSprop), the orthogonal one (OrthogonalConv2d everywhere, RMSprop
   wrapped by projunn.ProjUNN with projUNN-T and projUNN-D, k=1) and the same network with
   Cayley convolutions (every frequency's matrix through the Cayley map, RMSprop). The share of the ProjUNN step
   (RMSprop + rank-1 sampling + projection) in the orthogonal step is reported, and, for
   reference, the time of a plain RMSprop step on the same parameters (the projection's
   overhead is the difference). Medians over ``--reps`` steps, the models taken in turn after
   one warm-up round. The orthogonal ResNet9 is built with ``init="identity"`` by default:
   step times do not depend on the matrices' values, and a Haar init of its 36M complex
   entries takes a minute on a CPU.
2. DeepCNN(depth=100, channels=32) at initialisation on one batch of MNIST-shaped random
   data: the ratio of the first convolution's gradient norm to the last one's, for the
   parameters and for the layers' outputs (∂L/∂a), orthogonal against unconstrained
   (PyTorch's default init), with the nonlinearity each uses by default and with ReLU.
3. ``--floor``: the orthogonal ResNet9's forward+backward against the unconstrained one's and
   against its floor, side by side in one process: the work a forward+backward of its
   OrthogonalConv2d layers cannot avoid, on data of the step's shapes into buffers made once.
   The products: per layer, the frequency matrices applied forward, to ∂y (∂x; not for the first
   layer, whose input needs no gradient) and the matrices' gradient, as the layer does them
   (Note [spectra as matrix products] in projunn/conv.py: four real batched products over the
   free bins, one over the self-conjugate ones). Two floors add to them the transforms: torch.fft's
   (``rfft2`` of x and ∂y, ``irfft2`` of y and ∂x, the FFTs an FFT-based layer needs) or the
   layer's own transforms as matrix products alone. Also the training step with projUNN-T k = 1
   (the ``cifar10_projunn_t`` preset's optimizer), and with ``--against DIR`` the orthogonal
   ResNet9 built from another checkout's ``projunn``. Medians of interleaved repetitions
   (``scripts/timing.py``); like train.py, the process keeps freed memory for reuse
   (training/memory.py).
4. ``--profile``: torch.profiler's operators by self time over one forward+backward of the
   orthogonal ResNet9 (and of ``--against``'s), after two warm-up passes, and the share of
   ``aten::copy_``.

    nice -n 10 python -m scripts.bench_conv --reps 3
    nice -n 10 python -m scripts.bench_conv --threads 1 --clock cpu   # on a busy machine
    python -m scripts.bench_conv --device cuda --batch 256            # each step between synchronisations
    python -m scripts.bench_conv --floor --skip-resnet --skip-deep --threads 2 --batch 256 --reps 10
    python -m scripts.bench_conv --profile --skip-resnet --skip-deep --threads 2 --batch 256 --against ../before
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

import projunn
import tasks.vision_models
from projunn.conv import OrthogonalConv2d, _analysis, _grid, _spectra, _synthesis
from tasks.vision_models import DeepCNN, ResNet9
from training.memory import keep_freed_memory
from training.optim import build_optimizer

from . import tables, timing
from .bench_update import load_library


def param_count(model: nn.Module) -> int:
    """Real numbers in the parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


BASE_CLOCK: Callable[[], float] = time.perf_counter  # --clock cpu: time.process_time
DEVICE = torch.device("cpu")


def CLOCK() -> float:  # noqa: N802 (a module-level clock, set by main)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return BASE_CLOCK()


def make_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], tuple[float, float]]:
    """One training step; returns the seconds of forward+backward and of ``opt.step()``."""

    def step() -> tuple[float, float]:
        t0 = CLOCK()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        t1 = CLOCK()
        opt.step()
        return t1 - t0, CLOCK() - t1

    return step


def interleaved(steps: dict[str, Callable[[], tuple[float, ...]]], reps: int) -> dict[str, tuple[float, ...]]:
    """Median times of each step, the steps taken in turn (after one warm-up round) so that
    changes in the machine's load hit every method alike."""
    times: dict[str, list[tuple[float, ...]]] = {name: [] for name in steps}
    for i in range(reps + 1):
        for name, step in steps.items():
            t = step()
            if i:
                times[name].append(t)
    return {name: tuple(statistics.median(col) for col in zip(*ts)) for name, ts in times.items()}


def bench_resnet9(batch: int, reps: int, init: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    standard = ResNet9(orthogonal=False).to(DEVICE)
    t0 = time.perf_counter()
    orthogonal = ResNet9(orthogonal=True, init=init).to(DEVICE)
    built = time.perf_counter() - t0
    cayley = projunn.parametrize(ResNet9(orthogonal=True, init="identity").to(DEVICE), "cayley")
    steps = {"standard, RMSprop": make_step(standard, torch.optim.RMSprop(standard.parameters(), lr=1e-3), x, y)}
    for projector in ("T", "D"):
        opt = projunn.ProjUNN(
            projunn.param_groups(orthogonal, unitary_lr=1e-4), "RMSprop", lr=1e-3, projector=projector, rank=1
        )
        steps[f"orthogonal, projUNN-{projector} k=1"] = make_step(orthogonal, opt, x, y)
    steps["Cayley convolutions, RMSprop"] = make_step(cayley, torch.optim.RMSprop(cayley.parameters(), lr=1e-3), x, y)
    # Reference: a plain RMSprop step on the same parameters (timing only: it breaks unitarity,
    # so it runs last).
    results = interleaved(steps, reps)
    plain = torch.optim.RMSprop(orthogonal.parameters(), lr=1e-3)
    for p in orthogonal.parameters():
        p.grad = torch.zeros_like(p)
    plain_step = interleaved({"plain": lambda: (time_it(plain.step),)}, reps)["plain"][0]

    clock = "wall-clock" if BASE_CLOCK is time.perf_counter else "CPU (process) time"
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"\n## ResNet9 training step, batch {batch}, {where} float32, {clock}, median of {reps}")
    print(f"(the orthogonal ResNet9 was built with init={init!r} in {built:.1f} s)\n")
    header = ["model", "params (reals)", "fwd+bwd ms", "opt step ms", "total ms", "opt step share"]
    header.append("plain RMSprop step ms")
    print("\n".join(tables.head(header)))
    for name, (fb, st) in results.items():
        model = standard if name.startswith("standard") else cayley if name.startswith("Cayley") else orthogonal
        cells = [name, f"{param_count(model) / 1e6:.2f}M"]
        cells += [f"{fb * 1e3:.0f}", f"{st * 1e3:.0f}", f"{(fb + st) * 1e3:.0f}"]
        cells += [f"{st / (fb + st):.0%}", f"{plain_step * 1e3:.0f}" if model is orthogonal else ""]
        print(tables.row(cells), flush=True)


def time_it(f: Callable[[], object]) -> float:
    t0 = CLOCK()
    f()
    return CLOCK() - t0


def gradient_ratios(model: DeepCNN, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    outputs: dict[int, torch.Tensor] = {}
    first, last = model.layers[0], model.layers[-1]

    def keep(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            out.retain_grad()
            outputs[index] = out

        return hook

    handles = [first.register_forward_hook(keep(0)), last.register_forward_hook(keep(-1))]
    loss = nn.functional.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    for h in handles:
        h.remove()

    def norm(module: nn.Module) -> float:
        return torch.sqrt(sum(p.grad.abs().pow(2).sum() for p in module.parameters() if p.grad is not None)).item()

    return {
        "param": norm(first) / norm(last),
        "act": (outputs[0].grad.norm() / outputs[-1].grad.norm()).item(),
        "forward": (outputs[-1].norm() / outputs[0].norm()).item(),
        "loss": loss.item(),
    }


def fmt(ratio: float) -> str:
    return "0 (underflow)" if ratio == 0 else f"{ratio:.3g}"


def bench_deep(depth: int, channels: int, batch: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    print(f"\n## DeepCNN(depth={depth}, channels={channels}) at initialisation, one batch of {batch}", end=" ")
    print("MNIST-shaped N(0,1) images\n")
    header = ["convolutions", "nonlinearity", "‖∇θ first‖/‖∇θ last‖", "‖∂L/∂a first‖/‖∂L/∂a last‖"]
    header += ["‖a last‖/‖a first‖", "loss"]
    print("\n".join(tables.head(header)))
    for orthogonal, activation in ((True, "maxmin"), (True, "relu"), (False, "relu"), (False, "maxmin")):
        torch.manual_seed(1)
        model = DeepCNN(depth=depth, channels=channels, orthogonal=orthogonal, activation=activation).to(DEVICE)
        r = gradient_ratios(model, x, y)
        kind = "orthogonal full-width" if orthogonal else "nn.Conv2d 3×3, default init"
        cells = [kind, activation] + [fmt(r[key]) for key in ("param", "act", "forward")] + [f"{r['loss']:.3f}"]
        print(tables.row(cells), flush=True)
        del model


# --------------------------------------------------------------------------------------------
# 3. the orthogonal ResNet9's forward+backward against the unconstrained one and its floor
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def convolutions_of(library: ModuleType | None) -> Iterator[None]:
    """ResNet9s built inside use ``library``'s OrthogonalConv2d (another checkout's; None: this one's)."""
    if library is None:
        yield
        return
    tasks.vision_models.OrthogonalConv2d = library.conv.OrthogonalConv2d
    try:
        yield
    finally:
        tasks.vision_models.OrthogonalConv2d = OrthogonalConv2d


def forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """Loss, gradients reset (to ``None``, as Lightning's training loop does) and backward."""

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()

    return step


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """forward+backward and the ``cifar10_projunn_t`` preset's optimizer step (RMSprop lr 1e-3, the
    frequency matrices by projUNN-T k = 1 at lr 1e-4)."""
    opt = build_optimizer(model, base="RMSprop", lr=1e-3, unitary_lr_scale=0.1, projector="T", rank=1)
    pass_ = forward_backward(model, x, y)

    def step() -> None:
        pass_()
        opt.step()

    return step


def layer_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[OrthogonalConv2d, tuple[int, ...], bool]]:
    """Each OrthogonalConv2d of ``model``, the shape of its input in a forward pass on ``x``, and
    whether that input needs a gradient (the first layer's does not)."""
    seen: list[tuple[OrthogonalConv2d, tuple[int, ...], bool]] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, args: seen.append((m, tuple(args[0].shape), args[0].requires_grad)))
        for m in model.modules()
        if isinstance(m, OrthogonalConv2d)
    ]
    with torch.enable_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


def mix(A: torch.Tensor, M: torch.Tensor, out: torch.Tensor, F_c: int, adjoint: bool) -> None:
    """The free bins' products as the layer does them: ``out_r = A_r M_rᵀ − A_i M_iᵀ``, ``out_i =
    A_r M_iᵀ + A_i M_rᵀ`` (``M`` for its adjoint, the product with ``∂Y``), real parts in planes
    ``[0, F_c)``, imaginary ones in ``[F_c, 2F_c)``; ``M`` is ``(2, F_c, C_out, C_in)``."""
    A_r, A_i, o_r, o_i = A[:F_c], A[F_c : 2 * F_c], out[:F_c], out[F_c : 2 * F_c]
    M_r, M_i = (M[0], M[1]) if adjoint else (M[0].mT, M[1].mT)
    torch.bmm(A_r, M_r, out=o_r)
    o_r.baddbmm_(A_i, M_i, alpha=1 if adjoint else -1)
    torch.bmm(A_i, M_r, out=o_i)
    o_i.baddbmm_(A_r, M_i, alpha=-1 if adjoint else 1)


def layer_products(b: dict[str, torch.Tensor], F_c: int, needs_dx: bool) -> None:
    """One layer's products of a forward+backward: ``Y`` from ``X``, ``∂X`` from ``∂Y``, ``∂K``."""
    X, Y, dY, dX, K, dK, R, dR = (b[k] for k in ("X", "Y", "dY", "dX", "K", "dK", "R", "dR"))
    mix(X, K, Y, F_c, adjoint=False)
    torch.bmm(X[2 * F_c :], R.mT, out=Y[2 * F_c :])
    if needs_dx:
        mix(dY, K, dX, F_c, adjoint=True)
        torch.bmm(dY[2 * F_c :], R, out=dX[2 * F_c :])
    torch.bmm(dY[:F_c].mT, X[:F_c], out=dK[0]).baddbmm_(dY[F_c : 2 * F_c].mT, X[F_c : 2 * F_c])
    torch.bmm(dY[F_c : 2 * F_c].mT, X[:F_c], out=dK[1]).baddbmm_(dY[:F_c].mT, X[F_c : 2 * F_c], alpha=-1)
    torch.bmm(dY[2 * F_c :].mT, X[2 * F_c :], out=dR)


def layer_ffts(b: dict[str, torch.Tensor], needs_dx: bool) -> None:
    """One layer's FFTs of a forward+backward: ``rfft2`` of x and ∂y, ``irfft2`` of y and ∂x."""
    x, dy = b["x"], b["dy"]
    torch.fft.rfft2(x, norm="ortho")
    torch.fft.irfft2(b["y spectrum"], s=dy.shape[-2:], norm="ortho")
    torch.fft.rfft2(dy, norm="ortho")
    if needs_dx:
        torch.fft.irfft2(b["dx spectrum"], s=x.shape[-2:], norm="ortho")


def layer_transforms(b: dict[str, torch.Tensor], grid: tuple, needs_dx: bool) -> None:
    """One layer's transforms as products (Note [spectra as matrix products]): of x, y, ∂y and ∂x."""
    spectra = _spectra(grid, b["x"].dtype, b["x"].device)
    _analysis(b["x"], grid, spectra, spectra.analysis)
    _synthesis(b["Y"], grid, spectra, spectra.synthesis)
    _analysis(b["dy"], grid, spectra, spectra.synthesis)
    if needs_dx:
        _synthesis(b["dX"], grid, spectra, spectra.analysis)


def floor_parts(model: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The forward+backward's unavoidable work in each OrthogonalConv2d of ``model`` (a real layer,
    stride 1), on random data of the step's shapes, into buffers made once: the products, torch.fft's
    transforms, and the layer's transforms as products (Note [spectra as matrix products])."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(x.device)

    parts: dict[str, list[Callable[[], None]]] = {PRODUCTS: [], FFTS: [], TRANSFORMS: []}
    for layer, (B, C_in, H, W), needs_dx in layer_shapes(model, x):
        C_out, grid = layer.out_channels, _grid(H, W, False)
        F_c, F_r = grid.complex_bins, H * W - 2 * grid.complex_bins
        b = {"X": randn(H * W, B, C_in), "Y": randn(H * W, B, C_out), "dY": randn(H * W, B, C_out)}
        b |= {"dX": randn(H * W, B, C_in), "K": randn(2, F_c, C_out, C_in), "dK": randn(2, F_c, C_out, C_in)}
        b |= {"R": randn(F_r, C_out, C_in), "dR": randn(F_r, C_out, C_in)}
        b |= {"x": randn(B, C_in, H, W), "dy": randn(B, C_out, H, W)}
        b |= {"y spectrum": torch.fft.rfft2(b["dy"]), "dx spectrum": torch.fft.rfft2(b["x"])}
        parts[PRODUCTS].append(functools.partial(layer_products, b, F_c, needs_dx))
        parts[FFTS].append(functools.partial(layer_ffts, b, needs_dx))
        parts[TRANSFORMS].append(functools.partial(layer_transforms, b, grid, needs_dx))

    def run_all(steps: list[Callable[[], None]]) -> Callable[[], None]:
        def run() -> None:
            for step in steps:
                step()

        return run

    return {name: run_all(steps) for name, steps in parts.items()}


UNCONSTRAINED, ORTHOGONAL, AGAINST = "unconstrained ResNet9", "orthogonal ResNet9", "orthogonal ResNet9, --against"
TRAINING = "orthogonal ResNet9 + projUNN-T k=1 step (training step)"
PRODUCTS = "the products (forward, ∂x, ∂K)"
FFTS = "torch.fft: rfft2 of x and ∂y, irfft2 of y and ∂x"
TRANSFORMS = "the layer's transforms as products, alone"


def bench_floor(batch: int, reps: int, budget: float, against: ModuleType | None) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    unconstrained = ResNet9(orthogonal=False).to(DEVICE)
    orthogonal = ResNet9(orthogonal=True, init="identity").to(DEVICE)
    trained = ResNet9(orthogonal=True, init="identity").to(DEVICE)
    steps = {
        UNCONSTRAINED: forward_backward(unconstrained, x, y),
        ORTHOGONAL: forward_backward(orthogonal, x, y),
        TRAINING: training_step(trained, x, y),
    }
    if against is not None:
        with convolutions_of(against):
            steps[AGAINST] = forward_backward(ResNet9(orthogonal=True, init="identity").to(DEVICE), x, y)
    steps.update(floor_parts(orthogonal, x))
    t = timing.interleaved(steps, reps, budget, DEVICE)
    floor_fft, floor_own = t[PRODUCTS] + t[FFTS], t[PRODUCTS] + t[TRANSFORMS]
    where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"\n## forward+backward at batch {batch}, 32×32, {where} float32, {torch.get_num_threads()} threads")
    print(f"(medians of up to {reps} interleaved repetitions, each stopping after 3 once it has used {budget:g} s)\n")
    rows = [
        [name, f"{t[name] * 1e3:.0f}", *(f"{t[name] / d:.2f}" for d in (t[UNCONSTRAINED], floor_fft, floor_own))]
        for name in [UNCONSTRAINED, ORTHOGONAL] + ([AGAINST] if against is not None else []) + [TRAINING]
    ]
    for name, floor in (("floor: products + torch.fft", floor_fft), ("floor: products + its transforms", floor_own)):
        rows.append([name, f"{floor * 1e3:.0f}", f"{floor / t[UNCONSTRAINED]:.2f}", "", ""])
    rows += [[name, f"{t[name] * 1e3:.0f}", "", "", ""] for name in (PRODUCTS, FFTS, TRANSFORMS)]
    header = ["what", "ms", "/ unconstrained", "/ floor (products + torch.fft)", "/ floor (products + its transforms)"]
    print(tables.markdown(header, rows), end="")
    steps = 50_000 // batch  # CIFAR10's training images, the last partial batch dropped
    print(
        f"\nCIFAR10 at this batch, {steps} training steps an epoch: {steps * t[TRAINING] / 60:.1f} min; the "
        f"paper's 90 epochs: {90 * steps * t[TRAINING] / 3600:.1f} h (the training step's median; no test passes)"
    )


def profile(batch: int, against: ModuleType | None, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    libraries = [("this checkout", None)] + ([("--against", against)] if against is not None else [])
    for name, library in libraries:
        with convolutions_of(library):
            model = ResNet9(orthogonal=True, init="identity").to(DEVICE)
        step = forward_backward(model, x, y)
        for _ in range(2):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            step()
            timing.clock(DEVICE)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        copy = sum(e.self_cpu_time_total for e in events if e.key == "aten::copy_")
        print(f"\n### orthogonal ResNet9, {name}: one forward+backward at batch {batch}, operators by self time\n")
        print("```")
        print(events.table(sort_by="self_cpu_time_total", row_limit=rows))
        print("```")
        print(f"\n`aten::copy_`: {copy / 1e3:.0f} ms of {total / 1e3:.0f} ms self time ({copy / total:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--init", default="identity", help="initialiser of the orthogonal ResNet9 (haar is slow on CPU)"
    )
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--deep-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, steadier on a shared machine (use with --threads 1)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-deep", action="store_true")
    parser.add_argument("--floor", action="store_true", help="forward+backward against unconstrained and floor")
    parser.add_argument("--profile", action="store_true", help="torch.profiler's table of one forward+backward")
    parser.add_argument("--budget", type=float, default=60.0, help="--floor: seconds a method may use")
    parser.add_argument("--against", type=Path, help="--floor, --profile: another checkout's projunn beside")
    args = parser.parse_args()
    global BASE_CLOCK, DEVICE
    BASE_CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    DEVICE = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} (other jobs share the machine)"
    )
    against = load_library(args.against) if args.against else None
    if (args.floor or args.profile) and keep_freed_memory():
        print("freed memory kept for reuse, as train.py does (training/memory.py)")
    if not args.skip_resnet:
        bench_resnet9(args.batch, args.reps, args.init)
    if not args.skip_deep:
        bench_deep(args.depth, args.channels, args.deep_batch)
    if args.floor:
        bench_floor(args.batch, args.reps, args.budget, against)
    if args.profile:
        profile(args.batch, against)


if __name__ == "__main__":
    main()
