"""Tests of the commands of scripts/ (python -m scripts ...): results, reproduction, benchmarks."""
