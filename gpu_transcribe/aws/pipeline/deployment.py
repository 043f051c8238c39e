"""The AWS calls of ``gpu-transcribe pipeline`` beyond the stack itself (that is :mod:`.stack`).

- After each deploy, what CloudFormation may not have done (moto skips it; on AWS it is already there, so
  these are no-ops): the bucket's ``incoming/`` notification to the jobs queue
  (:func:`ensure_bucket_notification`, which also serves a bucket the user brought, merged with its other
  notifications), the created bucket's protection (:func:`ensure_bucket_protection`), the table's TTL
  (:func:`ensure_ttl`) and point-in-time recovery (:func:`ensure_point_in_time_recovery`). Each reads
  first and writes only what is missing.
- For ``pipeline status``: the worker group (the queues' counts are
  :func:`gpu_transcribe.aws.pipeline.queue.queue_counts`)
  (:func:`worker_group`).
- For ``pipeline destroy --delete-data``: :func:`empty_bucket` and :func:`delete_bucket`.
- For ``submit``: :func:`run_scaler`, the scaler Lambda's code run in-process with the Lambda's own settings
  (:func:`function_environment`, which also reads the notifier's), so the fleet wakes the moment the jobs
  are queued rather than at the schedule's next minute.

The webhook secret is :mod:`.webhook_secret`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpu_transcribe.aws.clients import (
    AwsContext,
    autoscaling_client,
    aws_errors,
    dynamodb_client,
    ec2_client,
    error_code,
    lambda_client,
    owned_s3_client,
    s3_client,
    sqs_client,
)
from gpu_transcribe.aws.models import Market
from gpu_transcribe.aws.pipeline.models import GroupInstance, WorkerGroup
from gpu_transcribe.errors import CloudError

#: The event type that starts a job: any object created (Put, Post, Copy, CompleteMultipartUpload).
OBJECT_CREATED = "s3:ObjectCreated:*"
#: ``DeleteObjects`` takes at most 1,000 keys per call (S3 API Reference).
DELETE_BATCH = 1000


def unreserved_lambda_concurrency(ctx: AwsContext) -> int | None:
    """The account's unreserved Lambda concurrency in the region (``GetAccountSettings``), or ``None`` if it
    cannot be read (a caller without ``lambda:GetAccountSettings``, an endpoint without the call): the deploy
    then reserves as usual, and CloudFormation names the function if the account has no room.

    Raises:
        CredentialsError: credentials missing or rejected.
    """
    try:
        with aws_errors(ctx, "reading the account's Lambda concurrency"):
            reply = lambda_client(ctx).get_account_settings()
    except CloudError:
        return None
    value = reply.get("AccountLimit", {}).get("UnreservedConcurrentExecutions")
    return int(value) if value is not None else None


def check_own_bucket(ctx: AwsContext, bucket: str, account_id: str) -> None:
    """Before a pipeline takes ``bucket`` (``--s3-bucket``): it exists, account ``account_id`` owns it
    (``HeadBucket`` with ``ExpectedBucketOwner``: another account's bucket answers 403) and it is in the
    pipeline's region (S3 sends notifications only to a queue in the bucket's region: S3 User Guide, "Event
    notification destinations").

    Raises:
        CloudError: it does not exist, is not the account's (or may not be read), or is in another region;
            the message names the bucket and what to do.
        CredentialsError: credentials missing or rejected.
    """
    s3: Any = s3_client(ctx)
    with aws_errors(ctx, f"checking bucket {bucket}"):
        try:
            reply = s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account_id)
        except Exception as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise CloudError(
                    f"bucket {bucket} does not exist; create it, or leave out --s3-bucket"
                ) from exc
            if code in ("403", "AccessDenied", "Forbidden"):
                raise CloudError(
                    f"bucket {bucket}: access denied, or account {account_id} does not own it; a pipeline "
                    "takes only a bucket of its own account (or leave out --s3-bucket to create one)"
                ) from exc
            raise
    headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = reply.get("BucketRegion") or headers.get("x-amz-bucket-region")
    if region and region != ctx.region:
        raise CloudError(
            f"bucket {bucket} is in {region}, the pipeline in {ctx.region}; S3 notifies only queues in the "
            f"bucket's region: deploy with --region {region}, or use a bucket in {ctx.region}"
        )


def _prefix_of(config: dict[str, Any]) -> str:
    rules = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return next((str(r.get("Value", "")) for r in rules if str(r.get("Name", "")).lower() == "prefix"), "")


def _is_ours(config: dict[str, Any], queue_arn: str, prefix: str) -> bool:
    events = config.get("Events", [])
    return config.get("QueueArn") == queue_arn and OBJECT_CREATED in events and _prefix_of(config) == prefix


def _notification(s3: Any, bucket: str) -> dict[str, Any]:
    config = dict(s3.get_bucket_notification_configuration(Bucket=bucket))
    config.pop("ResponseMetadata", None)
    return config


def ensure_bucket_notification(
    ctx: AwsContext, bucket: str, queue_arn: str, prefix: str, notification_id: str
) -> bool:
    """Make ``bucket`` send an event to ``queue_arn`` for every object created under ``prefix``, keeping the
    bucket's other notifications, and check that S3 kept it.

    Returns:
        True if it had to be written, False if it was there already.

    Raises:
        CloudError: S3 refused (e.g. the queue policy does not let the bucket send: S3 tests the destination
            when the configuration is written), or did not keep it.
        CredentialsError: credentials missing or rejected.
    """
    s3: Any = owned_s3_client(ctx)  # the stubs type these dicts strictly; they are built from S3 replies
    with aws_errors(ctx, f"setting the notification of bucket {bucket}"):
        config = _notification(s3, bucket)
        queues = config.get("QueueConfigurations", [])
        if any(_is_ours(q, queue_arn, prefix) for q in queues):
            return False
        ours = {
            "Id": notification_id,
            "QueueArn": queue_arn,
            "Events": [OBJECT_CREATED],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
        }
        config["QueueConfigurations"] = [q for q in queues if q.get("Id") != notification_id] + [ours]
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        kept = _notification(s3, bucket).get("QueueConfigurations", [])
    if not any(_is_ours(q, queue_arn, prefix) for q in kept):
        raise CloudError(f"bucket {bucket} did not keep the notification to {queue_arn} for {prefix}")
    return True


#: The four switches of S3 Block Public Access, all on.
_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
#: S3's answers for a bucket without the configuration asked for.
_NOT_CONFIGURED = frozenset(
    {
        "NoSuchPublicAccessBlockConfiguration",
        "ServerSideEncryptionConfigurationNotFoundError",
        "OwnershipControlsNotFoundError",
        "NoSuchLifecycleConfiguration",
    }
)


def _read(call: Any, key: str, **kwargs: Any) -> Any:
    """``call(**kwargs)[key]``, or ``None`` when S3 says the bucket has no such configuration."""
    try:
        return call(**kwargs)[key]
    except Exception as exc:
        if error_code(exc) in _NOT_CONFIGURED:
            return None
        raise


def ensure_bucket_protection(
    ctx: AwsContext, bucket: str, lifecycle_rules: Sequence[Mapping[str, Any]]
) -> tuple[str, ...]:
    """Make sure a bucket the pipeline created has what its template asks for: Block Public Access (all
    four), default encryption, ``BucketOwnerEnforced`` (no ACLs), versioning and the lifecycle rules
    (matched by ``ID``; other rules are kept). Reads each first and writes only what is missing.

    Args:
        lifecycle_rules: rules in the S3 API's shape (``ID``, ``Status``, ``Filter``, ...).

    Returns:
        One short name per thing that had to be applied (empty on AWS, where CloudFormation applied them).

    Raises:
        CloudError, CredentialsError: a call failed.
    """
    s3: Any = owned_s3_client(ctx)
    fixed = []
    with aws_errors(ctx, f"checking the protection of bucket {bucket}"):
        block = _read(s3.get_public_access_block, "PublicAccessBlockConfiguration", Bucket=bucket) or {}
        if not all(block.get(k) for k in _PUBLIC_ACCESS_BLOCK):
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK)
            fixed.append("public access block")
        encryption = _read(s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", Bucket=bucket) or {}
        if not encryption.get("Rules"):
            s3.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
            )
            fixed.append("default encryption (SSE-S3)")
        ownership = _read(s3.get_bucket_ownership_controls, "OwnershipControls", Bucket=bucket) or {}
        if not any(r.get("ObjectOwnership") == "BucketOwnerEnforced" for r in ownership.get("Rules", [])):
            s3.put_bucket_ownership_controls(
                Bucket=bucket, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
            )
            fixed.append("object ownership BucketOwnerEnforced")
        if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            fixed.append("versioning")
        rules = list(_read(s3.get_bucket_lifecycle_configuration, "Rules", Bucket=bucket) or [])
        have = {r.get("ID") for r in rules}
        missing = [dict(r) for r in lifecycle_rules if r["ID"] not in have]
        if missing:
            s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, *missing]}
            )
            fixed.append("lifecycle rules " + ", ".join(str(r["ID"]) for r in missing))
    return tuple(fixed)


def remove_bucket_notification(ctx: AwsContext, bucket: str, queue_arn: str) -> bool:
    """Remove the bucket's notifications to ``queue_arn``, keeping the others.

    Returns:
        True if there was one to remove; False if none, or the bucket is gone.

    Raises:
        CloudError, CredentialsError: a call failed.
    """
    s3: Any = owned_s3_client(ctx)  # the stubs type these dicts strictly; they are built from S3 replies
    with aws_errors(ctx, f"removing the notification of bucket {bucket}"):
        try:
            config = _notification(s3, bucket)
        except Exception as exc:
            if error_code(exc) == "NoSuchBucket":
                return False
            raise
        queues = config.get("QueueConfigurations", [])
        kept = [q for q in queues if q.get("QueueArn") != queue_arn]
        if len(kept) == len(queues):
            return False
        config["QueueConfigurations"] = kept
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    return True


def ensure_ttl(ctx: AwsContext, table: str, attribute: str) -> bool:
    """Turn on DynamoDB's time to live on ``table`` with ``attribute`` (Unix epoch seconds).

    Returns:
        True if it had to be turned on, False if it was on (or being turned on) already.

    Raises:
        CloudError: DynamoDB refused, e.g. TTL is on with another attribute (it must be turned off first,
            and DynamoDB allows one change per hour: DynamoDB Developer Guide, "Time to Live").
        CredentialsError: credentials missing or rejected.
    """
    ddb = dynamodb_client(ctx)
    with aws_errors(ctx, f"turning on the time to live of table {table}"):
        now = ddb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
        if now.get("TimeToLiveStatus") in ("ENABLED", "ENABLING") and now.get("AttributeName") == attribute:
            return False
        ddb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
        )
    return True


def ensure_point_in_time_recovery(ctx: AwsContext, table: str) -> bool:
    """Turn on point-in-time recovery (continuous backups, restorable to any second of the last 35 days:
    DynamoDB Developer Guide) on ``table``.

    Returns:
        True if it had to be turned on, False if it was on already.

    Raises:
        CloudError, CredentialsError: a call failed.
    """
    ddb = dynamodb_client(ctx)
    with aws_errors(ctx, f"turning on point-in-time recovery of table {table}"):
        now = ddb.describe_continuous_backups(TableName=table).get("ContinuousBackupsDescription", {})
        if now.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus") == "ENABLED":
            return False
        ddb.update_continuous_backups(
            TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return True


def _instance_facts(ctx: AwsContext, instance_ids: Sequence[str]) -> dict[str, tuple[str, Market]]:
    """``instance id -> (type, market)`` from EC2: the group reports no market, and (in a mixed-instances
    group under moto) no type."""
    if not instance_ids:
        return {}
    facts: dict[str, tuple[str, Market]] = {}
    with aws_errors(ctx, "describing the workers"):
        pages = ec2_client(ctx).get_paginator("describe_instances").paginate(InstanceIds=list(instance_ids))
        for page in pages:
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    market: Market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
                    facts[instance["InstanceId"]] = (instance.get("InstanceType", ""), market)
    return facts


def worker_group(ctx: AwsContext, group: str) -> WorkerGroup | None:
    """The Auto Scaling group's sizes and instances, or ``None`` if there is no such group.

    Raises:
        CloudError, CredentialsError: the call failed.
    """
    with aws_errors(ctx, f"describing Auto Scaling group {group}"):
        groups = autoscaling_client(ctx).describe_auto_scaling_groups(AutoScalingGroupNames=[group])
    found = groups.get("AutoScalingGroups", [])
    if not found:
        return None
    raw = found[0]
    members = raw.get("Instances", [])
    ec2_facts = _instance_facts(ctx, [i["InstanceId"] for i in members])
    instances = tuple(
        sorted(
            (
                GroupInstance(
                    instance_id=i["InstanceId"],
                    instance_type=i.get("InstanceType")
                    or ec2_facts.get(i["InstanceId"], ("", "on-demand"))[0],
                    zone=i.get("AvailabilityZone", ""),
                    lifecycle_state=i.get("LifecycleState", ""),
                    health=i.get("HealthStatus", ""),
                    protected=bool(i.get("ProtectedFromScaleIn", False)),
                    market=ec2_facts.get(i["InstanceId"], ("", "on-demand"))[1],
                )
                for i in members
            ),
            key=lambda i: i.instance_id,
        )
    )
    return WorkerGroup(
        name=raw["AutoScalingGroupName"],
        desired=int(raw.get("DesiredCapacity", 0)),
        min_size=int(raw.get("MinSize", 0)),
        max_size=int(raw.get("MaxSize", 0)),
        instances=instances,
    )


def empty_bucket(ctx: AwsContext, bucket: str) -> int:
    """Delete every object (and every object version and delete marker, if versioning was ever on).

    Returns:
        How many objects and versions were deleted (0 if the bucket does not exist).

    Raises:
        CloudError: a call failed, or S3 refused to delete some keys (named).
        CredentialsError: credentials missing or rejected.
    """
    s3: Any = owned_s3_client(ctx)  # the stubs type these dicts strictly; they are built from S3 replies
    deleted = 0
    with aws_errors(ctx, f"emptying bucket {bucket}"):
        try:
            pages = list(s3.get_paginator("list_object_versions").paginate(Bucket=bucket))
        except Exception as exc:
            if error_code(exc) == "NoSuchBucket":
                return 0
            raise
        keys: list[dict[str, str]] = []
        for page in pages:
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                keys.append({"Key": item["Key"], "VersionId": item.get("VersionId") or "null"})
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = answer.get("Errors", [])
            if errors:
                named = ", ".join(f"{e.get('Key')}: {e.get('Code')}" for e in errors[:5])
                raise CloudError(f"S3 did not delete {len(errors)} object(s) of bucket {bucket}: {named}")
            deleted += len(batch)
    return deleted


def delete_bucket(ctx: AwsContext, bucket: str) -> bool:
    """Delete the (empty) bucket.

    Returns:
        True if deleted, False if it did not exist.

    Raises:
        CloudError, CredentialsError: the call failed (``BucketNotEmpty`` if objects remain).
    """
    with aws_errors(ctx, f"deleting bucket {bucket}"):
        try:
            owned_s3_client(ctx).delete_bucket(Bucket=bucket)
        except Exception as exc:
            if error_code(exc) == "NoSuchBucket":
                return False
            raise
    return True


def run_scaler(ctx: AwsContext, queue_url: str, group: str, scaler_function: str) -> dict[str, Any]:
    """Run the scaler (:func:`gpu_transcribe.aws.pipeline.scaler_lambda.scale`) here, with the
    ``MAX_WORKERS`` and
    ``JOBS_PER_WORKER`` the stack gave the Lambda ``scaler_function`` (read with
    ``GetFunctionConfiguration``), so the in-process and the scheduled scaler follow the same numbers.

    Returns:
        The scaler's answer: ``visible`` (jobs waiting), ``desired_before``, ``desired``, ``raised``.

    Raises:
        CloudError: a call failed, or the function has no such settings.
        CredentialsError: credentials missing or rejected.
    """
    from gpu_transcribe.aws.pipeline.scaler_lambda import scale

    variables = function_environment(ctx, scaler_function)
    try:
        max_workers, jobs_per_worker = int(variables["MAX_WORKERS"]), int(variables["JOBS_PER_WORKER"])
    except (KeyError, ValueError) as exc:
        raise CloudError(
            f"the scaler {scaler_function} lacks MAX_WORKERS/JOBS_PER_WORKER ({exc!r}); deploy again"
        ) from None
    with aws_errors(ctx, f"running the scaler of group {group}"):
        return scale(sqs_client(ctx), autoscaling_client(ctx), queue_url, group, max_workers, jobs_per_worker)


def function_environment(ctx: AwsContext, function: str) -> dict[str, str]:
    """The environment variables of the Lambda ``function`` (``GetFunctionConfiguration``; empty if it has
    none): the settings the stack gave the scaler and the notifier.

    Raises:
        CloudError: the call failed (e.g. no such function).
        CredentialsError: credentials missing or rejected.
    """
    with aws_errors(ctx, f"reading the settings of Lambda {function}"):
        found = lambda_client(ctx).get_function_configuration(FunctionName=function)
    variables = (found.get("Environment") or {}).get("Variables") or {}
    return {str(name): str(value) for name, value in variables.items()}
