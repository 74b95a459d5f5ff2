"""Tests of the library, projunn: one module of tests per concept of the package."""
