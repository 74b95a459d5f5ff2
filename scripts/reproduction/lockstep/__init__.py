"""Lockstep comparison of the paper presets against the projUNN authors' code, step by step, in float64.
What runs and what it prints: docs/reproduction.md, "Lockstep against the authors' code".

    python -m scripts.reproduction.lockstep --authors PATH --tasks pmnist_d copy --steps 20 --json lockstep.json
"""
