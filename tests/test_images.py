"""Our images against moto: the image a run picks among several versions and models, ``gpu-transcribe images``
(with "in use" from a live instance), ``images prune`` (newest N per model kept, old images and their
snapshots deleted, dry run changing nothing), image deletion, and the base AMI from the SSM public
parameter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from gpu_transcribe import __version__
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.image_create import DLAMI_BASE_PARAMETER, resolve_base_image
from gpu_transcribe.aws.ec2.images import (
    delete_image,
    images_in_use,
    list_images,
    plan_prune,
    select_run_image,
)
from gpu_transcribe.aws.ec2.launch import launch
from gpu_transcribe.aws.ec2.models import LaunchSpec
from gpu_transcribe.cli.main import app
from gpu_transcribe.errors import ImageNotFoundError
from tests.fixtures.images import add_image, existing_snapshots, seed_ssm_parameter, snapshot_ids
from tests.fixtures.moto_aws import REGION, TEST_CIDR, MotoAws

pytestmark = pytest.mark.timeout(120)

SMALL = "KBLab/kb-whisper-small"
LARGE = "KBLab/kb-whisper-large"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of a Rich table keyed by their first cell."""
    rows = {}
    for line in output.splitlines():
        if line.count("│") >= 3:
            cells = [c.strip() for c in line.split("│")[1:-1]]
            if cells and cells[0].startswith("ami-"):
                rows[cells[0]] = cells
    return rows


def launch_from(aws: MotoAws, image_id: str) -> str:
    spec = LaunchSpec(image_id=image_id, instance_types=("g4dn.xlarge",), ssh_cidr=TEST_CIDR)
    return launch(AwsContext(REGION), spec, sleep=lambda s: None).instance_id


def test_run_picks_the_newest_available_image_of_this_version_and_model(aws: MotoAws) -> None:
    older_same = add_image(aws, version=__version__, model=SMALL, created_at=at(1))
    newest_same = add_image(aws, version=__version__, model=SMALL, created_at=at(3))
    add_image(aws, version="0.0.9", model=SMALL, created_at=at(5))  # newer, but another version
    add_image(aws, version="9.0.0", model=SMALL, created_at=at(6))  # a newer client's image
    add_image(aws, version=__version__, model=SMALL, created_at=at(7), state="pending")  # not ready
    large = add_image(aws, version=__version__, model=LARGE, created_at=at(8))  # another model
    pinned = add_image(aws, version=__version__, model=SMALL, created_at=at(2), revision="v1.0")

    images = list_images(AwsContext(REGION))
    assert [i.created_at for i in images] == sorted((i.created_at for i in images), reverse=True)
    assert aws.image_id not in {i.image_id for i in images}  # the untagged base image is not ours

    def pick(**kwargs: object) -> str:
        args: dict[str, object] = {"version": __version__, "model": SMALL, "revision": None, "region": REGION}
        args.update(kwargs)
        return select_run_image(images, **args).image_id  # type: ignore[arg-type]

    assert pick() == newest_same
    assert pick(revision="v1.0") == pinned  # older than the others, but the only one of that revision
    assert pick(revision="") == newest_same  # "" is the default branch, which the unpinned builds cached
    assert pick(model=LARGE) == large
    assert older_same not in (pick(), pick(revision=""))


def test_only_an_older_version_says_build_ami_or_update_engine(aws: MotoAws) -> None:
    old = add_image(aws, version="0.0.9", model=SMALL, created_at=at(1))
    images = list_images(AwsContext(REGION))
    with pytest.raises(ImageNotFoundError) as caught:
        select_run_image(images, version=__version__, model=SMALL, revision=None, region=REGION)
    message = str(caught.value)
    assert old in message and "0.0.9" in message
    assert "gpu-transcribe build-ami --model KBLab/kb-whisper-small" in message
    assert "--update-engine" in message
    chosen = select_run_image(
        images, version=__version__, model=SMALL, revision=None, region=REGION, allow_older_version=True
    )
    assert chosen.image_id == old


def test_no_image_of_the_model_names_what_exists(aws: MotoAws) -> None:
    add_image(aws, version=__version__, model=LARGE, created_at=at(1))
    images = list_images(AwsContext(REGION))
    with pytest.raises(ImageNotFoundError, match="images exist for: KBLab/kb-whisper-large"):
        select_run_image(images, version=__version__, model=SMALL, revision=None, region=REGION)


def test_images_lists_ours_with_size_and_in_use(aws: MotoAws, cli: CliRunner) -> None:
    used = add_image(aws, version=__version__, model=SMALL, created_at=at(2))
    idle = add_image(aws, version="0.0.9", model=SMALL, created_at=at(1), revision="v2")
    instance_id = launch_from(aws, used)
    assert images_in_use(AwsContext(REGION)) == {used: (instance_id,)}

    result = cli.invoke(app, ["images"])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert set(rows) == {used, idle}  # not the base image, which carries no gpu-transcribe tags
    # id, created, version, model, revision, size, state, in use
    assert rows[used] == [
        used,
        "2026-11-03 12:00",
        __version__,
        SMALL,
        "-",
        rows[used][5],
        "available",
        rows[used][7],
    ]
    assert rows[used][5].endswith("GiB") and int(rows[used][5].split()[0]) > 0
    assert rows[used][7] == f"yes: {instance_id}"
    assert rows[idle][2:5] == ["0.0.9", SMALL, "v2"] and rows[idle][7] == "no"
    assert result.stdout.index(used) < result.stdout.index(idle)  # newest first

    aws.ec2().terminate_instances(InstanceIds=[instance_id])
    result = cli.invoke(app, ["images"])
    assert table_rows(result.stdout)[used][7] == "no"


def test_images_with_none_says_how_to_build_one(aws: MotoAws, cli: CliRunner) -> None:
    result = cli.invoke(app, ["images"])
    assert result.exit_code == 0
    assert (
        "no gpu-transcribe images in eu-north-1; build one with `gpu-transcribe build-ami`" in result.stdout
    )


def test_prune_keeps_the_newest_per_model_and_deletes_old_images_and_snapshots(
    aws: MotoAws, cli: CliRunner
) -> None:
    small = [add_image(aws, version=__version__, model=SMALL, created_at=at(d)) for d in (1, 2, 3, 4)]
    large = add_image(aws, version=__version__, model=LARGE, created_at=at(0))  # oldest of all, only one
    in_use = small[0]
    instance_id = launch_from(aws, in_use)
    snapshots = {i: snapshot_ids(aws, i) for i in [*small, large]}
    assert all(len(s) == 1 for s in snapshots.values())
    before = existing_snapshots(aws)

    dry = cli.invoke(app, ["images", "prune", "--keep", "2", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    rows = table_rows(dry.stdout)
    assert rows[small[1]][4] == "would remove"
    assert rows[small[0]][4:6] == ["keep", f"in use by {instance_id}"]
    assert rows[small[3]][4] == rows[small[2]][4] == rows[large][4] == "keep"
    assert "dry run: nothing changed" in dry.stdout
    assert {i.image_id for i in list_images(AwsContext(REGION))} == {*small, large}
    assert existing_snapshots(aws) == before

    result = cli.invoke(app, ["images", "prune", "--keep", "2"])
    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout)[small[1]][4:] == [
        "remove",
        "older than the newest 2 of KBLab/kb-whisper-small",
        "deregistered, 1 snapshot(s) deleted",
    ]
    left = {i.image_id for i in list_images(AwsContext(REGION))}
    assert left == {small[3], small[2], small[0], large}
    after = existing_snapshots(aws)
    assert not set(snapshots[small[1]]) & after  # the pruned image's snapshot is gone
    for kept in left:
        assert set(snapshots[kept]) <= after  # the kept images' snapshots stay

    # Once the instance is gone, the image it used is pruned too; keeping 0 removes every available image.
    aws.ec2().terminate_instances(InstanceIds=[instance_id])
    result = cli.invoke(app, ["images", "prune", "--keep", "0"])
    assert result.exit_code == 0, result.output
    assert list_images(AwsContext(REGION)) == ()
    assert not {s for ids in snapshots.values() for s in ids} & existing_snapshots(aws)


def test_plan_prune_keeps_pending_and_removes_failed(aws: MotoAws) -> None:
    newest = add_image(aws, version=__version__, model=SMALL, created_at=at(3))
    pending = add_image(aws, version=__version__, model=SMALL, created_at=at(4), state="pending")
    failed = add_image(aws, version=__version__, model=SMALL, created_at=at(5), state="failed")
    old = add_image(aws, version=__version__, model=SMALL, created_at=at(1))
    decisions = {d.image.image_id: d for d in plan_prune(list_images(AwsContext(REGION)), 1, {})}
    assert decisions[newest].action == "keep"
    assert (decisions[pending].action, decisions[pending].reason) == ("keep", "still being created")
    assert (decisions[failed].action, decisions[failed].reason) == ("remove", "failed: unusable")
    assert decisions[old].action == "remove"
    with pytest.raises(ValueError):
        plan_prune((), -1, {})


def test_delete_image_is_idempotent(aws: MotoAws) -> None:
    image_id = add_image(aws, version=__version__, model=SMALL, created_at=at(1))
    [snapshot] = snapshot_ids(aws, image_id)
    first = delete_image(AwsContext(REGION), image_id)
    assert first.deregistered and first.deleted_snapshots == (snapshot,) and not first.failed
    second = delete_image(AwsContext(REGION), image_id, snapshot_ids=[snapshot])
    assert not second.deregistered and second.deleted_snapshots == () and not second.failed
    assert snapshot not in existing_snapshots(aws)


def test_base_image_comes_from_the_ssm_public_parameter(aws: MotoAws) -> None:
    with pytest.raises(ImageNotFoundError, match="--base-ami"):
        resolve_base_image(AwsContext(REGION))
    seed_ssm_parameter(DLAMI_BASE_PARAMETER, aws.image_id)
    assert resolve_base_image(AwsContext(REGION)) == aws.image_id
    seed_ssm_parameter(DLAMI_BASE_PARAMETER, "not-an-ami")  # a newer version of the parameter
    with pytest.raises(ImageNotFoundError, match="not an AMI id"):
        resolve_base_image(AwsContext(REGION))


def test_images_json_for_scripts(aws: MotoAws, cli: CliRunner) -> None:
    used = add_image(aws, version=__version__, model=SMALL, created_at=at(2))
    instance_id = launch_from(aws, used)
    result = cli.invoke(app, ["images", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["region"] == REGION
    [entry] = data["images"]
    assert entry["image"]["image_id"] == used and entry["image"]["model"] == SMALL
    assert entry["image"]["created_at"].startswith("2026-11-03T12:00")
    assert entry["used_by"] == [instance_id]
