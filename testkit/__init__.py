"""Helpers shared by tests/ and benchmarks/: tiny runs and configs, tiny random encoders and data sets in every
source format, kill-and-resume training, a real S3 server (moto's) and a proxy that drops its connections. Not
part of the `paris` package (pyproject ships `paris*` only).

Importable from the repository root: pytest puts it on the path (`pythonpath = ["."]` in pyproject.toml); the
benchmarks that use it are run as `PYTHONPATH=. .venv/bin/python benchmarks/NAME.py`.
"""
