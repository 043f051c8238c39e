"""The code of the stack's two Lambda functions, from the files that hold it.

- The scaler, :mod:`gpu_transcribe.aws.pipeline.scaler_lambda`, is small and is sent as it is, inline
  (``Code.ZipFile`` through the ``ScalerCode`` parameter): inline code and a parameter's value are each
  limited to 4,096 bytes (CloudFormation, ``AWS::Lambda::Function Code`` and "CloudFormation quotas").
- The notifier, :mod:`gpu_transcribe.aws.pipeline.notifier_lambda` and the signing it shares with the HTTP
  API's callbacks (:mod:`gpu_transcribe_api.webhook_common`), is over that limit: it ships as a zip asset
  (:func:`notifier_zip`) that ``pipeline deploy`` uploads to the region's assets bucket before the change
  set (:mod:`gpu_transcribe.aws.pipeline.assets`). The zip holds the files as they are in the repository,
  under the same paths, so the handler's ``from gpu_transcribe_api.webhook_common import ...`` works
  unchanged in Lambda: ``notifier_lambda.py`` at the root (handler :data:`NOTIFIER_HANDLER`),
  ``gpu_transcribe_api/__init__.py`` (a docstring: it imports nothing) and
  ``gpu_transcribe_api/webhook_common.py`` (stdlib only).

The zip is deterministic (fixed order, timestamps and permissions, stored without compression so no zlib
version changes its bytes): the same sources give the same bytes, the same SHA-256 and so the same object key
(:func:`asset_key`), and a redeploy with an unchanged notifier changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from importlib import resources

#: CloudFormation's limit on inline Lambda code (``Code.ZipFile``) and on a parameter's value, bytes.
INLINE_CODE_LIMIT_BYTES = 4096
#: The notifier's handler in its zip (``module.function``).
NOTIFIER_HANDLER = "notifier_lambda.handler"
#: The zip's entries: (path in the zip, package, file name in that package), in this order.
NOTIFIER_FILES: tuple[tuple[str, str, str], ...] = (
    ("notifier_lambda.py", "gpu_transcribe.aws.pipeline", "notifier_lambda.py"),
    ("gpu_transcribe_api/__init__.py", "gpu_transcribe_api", "__init__.py"),
    ("gpu_transcribe_api/webhook_common.py", "gpu_transcribe_api", "webhook_common.py"),
)
#: The timestamp of every entry (the zip format's earliest, 1980-01-01 00:00:00).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def scaler_source() -> str:
    """The scaler's Python source (:mod:`gpu_transcribe.aws.pipeline.scaler_lambda`), inlined as the Lambda's
    code.

    Raises:
        ValueError: it outgrew CloudFormation's 4,096-byte inline limit (make it an asset like the notifier).
    """
    scaler = resources.files("gpu_transcribe.aws.pipeline").joinpath("scaler_lambda.py")
    source = scaler.read_text(encoding="utf-8")
    size = len(source.encode())
    if size > INLINE_CODE_LIMIT_BYTES:
        raise ValueError(
            f"the scaler's source is {size} bytes, over the {INLINE_CODE_LIMIT_BYTES}-byte limit"
        )
    return source


def notifier_zip() -> bytes:
    """The notifier's deployment package: the bytes of a zip of :data:`NOTIFIER_FILES`, the same for the same
    sources (entries in that order, each dated 1980-01-01, mode 0644, stored)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, package, file in NOTIFIER_FILES:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            info.create_system = 3  # Unix, so the mode above is read as one
            archive.writestr(info, resources.files(package).joinpath(file).read_bytes())
    return buffer.getvalue()


def asset_key(name: str, body: bytes) -> str:
    """The content-addressed S3 key of an asset: ``lambda/<name>-<SHA-256 of body, hex>.zip``."""
    return f"lambda/{name}-{hashlib.sha256(body).hexdigest()}.zip"
