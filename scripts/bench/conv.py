"""Orthogonal full-width convolutions against ordinary ones (float32, CPU or CUDA): the paper's ResNet9
training step, the gradients of a 100-layer stack at initialisation, with ``--floor`` the orthogonal
ResNet9's forward+backward against its floor, with ``--layers`` each of its convolutions against the 3×3
one in its place, with ``--profile`` where it goes (docs/speed.md).

    nice -n 10 python -m scripts.bench.conv --reps 3
    python -m scripts.bench.conv --floor --skip-resnet --skip-deep --threads 2 --batch 256 --reps 10
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

import projunn
import tasks.vision_models
from projunn.conv import OrthogonalConv2d, dft_matrices, frequency_grid, spectral_analysis, spectral_synthesis
from tasks.vision_models import DeepCNN, ResNet9
from training.memory import keep_freed_memory
from training.optim import build_optimizer

from . import harness
from .harness import Clock, Output


def param_count(model: nn.Module) -> int:
    """Real numbers in the parameters (a complex entry counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def make_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, clock: Clock
) -> Callable[[], tuple[float, float]]:
    """One training step; returns the seconds of forward+backward and of ``opt.step()``."""

    def step() -> tuple[float, float]:
        t0 = clock()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        t1 = clock()
        opt.step()
        return t1 - t0, clock() - t1

    return step


def bench_resnet9(batch: int, reps: int, init: str, clock: Clock, out: Output) -> None:
    """The training step of the standard, orthogonal and Cayley ResNet9 at ``batch`` on random CIFAR-shaped
    data, medians of interleaved steps after one warm-up step each."""
    device = clock.device
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    standard = ResNet9(orthogonal=False).to(device)
    t0 = time.perf_counter()
    orthogonal = ResNet9(orthogonal=True, init=init).to(device)
    built = time.perf_counter() - t0
    cayley = projunn.parametrize(ResNet9(orthogonal=True, init="identity").to(device), "cayley")
    rmsprop = functools.partial(torch.optim.RMSprop, lr=1e-3)
    steps = {"standard, RMSprop": make_step(standard, rmsprop(standard.parameters()), x, y, clock)}
    for projector in ("T", "D"):
        opt = projunn.ProjUNN(
            projunn.param_groups(orthogonal, unitary_lr=1e-4), "RMSprop", lr=1e-3, projector=projector, rank=1
        )
        steps[f"orthogonal, projUNN-{projector} k=1"] = make_step(orthogonal, opt, x, y, clock)
    steps["Cayley convolutions, RMSprop"] = make_step(cayley, rmsprop(cayley.parameters()), x, y, clock)
    results = harness.interleaved_parts(steps, reps, clock, warmup=1)
    # Reference: a plain RMSprop step on the same parameters (timing only: it breaks unitarity,
    # so it runs last).
    plain = rmsprop(orthogonal.parameters())
    for p in orthogonal.parameters():
        p.grad = torch.zeros_like(p)
    plain_step = harness.interleaved({"plain": plain.step}, reps, clock, warmup=1)["plain"]

    what = "CPU (process) time" if clock.cpu else "wall-clock"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    out("", f"## ResNet9 training step, batch {batch}, {where} float32, {what}, median of {reps}")
    out(f"(the orthogonal ResNet9 was built with init={init!r} in {built:.1f} s)", "")
    header = ["model", "params (reals)", "fwd+bwd ms", "opt step ms", "total ms", "opt step share"]
    out.head([*header, "plain RMSprop step ms"])
    for name, (_, fb, st) in results.items():
        model = standard if name.startswith("standard") else cayley if name.startswith("Cayley") else orthogonal
        cells = [name, f"{param_count(model) / 1e6:.2f}M"]
        cells += [f"{fb * 1e3:.0f}", f"{st * 1e3:.0f}", f"{(fb + st) * 1e3:.0f}"]
        cells += [f"{st / (fb + st):.0%}", f"{plain_step * 1e3:.0f}" if model is orthogonal else ""]
        out.row(cells)


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


def bench_deep(depth: int, channels: int, batch: int, device: torch.device, out: Output) -> None:
    """DeepCNN at initialisation on one batch of MNIST-shaped N(0, 1) images: the first layer's
    gradients and the last layer's outputs against the last's and the first's, orthogonal against
    ``nn.Conv2d`` (PyTorch's default init), with each one's default nonlinearity and the other."""
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    heading = f"## DeepCNN(depth={depth}, channels={channels}) at initialisation, one batch of {batch}"
    out("", f"{heading} MNIST-shaped N(0,1) images", "")
    header = ["convolutions", "nonlinearity", "‖∇θ first‖/‖∇θ last‖", "‖∂L/∂a first‖/‖∂L/∂a last‖"]
    out.head([*header, "‖a last‖/‖a first‖", "loss"])
    for orthogonal, activation in ((True, "maxmin"), (True, "relu"), (False, "relu"), (False, "maxmin")):
        torch.manual_seed(1)
        model = DeepCNN(depth=depth, channels=channels, orthogonal=orthogonal, activation=activation).to(device)
        r = gradient_ratios(model, x, y)
        kind = "orthogonal full-width" if orthogonal else "nn.Conv2d 3×3, default init"
        cells = [kind, activation] + [fmt(r[key]) for key in ("param", "act", "forward")] + [f"{r['loss']:.3f}"]
        out.row(cells)
        del model


# --------------------------------------------------------------------------------------------
# --floor: the orthogonal ResNet9's forward+backward against the unconstrained one and its floor
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
    spectra = dft_matrices(grid, b["x"].dtype, b["x"].device)
    spectral_analysis(b["x"], grid, spectra, spectra.analysis)
    spectral_synthesis(b["Y"], grid, spectra, spectra.synthesis)
    spectral_analysis(b["dy"], grid, spectra, spectra.synthesis)
    if needs_dx:
        spectral_synthesis(b["dX"], grid, spectra, spectra.analysis)


def floor_parts(model: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The forward+backward's unavoidable work in each OrthogonalConv2d of ``model`` (a real layer,
    stride 1), on random data of the step's shapes, into buffers made once: the products, torch.fft's
    transforms, and the layer's transforms as products (Note [spectra as matrix products])."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(x.device)

    parts: dict[str, list[Callable[[], None]]] = {PRODUCTS: [], FFTS: [], TRANSFORMS: []}
    for layer, (B, C_in, H, W), needs_dx in layer_shapes(model, x):
        C_out, grid = layer.out_channels, frequency_grid(H, W, False)
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


def bench_floor(batch: int, reps: int, budget: float, against: ModuleType | None, clock: Clock, out: Output) -> None:
    """The orthogonal ResNet9's forward+backward against the unconstrained one's and against its floor,
    and its training step, interleaved."""
    device = clock.device
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    unconstrained = ResNet9(orthogonal=False).to(device)
    orthogonal = ResNet9(orthogonal=True, init="identity").to(device)
    trained = ResNet9(orthogonal=True, init="identity").to(device)
    steps = {
        UNCONSTRAINED: forward_backward(unconstrained, x, y),
        ORTHOGONAL: forward_backward(orthogonal, x, y),
        TRAINING: training_step(trained, x, y),
    }
    if against is not None:
        with convolutions_of(against):
            steps[AGAINST] = forward_backward(ResNet9(orthogonal=True, init="identity").to(device), x, y)
    steps.update(floor_parts(orthogonal, x))
    t = harness.interleaved(steps, reps, clock, budget)
    floor_fft, floor_own = t[PRODUCTS] + t[FFTS], t[PRODUCTS] + t[TRANSFORMS]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    out("", f"## forward+backward at batch {batch}, 32×32, {where} float32, {torch.get_num_threads()} threads")
    out(f"(medians of up to {reps} interleaved repetitions, each stopping after 3 once it has used {budget:g} s)", "")
    rows = [
        [name, f"{t[name] * 1e3:.0f}", *(f"{t[name] / d:.2f}" for d in (t[UNCONSTRAINED], floor_fft, floor_own))]
        for name in [UNCONSTRAINED, ORTHOGONAL] + ([AGAINST] if against is not None else []) + [TRAINING]
    ]
    for name, floor in (("floor: products + torch.fft", floor_fft), ("floor: products + its transforms", floor_own)):
        rows.append([name, f"{floor * 1e3:.0f}", f"{floor / t[UNCONSTRAINED]:.2f}", "", ""])
    rows += [[name, f"{t[name] * 1e3:.0f}", "", "", ""] for name in (PRODUCTS, FFTS, TRANSFORMS)]
    header = ["what", "ms", "/ unconstrained", "/ floor (products + torch.fft)", "/ floor (products + its transforms)"]
    out.table(header, rows)
    steps = 50_000 // batch  # CIFAR10's training images, the last partial batch dropped
    out(
        "",
        f"CIFAR10 at this batch, {steps} training steps an epoch: {steps * t[TRAINING] / 60:.1f} min; the "
        f"paper's 90 epochs: {90 * steps * t[TRAINING] / 3600:.1f} h (the training step's median; no test passes)",
    )


def layer_pass(layer: nn.Module, shape: tuple[int, ...], needs_dx: bool, device: torch.device) -> Callable[[], None]:
    """One layer's forward+backward on random data of ``shape`` (its gradients reset to ``None``)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(device).requires_grad_(needs_dx)
    dy = torch.randn(*layer(x).shape, generator=g).to(device)

    def step() -> None:
        layer.zero_grad()
        x.grad = None
        layer(x).backward(dy)

    return step


def gemm_rate(clock: Clock, reps: int, n: int = 2048) -> float:
    """GFLOP/s of one ``n × n × n`` float32 product: what this build's BLAS gives a large product."""
    a = torch.randn(n, n, device=clock.device)
    return 2 * n**3 / harness.interleaved({"mm": lambda: a @ a}, reps, clock)["mm"] / 1e9


def bench_layers(batch: int, reps: int, budget: float, clock: Clock, out: Output) -> None:
    """Each OrthogonalConv2d of the orthogonal ResNet9 against the 3×3 convolution in its place, one
    layer's forward+backward each, interleaved, with the rate of their multiply-adds: the products' 4
    real ones per complex one at ``F_c + F_r ≈ H·W/2`` bins against the convolution's 9 a pixel."""
    device = clock.device
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    orthogonal = layer_shapes(ResNet9(orthogonal=True, init="identity").to(device), x)
    ordinary = [m for m in ResNet9(orthogonal=False).to(device).modules() if isinstance(m, nn.Conv2d)]
    steps, flops = {}, {}
    for i, ((layer, shape, needs_dx), conv) in enumerate(zip(orthogonal, ordinary, strict=True)):
        B, C_in, H, W = shape
        name = f"{i + 1}: {C_in}→{layer.out_channels} at {H}×{W}"
        passes = 3 if needs_dx else 2  # forward, ∂K, and ∂x where the input needs it
        steps[name, "orthogonal"] = layer_pass(layer, shape, needs_dx, device)
        steps[name, "3×3"] = layer_pass(conv, shape, needs_dx, device)
        flops[name, "orthogonal"] = passes * 4 * B * H * W * C_in * layer.out_channels
        flops[name, "3×3"] = passes * 18 * B * H * W * C_in * conv.out_channels
    t = harness.interleaved(steps, reps, clock, budget)
    out("", f"## each convolution's forward+backward at batch {batch}, {torch.get_num_threads()} threads")
    out(f"(medians of up to {reps} interleaved repetitions; GFLOP/s: the products' multiply-adds ×2 a second)", "")
    rows, totals = [], {"orthogonal": 0.0, "3×3": 0.0}
    for name in dict.fromkeys(name for name, _ in steps):
        o, c = t[name, "orthogonal"], t[name, "3×3"]
        totals["orthogonal"] += o
        totals["3×3"] += c
        rate_o, rate_c = flops[name, "orthogonal"] / o / 1e9, flops[name, "3×3"] / c / 1e9
        rows.append([name, f"{o * 1e3:.0f}", f"{c * 1e3:.0f}", f"{o / c:.2f}", f"{rate_o:.0f}", f"{rate_c:.0f}"])
    o, c = totals["orthogonal"], totals["3×3"]
    rows.append(["all", f"{o * 1e3:.0f}", f"{c * 1e3:.0f}", f"{o / c:.2f}", "", ""])
    header = ["layer", "orthogonal ms", "3×3 ms", "orthogonal / 3×3", "orthogonal GFLOP/s", "3×3 GFLOP/s"]
    out.table(header, rows)
    out("", f"one 2048×2048×2048 float32 product (torch.mm, this build's BLAS): {gemm_rate(clock, reps):.0f} GFLOP/s")


def profile(batch: int, against: ModuleType | None, clock: Clock, out: Output, rows: int = 15) -> None:
    """torch.profiler's operators by self time over one forward+backward of the orthogonal ResNet9 (and of
    ``against``'s), after two warm-up passes, and the share of ``aten::copy_``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = clock.device
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    libraries = [("this checkout", None)] + ([("--against", against)] if against is not None else [])
    for name, library in libraries:
        with convolutions_of(library):
            model = ResNet9(orthogonal=True, init="identity").to(device)
        step = forward_backward(model, x, y)
        for _ in range(2):
            step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            step()
            clock()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        copy = sum(e.self_cpu_time_total for e in events if e.key == "aten::copy_")
        out("", f"### orthogonal ResNet9, {name}: one forward+backward at batch {batch}, operators by self time", "")
        out("```", events.table(sort_by="self_cpu_time_total", row_limit=rows), "```", "")
        out(f"`aten::copy_`: {copy / 1e3:.0f} ms of {total / 1e3:.0f} ms self time ({copy / total:.1%})")


def main() -> None:
    parser = harness.parser(__doc__, reps=3, budget=60.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--init", default="identity", help="initialiser of the orthogonal ResNet9 (haar is slow on CPU)"
    )
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--deep-batch", type=int, default=32)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-deep", action="store_true")
    parser.add_argument("--floor", action="store_true", help="forward+backward against unconstrained and floor")
    parser.add_argument("--layers", action="store_true", help="each orthogonal convolution against its 3×3 one")
    parser.add_argument("--profile", action="store_true", help="torch.profiler's table of one forward+backward")
    parser.add_argument("--against", type=Path, help="--floor, --profile: another checkout's projunn beside")
    args = parser.parse_args()
    clock, out = Clock.of(args), Output(args.out)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} (other jobs share the machine)"
    )
    against = harness.load_library(args.against) if args.against else None
    if (args.floor or args.layers or args.profile) and keep_freed_memory():
        out("freed memory kept for reuse, as train.py does (training/memory.py)")
    if not args.skip_resnet:
        bench_resnet9(args.batch, args.reps, args.init, clock, out)
    if not args.skip_deep:
        bench_deep(args.depth, args.channels, args.deep_batch, clock.device, out)
    if args.floor:
        bench_floor(args.batch, args.reps, args.budget, against, clock, out)
    if args.layers:
        bench_layers(args.batch, args.reps, args.budget, clock, out)
    if args.profile:
        profile(args.batch, against, clock, out)


if __name__ == "__main__":
    main()
