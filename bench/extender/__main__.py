"""`python -m bench.extender` (see the package docstring)."""

from bench.extender.cli import run

run()
