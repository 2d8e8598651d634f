"""`python -m translator` runs the command line (also the entry point torchrun uses)."""

from translator.cli.main import entry_point

entry_point()
