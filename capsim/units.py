"""One authority for units. capsim computes internally in SI floats: bytes, FLOP, seconds, bytes/s, FLOP/s.

Vendor figures are decimal (GB = 1e9 bytes, TFLOPS = 1e12 FLOP/s, GB/s = 1e9 B/s) and are converted here,
never with an inline ``2**40`` or ``1024**3`` (the mistakes STYLE.md documents in peer tools).
"""

from __future__ import annotations

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KIB = 2.0**10
MIB = 2.0**20
GIB = 2.0**30

GFLOPS = 1e9
TFLOPS = 1e12

US = 1e-6
MS = 1e-3

GB_PER_S = GB
"""Bytes per second in one vendor GB/s."""

HOURS = 3600.0
"""Seconds in one hour."""
HOURS_PER_DAY = 24.0
HOURS_PER_YEAR = 8760.0
"""Hours in a 365-day year (the year that cost lifetimes count; no leap days)."""
KWH = 3.6e6
"""Joules in one kilowatt-hour."""
