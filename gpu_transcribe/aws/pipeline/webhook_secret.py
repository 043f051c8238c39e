"""The pipeline's webhook signing secret in Secrets Manager (``gpu-transcribe-<name>-webhook``): its document
(:class:`WebhookSecret`), read, written, made sure of at deploy time, deleted with the pipeline.

The document is JSON ``{"current": "whsec_...", "previous": "whsec_..." | null, "previous_until": Unix
seconds | null}``: during a rotation the notifier signs with both (Standard Webhooks allows several
space-separated signatures), until ``--finish-rotation`` or ``previous_until``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from gpu_transcribe.aws.clients import AwsContext, aws_errors, secretsmanager_client
from gpu_transcribe.errors import CloudError
from gpu_transcribe_api.webhook_common import check_secret, generate_secret


@dataclass(frozen=True)
class WebhookSecret:
    """The pipeline's signing secret(s), as kept in Secrets Manager.

    Attributes:
        current: the secret signing now (``whsec_`` + base64).
        previous: the one before a rotation, still signing until ``previous_until`` (``None``: no rotation).
        previous_until: Unix seconds when ``previous`` stops signing (``None`` with a ``previous``: until
            ``--finish-rotation``).
    """

    current: str
    previous: str | None = None
    previous_until: float | None = None

    def to_json(self) -> str:
        """The ``SecretString`` form."""
        return json.dumps(
            {"current": self.current, "previous": self.previous, "previous_until": self.previous_until}
        )

    @classmethod
    def from_json(cls, text: str) -> WebhookSecret:
        """Parse a ``SecretString``.

        Raises:
            ValueError: not this JSON, or a secret that is not ``whsec_`` + base64 of 24+ bytes.
        """
        try:
            raw = json.loads(text)
            current = check_secret(str(raw["current"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError("the webhook secret is not the pipeline's JSON document") from None
        previous = check_secret(raw["previous"]) if raw.get("previous") else None
        until = raw.get("previous_until")
        return cls(current, previous, float(until) if until is not None else None)

    def signing(self, now_s: float) -> list[str]:
        """The secrets a delivery at ``now_s`` (Unix seconds) is signed with: current, then previous."""
        keys = [self.current]
        if self.previous and (self.previous_until is None or now_s < self.previous_until):
            keys.append(self.previous)
        return keys


def read_webhook_secret(ctx: AwsContext, name: str) -> WebhookSecret | None:
    """The secret, or ``None`` if there is none of that name.

    Raises:
        CloudError: Secrets Manager refused, or the secret is not the pipeline's JSON document (the message
            names the secret).
        CredentialsError: credentials missing or rejected.
    """
    client = secretsmanager_client(ctx)
    with aws_errors(ctx, f"reading the webhook secret {name}"):
        try:
            value = client.get_secret_value(SecretId=name)
        except client.exceptions.ResourceNotFoundException:
            return None
    try:
        return WebhookSecret.from_json(value["SecretString"])
    except ValueError as exc:
        raise CloudError(f"{name}: {exc}") from None


def write_webhook_secret(ctx: AwsContext, name: str, secret: WebhookSecret) -> None:
    """Store ``secret`` as the secret's new value (``PutSecretValue``).

    Raises:
        CloudError: Secrets Manager refused (e.g. there is no such secret).
        CredentialsError: credentials missing or rejected.
    """
    with aws_errors(ctx, f"writing the webhook secret {name}"):
        secretsmanager_client(ctx).put_secret_value(SecretId=name, SecretString=secret.to_json())


def ensure_pipeline_secret(ctx: AwsContext, name: str, tags: Sequence[tuple[str, str]]) -> bool:
    """Make sure the pipeline's webhook secret exists and holds a usable document; True if it had to be
    written.

    CloudFormation makes it on AWS (with a generated value that is not yet ``whsec_``: replaced here once);
    moto skips ``AWS::SecretsManager::Secret`` in a stack, so there it is created here.

    Raises:
        CloudError: Secrets Manager refused.
        CredentialsError: credentials missing or rejected.
    """
    client = secretsmanager_client(ctx)
    with aws_errors(ctx, f"making sure of the webhook secret {name}"):
        try:
            found = client.get_secret_value(SecretId=name)
        except client.exceptions.ResourceNotFoundException:
            client.create_secret(
                Name=name,
                Description="gpu-transcribe pipeline: Standard Webhooks signing secret(s)",
                SecretString=WebhookSecret(generate_secret()).to_json(),
                Tags=[{"Key": key, "Value": value} for key, value in tags],
            )
            return True
        try:
            WebhookSecret.from_json(found["SecretString"])
        except ValueError:
            client.put_secret_value(SecretId=name, SecretString=WebhookSecret(generate_secret()).to_json())
            return True
    return False


def delete_pipeline_secret(ctx: AwsContext, name: str) -> bool:
    """Delete the webhook secret at once (no recovery window); False if there was none.

    Raises:
        CloudError: Secrets Manager refused.
        CredentialsError: credentials missing or rejected.
    """
    client = secretsmanager_client(ctx)
    with aws_errors(ctx, f"deleting the webhook secret {name}"):
        try:
            client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        except client.exceptions.ResourceNotFoundException:
            return False
    return True
