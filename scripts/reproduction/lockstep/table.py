"""A lockstep run as text: a header, a Markdown row per step and the closing lines, from the run's
``info()`` / ``result()`` dicts, so that ``--json`` records print again as they did (``markdown``,
which ``python -m scripts.results.report --lockstep`` puts into docs/reproduction.md)."""

from __future__ import annotations

from ... import tables


def header(info: dict, page: bool = False) -> list[str]:
    """The heading, the line of settings and the table's head; ``page``: as a Markdown page shows them
    (a level-4 heading, blank lines between, the ``|`` in column names escaped)."""
    cifar = info["image_size"] is not None
    lines = [
        f"{'####' if page else '##'} {info['task']}: experiment overrides {' '.join(info['overrides'])}; "
        f"authors {info['commit']} {info['script']}",
        f"batch {info['batch']}, {info['steps']} steps, {info.get('dtype', 'float64')}, "
        f"sampler {info['sampler']}; data: {info['data']}; "
        f"model {info['model']}{' image ' + str(info['image_size']) if cifar else ''}",
    ]
    columns = ["step", "loss authors", "loss ours", "|Δloss|", "max|Δout|", "max|ΔW|", "max|ΔW| unitary"]
    columns += ["unit. authors", "unit. ours"]
    columns += [f"ΔW vs {name} (all / unitary)" for name in info["variants"]] + ["chaos ΔW"]
    if info.get("frequencies", cifar):
        columns += ["ΔW ours:RMSprop", "herm. authors", "herm. their LSI", "isometry defect their LSI / ours"]
    if page:
        lines = [lines[0], "", lines[1], ""]
        columns = [c.replace("|", "\\|") for c in columns]
    return lines + tables.head(columns)


def step_zero(row: dict) -> list[str]:
    """The breakdowns of the first step's differences (only step 0 carries them)."""
    lines = []
    if "largest_step0" in row:
        largest = row["largest_step0"]
        lines.append(
            f"largest step-0 differences, {largest['target']} vs {largest['against']}: "
            + ", ".join(f"{k} {v:.1e}" for k, v in largest["top"])
        )
    if "matched_by_bin" in row:
        lines.append(
            "step-0 unitary difference, matched, by bin: "
            + ", ".join(f"{c} {d:.1e}" for c, d in row["matched_by_bin"].items())
        )
    return lines


def cells(info: dict, row: dict) -> str:
    """The step's Markdown row."""
    found = [str(row["step"]), f"{row['loss_authors']:.10f}", f"{row['loss_ours']:.10f}"]
    found += [f"{row[k]:.2e}" for k in ("dloss", "dout", "dW", "dW_unitary", "unit_authors", "unit_ours")]
    found += [f"{row[f'dW_{name}']:.2e} / {row[f'dW_{name}_unitary']:.2e}" for name in info["variants"]]
    found.append(f"{row['dW_chaos']:.2e}")
    if info.get("frequencies", info["image_size"] is not None):
        found += [f"{row[k]:.2e}" for k in ("dW_ours_rmsprop", "hermitian_authors", "hermitian_their_lsi")]
        found.append(f"{row['isometry_their_lsi']:.1e} / {row['isometry_ours']:.1e}")
    return tables.row(found)


def footer(result: dict) -> list[str]:
    rows, chaos = result["rows"], result["chaos"]
    lines = [f"chaos control: authors:{chaos['target']} copied after step 0 and moved by {chaos['size']:.2e}"]
    own = [
        f"{label} {rows[0][key]:.1e} after step 0, {rows[-1][key]:.1e} after the last"
        for key, label in (("own_eig32", "float32 eigen-solve"), ("own_stabiliser", "1e-8 stabiliser"))
        if key in rows[0]
    ]
    if own:
        lines.append(
            "their own numerical error in the unitary matrix (max|ΔW| of their code against itself): " + "; ".join(own)
        )
    lines.append(f"their LSI's eps (1e-6) would have shrunk a step by up to {result['lsi_shrink']:.1e} (relative)")
    lines.append(
        "unitarity error after the last step: " + ", ".join(f"{k} {v:.1e}" for k, v in rows[-1]["unit"].items())
    )
    if "evaluation" in result:
        ev = result["evaluation"]
        if "accuracy_ours" in ev:  # a real CIFAR10 stream: the whole test set
            lines.append(
                f"evaluation pass (eval mode, all {ev['images']} test images, after the last step): outputs differ by "
                f"{ev['dout']:.1e}; loss authors {ev['loss_authors']:.10f}, ours {ev['loss_ours']:.10f}; test "
                f"accuracy authors {100 * ev['accuracy_authors']:.2f} %, ours {100 * ev['accuracy_ours']:.2f} %"
            )
        else:
            lines.append(
                f"evaluation pass (eval mode, the first batch, after the last step): outputs differ by "
                f"{ev['dout']:.1e}; loss authors {ev['loss_authors']:.10f}, ours {ev['loss_ours']:.10f}"
            )
    lines.append(f"verdict {result['task']}: {result['verdict']} ({result['seconds']:.0f} s)")
    return lines


def markdown(result: dict) -> str:
    """A recorded run as a page shows it: the header (a level-4 heading), the table, then the step-0
    breakdowns and the closing lines as a list."""
    lines = header(result, page=True) + [cells(result, row) for row in result["rows"]] + [""]
    lines += [f"* {line}" for line in step_zero(result["rows"][0]) + footer(result)]
    return "\n".join(lines) + "\n"
