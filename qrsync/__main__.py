"""Allow ``python -m qrsync``."""

from __future__ import annotations

from qrsync.cli import main

main()
