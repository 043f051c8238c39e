"""Zones and prices: which zones offer a type, their live spot prices, the on-demand price, the ranking.

- Zones: ``DescribeInstanceTypeOfferings`` with location type ``availability-zone``; a zone that does not
  offer the type is never tried (EC2 would answer ``Unsupported``).
- Spot: ``DescribeSpotPriceHistory`` for Linux/UNIX with ``StartTime`` = now, which makes EC2 return the price
  in effect now for each zone; we still keep only the newest row per zone, as SkyPilot does
  (sky/clouds/service_catalog/aws_catalog.py), since a zone can list several.
- On-demand: the AWS Pricing API (``GetProducts``, us-east-1 endpoint) where reachable; otherwise the packaged
  table ``gpu_transcribe/data/on_demand_prices.json`` (its source and date travel with every price).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from gpu_transcribe.aws.clients import (
    AwsContext,
    aws_errors,
    ec2_client,
    error_code,
    is_aws_error,
    pricing_client,
)
from gpu_transcribe.aws.ec2.models import OnDemandPrice, ZonePrice
from gpu_transcribe.common import utc_now

LINUX_PRODUCTS: tuple[str, ...] = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
PRICING_API_SOURCE = "AWS Pricing API"
SPOT_SOURCE = "describe_spot_price_history"


def offered_zones(ctx: AwsContext, instance_type: str) -> tuple[str, ...]:
    """The region's zones that offer ``instance_type``, sorted by name.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    ec2 = ec2_client(ctx)
    zones: set[str] = set()
    with aws_errors(ctx, f"listing the zones that offer {instance_type}"):
        pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
            LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [instance_type]}]
        )
        for page in pages:
            for offering in page.get("InstanceTypeOfferings", []):
                if offering.get("InstanceType") == instance_type and offering.get("Location"):
                    zones.add(offering["Location"])
    return tuple(sorted(zones))


def spot_prices(
    ctx: AwsContext, instance_type: str, *, now: datetime | None = None
) -> dict[str, tuple[float, datetime]]:
    """The newest Linux/UNIX spot price per zone.

    Returns:
        ``zone -> (USD per hour, when it took effect (UTC))``; zones without a price are absent.

    Raises:
        CredentialsError, CloudError: the call failed.
    """
    ec2 = ec2_client(ctx)
    newest: dict[str, tuple[float, datetime]] = {}
    with aws_errors(ctx, f"reading spot prices of {instance_type}"):
        pages = ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=[instance_type],  # type: ignore[list-item]
            ProductDescriptions=list(LINUX_PRODUCTS),
            StartTime=now or utc_now(),
        )
        for page in pages:
            for row in page.get("SpotPriceHistory", []):
                zone = row.get("AvailabilityZone")
                if (
                    not zone
                    or row.get("InstanceType") != instance_type
                    or row.get("ProductDescription") not in LINUX_PRODUCTS
                ):
                    continue
                try:
                    price = float(row["SpotPrice"])
                except (KeyError, ValueError):
                    continue
                when = row.get("Timestamp") or datetime(1970, 1, 1, tzinfo=UTC)
                when = when if when.tzinfo else when.replace(tzinfo=UTC)
                if zone not in newest or when > newest[zone][1]:
                    newest[zone] = (price, when.astimezone(UTC))
    return newest


def rank_zones(
    ctx: AwsContext,
    instance_type: str,
    *,
    on_demand: OnDemandPrice | None = None,
    now: datetime | None = None,
) -> tuple[ZonePrice, ...]:
    """The zones offering ``instance_type``, cheapest spot price first.

    Zones with no spot price come last (by name); ties are broken by zone name, so the order is deterministic.

    Args:
        on_demand: the on-demand price to attach to each row (for the saving), or ``None``.
        now: the spot price history's start time (default: now).

    Raises:
        CredentialsError, CloudError: a call failed.
    """
    zones = offered_zones(ctx, instance_type)
    prices = spot_prices(ctx, instance_type, now=now) if zones else {}
    rows = [
        ZonePrice(
            zone=zone,
            instance_type=instance_type,
            spot_price_usd_per_hour=prices[zone][0] if zone in prices else None,
            spot_price_at=prices[zone][1] if zone in prices else None,
            on_demand=on_demand,
        )
        for zone in zones
    ]
    rows.sort(key=lambda r: (r.spot_price_usd_per_hour is None, r.spot_price_usd_per_hour or 0.0, r.zone))
    return tuple(rows)


def packaged_prices() -> dict[str, Any]:
    """The packaged on-demand price table (``gpu_transcribe/data/on_demand_prices.json``) as a dict."""
    text = (
        resources.files("gpu_transcribe").joinpath("data/on_demand_prices.json").read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def table_on_demand_price(region: str, instance_type: str) -> OnDemandPrice:
    """The on-demand price from the packaged table (``price_usd_per_hour`` ``None`` if it lacks the type)."""
    data = packaged_prices()
    price = data["prices_usd_per_hour"].get(region, {}).get(instance_type)
    source = f"table: {data['source']}, {data['date']}"
    return OnDemandPrice(instance_type, region, float(price) if price is not None else None, source)


def parse_pricing_products(price_list: list[str]) -> float | None:
    """The hourly USD on-demand price from a Pricing API ``GetProducts`` ``PriceList`` (JSON strings).

    Takes the first positive ``pricePerUnit.USD`` of an ``Hrs`` price dimension under ``terms.OnDemand``;
    ``None`` if there is none.
    """
    for item in price_list:
        try:
            product = json.loads(item)
        except (TypeError, ValueError):
            continue
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                if dimension.get("unit") not in ("Hrs", "Hours"):
                    continue
                try:
                    price = float(dimension.get("pricePerUnit", {}).get("USD", "nan"))
                except ValueError:
                    continue
                if price > 0:
                    return price
    return None


def on_demand_price(ctx: AwsContext, instance_type: str, *, use_pricing_api: bool = True) -> OnDemandPrice:
    """The Linux on-demand price of ``instance_type`` in ``ctx.region``.

    Asks the Pricing API first (Linux, shared tenancy, no pre-installed software, capacity status ``Used``);
    any failure there (unreachable, not permitted, no product) falls back to the packaged table. Never raises
    for a missing price: ``price_usd_per_hour`` is then ``None``.
    """
    if use_pricing_api:
        filters = {
            "instanceType": instance_type,
            "regionCode": ctx.region,
            "operatingSystem": "Linux",
            "tenancy": "Shared",
            "preInstalledSw": "NA",
            "capacitystatus": "Used",
            "licenseModel": "No License required",
        }
        try:
            reply = pricing_client(ctx).get_products(
                ServiceCode="AmazonEC2",
                Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
                FormatVersion="aws_v1",
                MaxResults=10,
            )
            price = parse_pricing_products(list(reply.get("PriceList", [])))
            if price is not None:
                return OnDemandPrice(instance_type, ctx.region, price, PRICING_API_SOURCE)
        except Exception as exc:
            if not (is_aws_error(exc) or error_code(exc)):
                raise
    return table_on_demand_price(ctx.region, instance_type)


def zone_prices(
    ctx: AwsContext, instance_type: str, *, use_pricing_api: bool = True, now: datetime | None = None
) -> tuple[ZonePrice, ...]:
    """:func:`rank_zones` with the on-demand price attached to every row (for ``gpu-transcribe zones``)."""
    od = on_demand_price(ctx, instance_type, use_pricing_api=use_pricing_api)
    return tuple(replace(row, on_demand=od) for row in rank_zones(ctx, instance_type, now=now))
