"""Vendor models from ``tests/fakes`` served over real HTTP on 127.0.0.1 (see :mod:`.server`)."""

from tests.emulators.server import Emulator, Limit

__all__ = ["Emulator", "Limit"]
