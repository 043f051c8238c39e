"""The ``gpu-transcribe`` command line: the Typer application, its commands and their rendering (parsing and
printing only; the work is in the orchestration packages)."""
