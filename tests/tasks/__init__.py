"""Tests of the tasks and the models they train (tasks/)."""
