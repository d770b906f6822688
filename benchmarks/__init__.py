"""Benchmarks: scripts that measure and print JSON (results in RESULTS.md). Run each as a module
from the repository root, `python -m benchmarks.NAME`, so they import each other as a package."""
