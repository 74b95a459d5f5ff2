"""Printing a lockstep run: a header, a Markdown row per step, and the closing lines of each task."""

from __future__ import annotations

from .run import Lockstep


def header(run: Lockstep) -> None:
    task, s = run.task, run.settings
    print(f"\n## {task.name}: experiment overrides {' '.join(task.overrides)}; authors {task.commit} {task.script}")
    print(
        f"batch {s.batch}, {s.steps} steps, float64, sampler {s.sampler}; data: {run.what}; "
        f"model {run.cfg.model._target_}{' image ' + str(s.image_size) if task.cifar else ''}"
    )
    columns = ["step", "loss authors", "loss ours", "|Δloss|", "max|Δout|", "max|ΔW|", "max|ΔW| unitary"]
    columns += ["unit. authors", "unit. ours"]
    columns += [f"ΔW vs {name} (all / unitary)" for name in run.compared] + ["chaos ΔW"]
    if task.cifar:
        columns += ["ΔW ours:RMSprop", "herm. authors", "herm. their LSI", "isometry defect their LSI / ours"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def row(run: Lockstep, row: dict) -> None:
    """The step's Markdown row, after the step-0 breakdowns when it carries them."""
    if "largest_step0" in row:
        largest = row["largest_step0"]
        print(
            f"largest step-0 differences, {largest['target']} vs {largest['against']}: "
            + ", ".join(f"{k} {v:.1e}" for k, v in largest["top"])
        )
    if "matched_by_bin" in row:
        print(
            "step-0 unitary difference, matched, by bin: "
            + ", ".join(f"{c} {d:.1e}" for c, d in row["matched_by_bin"].items())
        )
    cells = [str(row["step"]), f"{row['loss_authors']:.10f}", f"{row['loss_ours']:.10f}"]
    cells += [f"{row[k]:.2e}" for k in ("dloss", "dout", "dW", "dW_unitary", "unit_authors", "unit_ours")]
    cells += [f"{row[f'dW_{name}']:.2e} / {row[f'dW_{name}_unitary']:.2e}" for name in run.compared]
    cells.append(f"{row['dW_chaos']:.2e}")
    if run.task.cifar:
        cells += [f"{row[k]:.2e}" for k in ("dW_ours_rmsprop", "hermitian_authors", "hermitian_their_lsi")]
        cells.append(f"{row['isometry_their_lsi']:.1e} / {row['isometry_ours']:.1e}")
    print("| " + " | ".join(cells) + " |", flush=True)


def footer(result: dict, seconds: float) -> None:
    rows, chaos = result["rows"], result["chaos"]
    print(f"chaos control: authors:{chaos['target']} copied after step 0 and moved by {chaos['size']:.2e}")
    own = [
        f"{label} {rows[0][key]:.1e} after step 0, {rows[-1][key]:.1e} after the last"
        for key, label in (("own_eig32", "float32 eigen-solve"), ("own_stabiliser", "1e-8 stabiliser"))
        if key in rows[0]
    ]
    if own:
        print(
            "their own numerical error in the unitary matrix (max|ΔW| of their code against itself): " + "; ".join(own)
        )
    print(f"their LSI's eps (1e-6) would have shrunk a step by up to {result['lsi_shrink']:.1e} (relative)")
    print("unitarity error after the last step: " + ", ".join(f"{k} {v:.1e}" for k, v in rows[-1]["unit"].items()))
    print(f"verdict {result['task']}: {result['verdict']} ({seconds:.0f} s)")
