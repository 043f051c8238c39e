"""gpu-transcribe: transcribe audio on a short-lived AWS GPU instance, or on this machine.

Importing this package is cheap: it imports neither torch, transformers nor boto3, so that
``gpu-transcribe --help`` answers at once. Heavy modules are imported inside the functions that use them.
"""

#: The project version; pyproject.toml reads it from here (one source of truth). Tags AMIs and resources.
__version__ = "0.1.0"

__all__ = ["__version__"]
