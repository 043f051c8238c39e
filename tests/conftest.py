"""pytest fixtures shared by the whole suite; each lives in ``tests/fixtures/`` and is re-exported here."""

from tests.fixtures.moto_aws import aws, moto_server

__all__ = ["aws", "moto_server"]
