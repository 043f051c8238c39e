"""Shared pytest fixtures. Each lives in ``tests/fixtures/`` so that benchmarks can import them too:
the loopback sshd (``sshd_server``, ``sshd_target``) and moto in server mode (``moto_server``, ``aws``)."""

pytest_plugins = ["tests.fixtures.sshd", "tests.fixtures.moto_aws"]
