"""Shared pytest fixtures. Each lives in ``tests/fixtures/`` so that benchmarks can import them too:
the loopback sshd (``sshd_server``, ``sshd_target``) and moto in server mode (``moto_server``, ``aws``) and a
loopback Amazon Bedrock (``loopback_bedrock``), and ``cli``, a runner isolated from the user's settings."""

pytest_plugins = [
    "tests.fixtures.sshd",
    "tests.fixtures.moto_aws",
    "tests.fixtures.bedrock",
    "tests.fixtures.cli",
]
