"""What every command needs, built once: the configuration and a checked database engine.

The CLI (and the daemon) call these; they raise :class:`qrsync.errors.QrsyncError` subclasses
whose messages are ready for people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import psycopg

from qrsync.config import AccountConfig, Config, load_config, resolve_path
from qrsync.errors import ConfigError, DatabaseError
from qrsync.masking import mask
from qrsync.store.accounts import (
    MirrorResult,
    account_ids,
    discovered_accounts,
    imported_accounts,
    mirror_accounts,
)
from qrsync.store.embedded import EmbeddedPostgres, data_home
from qrsync.store.engine import Engine, connection_budget, first_line, make_engine, scalar
from qrsync.store.notifications import mirror_channels
from qrsync.store.queries import query
from qrsync.store.revision import HEAD_REVISION


def _quiet(_message: str) -> None:
    """Notices go nowhere unless the caller gives a place for them."""


@dataclass
class App:
    config: Config
    notify: Callable[[str], None] = _quiet
    """Where one-line notices go (the CLI: stderr), e.g. that the embedded database is used."""
    keep_embedded_running: bool = False
    _engine: Engine | None = field(default=None, repr=False)
    _embedded: EmbeddedPostgres | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        config_path: str | None,
        *,
        check_secrets: bool = True,
        notify: Callable[[str], None] = _quiet,
        keep_embedded_running: bool = False,
        engine: Engine | None = None,
    ) -> App:
        """``engine``: reuse a running process's engine (a daemon reloading its file)."""
        path, named = resolve_path(config_path)
        config = load_config(path, check_secrets=check_secrets, missing_ok=not named)
        return cls(
            config, notify=notify, keep_embedded_running=keep_embedded_running, _engine=engine
        )

    @property
    def uses_embedded(self) -> bool:
        """Only when asked for (``[database] embedded = true``): a configuration that lost its
        database must fail, not sync into a database nobody looks at."""
        return self.config.database.embedded and not self.config.database.url

    def embedded(self) -> EmbeddedPostgres:
        if self._embedded is None:
            self._embedded = EmbeddedPostgres(
                data_home(), keep_running=self.keep_embedded_running, notify=self.notify
            )
        return self._embedded

    @property
    def database_url(self) -> str:
        """database.url / QRSYNC_DATABASE_URL, else the embedded PostgreSQL (started now) if
        the configuration asks for it; qrsync's own connections."""
        url = self.config.database.url
        if url:
            return url
        if not self.uses_embedded:
            raise ConfigError(
                "no database configured: set database.url or QRSYNC_DATABASE_URL, or "
                f"`embedded = true` under [database] for the embedded PostgreSQL in "
                f"{data_home()}",
                file=self.config.path,
            )
        return self.embedded().qrsync_url()

    @property
    def psql_url(self) -> str:
        """The URL of :attr:`database_url` as psql would use it (without qrsync's marks)."""
        return self.database_url if not self.uses_embedded else self.embedded().url()

    def engine(self) -> Engine:
        """The engine, after checking that the database answers."""
        if self._engine is None:
            engine = make_engine(
                self.database_url,
                self.config.database.schema,
                pool_size=connection_budget(self.config.sync.concurrency),
            )
            try:
                with engine.transaction() as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error as exc:
                engine.dispose()
                raise DatabaseError(
                    f"cannot connect to {mask(self.database_url)}: {first_line(exc)}"
                ) from None
            self._engine = engine
        return self._engine

    def ready_engine(self) -> Engine:
        """The engine, after checking that the schema is migrated to this version of qrsync."""
        engine = self.engine()
        schema = self.config.database.schema
        try:
            with engine.transaction() as conn:
                revision = scalar(conn, query("schema_revision"))
        except (psycopg.ProgrammingError, psycopg.OperationalError):
            revision = None
        if revision is None:
            raise DatabaseError(
                f"the database schema '{schema}' is not set up: run `qrsync db upgrade`"
            )
        head = HEAD_REVISION
        if revision != head:
            raise DatabaseError(
                f"the database schema '{schema}' is at revision {revision}, this qrsync needs "
                f"{head}: run `qrsync db upgrade`"
            )
        return engine

    def mirror_accounts(self) -> MirrorResult:
        """Mirror the file's accounts and notification channels into the database; without a
        file, write nothing (a missing ./qrsync.toml must not disable every account)."""
        try:
            if not self.config.from_file:
                return MirrorResult(ids=account_ids(self.ready_engine()), disabled=())
            result = mirror_accounts(self.ready_engine(), self.config.accounts)
            mirror_channels(self.ready_engine(), self.config.notify)
            return result
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot record the accounts: {first_line(exc)}") from None

    def accounts(self) -> tuple[AccountConfig, ...]:
        """The configuration file's accounts, then the imported ones (qrsync accounts import),
        then the discovered ones (qrsync accounts discover)."""
        in_file = {a.name for a in self.config.accounts}
        engine = self.ready_engine()
        imported = [a for a in imported_accounts(engine) if a.name not in in_file]
        component = self.config.component
        discovered = [
            a if component is None else replace(a, token=component.authorizer_token(a.appid))
            for a in discovered_accounts(engine)
            if a.name not in in_file
        ]
        return self.config.accounts + tuple(imported) + tuple(discovered)

    def account(self, name: str, accounts: Sequence[AccountConfig]) -> AccountConfig:
        for account in accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in accounts[:20]) or "none"
        raise ConfigError(
            f"no account named '{name}' (known: {known}{', ...' if len(accounts) > 20 else ''})",
            file=self.config.path,
            key="accounts",
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
