"""The revision of the newest migration, in a module of its own.

:meth:`qrsync.app.App.ready_engine` checks it before every sync; importing it from
:mod:`qrsync.store.schema` would build every SQLAlchemy ``Table`` at start-up for one string.
"""

from __future__ import annotations

HEAD_REVISION = "0015"
"""The newest migration, known without importing Alembic (a test keeps it equal to the real
head), so that a sync's readiness check costs no start-up time. Bump it with every migration."""
