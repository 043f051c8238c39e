"""Shared pytest fixtures. The loopback sshd lives in ``tests/fixtures/sshd.py`` (``sshd_server``,
``sshd_target``) so that benchmarks can import its :class:`SshdServer` too."""

pytest_plugins = ["tests.fixtures.sshd"]
