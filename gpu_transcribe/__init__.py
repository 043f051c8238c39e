"""gpu-transcribe: transcribe audio on a short-lived AWS GPU instance, or on this machine.

Importing this package is cheap: it imports neither torch, transformers nor boto3, so that
``gpu-transcribe --help`` answers at once. Heavy modules are imported inside the functions that use them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpu-transcribe")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
