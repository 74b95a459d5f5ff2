"""One task in lockstep: both sides built from one set of weights, stepped on the same batches; each
step's row of numbers computed here and printed by ``table.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from .layout import bin_classes, conv_layers, hermitian_error, image_size, isometry_defect
from .sides import Side, build_ours, build_theirs, comparable_weights, perturb, unitarity, unitary_names
from .specs import LockstepTask, Settings
from .streams import batches


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor], keys: set[str] | None = None) -> float:
    keys = a.keys() if keys is None else keys
    return max(((a[k] - b[k]).abs().max().item() for k in keys), default=0.0)


def per_param_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, float]:
    return {k: (a[k] - b[k]).abs().max().item() for k in a}


class Lockstep:
    """The sides of one task, and the rows of their comparison (``rows()``), step by step.

    Sides: ``authors:<variant>`` for each of ``task.variants()``, ``ours``, on CIFAR10 also
    ``ours:matched``, ``ours:matched-eps0`` (the counterparts of those variants) and ``ours:RMSprop``
    (the preset's default optimizer); after step 0 the chaos control ``authors:perturbed``.
    """

    def __init__(self, task: LockstepTask, settings: Settings, folder: Path) -> None:
        self.task, self.settings = task, settings
        self.data, self.what = batches(task, settings, folder)
        self.shrinks: list[float] = []  # what their LSI's eps would have taken off each replaced step
        self.names = task.names()
        variants = task.variants()
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(settings.dtype)  # both sides' initialisers then draw in it
        try:
            theirs = {v.name: build_theirs(task, folder, v, settings, self.shrinks) for v in variants}
            self.reference = theirs["written"].model
            for side in theirs.values():  # every variant starts from the same weights
                side.model.load_state_dict(self.reference.state_dict())
            built = {"ours": build_ours(task, self.reference, settings)}
            if task.frequencies:
                built["ours:matched"] = build_ours(task, self.reference, settings, authors_growth=True)
                built["ours:matched-eps0"] = build_ours(task, self.reference, settings, authors_growth=True, eps0=True)
                built["ours:RMSprop"] = build_ours(task, self.reference, settings, extra=("optim.base=RMSprop",))
        finally:
            torch.set_default_dtype(default_dtype)
        self.cfg = built["ours"][2]
        self.sides: dict[str, Side] = {f"authors:{k}": side for k, side in theirs.items()}
        self.sides.update({key: parts[0] for key, parts in built.items()})
        cifar = task.cifar
        self.counterpart = {
            name: (f"ours:{name}" if (cifar and name.startswith("matched")) else "ours") for name in theirs
        }
        self.compared = [v.name for v in variants if v.name not in ("written", "lsi")]
        self.unitary = unitary_names(task, self.reference)
        self.chaos: dict | None = None

    def weights(self, key: str) -> dict[str, Tensor]:
        return comparable_weights(self.sides[key].model, key.startswith("ours"), self.names)

    def rows(self) -> Iterator[dict]:
        """Step every side on each batch and yield the step's row (the package docstring's Output)."""
        task, sides, counterpart, unitary = self.task, self.sides, self.counterpart, self.unitary
        for step, (x, y) in enumerate(self.data):
            results = {key: side.step(x, y) for key, side in sides.items()}
            W = {key: self.weights(key) for key in sides if key != "authors:lsi"}
            loss_a, out_a = results["authors:written"]
            loss_b, out_b = results["ours"]
            row = {
                "step": step,
                "loss_authors": loss_a,
                "loss_ours": loss_b,
                "dloss": abs(loss_a - loss_b),
                "dout": (out_a - out_b).abs().max().item(),
                "dW": max_diff(W["authors:written"], W["ours"]),
                "dW_unitary": max_diff(W["authors:written"], W["ours"], unitary),
                "unit_authors": unitarity(sides["authors:written"].model, False, task),
                "unit_ours": unitarity(sides["ours"].model, True, task),
                "loss": {key: r[0] for key, r in results.items()},
            }
            for name in self.compared:
                row[f"dW_{name}"] = max_diff(W[f"authors:{name}"], W[counterpart[name]])
                row[f"dW_{name}_unitary"] = max_diff(W[f"authors:{name}"], W[counterpart[name]], unitary)
                row[f"dout_{name}"] = (results[f"authors:{name}"][1] - results[counterpart[name]][1]).abs().max().item()
            # Their own numerical error: their code against itself, float32 against complex128 2 × 2
            # eigen-solve, and (projUNN-D) with against without the 1e-8 stabiliser.
            if "authors:c128" in sides:
                row["own_eig32"] = max_diff(W["authors:written"], W["authors:c128"], unitary)
            if "authors:c128-nostab" in sides:
                row["own_stabiliser"] = max_diff(W["authors:c128"], W["authors:c128-nostab"], unitary)
            if self.chaos is None:
                self._start_chaos(row, W)
            if "authors:perturbed" in sides:
                W["authors:perturbed"] = self.weights("authors:perturbed")
                row["dW_chaos"] = max_diff(W[f"authors:{self.chaos['target']}"], W["authors:perturbed"])
            else:  # nothing to move: the control would be its original, step for step
                row["dW_chaos"] = 0.0
            row["unit"] = {key: unitarity(side.model, key.startswith("ours"), task) for key, side in sides.items()}
            if task.frequencies:
                self._cifar_columns(row, W)
            yield row

    def _start_chaos(self, row: dict, W: dict[str, dict[str, Tensor]]) -> None:
        """The chaos control: the variant whose separation from ours is in question, copied after step 0
        and moved by its own step-0 difference from ours. Adds the step-0 breakdowns to ``row``."""
        target = "matched" if self.task.frequencies else "written"
        mine = self.counterpart[target]
        sizes = per_param_diff(W[f"authors:{target}"], W[mine])
        row["per_param"] = {
            name: per_param_diff(W[f"authors:{name}"], W[self.counterpart[name]])
            for name in self.counterpart
            if name != "lsi"
        }
        row["largest_step0"] = {
            "target": target,
            "against": mine,
            "top": sorted(sizes.items(), key=lambda kv: -kv[1])[:4],
        }
        if self.task.frequencies:
            classes = {c: 0.0 for c in ("interior", "paired edge", "self-conjugate")}
            for name, layer in conv_layers(self.reference):
                key = f"{name}.weight"
                for c, idx in bin_classes(*image_size(layer)).items():
                    d = (W["authors:matched"][key][idx] - W["ours:matched"][key][idx]).abs().max().item()
                    classes[c] = max(classes[c], d)
            row["matched_by_bin"] = classes
        if max(sizes.values(), default=0.0) == 0.0:  # bitwise equal after step 0: a copy moved by 0 adds nothing
            self.chaos = {"target": target, "size": 0.0}
            return
        self.sides["authors:perturbed"] = self.sides[f"authors:{target}"].copy("perturbed")
        size = perturb(self.sides["authors:perturbed"].model, sizes, self.task, self.settings.seed)
        self.chaos = {"target": target, "size": size}

    def _cifar_columns(self, row: dict, W: dict[str, dict[str, Tensor]]) -> None:
        lsi = self.sides["authors:lsi"].model
        row["dW_ours_rmsprop"] = max_diff(W["ours:RMSprop"], W["ours"])
        for key, model in (("hermitian_authors", self.reference), ("hermitian_their_lsi", lsi)):
            row[key] = max(hermitian_error(layer.weight.detach(), image_size(layer)) for _, layer in conv_layers(model))
        row["isometry_their_lsi"] = isometry_defect(lsi, "res1.0.0", self.settings.seed)
        row["isometry_ours"] = isometry_defect(self.sides["ours"].model, "res1.0.0", self.settings.seed)

    def info(self) -> dict:
        """What the run compares, known before its first step (the table's header)."""
        s = self.settings
        return {
            "task": self.task.name,
            "overrides": list(self.task.overrides),
            "commit": self.task.commit,
            "script": self.task.script,
            "data": self.what,
            "batch": s.batch,
            "steps": s.steps,
            "sampler": s.sampler,
            "model": self.cfg.model._target_,
            "image_size": s.image_size if self.task.cifar else None,
            "dtype": str(s.dtype).removeprefix("torch."),
            "stream": s.stream,
            "frequencies": self.task.frequencies,
            "variants": self.compared,
        }

    def result(self, rows: list[dict], seconds: float) -> dict:
        """Everything of the run, for ``--json``, with its verdict."""
        return {
            **self.info(),
            "rows": rows,
            "verdict": verdict(rows, self.compared, self.chaos),
            "chaos": self.chaos,
            "lsi_shrink": max(self.shrinks, default=0.0),
            "seconds": seconds,
            "evaluation": self.evaluation(),
        }

    def evaluation(self) -> dict:
        """Both sides in eval mode (BatchNorm's running statistics) after the last step: on the first
        batch, or on a real CIFAR10 stream on the whole test set (with each side's accuracy)."""
        if self.settings.stream == "gaussian":
            data = self.data[:1]
        else:
            from .streams import test_set

            data = [(x.to(self.settings.dtype), y) for x, y in test_set(self.task, self.settings)]
        found: dict = {"dout": 0.0}
        sides = (("authors", self.sides["authors:written"]), ("ours", self.sides["ours"]))
        for _, side in sides:
            side.model.eval()
        losses: dict[str, list[float]] = {"authors": [], "ours": []}
        correct = {"authors": 0, "ours": 0}
        with torch.no_grad():
            for x, y in data:
                out = {key: side.model(x) for key, side in sides}
                found["dout"] = max(found["dout"], (out["authors"] - out["ours"]).abs().max().item())
                for key, side in sides:
                    losses[key].append(side.loss(out[key], y).item())
                    correct[key] += (out[key].argmax(-1) == y).sum().item() if self.task.cifar else 0
        sizes = [len(y) for _, y in data]
        found["images"] = sum(sizes)
        for key, side in sides:
            side.model.train()
            # the mean over all images (one batch: its loss as the loss function gave it)
            found[f"loss_{key}"] = (
                sum(l * n for l, n in zip(losses[key], sizes)) / sum(sizes) if len(sizes) > 1 else losses[key][0]
            )
            if self.settings.stream != "gaussian":
                found[f"accuracy_{key}"] = correct[key] / sum(sizes)
        return found


def verdict(rows: list[dict], compared: list[str], chaos: dict) -> str:
    """One line: how far the sides are apart at the start, against the closest variant, and whether the
    distance grows faster than the chaos control's."""
    first, last = rows[0], rows[-1]
    parts = [f"forward at step 0 differs by {first['dout']:.1e} (loss {first['dloss']:.1e})"]
    parts.append(f"first update by {first['dW']:.1e} (unitary {first['dW_unitary']:.1e})")
    if compared:
        closest = compared[-1]
        worst = max(r[f"dW_{closest}"] for r in rows)
        parts.append(
            f"against {closest}: forward {first[f'dout_{closest}']:.1e}, {first[f'dW_{closest}']:.1e} after the "
            f"first update, ≤ {worst:.1e} over all steps"
        )
    target = chaos["target"]
    observed = [r["dW"] if target == "written" else r[f"dW_{target}"] for r in rows]
    if max(observed) == 0.0 and max(r["dout"] for r in rows) == 0.0:
        parts.append(
            f"over {len(rows)} steps ours and {target} are bitwise equal (the chaos control has nothing to move)"
        )
        return "; ".join(parts)
    growth_ours = observed[-1] / max(observed[0], 1e-300)
    growth_chaos = last["dW_chaos"] / max(chaos["size"], 1e-300)
    parts.append(
        f"over {len(rows)} steps ours vs {target} went {observed[0]:.1e} → {observed[-1]:.1e} (×{growth_ours:.2g}), "
        f"{target} vs itself moved by {chaos['size']:.1e} → {last['dW_chaos']:.1e} (×{growth_chaos:.2g})"
    )
    return "; ".join(parts)
