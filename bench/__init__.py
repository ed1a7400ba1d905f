"""Benchmarks: ``make bench`` (``python -m bench``). Figures and the machine in bench/README.md."""
