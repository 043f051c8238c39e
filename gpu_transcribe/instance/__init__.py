"""One GPU instance from launch to teardown, shared by ``run``, ``build-ami`` and ``server up``: launch, SSH,
heartbeat, loss detection, and a teardown that runs exactly once.

Modules:

- :mod:`.session`: :class:`~.session.InstanceSession`: launch, wait for SSH, connect, keep it alive and
  watched, tear down exactly once;
- :mod:`.spec`: the launch spec a command's settings ask for;
- :mod:`.lifecycle`: a teardown run exactly once, whatever ends the work (an exception, SIGINT, SIGTERM,
  SIGHUP);
- :mod:`.spot_watch`: noticing the loss of an instance: EC2's state and the spot interruption notice.
"""
