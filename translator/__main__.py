"""`python -m translator` runs the command line (also the entry point torchrun uses)."""

from translator.cli import app

app(prog_name="translator")
