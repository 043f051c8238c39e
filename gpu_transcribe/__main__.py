"""``python -m gpu_transcribe``: the same as the ``gpu-transcribe`` console script."""

from gpu_transcribe.cli.main import main

main()
