"""Amazon Bedrock: one Converse call (``bedrock-runtime``) and a check that a model can be used in a region
(``bedrock``, the control plane). Their clients come from the one client factory,
:mod:`gpu_transcribe.aws.clients` (``bedrock_runtime_client``, ``bedrock_client``).

The wire format is botocore's service models (``bedrock-runtime`` 2023-09-30:
``POST /model/{modelId}/converse``; ``bedrock`` 2023-04-20: ``GET /foundation-models/{modelIdentifier}``),
both REST-JSON signed with SigV4.

Retries: the runtime client is made with botocore's retries off (``total_max_attempts=1``) and
:func:`converse` retries the throttling answers itself (``ThrottlingException``,
``ServiceUnavailableException``, ``ModelNotReadyException``) with capped, fully jittered exponential backoff
(:func:`.retry.retrying`), so that the schedule is ours, testable without sleeping, and bounded. Anything
else becomes a :class:`~gpu_transcribe.errors.BedrockError` at once.

Endpoints: botocore's own seam. ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (and ``AWS_ENDPOINT_URL_BEDROCK`` for the
control plane, or ``AWS_ENDPOINT_URL`` for every service) send the calls elsewhere; the tests point them at a
loopback server that speaks the Converse wire format (moto has no Bedrock).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_transcribe.aws.clients import AwsContext, bedrock_client, error_code, error_message, is_aws_error
from gpu_transcribe.aws.retry import retrying
from gpu_transcribe.errors import BedrockError

#: Error codes of Converse that mean "try again later" (bedrock-runtime's service model: 429 and 503 answers;
#: ``ModelNotReadyException`` is what Bedrock says while it loads a model for on-demand use).
RETRYABLE_CODES = frozenset({"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"})

#: Tries per Converse call (the first included), and the backoff schedule in seconds: waits drawn uniformly
#: from ``[0, min(CAP_S, BASE_S * 2**n)]`` (full jitter), so at most 1 + 2 + 4 + 8 + 16 = 31 s in all.
CONVERSE_ATTEMPTS = 6
CONVERSE_BASE_S = 1.0
CONVERSE_CAP_S = 20.0

#: Prefixes of cross-region inference profile ids (``eu.anthropic.claude-...``): the foundation model is the
#: rest of the id (Bedrock user guide, "Supported Regions and models for inference profiles").
INFERENCE_PROFILE_PREFIXES: tuple[str, ...] = (
    "us.",
    "eu.",
    "apac.",
    "us-gov.",
    "ca.",
    "jp.",
    "au.",
    "global.",
)


@dataclass(frozen=True)
class ConverseResult:
    """One Converse answer.

    Attributes:
        text: the assistant message's text blocks, joined (no separator).
        input_tokens: tokens Bedrock counted in the request (``usage.inputTokens``), for cost.
        output_tokens: tokens it generated (``usage.outputTokens``).
        stop_reason: ``end_turn``, ``max_tokens``, ``stop_sequence``... (``stopReason``).
        attempts: how many tries it took (1 = no retry).
        latency_ms: Bedrock's own latency (``metrics.latencyMs``), 0 if not given.
    """

    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str
    attempts: int = 1
    latency_ms: int = 0


@dataclass(frozen=True)
class ModelAvailability:
    """What the control plane says of a model in a region.

    Attributes:
        model_id: the foundation model's id (an inference profile's prefix removed).
        region: the region asked.
        available: ``True`` when the model exists there, is ``ACTIVE`` or ``LEGACY`` and can be called on
            demand (or through an inference profile, when the id named one).
        reason: why not, or ``""``.
        status: the lifecycle status (``ACTIVE``, ``LEGACY``...), ``""`` if unknown.
    """

    model_id: str
    region: str
    available: bool
    reason: str = ""
    status: str = ""


def _bedrock_error(exc: BaseException, model_id: str, region: str, doing: str) -> BedrockError:
    code = error_code(exc)
    return BedrockError(
        f"{doing} with {model_id} in {region} failed ({code or type(exc).__name__}): {error_message(exc)}",
        code=code,
        model_id=model_id,
        region=region,
    )


def is_retryable(exc: BaseException) -> bool:
    """True for Bedrock's "try again later" answers (:data:`RETRYABLE_CODES`)."""
    return is_aws_error(exc) and error_code(exc) in RETRYABLE_CODES


def converse(
    client: Any,
    *,
    model_id: str,
    region: str,
    user_text: str,
    system_text: str,
    max_tokens: int,
    temperature: float = 0.0,
    attempts: int = CONVERSE_ATTEMPTS,
    base_s: float = CONVERSE_BASE_S,
    cap_s: float = CONVERSE_CAP_S,
    sleep: Callable[[float], None] = time.sleep,
) -> ConverseResult:
    """One user turn to ``model_id`` through Converse, retried while Bedrock throttles.

    Args:
        client: from :func:`~gpu_transcribe.aws.clients.bedrock_runtime_client`.
        model_id: a Bedrock model id or inference profile id (``anthropic.claude-3-haiku-20240307-v1:0``).
        region: the client's region, for messages.
        user_text: the user message (one text block).
        system_text: the system prompt (one text block).
        max_tokens: the most tokens the answer may have (``inferenceConfig.maxTokens``).
        temperature: sampling temperature, 0 for the most deterministic answer.
        attempts: tries in all, the first included.
        base_s, cap_s: backoff schedule in seconds (full jitter; see :mod:`.retry`).
        sleep: how to wait (tests pass a recorder).

    Returns:
        The answer's text, token counts and stop reason.

    Raises:
        BedrockError: any other error at once (access denied, validation, a model error, no connection), or
            throttling still after ``attempts`` tries; ``code`` says which.
    """
    request: dict[str, Any] = {
        "modelId": model_id,
        "messages": [{"role": "user", "content": [{"text": user_text}]}],
        "system": [{"text": system_text}],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": temperature},
    }
    tries = 0
    try:
        for attempt in retrying(
            retry_on=is_retryable, attempts=attempts, base_s=base_s, cap_s=cap_s, sleep=sleep
        ):
            with attempt:
                tries += 1
                response = client.converse(**request)
    except Exception as exc:
        if is_aws_error(exc):
            raise _bedrock_error(exc, model_id, region, "Converse") from exc
        raise
    blocks: Sequence[dict[str, Any]] = response.get("output", {}).get("message", {}).get("content", [])
    usage = response.get("usage", {})
    return ConverseResult(
        text="".join(str(block.get("text", "")) for block in blocks),
        input_tokens=int(usage.get("inputTokens", 0)),
        output_tokens=int(usage.get("outputTokens", 0)),
        stop_reason=str(response.get("stopReason", "")),
        attempts=tries,
        latency_ms=int(response.get("metrics", {}).get("latencyMs", 0)),
    )


def foundation_model_id(model_id: str) -> str:
    """The foundation model behind ``model_id``: an inference profile's region prefix removed
    (``eu.anthropic.claude-3-haiku-20240307-v1:0`` -> ``anthropic.claude-3-haiku-20240307-v1:0``)."""
    for prefix in INFERENCE_PROFILE_PREFIXES:
        if model_id.startswith(prefix):
            return model_id[len(prefix) :]
    return model_id


def check_model(ctx: AwsContext, model_id: str) -> ModelAvailability:
    """Ask the control plane (``GetFoundationModel``) whether ``model_id`` can be used in ``ctx.region``.

    A model id must be offered ``ON_DEMAND``; an inference profile id (``eu.``...) needs its foundation model
    to list ``INFERENCE_PROFILE``. Whether the account was granted access to the model is not visible here:
    the first Converse call says so (``AccessDeniedException``).

    Returns:
        The availability; ``available`` is ``False`` (with a reason) for a model the region does not have
        (``ResourceNotFoundException``, ``ValidationException``), one at end of life, or one not offered for
        this kind of call.

    Raises:
        BedrockError: the check itself could not be made (no permission for ``bedrock:GetFoundationModel``,
            no connection, throttled): the caller may go on without it.
    """
    foundation = foundation_model_id(model_id)
    try:
        response = bedrock_client(ctx).get_foundation_model(modelIdentifier=foundation)
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        code = error_code(exc)
        if code in ("ResourceNotFoundException", "ValidationException"):
            reason = f"{foundation} is not offered in {ctx.region} ({code}: {error_message(exc)})"
            return ModelAvailability(foundation, ctx.region, False, reason)
        raise _bedrock_error(exc, model_id, ctx.region, "checking the model") from exc
    details = response.get("modelDetails", {})
    status = str(details.get("modelLifecycle", {}).get("status", ""))
    kinds = [str(k) for k in details.get("inferenceTypesSupported", [])]
    wanted = "INFERENCE_PROFILE" if foundation != model_id else "ON_DEMAND"
    if status not in ("ACTIVE", "LEGACY"):
        return ModelAvailability(
            foundation, ctx.region, False, f"{foundation} is {status or 'not active'}", status
        )
    if kinds and wanted not in kinds:
        reason = f"{foundation} is offered in {ctx.region} only as {', '.join(kinds)}, not {wanted}" + (
            "; use a cross-region inference profile id such as eu." + foundation
            if wanted == "ON_DEMAND"
            else ""
        )
        return ModelAvailability(foundation, ctx.region, False, reason, status)
    return ModelAvailability(foundation, ctx.region, True, "", status)
