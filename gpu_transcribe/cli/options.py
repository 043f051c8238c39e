"""The options shared by several commands, and ``serve``'s, each declared once as a ``typing.Annotated``
alias.

The command modules import this module as ``opt`` and type their parameters with these (``region: opt.Region =
None``), so an option shared by several commands (``--region``, ``--aws-profile``, ``--dry-run``,
``--instance-type``, ``--json``...) has one spelling and one help text; so do the transcription options that
``run`` and ``submit`` share (``--word-timestamps``, ``--prompt``, the subtitle limits), whose ranges are
those of :meth:`gpu_transcribe_engine.options.TranscribeOptions.validated`. An option of one command family
is declared in that family's module (``run``'s own in :mod:`gpu_transcribe.cli.run`). Importing this module
imports typer and nothing heavy.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gpu_transcribe_engine.options import DEFAULT_LANGUAGE

# --- options used by several commands --------------------------------------------------------------------

Region = Annotated[
    str | None, typer.Option("--region", metavar="REGION", help="AWS region (setting: region).")
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--aws-profile",
        metavar="PROFILE",
        help="Named AWS profile from ~/.aws/config (setting: aws_profile).",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Only show what would be done (the plan, prices and tags, or what would be removed); "
        "launch, create and remove nothing.",
    ),
]
InstanceType = Annotated[
    list[str] | None,
    typer.Option(
        "--instance-type",
        "-t",
        metavar="TYPE",
        help="Instance type, repeatable, in order of preference; default: the instance_types setting.",
    ),
]
Revision = Annotated[
    str | None,
    typer.Option("--revision", metavar="REV", help="Model revision (branch, tag or commit)."),
]

Json = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts) instead of a table.")
]
Language = Annotated[
    str | None,
    typer.Option(
        "--language",
        "-l",
        metavar="CODE",
        help=f"Language code (sv, en...) or 'auto' to detect. Default: setting language, {DEFAULT_LANGUAGE}.",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
PipelineOption = Annotated[
    str | None,
    typer.Option(
        "--pipeline",
        metavar="NAME",
        help="The pipeline's name (default: 'default'). Found from $GPU_TRANSCRIBE_PIPELINE_CONFIG or "
        "/etc/gpu-transcribe/pipeline.json (on a worker) if present, else from its stack's outputs.",
    ),
]

# --- the transcription options of run and submit ----------------------------------------------------

WordTimestamps = Annotated[
    bool,
    typer.Option("--word-timestamps", help="Time every word: the JSON gains words per segment (batched)."),
]
Prompt = Annotated[
    str | None,
    typer.Option(
        "--prompt", metavar="TEXT", help="Text that conditions the decoding: names, jargon, spelling, style."
    ),
]
MaxLineWidth = Annotated[
    int | None,
    typer.Option(
        "--max-line-width",
        min=1,
        max=1000,
        help="Subtitle characters per line (srt/vtt; default 42 when "
        "any subtitle limit is set). Unset: one cue per segment.",
    ),
]
MaxLineCount = Annotated[
    int | None,
    typer.Option("--max-line-count", min=1, max=20, help="Subtitle lines per cue (default 2 with a limit)."),
]
MaxCueDuration = Annotated[
    float | None,
    typer.Option(
        "--max-cue-duration", min=0.5, max=600, help="Subtitle seconds per cue (default 7 with a limit)."
    ),
]
