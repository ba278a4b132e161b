"""Benchmarks for the local server: `python -m bench` (or `make bench`). See bench/README.md."""
