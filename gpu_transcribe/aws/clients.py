"""Where boto3 sessions and clients are made, and how AWS errors are classified and translated into ours.

This is the one client factory: every module of gpu-transcribe gets its clients from the ``*_client``
functions here (Bedrock's included). The exception is code that runs inside AWS Lambda (the scaler,
:mod:`gpu_transcribe.aws.pipeline.scaler_lambda`, and the webhook notifier): it is shipped alone, with only
the standard library and boto3, and calls ``boto3.client`` in its ``handler``. ``tests/test_layout.py``
checks both.

Clients are created inside the functions that use them, never at import time, so that tests (and users) can
point them elsewhere first. The endpoint seam is boto3's own: it reads ``AWS_ENDPOINT_URL`` (and
``AWS_ENDPOINT_URL_<SERVICE>``) from the environment, which is how the tests and a CLI subprocess reach the
moto server; :attr:`AwsContext.endpoint_url` overrides it for one context.

Two retry configurations (botocore's own retry handler, "standard" mode: capped exponential backoff with full
jitter, docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html):

- :func:`ec2_client` and the other factories: standard mode, 5 attempts, for describe/create/delete calls;
- ``ec2_client(ctx, fail_fast=True)``: one attempt (``total_max_attempts=1``), for ``RunInstances``: EC2
  answers capacity errors with HTTP 500, which botocore would retry, and the fallback must move to the next
  zone at once. Transient errors of that call are retried by :mod:`.ec2.launch` itself (with tenacity).

:func:`aws_errors` turns botocore's exceptions into :class:`~gpu_transcribe.errors.CloudError` and
:class:`~gpu_transcribe.errors.CredentialsError` with one-line messages.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
import botocore.loaders
import botocore.session
from botocore.config import Config

from gpu_transcribe import __version__
from gpu_transcribe.errors import CloudError, CredentialsError, ProfileNotFoundError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_pricing import PricingClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_service_quotas import ServiceQuotasClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

    from gpu_transcribe.settings import Settings

# Error codes, from docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html. Capacity: try the
# next zone or market at once.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientCapacity",
        "InsufficientReservedInstanceCapacity",
        "UnfulfillableCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "Unsupported",
    }
)
# Transient: the same request may succeed a moment later.
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ServerInternal",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        # botocore's own exceptions for a dropped connection, under these names (see error_code()).
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    }
)
# Credentials: stop at once and say how to configure them.
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "MissingAuthenticationToken",
        "NoCredentials",
        "PartialCredentials",
        "TokenRetrievalError",
        "SSOTokenLoadError",
        "ProfileNotFound",
    }
)
# Permissions: the credentials work but may not do this; stop at once.
PERMISSION_CODES = frozenset(
    {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "OptInRequired"}
)
# Quotas: the market's vCPU quota is used up; no zone of the region will do better.
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "InstanceLimitExceeded"})

_BOTOCORE_CODES: tuple[tuple[type[Exception], str], ...] = (
    (botocore.exceptions.NoCredentialsError, "NoCredentials"),
    (botocore.exceptions.PartialCredentialsError, "PartialCredentials"),
    (botocore.exceptions.ProfileNotFound, "ProfileNotFound"),
    (botocore.exceptions.TokenRetrievalError, "TokenRetrievalError"),
    (botocore.exceptions.SSOTokenLoadError, "SSOTokenLoadError"),
    (botocore.exceptions.ConnectTimeoutError, "ConnectTimeoutError"),
    (botocore.exceptions.ReadTimeoutError, "ReadTimeoutError"),
    (botocore.exceptions.ConnectionClosedError, "ConnectionClosedError"),
    (botocore.exceptions.EndpointConnectionError, "EndpointConnectionError"),
)


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    """One loader of botocore's JSON service models per process, made on first use.

    Each botocore session otherwise parses the EC2 model (several MB) again: about 0.2 s per new context.
    The loader caches what it has read and is only read from afterwards.
    """
    return botocore.loaders.create_loader()


@dataclass(frozen=True)
class AwsContext:
    """Where AWS calls go: region, profile and (optionally) an endpoint.

    The boto3 session is made on first use and kept (clients are still made per call site).

    Attributes:
        region: e.g. ``eu-north-1``.
        profile: named profile, or ``None`` for boto3's default chain.
        profile_source: where the profile setting came from, for error messages.
        endpoint_url: send every call here instead of AWS; ``None`` lets boto3 decide (``AWS_ENDPOINT_URL``).
    """

    region: str
    profile: str | None = None
    profile_source: str = "default"
    endpoint_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AwsContext:
        """The context for the user's ``region`` and ``aws_profile``."""
        return cls(
            region=settings.region,
            profile=settings.aws_profile,
            profile_source=settings.source("aws_profile"),
        )

    @functools.cached_property
    def account_id(self) -> str:
        """The caller's 12-digit account id (``sts get-caller-identity``, once per context).

        Raises:
            CredentialsError: no credentials, or rejected ones.
            CloudError: STS could not be reached.
        """
        with aws_errors(self, "reading the caller's account (sts get-caller-identity)"):
            return str(sts_client(self).get_caller_identity()["Account"])

    @functools.cached_property
    def session(self) -> boto3.Session:
        """The boto3 session (made on first use), sharing the process's service-model loader.

        Raises:
            CredentialsError: the named profile does not exist.
        """
        core = botocore.session.Session()
        core.register_component("data_loader", _shared_loader())
        try:
            session = boto3.Session(botocore_session=core, profile_name=self.profile, region_name=self.region)
            core.get_scoped_config()  # botocore looks the profile up lazily: here, not in the first AWS call
        except botocore.exceptions.ProfileNotFound:
            raise self._profile_not_found(core.profile) from None
        loader = _shared_loader()
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))  # boto3 appends its path each time
        return session

    def _profile_not_found(self, profile: str | None) -> ProfileNotFoundError:
        source = self.profile_source if self.profile else "AWS_PROFILE"
        name = self.profile or profile or ""
        return ProfileNotFoundError(
            f"AWS profile {name!r} (from {source}) is not in ~/.aws/config or ~/.aws/credentials; "
            f"create it with `aws configure --profile {name}`, or name one that "
            "`aws configure list-profiles` shows",
            profile=name,
            region=self.region,
        )

    def describe_profile(self) -> str:
        """``profile 'x' (from --aws-profile)`` or ``the default credential chain``, for messages."""
        if self.profile:
            return f"profile {self.profile!r} (from {self.profile_source})"
        return "the default credential chain (no aws_profile set)"


def _config(connect_timeout_s: float, read_timeout_s: float, *, attempts: int | None = None) -> Config:
    """A client configuration: botocore's standard retry mode with 5 attempts, or with ``attempts`` exactly
    that many tries in all (1: no retry)."""
    retries: Any = (
        {"mode": "standard", "max_attempts": 5} if attempts is None else {"total_max_attempts": attempts}
    )
    return Config(
        retries=retries,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        user_agent_extra=f"gpu-transcribe/{__version__}",
    )


def ec2_client(ctx: AwsContext, *, fail_fast: bool = False) -> EC2Client:
    """An EC2 client; ``fail_fast`` turns botocore's retries off (for ``RunInstances``)."""
    return ctx.session.client(
        "ec2", endpoint_url=ctx.endpoint_url, config=_config(10, 60, attempts=1 if fail_fast else None)
    )


def s3_client(ctx: AwsContext, *, expected_owner: str | None = None) -> S3Client:
    """An S3 client for the region (botocore's standard retries).

    Args:
        expected_owner: an account id that every request whose operation takes ``ExpectedBucketOwner``
            carries unless the call names one itself (the transfer manager's own ``HeadObject``,
            ``UploadPart``... included), so S3 answers 403 instead of reading or writing a bucket of that
            name that another account owns (S3 User Guide, "Verifying bucket ownership").
    """
    client = ctx.session.client("s3", endpoint_url=ctx.endpoint_url, config=_config(10, 60))
    if expected_owner:

        def add_owner(params: dict[str, Any], model: Any, **_: Any) -> None:
            if "ExpectedBucketOwner" in model.input_shape.members:
                params.setdefault("ExpectedBucketOwner", expected_owner)

        client.meta.events.register("before-parameter-build.s3", add_owner)
    return client


def owned_s3_client(ctx: AwsContext) -> S3Client:
    """:func:`s3_client` whose every request names the caller's account (:attr:`AwsContext.account_id`) as
    the bucket's expected owner: the pipeline's buckets are its account's (created by the stack, or a
    ``--s3-bucket`` checked at deploy to be the account's).

    Raises:
        CredentialsError, CloudError: the caller's account cannot be read.
    """
    return s3_client(ctx, expected_owner=ctx.account_id)


def sts_client(ctx: AwsContext) -> STSClient:
    """An STS client (regional endpoint)."""
    return ctx.session.client("sts", endpoint_url=ctx.endpoint_url, config=_config(10, 30))


def quotas_client(ctx: AwsContext) -> ServiceQuotasClient:
    """A Service Quotas client, few retries: if quotas cannot be read we say so and go on."""
    config = _config(5, 15, attempts=1)
    return ctx.session.client("service-quotas", endpoint_url=ctx.endpoint_url, config=config)


def pricing_client(ctx: AwsContext) -> PricingClient:
    """A Pricing API client. The API lives in us-east-1 (and eu-central-1, ap-south-1) whatever the region;
    one attempt with short timeouts, since a packaged table stands in when it cannot be reached."""
    config = _config(3, 10, attempts=1)
    return ctx.session.client(
        "pricing", region_name="us-east-1", endpoint_url=ctx.endpoint_url, config=config
    )


def ssm_client(ctx: AwsContext) -> SSMClient:
    """A Systems Manager client, for AWS's public parameters (``/aws/service/...``: the newest base AMIs)."""
    return ctx.session.client("ssm", endpoint_url=ctx.endpoint_url, config=_config(10, 30))


# The clients below are typed ``Any``. Secrets Manager, Lambda and Bedrock have no type stubs in
# requirements/cpu.lock; CloudFormation, SQS, DynamoDB and Auto Scaling have (boto3-stubs' mypy_boto3_*), but
# their request and reply types differ in the literals they accept (SQS's attribute names), which the callers
# would first have to spell out.


def secretsmanager_client(ctx: AwsContext) -> Any:
    """A Secrets Manager client (botocore's standard retries)."""
    return ctx.session.client("secretsmanager", endpoint_url=ctx.endpoint_url, config=_config(10, 30))


def cloudformation_client(ctx: AwsContext) -> Any:
    """A CloudFormation client (botocore's standard retries)."""
    return ctx.session.client("cloudformation", endpoint_url=ctx.endpoint_url, config=_config(10, 60))


def sqs_client(ctx: AwsContext) -> Any:
    """An SQS client; the read timeout leaves room for 20-second long polls."""
    return ctx.session.client("sqs", endpoint_url=ctx.endpoint_url, config=_config(10, 40))


def dynamodb_client(ctx: AwsContext) -> Any:
    """A DynamoDB client (botocore's standard retries)."""
    return ctx.session.client("dynamodb", endpoint_url=ctx.endpoint_url, config=_config(10, 30))


def autoscaling_client(ctx: AwsContext) -> Any:
    """An EC2 Auto Scaling client (botocore's standard retries)."""
    return ctx.session.client("autoscaling", endpoint_url=ctx.endpoint_url, config=_config(10, 30))


def lambda_client(ctx: AwsContext) -> Any:
    """A Lambda client (botocore's standard retries)."""
    return ctx.session.client("lambda", endpoint_url=ctx.endpoint_url, config=_config(10, 30))


#: Seconds to connect to Bedrock, and to wait for an answer (a piece of a few thousand tokens takes seconds
#: to tens of seconds on a small model).
BEDROCK_CONNECT_TIMEOUT_S = 10.0
BEDROCK_READ_TIMEOUT_S = 120.0


def bedrock_runtime_client(
    ctx: AwsContext,
    *,
    connect_timeout_s: float = BEDROCK_CONNECT_TIMEOUT_S,
    read_timeout_s: float = BEDROCK_READ_TIMEOUT_S,
) -> Any:
    """A ``bedrock-runtime`` client for ``ctx.region`` with botocore's retries off
    (:func:`gpu_transcribe.aws.bedrock.converse` retries).

    Thread-safe (botocore clients are); share one across the correction's worker threads.
    """
    config = _config(connect_timeout_s, read_timeout_s, attempts=1)
    return ctx.session.client("bedrock-runtime", endpoint_url=ctx.endpoint_url, config=config)


def bedrock_client(ctx: AwsContext) -> Any:
    """A ``bedrock`` control-plane client (two attempts, short timeouts: the check is advisory)."""
    return ctx.session.client("bedrock", endpoint_url=ctx.endpoint_url, config=_config(5.0, 15.0, attempts=2))


def error_code(exc: BaseException) -> str:
    """The AWS error code of ``exc`` (``InsufficientInstanceCapacity``...), a name for botocore's own
    exceptions (``NoCredentials``, ``EndpointConnectionError``...), or ``""`` for anything else."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "UnknownError"
    for cls, code in _BOTOCORE_CODES:
        if isinstance(exc, cls):
            return code
    return ""


def error_message(exc: BaseException) -> str:
    """AWS's message for ``exc`` (one line), or ``str(exc)``."""
    if isinstance(exc, botocore.exceptions.ClientError):
        message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    else:
        message = str(exc)
    return " ".join(message.split())


def is_aws_error(exc: BaseException) -> bool:
    """True for errors raised by botocore (client errors, credentials, connection)."""
    return isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError)


def credentials_error(ctx: AwsContext, code: str, detail: str = "") -> CredentialsError:
    """A :class:`CredentialsError` whose message says what failed and how to configure credentials."""
    where = f"{ctx.describe_profile()}, region {ctx.region}"
    if code == "ProfileNotFound":
        what = f"AWS profile {ctx.profile!r} (from {ctx.profile_source}) does not exist"
    elif code in ("NoCredentials", "PartialCredentials"):
        what = f"no usable AWS credentials found for {where}"
    elif code in ("TokenRetrievalError", "SSOTokenLoadError", "ExpiredToken", "ExpiredTokenException"):
        what = f"AWS credentials for {where} have expired ({code})"
    else:
        what = f"AWS rejected the credentials of {where} ({code}{': ' + detail if detail else ''})"
    profile = ctx.profile or "NAME"
    how = (
        f"configure them with `aws configure --profile {profile}` (or `aws sso login --profile {profile}`)"
        " and set aws_profile / GPU_TRANSCRIBE_AWS_PROFILE,"
        " or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )
    return CredentialsError(f"{what}; {how}", profile=ctx.profile, region=ctx.region)


def cloud_error(ctx: AwsContext, exc: BaseException, doing: str) -> CloudError:
    """The exception that stands for botocore error ``exc`` raised while ``doing`` something; not raised.

    Credential errors become :class:`CredentialsError` with the how-to; permission errors a
    :class:`CloudError` naming the profile; others a one-line :class:`CloudError` naming the operation, the
    code and AWS's message.
    """
    code = error_code(exc)
    if code in CREDENTIAL_CODES:
        return credentials_error(ctx, code, error_message(exc))
    if code in PERMISSION_CODES:
        who = ctx.describe_profile()
        return CloudError(f"{doing}: not permitted for {who} in {ctx.region} ({code}): {error_message(exc)}")
    return CloudError(f"{doing} failed in {ctx.region} ({code or type(exc).__name__}): {error_message(exc)}")


@contextlib.contextmanager
def aws_errors(ctx: AwsContext, doing: str) -> Iterator[None]:
    """Run the ``with`` block, translating the botocore errors it raises into ours.

    ``doing`` names the operation for the message (``listing gpu-transcribe images``). A code the caller
    expects (``InvalidAMIID.NotFound``...) is handled by a ``try`` inside the block; any exception that is not
    botocore's (ours included) passes through unchanged.

    Raises:
        CredentialsError: the credentials are missing, rejected or expired.
        CloudError: any other botocore error (see :func:`cloud_error`), chained to it.
    """
    try:
        yield
    except Exception as exc:
        if is_aws_error(exc):
            raise cloud_error(ctx, exc, doing) from exc
        raise
