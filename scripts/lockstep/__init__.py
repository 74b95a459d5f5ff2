"""Lockstep comparison of the paper presets against the projUNN authors' code, step by step, in float64.

    python -m scripts.lockstep --authors PATH                       # every task, 10 steps each
    python -m scripts.lockstep --authors PATH --tasks pmnist_d copy --steps 20 --json lockstep.json
    python -m scripts.lockstep --authors PATH --tasks cifar_resnet9 --stream authors --dtype float32 \
        --steps 195 --batch 256 --data-root DIR                    # one epoch on their script's batches

``PATH`` is a git checkout of github.com/facebookresearch/projUNN; nothing of it is copied into this
project (the pinned commits are extracted with ``git archive`` into a temporary directory). What
runs, the tasks, the authors' variants, the chaos control and the output are described in
docs/reproduction.md, "Lockstep against the authors' code". Files: ``specs.py`` (the tasks, the
variants, the settings), ``samplers.py`` (the deterministic samplers), ``streams.py`` (the batches
both sides step on), ``sides.py`` (both sides from one set of weights, built as ``train.py`` builds
a preset), ``layout.py`` (CIFAR10's two frequency layouts), ``run.py`` (a task's rows), ``table.py``
(printed), ``__main__.py`` (the command line); ``scripts/authors.py`` holds the checkout helpers.
"""
