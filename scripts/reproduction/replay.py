"""Replay a run's steps from one of its checkpoints: as the run took them, or with one thing changed, each
step's loss and what its update looked like (docs/results.md, "The copy task's loss spikes").

    python -m scripts.reproduction.replay RUN_DIR CHECKPOINT --steps 20 --variants as-run unitary-frozen
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from projunn import ProjUNN
from tasks.data import GeneratedBatches
from training.build import build, compose
from training.diagnostics import update_norms

from .authors import NEEDS, NeedsAuthors, extract
from .lockstep.samplers import top_k

# What each variant changes from the run, from its first step (--at) on.
VARIANTS = {
    "as-run": "nothing changed: the run's own steps",
    "unitary-frozen": "the unitary matrices take no step (their gradients dropped)",
    "others-frozen": "every other parameter takes no step",
    "eps=X": "the base optimizer's eps set to X",
    "clip=X": "the gradients' joint norm clipped to X",
    "topk": "the deterministic rank-k truncated SVD instead of the run's sampler",
    "authors-topk": "the authors' code (--authors) from the checkpoint's weights and optimizer state, with topk",
}
AUTHORS_TASKS = {"experiment=copy_T1000": "copy", "experiment=adding_T200": "adding"}  # lockstep's specs


def training_overrides(run_dir: Path) -> list[str]:
    """The run's overrides (Hydra's ``.hydra/overrides.yaml``, which a record keeps) without Hydra's own and
    callbacks added on the command line: what builds its model, data, optimizer and schedule."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no .hydra/overrides.yaml to read the run's command from")
    return [o for o in yaml.safe_load(path.read_text()) or [] if not o.startswith(("hydra.", "+callbacks."))]


class Replay:
    """The run's model, optimizer and scheduler at a checkpoint, stepping on the run's own training
    batches (a generated task's batch of step ``s`` is a function of the seed and ``s``)."""

    def __init__(self, run_dir: Path, checkpoint: Path, variant: str, at: int | None = None) -> None:
        self.cfg = compose(training_overrides(run_dir))
        built = build(self.cfg)
        self.task, self.model = built.task, built.model
        if not hasattr(self.task, "make_batch"):
            raise SystemExit(f"{run_dir}: replay reads generated batches (copy, adding), not a dataset's")
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        self.model.load_state_dict({k.removeprefix("model."): v for k, v in saved["state_dict"].items()})
        self.optimizer = built.make_optimizer(self.model)
        self.optimizer.load_state_dict(saved["optimizer_states"][0])  # (its groups too: set what changes after)
        self.scheduler = None
        if built.make_scheduler is not None:  # as training.lightning_module builds it
            per_epoch, total = len(self.task.train_dataloader()), self.cfg.trainer.max_steps
            self.scheduler = built.make_scheduler(self.optimizer, steps_per_epoch=per_epoch, total_steps=total)
            self.scheduler.load_state_dict(saved["lr_schedulers"][0])
        self.step_index = saved["global_step"]
        self.batches = GeneratedBatches(self.task.make_batch, self.task.seed, "train")
        self.variant, self.names = variant, {id(p): n for n, p in self.model.named_parameters()}
        self.at = self.step_index if at is None else at  # the variant's first step; before it, as run
        if self.at < self.step_index:
            raise SystemExit(f"--at {at}: the checkpoint is at step {self.step_index}, after it")
        if isinstance(self.optimizer, ProjUNN):
            self.optimizer.track_steps = True

    def _change_groups(self) -> None:
        """What a variant changes in the optimizer's groups, once, at its first step."""
        for group in self.optimizer.param_groups:
            if self.variant == "topk" and group.get("unitary"):
                group["sampler"] = top_k
            if self.variant.startswith("eps="):
                group["eps"] = float(self.variant.removeprefix("eps="))

    def unitary(self) -> set[int]:
        return {id(p) for group in self.optimizer.param_groups if group.get("unitary") for p in group["params"]}

    def step(self) -> dict[str, float]:
        """One step: the loss of the weights before it, gradient norms, and the unitary update's norms."""
        x, y = self.batches[self.step_index]
        self.model.train()
        loss = self.task.objective(self.model(x), y)[0]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        row: dict[str, float] = {"step": self.step_index, "loss": loss.item()}
        params = [p for p in self.model.parameters() if p.grad is not None]
        for p in params:
            row[f"‖grad‖ {self.names[id(p)]}"] = p.grad.norm().item()
        changed = self.step_index >= self.at
        if self.step_index == self.at:
            self._change_groups()
        unitary = self.unitary()
        dropped: Callable[[nn.Parameter], bool] = {
            "unitary-frozen": lambda p: id(p) in unitary,
            "others-frozen": lambda p: id(p) not in unitary,
        }.get(self.variant if changed else "as-run", lambda p: False)
        for p in params:
            if dropped(p):
                p.grad = None
        if changed and self.variant.startswith("clip="):
            nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], float(self.variant[5:]))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        tracked = getattr(self.optimizer, "step_norms", {})
        for p, entry in update_norms(self.optimizer, dict.fromkeys([*tracked, *params])).items():
            name = self.names[id(p)]
            row |= {f"{key.replace('min_sqrt_v', 'min sqrt(v)')} {name}": value for key, value in entry.items()}
        self.step_index += 1
        return row


class AuthorsReplay:
    """The authors' model and RMSprop (their ``copy_task.py`` or ``adding_task.py``, as the lockstep
    builds them) given the checkpoint's weights, second moments and learning rate, stepping on the
    run's batches with the deterministic top-k sampler: what their code does from where the run was."""

    def __init__(self, run_dir: Path, checkpoint: Path, folders: dict[str, Path]) -> None:
        from .lockstep.sides import build_theirs
        from .lockstep.specs import TASKS, Settings, Variant

        ours = Replay(run_dir, checkpoint, "as-run")  # the batches, the weights and the state, read as ours
        experiment = next((o for o in training_overrides(run_dir) if o in AUTHORS_TASKS), None)
        if experiment is None:
            raise SystemExit(f"authors-topk: {run_dir} is not one of {', '.join(AUTHORS_TASKS)}")
        rnn = ours.model.rnn  # their proj_net(input, hidden, output) at our sizes (a preset's, or smaller)
        sizes = (rnn.weight_ih.shape[1], rnn.weight_hh.shape[0], ours.model.readout.weight.shape[0])
        task = dataclasses.replace(TASKS[AUTHORS_TASKS[experiment]], sizes=sizes)
        settings = Settings(  # what build_theirs reads: the sampler, the seed and the precision
            batch=1,
            steps=1,
            sampler="topk",
            seed=0,
            seq_len=784,
            copy_T=1000,
            adding_T=200,
            image_size=16,
            data_root=Path("."),
            dtype=torch.float32,
        )
        side = build_theirs(task, folders[task.commit], Variant("written"), settings, [])
        theirs = dict(side.model.named_parameters())
        with torch.no_grad():
            for mine, their in task.names().items():
                p = ours.model.get_parameter(mine)
                theirs[their].copy_(p)
                side.optimizer.state[theirs[their]] = {
                    "step": int(ours.optimizer.state[p]["step"]),
                    "square_avg": ours.optimizer.state[p]["square_avg"].clone(),
                }
        # their one group's lr is the run's base one (their projector divides it for the unitary matrix)
        side.optimizer.param_groups[0]["lr"] = next(
            group["lr"] for group in ours.optimizer.param_groups if not group.get("unitary")
        )
        self.side, self.batches, self.step_index = side, ours.batches, ours.step_index
        self.recurrent = theirs[task.names()["rnn.weight_hh"]]

    def step(self) -> dict[str, float]:
        x, y = self.batches[self.step_index]
        before = self.recurrent.detach().clone()
        loss, _ = self.side.step(x, y)
        row = {"step": self.step_index, "loss": loss}
        row["step rnn.weight_hh"] = (self.recurrent.detach() - before).norm().item()
        self.step_index += 1
        return row


def table(rows: list[dict[str, float]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{int(row[c])}" if c == "step" else f"{row[c]:.4g}" if c in row else "" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run's directory or record (its .hydra/overrides.yaml)")
    parser.add_argument("checkpoint", type=Path, help="a checkpoint of that run")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--at", type=int, help="the variants' first step (default: the checkpoint's)")
    parser.add_argument("--authors", type=Path, help="for authors-topk: a git checkout of facebookresearch/projUNN")
    parser.add_argument(
        "--variants", nargs="+", default=["as-run"], help="; ".join(f"{k}: {v}" for k, v in VARIANTS.items())
    )
    args = parser.parse_args(argv)
    for variant in args.variants:
        name, _, value = variant.partition("=")
        if (f"{name}=X" if value else name) not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        try:
            number = float(value) if value else 1.0
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            parser.error(f"{variant}: the value must be a positive number")
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        folders = {}
        if "authors-topk" in args.variants:
            try:
                folders = extract(args.authors, Path(tmp))
            except NeedsAuthors as error:
                parser.error(f"authors-topk {NEEDS}; {error}")
        for variant in args.variants:
            if variant == "authors-topk":
                replay: Replay | AuthorsReplay = AuthorsReplay(args.run_dir, args.checkpoint, folders)
            else:
                replay = Replay(args.run_dir, args.checkpoint, variant, args.at)
            name, _, value = variant.partition("=")
            described = VARIANTS[f"{name}=X" if value else name].replace(" X", f" {value}")
            at = "" if args.at is None or variant == "authors-topk" else f" (from step {args.at})"
            print(f"\n### {variant}: {described}{at}\n")
            print(table([replay.step() for _ in range(args.steps)]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
