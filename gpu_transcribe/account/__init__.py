"""What gpu-transcribe keeps in an AWS account and region, and how it is tidied: ``zones``, ``images``,
``cleanup``. Orchestration only: no printing.

Modules:

- :mod:`.catalog`: zones and prices per instance type, our images, pruning (``zones``, ``images``);
- :mod:`.cleanup`: finding by tag what runs left behind and removing it (``cleanup``).
"""
