"""Helpers shared by tests/ and benchmarks/: tiny runs and configs, tiny random encoders and data sets in every
source format, kill-and-resume training. Not part of the `paris` package (pyproject ships `paris*` only).

Importable from the repository root: pytest puts it on the path (`pythonpath = ["."]` in pyproject.toml); the
benchmarks that use it are run as `PYTHONPATH=. .venv/bin/python benchmarks/NAME.py`.
"""
