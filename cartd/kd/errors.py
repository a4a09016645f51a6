"""The two exceptions of the KD core, named for whose fault they are.

A peer that sends bytes we cannot decode is a remote fault (`KdDecodeError`); the connection code
reports it and carries on. A caller that asks for something impossible is a local fault
(`KdUsageError`): a bug in cartd, never something a target can trigger.
"""

from __future__ import annotations


class KdDecodeError(ValueError):
    """The peer sent bytes we cannot decode (remote fault)."""


class KdUsageError(RuntimeError):
    """The caller misused the API (local fault)."""
