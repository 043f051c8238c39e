"""The command line (``gpu-transcribe``): :mod:`gpu_transcribe.cli.main` builds the application from one
module per command family; see its docstring for the map."""
