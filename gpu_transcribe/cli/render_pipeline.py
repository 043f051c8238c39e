"""How ``gpu-transcribe pipeline deploy | status | destroy`` show their results: lines for stdout.

Part of the CLI layer, beside :mod:`gpu_transcribe.cli.render` (whose
:func:`~gpu_transcribe.cli.render.print_lines`
prints them literally). Each function takes an orchestration result and returns the lines, so tests can read
them without a console.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpu_transcribe.pipeline.template import INCOMING_PREFIX, RESULTS_PREFIX

if TYPE_CHECKING:
    from gpu_transcribe.pipeline.deploy import PipelineDeployment, PipelineDestroyed, PipelineStatus

#: What issue 12 asks for beyond the stack, not built yet.
NOT_BUILT_YET = "not built yet: the worker, `submit` and `jobs` (docs/pipeline.md); the stack waits for them"


def deployment_lines(result: PipelineDeployment) -> list[str]:
    """``pipeline deploy``: what was done, then one line per thing the stack holds."""
    out = result.outputs
    verb = {"unchanged": "is up to date (nothing changed)"}.get(result.action, result.action)
    bucket_note = (
        "created by the pipeline; kept by destroy unless --delete-data"
        if out.bucket_created
        else "yours; never deleted"
    )
    lines = [
        f"pipeline {result.name} {verb} in {result.region}: stack {result.stack.name} {result.stack.status} "
        f"({result.seconds:.1f} s)",
        f"bucket: {out.bucket} ({bucket_note})",
        f"upload audio to: s3://{out.bucket}/{INCOMING_PREFIX} (transcripts: s3://{out.bucket}/{RESULTS_PREFIX})",
        f"jobs queue: {out.queue_url}",
        f"dead-letter queue: {out.dead_letter_queue_url}",
        f"jobs table: {out.table}",
        f"workers: group {out.group}, 0 to {result.max_workers} spot {', '.join(result.instance_types)} "
        f"from {result.image_id}",
        f"scaler: {out.scaler_function} (every minute)",
        f"job events: {out.results_queue_url} (jobs watch)",
        f"webhooks: notifier {out.notifier_function}, secret {out.webhook_secret} "
        f"(pipeline webhook-secret), undelivered: {out.webhooks_dead_letter_queue_url}",
    ]
    if result.changes:
        lines.append("changes: " + ", ".join(f"{action} {logical}" for action, logical, _ in result.changes))
    lines.extend(f"applied after the stack: {line}" for line in result.fixed)
    lines.append(NOT_BUILT_YET)
    return lines


def _money(value: float | None) -> str:
    return "unknown (no price)" if value is None else f"${value:.4f}/h"


def status_lines(report: PipelineStatus) -> list[str]:
    """``pipeline status``: the stack, the queues, the workers (one line each) and the cost now."""
    stack = report.stack
    when = stack.updated_at or stack.created_at
    since = f" since {when:%Y-%m-%d %H:%M} UTC" if when else ""
    reason = f" ({stack.status_reason})" if stack.status_reason else ""
    lines = [f"pipeline {report.name} in {report.region}: stack {stack.status}{reason}{since}"]
    if report.jobs is not None:
        lines.append(
            f"jobs: {report.jobs.visible} waiting, {report.jobs.in_flight} in flight"
            + (f", {report.jobs.delayed} delayed" if report.jobs.delayed else "")
        )
    if report.dead_letter is not None:
        # in flight: hidden by a reconciliation that left them (gpu_transcribe.pipeline.jobs)
        lines.append(f"dead-lettered: {report.dead_letter.visible + report.dead_letter.in_flight}")
    if report.reconciled is not None and report.reconciled.error:
        lines.append(f"note: the dead-letter queue was not reconciled: {report.reconciled.error}")
    if report.reconciled is not None and report.reconciled.dead_lettered:
        lines.append(
            "marked dead_lettered now (SQS had dead-lettered their messages; `jobs retry` queues them "
            f"again): {', '.join(report.reconciled.dead_lettered)}"
        )
    if report.webhooks is not None and report.webhooks_dead_letter is not None:
        pending = report.webhooks.visible + report.webhooks.in_flight + report.webhooks.delayed
        lines.append(
            f"webhooks: {pending} to deliver or retry, {report.webhooks_dead_letter.visible} undelivered "
            "(dead-lettered)"
        )
    group = report.group
    if group is None:
        lines.append("workers: no group (the stack is not complete)")
    else:
        running = sum(1 for i in group.instances if i.lifecycle_state == "InService")
        lines.append(
            f"workers: {running} in service of {len(group.instances)} (desired {group.desired}, "
            f"max {group.max_size})"
        )
        for instance in group.instances:
            protected = ", protected (busy)" if instance.protected else ""
            lines.append(
                f"  {instance.instance_id} {instance.instance_type} {instance.zone} "
                f"{instance.lifecycle_state} {instance.health}{protected}"
            )
    for cost in report.costs:
        lines.append(
            f"  {cost.count} x {cost.market} {cost.instance_type} in {cost.zone} at "
            f"{_money(cost.price_usd_per_hour)} each"
        )
    lines.append(f"cost now: {_money(report.cost_usd_per_hour)} (the workers' prices now; instances only)")
    lines.append(f"bucket: s3://{report.outputs.bucket}/{INCOMING_PREFIX}")
    return lines


def destroyed_lines(result: PipelineDestroyed) -> list[str]:
    """``pipeline destroy``: the stack deleted, and what became of the bucket."""
    fate = {
        "kept": "kept (it holds the audio and transcripts; --delete-data deletes it; to delete it now: "
        f"aws s3 rb --force s3://{result.bucket})",
        "deleted": f"emptied ({result.objects_deleted} object(s)) and deleted",
        "yours-kept": "yours, kept; the pipeline's notification on it was removed",
    }[result.bucket_fate]
    return [
        f"pipeline {result.name} destroyed in {result.region}: stack {result.stack_name} deleted",
        f"bucket {result.bucket}: {fate}",
    ]
