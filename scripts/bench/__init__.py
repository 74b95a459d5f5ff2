"""Benchmarks, each timing its methods side by side in one process, and float32's drift (docs/speed.md)."""
