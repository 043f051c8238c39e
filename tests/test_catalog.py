"""The orchestration behind ``zones``, ``images`` and ``images prune`` against moto: typed results, the
error for a type offered nowhere, and a snapshot that cannot be deleted reported while the prune goes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gpu_transcribe import __version__
from gpu_transcribe.account.catalog import list_images, prune_images, zone_prices
from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.images import list_images as aws_list_images
from gpu_transcribe.settings import Settings, load_settings
from tests.fixtures.images import add_image, existing_snapshots, snapshot_ids
from tests.fixtures.moto_aws import REGION, MotoAws

pytestmark = pytest.mark.timeout(120)

MODEL = "KBLab/kb-whisper-small"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def settings(**flags: object) -> Settings:
    return load_settings({"region": REGION, **flags}, env={}, config_files=())


def test_zone_prices_in_order_and_a_type_offered_nowhere(aws: MotoAws) -> None:
    aws.set_spot_prices({("g5.xlarge", "eu-north-1c"): 0.31, ("g5.xlarge", "eu-north-1b"): 0.29})
    report = zone_prices(settings(instance_types="g5.xlarge,g4dn.nothing"))
    assert report.region == REGION and report.instance_types == ("g5.xlarge", "g4dn.nothing")
    assert [(r.instance_type, r.zone) for r in report.rows] == [
        ("g5.xlarge", "eu-north-1b"),
        ("g5.xlarge", "eu-north-1c"),
    ]
    assert all(r.on_demand is not None for r in report.rows) and report.on_demand_sources
    assert report.missing == ("g4dn.nothing",)
    assert str(report.error) == f"no zone in {REGION} offers g4dn.nothing; check instance_types"
    assert zone_prices(settings(instance_types="g5.xlarge")).error is None


def test_list_images_newest_first_with_their_users(aws: MotoAws) -> None:
    old = add_image(aws, version=__version__, model=MODEL, created_at=T0)
    new = add_image(aws, version=__version__, model=MODEL, created_at=T0 + timedelta(days=1))
    listing = list_images(settings())
    assert [u.image.image_id for u in listing.images] == [new, old]
    assert all(u.used_by == () for u in listing.images)


def test_prune_reports_a_snapshot_it_could_not_delete_and_goes_on(aws: MotoAws) -> None:
    images = [
        add_image(aws, version=__version__, model=MODEL, created_at=T0 + timedelta(days=d)) for d in (0, 1)
    ]
    dry = prune_images(settings(), keep=0, dry_run=True)
    assert [o.decision.action for o in dry.outcomes] == ["remove", "remove"]
    assert all(o.removal is None for o in dry.outcomes) and dry.error is None
    assert len(aws_list_images(AwsContext(REGION))) == 2

    [gone], [stuck] = snapshot_ids(aws, images[0]), snapshot_ids(aws, images[1])
    aws.fail("DeleteSnapshot", "UnauthorizedOperation", message="not allowed", SnapshotId=stuck)
    report = prune_images(settings(), keep=0)
    assert aws_list_images(AwsContext(REGION)) == ()  # both deregistered
    assert report.failed == ((stuck, "UnauthorizedOperation: not allowed"),)
    assert (
        str(report.error)
        == f"1 snapshot(s) could not be deleted: {stuck}: UnauthorizedOperation: not allowed"
    )
    assert stuck in existing_snapshots(aws) and gone not in existing_snapshots(aws)
