"""The EC2 lifecycle of a run, a ``build-ami`` builder and a warm server: where to launch, the launch with its
fallbacks, the instance while it runs, and the teardown; our images; the user data.

Modules:

- :mod:`.models`: frozen data classes: prices, quotas, :class:`~.models.LaunchSpec`, the launch's result,
  instances, resources found by tag and what their removal did;
- :mod:`.prices`: zones offering a type, live spot prices, on-demand prices, zone ranking;
- :mod:`.preflight`: credentials (STS) and Service Quotas checks;
- :mod:`.launch_plan`: what a launch will try, decided before anything is created (``--dry-run``);
- :mod:`.launch`: key pair, security group, user data and the spot -> next zone -> on-demand fallback;
- :mod:`.instances`: describe, wait for ``running`` and the SSH port, spot interruption, stop, the address
  seam;
- :mod:`.resources`: our resources by tag, teardown and removal (used by ``cleanup``);
- :mod:`.images`: our AMIs: list, choose for a run, delete, prune;
- :mod:`.image_create`: making an AMI from a builder (``build-ami``);
- :mod:`.userdata`: cloud-init user data, the heartbeat path (no boto3);
- :mod:`.checkip`: this machine's public IP for the SSH rule (no boto3).
"""
