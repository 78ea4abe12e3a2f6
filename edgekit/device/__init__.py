"""Measuring on the device itself: ``--device ssh://user@host[:port]``, ``adb:SERIAL`` or ``local``.

A transport (``transport.Transport``: push, run, pull, cleanup) reaches the device; ``session.Device``
pushes the single-file runner (``edgekit/runtimes/device_runner.py``) into a temporary folder there, checks the
runtimes, and benches and validates files through it (``remote``).
"""
from __future__ import annotations

from .remote import bench_on_device
from .session import Device, open_device, parse_device

__all__ = ["Device", "bench_on_device", "open_device", "parse_device"]
