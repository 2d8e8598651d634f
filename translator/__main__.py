"""`python -m translator` runs the command line (also the entry point torchrun uses)."""

from translator.cli import entry_point

entry_point()
