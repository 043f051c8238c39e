"""``gpu-transcribe build-ami``: build the GPU image a run boots from. Orchestration: no printing.

Phases (each timed; :attr:`BuildResult.phases`), in :mod:`~gpu_transcribe.build_ami.run`:

1. ``wheel``: build the project's wheel locally (:func:`gpu_transcribe.build_ami.wheel.build_wheel`), or take
   ``--wheel FILE``;
2. ``launch``: a builder instance from the base image (by default the newest AWS Deep Learning Base OSS
   Nvidia Driver GPU AMI for Ubuntu 22.04, through its SSM public parameter), on-demand unless ``--spot``,
   with the same safety as a run: per-build client and host keys, strict host key checking, tags with role
   ``builder``, the dead-man switch, IMDSv2, an encrypted root volume;
3. ``ssh``: wait for the builder's sshd and log in; the heartbeat keeps the dead-man switch quiet;
4. ``push``: the wheel, ``ami/provision.py`` and ``requirements/cuda.lock`` into a private directory on the
   builder;
5. ``provision``: run ``provision.py`` (engine venv under the ``remote_prefix`` setting, installed from the
   lock with every hash checked and then the wheel without dependencies, the model cached,
   bytecode compiled, a float16 warm-up on the GPU, ``manifest.json``); its step and check lines are
   progress events. A non-zero exit, or a manifest not showing every check passing, raises
   :class:`~gpu_transcribe.errors.ProvisionError` and no image is made;
6. ``stop``: stop the builder for a consistent snapshot (a spot builder cannot be stopped: EC2 reboots it for
   the snapshot instead);
7. ``image``: ``CreateImage`` with our tags, its snapshots tagged, wait until ``available``;
8. ``teardown``: terminate the builder, delete its key pair and security group.

The builder is an :class:`~gpu_transcribe.instance.session.InstanceSession`: every exit path runs the
teardown exactly once (normal end, any error, SIGINT, SIGTERM, SIGHUP). If the build did not complete, the
teardown also stops a provisioning still running on the builder and deregisters an image already started,
deleting its snapshots: a failed build leaves no image and no instance. A client killed with SIGKILL leaves
the builder to the dead-man switch (while it runs) and to ``gpu-transcribe cleanup`` (which finds role
``builder`` like any run).
"""

from gpu_transcribe.build_ami.image import image_builder
from gpu_transcribe.build_ami.plan import (
    CUDA_LOCK,
    PROVISION_SCRIPT,
    BuildPlan,
    BuildRequest,
    BuildResult,
    builder_spec,
    plan_build,
)
from gpu_transcribe.build_ami.provision import check_manifest
from gpu_transcribe.build_ami.run import run_build

__all__ = [
    "CUDA_LOCK",
    "PROVISION_SCRIPT",
    "BuildPlan",
    "BuildRequest",
    "BuildResult",
    "builder_spec",
    "check_manifest",
    "image_builder",
    "plan_build",
    "run_build",
]
