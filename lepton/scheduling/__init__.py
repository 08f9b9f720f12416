"""Scheduling: the pure core shared by the scheduler service, ``lepton plan`` and
``lepton simulate``. Nothing in this package does I/O."""
