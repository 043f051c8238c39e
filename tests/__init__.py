"""Tests of gpu-transcribe (a package so that ``tests.fixtures`` imports from tests and benchmarks)."""
