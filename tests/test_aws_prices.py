"""Zones and prices against moto: ranking by injected spot prices, the newest row per zone, zones that do not
offer the type skipped, on-demand prices from the Pricing API or the packaged table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gpu_transcribe.aws.clients import AwsContext
from gpu_transcribe.aws.ec2.prices import (
    PRICING_API_SOURCE,
    on_demand_price,
    packaged_prices,
    rank_zones,
    spot_prices,
    zone_prices,
)
from tests.fixtures.moto_aws import REGION, MotoAws

# A hung AWS call must fail with a traceback, not stall the suite (the default timeout is 900 s).
pytestmark = pytest.mark.timeout(120)


def ctx() -> AwsContext:
    return AwsContext(REGION)


def test_zones_are_ranked_cheapest_spot_first(aws: MotoAws) -> None:
    aws.set_spot_prices(
        {
            ("g4dn.xlarge", "eu-north-1a"): 0.19,
            ("g4dn.xlarge", "eu-north-1b"): 0.25,
            ("g4dn.xlarge", "eu-north-1c"): 0.17,
        }
    )
    ranked = rank_zones(ctx(), "g4dn.xlarge")
    assert [(z.zone, z.spot_price_usd_per_hour) for z in ranked] == [
        ("eu-north-1c", 0.17),
        ("eu-north-1a", 0.19),
        ("eu-north-1b", 0.25),
    ]
    assert all(z.instance_type == "g4dn.xlarge" for z in ranked)


def test_the_newest_row_of_each_zone_counts(aws: MotoAws) -> None:
    now = datetime.now(UTC)
    aws.set_spot_prices({})
    aws.add_spot_row("g4dn.xlarge", "eu-north-1a", 0.10, now - timedelta(hours=3))  # old and cheap: ignored
    aws.add_spot_row("g4dn.xlarge", "eu-north-1a", 0.30, now - timedelta(minutes=2))
    aws.add_spot_row("g4dn.xlarge", "eu-north-1b", 0.22, now - timedelta(minutes=9))
    aws.add_spot_row("g4dn.xlarge", "eu-north-1b", 0.40, now - timedelta(hours=1))
    prices = spot_prices(ctx(), "g4dn.xlarge")
    assert {zone: price for zone, (price, _) in prices.items()} == {"eu-north-1a": 0.30, "eu-north-1b": 0.22}
    ranked = rank_zones(ctx(), "g4dn.xlarge")
    # eu-north-1c offers the type but has no price: it comes last, not first.
    assert [(z.zone, z.spot_price_usd_per_hour) for z in ranked] == [
        ("eu-north-1b", 0.22),
        ("eu-north-1a", 0.30),
        ("eu-north-1c", None),
    ]


def test_zones_that_do_not_offer_the_type_are_skipped(aws: MotoAws) -> None:
    # moto offers g5.xlarge only in eu-north-1b and 1c (its instance type offerings for eu-north-1,
    # moto/ec2/resources/instance_type_offerings/availability-zone/eu-north-1.json.gz); a price row for 1a
    # (cheapest) must not make 1a a candidate.
    aws.set_spot_prices(
        {
            ("g5.xlarge", "eu-north-1a"): 0.05,
            ("g5.xlarge", "eu-north-1b"): 0.40,
            ("g5.xlarge", "eu-north-1c"): 0.35,
        }
    )
    assert [z.zone for z in rank_zones(ctx(), "g5.xlarge")] == ["eu-north-1c", "eu-north-1b"]


def test_a_type_offered_nowhere_has_no_zones(aws: MotoAws) -> None:
    assert rank_zones(ctx(), "g4dn.nonexistent") == ()


def test_on_demand_price_from_the_pricing_api(aws: MotoAws) -> None:
    product = {
        "product": {"attributes": {"instanceType": "g4dn.xlarge", "regionCode": REGION}},
        "terms": {
            "OnDemand": {
                "SKU.JRTCKXETXF": {
                    "priceDimensions": {
                        "SKU.JRTCKXETXF.6YS6EN2CT7": {"unit": "Hrs", "pricePerUnit": {"USD": "0.5790000000"}}
                    }
                }
            }
        },
    }
    aws.respond("GetProducts", json.dumps({"FormatVersion": "aws_v1", "PriceList": [json.dumps(product)]}))
    price = on_demand_price(ctx(), "g4dn.xlarge")
    assert (price.price_usd_per_hour, price.source) == (0.579, PRICING_API_SOURCE)
    request = aws.calls("GetProducts")[-1]
    assert request["ServiceCode"] == "AmazonEC2"
    filters = {f["Field"]: f["Value"] for f in json.loads(request["Filters"])}
    assert filters["instanceType"] == "g4dn.xlarge"
    assert filters["regionCode"] == REGION
    assert filters["operatingSystem"] == "Linux"


def test_on_demand_price_falls_back_to_the_packaged_table(aws: MotoAws) -> None:
    # The fixture answers GetProducts as AWS does for a caller without pricing:GetProducts.
    price = on_demand_price(ctx(), "g4dn.xlarge")
    table = packaged_prices()
    assert price.price_usd_per_hour == table["prices_usd_per_hour"][REGION]["g4dn.xlarge"] == 0.558
    assert table["source"] in price.source
    assert table["date"] in price.source
    unknown = on_demand_price(ctx(), "g4dn.16xlarge")
    assert unknown.price_usd_per_hour is None


def test_zone_prices_attach_on_demand_and_saving(aws: MotoAws) -> None:
    rows = zone_prices(ctx(), "g4dn.xlarge")
    assert [r.zone for r in rows] == ["eu-north-1b", "eu-north-1c", "eu-north-1a"]
    first = rows[0]
    assert first.on_demand is not None and first.on_demand.price_usd_per_hour == 0.558
    assert first.saving_fraction is not None
    assert abs(first.saving_fraction - (1 - 0.1881 / 0.558)) < 1e-9
