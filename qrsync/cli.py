"""The command line: each command parses, calls one function, renders, and exits.

Exit codes (SPEC "Command line"): 0 every account synced; 1 at least one account failed (the
others still synced); 2 the command could not run (bad configuration, no database, bad
arguments), with one line naming the file, key or account at fault, and nothing written.

Start-up time: `qrsync sync` runs from cron and systemd timers, so at the top of this module
come only the imports that `sync` (and `--help`) use; the other commands import the rest of
qrsync (reports, rendering, imports, grants, key rotation, the daemon...) inside their function.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from qrsync import __version__
from qrsync.app import App
from qrsync.config import load_config, resolve_path
from qrsync.errors import QrsyncError, UsageError
from qrsync.logs import setup_logging
from qrsync.masking import mask, one_line
from qrsync.render.jsonout import to_json
from qrsync.sync import RunResult, Syncer, SyncRequest

if TYPE_CHECKING:
    from qrsync.report import Report
    from qrsync.store.engine import Engine


def _fail(exc: QrsyncError) -> NoReturn:
    click.echo(f"qrsync: {one_line(mask(str(exc)))}", err=True)
    sys.exit(exc.exit_code)


def _notice(message: str) -> None:
    click.echo(f"qrsync: {message}", err=True)


def _setup_logging(verbose: int) -> None:
    setup_logging(verbose, "text")
    # Commands print each run's outcome themselves; its log line would say it twice.
    if verbose == 0:
        logging.getLogger("qrsync.sync").setLevel(logging.ERROR)


def _echo_json(document: Any) -> None:
    click.echo(to_json(document))


def _complete_account(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of --account: the configuration file's account names (the file only,
    no database: completion must answer at once, and never print an error)."""
    try:
        config = load_config(
            resolve_path(ctx.find_root().params.get("config_path"))[0],
            check_secrets=False,
            missing_ok=True,
        )
    except Exception:  # a broken file completes nothing
        return []
    return [a.name for a in config.accounts if a.name.startswith(incomplete)]


class Context:
    """The global options, and the App built from them on first use."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._app: App | None = None

    def app(self, *, calls_wechat: bool = False, keep_embedded_running: bool = False) -> App:
        """The App; secrets are checked only for commands that call WeChat."""
        if self._app is None:
            self._app = App.load(
                self.config_path,
                check_secrets=calls_wechat,
                notify=_notice,
                keep_embedded_running=keep_embedded_running,
            )
        return self._app

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn qrsync's own errors into one line on stderr and the right exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except QrsyncError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            click.echo("qrsync: interrupted", err=True)
            sys.exit(130)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Configuration file (default: $QRSYNC_CONFIG, else ./qrsync.toml).",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.version_option(
    __version__, "--version", "-V", prog_name="qrsync", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Mirror WeChat QR-code jump rules (二维码跳转规则) into PostgreSQL, with their history."""
    _setup_logging(verbose)
    context = Context(config_path)
    ctx.obj = context
    ctx.call_on_close(context.close)


# --- init ----------------------------------------------------------------------------------------


@cli.command("init")
@click.option(
    "--miniprogram",
    "case",
    flag_value="miniprogram",
    default=True,
    help="A mini program's ordinary QR-code rules (the default).",
)
@click.option(
    "--service-account",
    "case",
    flag_value="service_account",
    help="A service account's rules for a linked mini program.",
)
@click.option(
    "--platform",
    "case",
    flag_value="platform",
    help="A third-party platform (服务商) acting for authorizers.",
)
@click.option("--name", metavar="NAME", help="The account's handle (default: my-...).")
@click.option(
    "--appid", metavar="APPID", help="The account's AppID (with --platform: the platform's)."
)
@click.option(
    "--miniprogram-appid",
    metavar="APPID",
    help="The linked mini program (--service-account) or the authorizer (--platform).",
)
@click.option("--database-url", metavar="URL", help="Your PostgreSQL.")
@click.option("--embedded", is_flag=True, help="Use the embedded PostgreSQL instead.")
@click.option(
    "--api-base-url",
    metavar="URL",
    help="Another WeChat API, e.g. `qrsync simulator`'s http://127.0.0.1:8088.",
)
@click.pass_obj
@_guarded
def init(
    obj: Context,
    case: str,
    name: str | None,
    appid: str | None,
    miniprogram_appid: str | None,
    database_url: str | None,
    embedded: bool,
    api_base_url: str | None,
) -> None:
    """Write a commented qrsync.toml for your case (at --config PATH, default ./qrsync.toml);
    never a secret in it, never over an existing file. Prints the variables to set and what to
    run next."""
    from qrsync.init import InitOptions, exports, write

    if embedded and database_url:
        raise UsageError("--embedded and --database-url both name a database: keep one")
    path, _ = resolve_path(obj.config_path)
    options = InitOptions(
        case=case,  # type: ignore[arg-type]
        name=name,
        appid=appid,
        miniprogram_appid=miniprogram_appid,
        database_url=database_url,
        embedded=embedded,
        api_base_url=api_base_url,
    )
    written = write(path, options)
    click.echo(f"wrote {written.path}")
    click.echo("Set these where qrsync runs (never in the file):")
    for line in exports(written.variables):
        click.echo(f"  {line}")
    if case == "platform":
        click.echo("  and have your callback write the verify ticket to the file it names")
    where = "" if obj.config_path is None else f" --config {obj.config_path}"
    click.echo("Then:")
    click.echo(f"  qrsync{where} check          # the file, the database, each account's token")
    click.echo(f"  qrsync{where} db upgrade     # create the schema")
    click.echo(f"  qrsync{where} sync           # the first sync")


@cli.command("check")
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="NAME",
    help="Only this account (repeatable).",
    shell_complete=_complete_account,
)
@click.option("--call", is_flag=True, help="Also call qrcodejumpget once per account.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@_guarded
def check(obj: Context, accounts: tuple[str, ...], call: bool, as_json: bool) -> None:
    """Check the configuration, the database and every account's token source without
    syncing; one line each, failing accounts first; exit 0 only when everything holds (for an
    init container or a CI step)."""
    from qrsync.check import run_checks

    app = obj.app()
    findings = run_checks(app, accounts, call=call)
    failed = [f for f in findings if not f.ok]
    if as_json:
        _echo_json(
            {
                "ok": not failed,
                "checks": [
                    {"subject": f.subject, "account": f.account, "ok": f.ok, "detail": f.detail}
                    for f in findings
                ],
            }
        )
    else:
        width = max(len(f.subject) for f in findings)
        for f in findings:
            click.echo(f"{'ok  ' if f.ok else 'FAIL'}  {f.subject:<{width}}  {f.detail}")
        accounts_checked = sum(1 for f in findings if f.account)
        if failed:
            _notice(f"{len(failed)} of {len(findings)} checks failed")
        else:
            _notice(f"all good: the configuration, the database and {accounts_checked} account(s)")
    sys.exit(1 if failed else 0)


# --- db ------------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Create and migrate qrsync's tables (Alembic)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
@_guarded
def db_upgrade(obj: Context, revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    from qrsync.store import migrate  # Alembic only where it is needed

    migrate.check_revision(revision)
    app = obj.app()
    engine = app.engine()
    migrate.check_upgrade(engine, app.config.database.schema, revision)
    before = migrate.current(engine, app.config.database.schema)
    migrate.upgrade(engine, app.config.database.schema, revision)
    after = migrate.current(engine, app.config.database.schema)
    schema = app.config.database.schema
    if before == after:
        click.echo(f"schema '{schema}' already at revision {after}")
    else:
        click.echo(f"schema '{schema}' upgraded from {before or 'empty'} to {after}")


@db.command("current")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@_guarded
def db_current(obj: Context, as_json: bool) -> None:
    """Show the revision the database is at, and the newest one."""
    from qrsync.store import migrate  # Alembic only where it is needed

    app = obj.app()
    schema = app.config.database.schema
    current = migrate.current(app.engine(), schema)
    head = migrate.head_revision()
    if as_json:
        _echo_json(
            {"schema": schema, "current": current, "head": head, "up_to_date": current == head}
        )
        return
    state = "up to date" if current == head else "run `qrsync db upgrade`"
    click.echo(f"{current or 'empty'} (newest: {head}; {state})")


@db.command("downgrade")
@click.argument("revision")
@click.pass_obj
@_guarded
def db_downgrade(obj: Context, revision: str) -> None:
    """Migrate the database down to REVISION ("base" removes every qrsync table)."""
    from qrsync.store import migrate  # Alembic only where it is needed

    migrate.check_revision(revision, allow_base=True)
    app = obj.app()
    migrate.check_downgrade(app.engine(), app.config.database.schema, revision)
    migrate.downgrade(app.engine(), app.config.database.schema, revision)
    current = migrate.current(app.engine(), app.config.database.schema)
    click.echo(f"schema '{app.config.database.schema}' now at {current or 'base (empty)'}")


@db.command("url")
@click.pass_obj
@_guarded
def db_url(obj: Context) -> None:
    """Print the database URL in use (password masked), e.g. for psql.

    With the embedded PostgreSQL, the server is started if need be and left running for psql
    until `qrsync db stop`.
    """
    app = obj.app(keep_embedded_running=True)
    url = mask(app.psql_url)
    click.echo(url.replace("postgresql+psycopg://", "postgresql://", 1))
    if app.uses_embedded:
        _notice("the embedded PostgreSQL stays up for psql; `qrsync db stop` stops it")


@db.command("grant-readonly")
@click.argument("role")
@click.pass_obj
@_guarded
def db_grant_readonly(obj: Context, role: str) -> None:
    """Let an existing ROLE (e.g. Metabase's) read the views and rule tables, not the tokens."""
    from qrsync.store.grants import grant_readonly

    app = obj.app()
    granted = grant_readonly(app.ready_engine(), app.config.database.schema, role)
    click.echo(
        f"role '{role}' may now read {len(granted)} tables and views of schema "
        f"'{app.config.database.schema}' ({', '.join(granted)}); the token tables stay closed. "
        "Run this again after `qrsync db upgrade`."
    )


@db.command("new-token-key")
def db_new_token_key() -> None:
    """Print a fresh key for [security] token_key_env / token_key_file (docs/security.md)."""
    from qrsync.store.encryption import new_key

    click.echo(new_key())


@db.command("rotate-token-key")
@click.pass_obj
@_guarded
def db_rotate_token_key(obj: Context) -> None:
    """Encrypt every stored token with the first key of [security] token_key (after putting a
    new key first); stored tokens in clear are encrypted too."""
    from qrsync.store.encryption import sealer_for
    from qrsync.store.tokens import reseal_tokens

    app = obj.app()
    sealer = sealer_for(app.config)
    if not sealer.enabled:
        raise UsageError(
            "no [security] token_key_env or token_key_file is configured: nothing to encrypt "
            "with (see docs/security.md)"
        )
    count = reseal_tokens(app.ready_engine(), sealer)
    click.echo(
        f"{count} stored tokens encrypted with the first key; keys after it may now be removed"
    )


@db.command("stop")
@click.pass_obj
@_guarded
def db_stop(obj: Context) -> None:
    """Stop the embedded PostgreSQL, even with psql connected (it stays up after `qrsync db
    url`, after the demo, and while other clients are connected)."""
    app = obj.app()
    if app.config.database.url:
        raise UsageError(
            "qrsync db stop stops the embedded PostgreSQL only; this configuration uses "
            "database.url (or QRSYNC_DATABASE_URL)"
        )
    embedded = app.embedded()
    if embedded.stop():
        click.echo(f"stopped the embedded PostgreSQL in {embedded.root}")
    else:
        click.echo(f"the embedded PostgreSQL in {embedded.root} was not running")


# --- sync ----------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="NAME",
    help="Only this account.",
    shell_complete=_complete_account,
)
@click.option(
    "--prefix",
    "prefixes",
    multiple=True,
    metavar="PREFIX",
    help="Refresh just these rules of the one --account (get_type 1); deletes nothing.",
)
@click.option(
    "--allow-mass-delete",
    is_flag=True,
    help="Apply a listing that deletes more than sync.max_delete_fraction of the rules.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.pass_obj
@_guarded
def sync(
    obj: Context,
    accounts: tuple[str, ...],
    prefixes: tuple[str, ...],
    allow_mass_delete: bool,
    as_json: bool,
) -> None:
    """Sync every enabled account (or those named) once, now."""
    if prefixes and len(accounts) != 1:
        raise UsageError("--prefix needs exactly one --account")
    if allow_mass_delete and not accounts:
        raise UsageError("--allow-mass-delete needs --account (confirm one account at a time)")
    app = obj.app(calls_wechat=True)
    config = app.config
    known = app.accounts()  # reads only: nothing is written before everything is checked
    chosen = (
        [app.account(name, known) for name in dict.fromkeys(accounts)]
        if accounts
        else [a for a in known if a.enabled]
    )
    for account in chosen:
        if not account.enabled:
            raise UsageError(
                f"{config.path}: account '{account.name}' is disabled (enabled = false)"
            )
    if not chosen:
        missing = "" if Path(config.path).exists() else " (the file does not exist)"
        raise UsageError(f"{config.path}{missing}: no enabled account to sync")
    ids = app.mirror_accounts().ids
    requests = [
        SyncRequest(
            account=a,
            account_id=ids[a.name],
            trigger="cli",
            prefixes=prefixes,
            allow_mass_delete=allow_mass_delete,
        )
        for a in chosen
    ]
    syncer = Syncer(config, app.ready_engine())
    try:
        results = _run_with_display(syncer, requests, as_json)
    finally:
        syncer.close()
    notified = _deliver(app)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        document: dict[str, Any] = {
            "accounts": results,  # (dataclasses: to_json writes their fields)
            "succeeded": sum(r.status == "succeeded" for r in results),
            "partial": sum(r.status == "partial" for r in results),
            "failed": len(failed),
        }
        if notified is not None:
            document["notifications"] = notified
        _echo_json(document)
    else:
        click.echo(_summary(results))
        if notified is not None and (notified["sent"] or notified["failed"]):
            click.echo(f"notifications: {notified['sent']} sent, {notified['failed']} to retry")
    sys.exit(1 if failed else 0)


def _deliver(app: App) -> dict[str, int] | None:
    """Deliver the notifications that are due (the sync's own events among them), once; None
    without channels."""
    if not app.config.notify:
        return None
    from qrsync.notify.delivery import deliver_once, one_shot_replica

    sweep = deliver_once(
        app.ready_engine(),
        app.config.notify,
        config_file=app.config.path,
        replica=one_shot_replica(),
    )
    return None if sweep is None else {"sent": sweep.sent, "failed": sweep.failed}


def _run_with_display(
    syncer: Syncer, requests: list[SyncRequest], as_json: bool
) -> list[RunResult]:
    """On a terminal, the progress of every account by pages and rules; otherwise one line per
    account as it finishes."""
    if as_json:
        return syncer.sync_many(requests)
    if sys.stdout.isatty():
        from rich.console import Console

        from qrsync.render.progress import SyncProgress

        with SyncProgress(len(requests), Console(), _result_line) as display:
            return syncer.sync_many(
                requests,
                on_start=display.started,
                on_page=display.page,
                on_finish=display.finished,
            )

    def line(result: RunResult) -> None:
        click.echo(_result_line(result))

    return syncer.sync_many(requests, on_finish=line)


def _result_line(r: RunResult) -> str:
    if r.status == "failed":
        return f"{r.account}: failed: {r.error}"
    text = (
        f"{r.account}: {r.status}: {r.rules_seen} rules, {r.inserted} new, {r.updated} changed, "
        f"{r.deleted} deleted, {r.state_changes} state changes, {r.api_calls} API calls, "
        f"{r.duration_s:.1f}s"
    )
    if r.message:
        text += f" ({r.message})"
    return text


def _summary(results: list[RunResult]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("succeeded", "partial", "failed")}
    rules = sum(r.rules_seen for r in results)
    return (
        f"{len(results)} account(s): {counts['succeeded']} succeeded, {counts['partial']} "
        f"partial, {counts['failed']} failed; {rules} rules listed"
    )


# --- accounts, status, report --------------------------------------------------------------------


@cli.group("accounts", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_guarded
def accounts_command(ctx: click.Context, as_json: bool) -> None:
    """The accounts, with their last run (`qrsync accounts import FILE.csv` or `qrsync
    accounts discover` to add more), then a platform's authorizers that are not synced and why."""
    if ctx.invoked_subcommand is not None:
        return
    from qrsync.render.text import fmt_time, format_table, render_discovery
    from qrsync.store.accounts import AccountOverview, list_accounts, unsynced_authorizers
    from qrsync.store.discoveries import last_discoveries

    obj: Context = ctx.obj
    app = obj.app()
    app.mirror_accounts()
    engine = app.ready_engine()
    overview = list_accounts(engine)
    unsynced = unsynced_authorizers(engine)
    if as_json:
        reasons = {u.authorizer_appid: u.reason for u in unsynced}
        documents: list[dict[str, Any]] = [
            {**asdict(a), "not_synced": reasons.get(a.appid) if a.source == "discover" else None}
            for a in overview
        ]
        with_accounts = {a.appid for a in overview if a.source == "discover"}
        keys = [f.name for f in fields(AccountOverview)]
        for u in unsynced:
            if u.authorizer_appid in with_accounts:
                continue
            documents.append(
                {key: None for key in keys}
                | {
                    "name": None,
                    "kind": u.kind,
                    "appid": u.authorizer_appid,
                    "token_source": "component",
                    "enabled": False,
                    "in_config": False,
                    "source": "discover",
                    "live_rules": 0,
                    "not_synced": u.reason,
                }
            )
        _echo_json(documents)
        return
    click.echo(
        format_table(
            ["account", "kind", "appid", "token", "enabled", "live rules", "last run", "status"],
            [
                [
                    a.name,
                    a.kind,
                    a.appid,
                    a.token_source,
                    "yes" if a.enabled else ("removed" if not a.in_config else "no"),
                    f"{a.live_rules:,}",
                    fmt_time(a.last_run_at),
                    a.last_status or "never",
                ]
                for a in overview
            ],
        )
    )
    for run in last_discoveries(engine):
        click.echo("")
        click.echo(render_discovery(run))
    if unsynced:
        click.echo("")
        click.echo(
            "authorizers not synced (looked at again by the next `qrsync accounts discover`):"
        )
        click.echo(
            format_table(
                ["authorizer", "kind", "platform", "reason"],
                [
                    [u.authorizer_appid, u.kind or "?", u.component_appid, u.reason or ""]
                    for u in unsynced
                ],
            )
        )


@accounts_command.command("discover")
@click.option("--dry-run", is_flag=True, help="Say what discovery would change; write nothing.")
@click.option(
    "--allow-mass-disable",
    is_flag=True,
    help="Apply a discovery that disables more than sync.max_delete_fraction (or all) of the "
    "enabled discovered accounts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what changed (or would) as JSON.")
@click.pass_obj
@_guarded
def accounts_discover(obj: Context, dry_run: bool, allow_mass_disable: bool, as_json: bool) -> None:
    """Find the [component] platform's authorizers and make each mini program, and each
    service account's linked mini program, an account (see docs/accounts-discovery.md)."""
    from qrsync.discovery import describe_plan, platform_of, run_discovery

    app = obj.app()
    component = platform_of(app.config)
    app.mirror_accounts()
    outcome = run_discovery(
        app.config,
        app.ready_engine(),
        dry_run=dry_run,
        allow_mass_disable=allow_mass_disable,
        notify=_notice if not as_json else lambda _line: None,
    )
    plan = outcome.plan
    fraction = app.config.sync.max_delete_fraction
    if as_json:
        _echo_json(outcome.document)
    elif dry_run:
        click.echo(f"platform {component.appid}: {outcome.headline}; dry run, nothing written:")
        for line in describe_plan(plan):
            click.echo(line)
        if plan.mass_disable(fraction):
            click.echo(
                f"  applying it needs --allow-mass-disable: it disables "
                f"{len(plan.disabled)} of the {plan.enabled_before} enabled discovered accounts"
            )
    else:
        click.echo(f"platform {component.appid}: {outcome.headline}:")
        for line in describe_plan(plan):
            click.echo(line)
    if plan.failed and not dry_run:
        sys.exit(1)


@accounts_command.command("import")
@click.argument("csv_file", metavar="FILE.csv", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--dry-run", is_flag=True, help="Say what the import would change; write nothing.")
@click.option(
    "--allow-mass-disable",
    is_flag=True,
    help="Apply an import that disables more than sync.max_delete_fraction (or all) of the "
    "enabled imported accounts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what changed (or would) as JSON.")
@click.pass_obj
@_guarded
def accounts_import(
    obj: Context, csv_file: str, dry_run: bool, allow_mass_disable: bool, as_json: bool
) -> None:
    """Add or update accounts from a CSV file (`-`: standard input); imported accounts it no
    longer lists are disabled (columns: see docs/accounts-import.md)."""
    from qrsync.imports import describe_plan, run_import

    app = obj.app()
    outcome = run_import(
        app.config,
        app.ready_engine,
        csv_file,
        dry_run=dry_run,
        allow_mass_disable=allow_mass_disable,
        notify=_notice,
    )
    plan, label, n = outcome.plan, outcome.label, outcome.accounts
    if as_json:
        _echo_json(outcome.summary)
    elif dry_run:
        click.echo(f"{label}: {n} accounts; dry run, nothing written:")
        for line in describe_plan(plan):
            click.echo(line)
        if plan.mass_disable(app.config.sync.max_delete_fraction):
            click.echo(
                f"  applying it needs --allow-mass-disable: it disables {len(plan.disabled)} "
                f"of the {plan.enabled_before} enabled imported accounts"
            )
    else:
        click.echo(
            f"{label}: {n} accounts; {len(outcome.written)} added or changed, "
            f"{n - len(outcome.written)} unchanged, {len(outcome.disabled)} no longer listed "
            "(disabled)"
        )


@cli.command()
@click.option(
    "--account", metavar="NAME", help="Only this account.", shell_complete=_complete_account
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when an enabled account is failing, partial, never synced or stale (for "
    "cron, Nagios, a deployment gate); one line on stderr says which and why.",
)
@click.option(
    "--stale-after",
    metavar="DURATION",
    help="With --check: a last success older than this (30m, 12h, 2d) is stale. Default: twice "
    "each account's schedule period.",
)
@click.pass_obj
@_guarded
def status(
    obj: Context, account: str | None, as_json: bool, check: bool, stale_after: str | None
) -> None:
    """Sync health: per account the last success, its age, the failure streak."""
    from qrsync.health import needing_attention, stale_limits, summary
    from qrsync.render.text import render_discovery, render_status
    from qrsync.report import sync_health
    from qrsync.store.discoveries import last_discoveries

    if stale_after is not None and not check:
        raise UsageError("--stale-after goes with --check")
    limit = _parse_duration(stale_after, "--stale-after") if stale_after is not None else None
    app = obj.app()
    engine = app.ready_engine()
    _known_account(engine, account)
    rows = sync_health(engine, account)
    attention = []
    if check:
        limits = stale_limits(app.accounts(), app.config.daemon, datetime.now(UTC))
        attention = needing_attention(rows, limits, limit)
        reasons = {a.account: a.reason for a in attention}
        for row in rows:
            row["attention"] = reasons.get(row["account"])
    if as_json:
        _echo_json(rows)
    else:
        click.echo(render_status(rows))
        if account is None:
            for run in last_discoveries(engine):
                click.echo(render_discovery(run))
    if check:
        _notice(summary(attention, sum(1 for r in rows if r["enabled"])))
        if attention:
            sys.exit(1)


# --- notifications -------------------------------------------------------------------------------


@cli.group("notify")
def notify_command() -> None:
    """Notification channels ([[notify]]): test one, see what is pending, deliver now."""


@notify_command.command("test")
@click.option("--channel", "channel_name", required=True, metavar="NAME", help="The channel.")
@click.pass_obj
@_guarded
def notify_test(obj: Context, channel_name: str) -> None:
    """Send a test message to a channel and say what its receiver answered (exit 1: refused)."""
    from qrsync.notify.delivery import send_test

    app = obj.app()
    config = app.config.channel(channel_name)
    channel, answer = send_test(config, config_file=app.config.path)
    verdict = "accepted" if answer.ok else "refused"
    click.echo(
        one_line(mask(f"channel '{channel.name}' ({channel.kind}): {verdict}: {answer.detail}"))
    )
    sys.exit(0 if answer.ok else 1)


@notify_command.command("status")
@click.option("--channel", "channel_name", metavar="NAME", help="Also list its notifications.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@_guarded
def notify_status(obj: Context, channel_name: str | None, as_json: bool) -> None:
    """Per channel: notifications pending, failing (tried, not delivered yet) and sent."""
    from qrsync.notify.status import render, status

    app = obj.app()
    if channel_name is not None:
        app.config.channel(channel_name)
    document = status(app.ready_engine(), channel_name)
    if as_json:
        _echo_json(document)
    else:
        click.echo(render(document))


@notify_command.command("deliver")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@_guarded
def notify_deliver(obj: Context, as_json: bool) -> None:
    """Deliver the notifications that are due now, once (what a daemon does all the time)."""
    app = obj.app()
    app.mirror_accounts()
    notified = _deliver(app) or {"sent": 0, "failed": 0}
    if as_json:
        _echo_json(notified)
    else:
        click.echo(f"notifications: {notified['sent']} sent, {notified['failed']} to retry")
    sys.exit(1 if notified["failed"] else 0)


# --- cached tokens -------------------------------------------------------------------------------


@cli.group("tokens", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_guarded
def tokens_command(ctx: click.Context, as_json: bool) -> None:
    """The access tokens cached in the database (never their values), and the accounts using
    each; `qrsync tokens drop ACCOUNT` makes the next run fetch a fresh one."""
    if ctx.invoked_subcommand is not None:
        return
    from qrsync.render.text import fmt_time, format_table
    from qrsync.store.tokens import PgTokenCache
    from qrsync.wechat.tokens import cached_under

    obj: Context = ctx.obj
    app = obj.app()
    users: dict[str, list[str]] = {}
    for account in app.accounts():
        key = cached_under(account, app.config.component)
        if key is not None:
            users.setdefault(key, []).append(account.name)
    cached = PgTokenCache(app.ready_engine()).cached()
    for row in cached:
        row["accounts"] = users.get(row["key"], [])
    if as_json:
        _echo_json(cached)
        return
    if not cached:
        click.echo("no cached tokens")
        return
    click.echo(
        format_table(
            ["token", "accounts", "fetched", "expires", "reused until"],
            [
                [
                    r["key"],
                    ", ".join(r["accounts"][:5]) + (" ..." if len(r["accounts"]) > 5 else ""),
                    fmt_time(r["fetched_at"]),
                    fmt_time(r["expires_at"]),
                    fmt_time(r["reuse_until"]),
                ]
                for r in cached
            ],
        )
    )


@tokens_command.command("drop")
@click.argument("account_name", metavar="ACCOUNT", shell_complete=_complete_account)
@click.pass_obj
@_guarded
def tokens_drop(obj: Context, account_name: str) -> None:
    """Forget ACCOUNT's cached access token: the next run fetches a fresh one with the secret
    as configured now (after changing a secret, or to see at once whether it works). An
    authorizer's refresh token is kept."""
    from qrsync.store.tokens import PgTokenCache
    from qrsync.wechat.tokens import cached_under

    app = obj.app()
    accounts = app.accounts()
    account = app.account(account_name, accounts)
    component = app.config.component
    key = cached_under(account, component)
    if key is None:
        raise UsageError(
            f"account '{account.name}': qrsync caches no token for it (a static token, or a "
            "component account without a [component] table)"
        )
    sharing = [
        a.name for a in accounts if a.name != account.name and cached_under(a, component) == key
    ]
    shared = f" (shared with {', '.join(sharing[:5])})" if sharing else ""
    if PgTokenCache(app.ready_engine()).drop(key):
        click.echo(
            f"dropped the cached token of '{account.name}'{shared}: the next run fetches a fresh "
            "one"
        )
    else:
        click.echo(f"no token cached for '{account.name}': the next run fetches one anyway")


# --- quota holds ---------------------------------------------------------------------------------


@cli.group("quota", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_guarded
def quota_command(ctx: click.Context, as_json: bool) -> None:
    """Caller AppIDs not called until their API quota resets (WeChat answered 45009 daily or
    45011 per minute); `qrsync quota release APPID` calls one again at once."""
    if ctx.invoked_subcommand is not None:
        return
    from qrsync.render.text import fmt_time, format_table
    from qrsync.store.runs import RunStore

    obj: Context = ctx.obj
    holds = RunStore(obj.app().ready_engine()).quota_holds(datetime.now(UTC))
    if as_json:
        _echo_json(holds)
        return
    if not holds:
        click.echo("no quota holds: every AppID is called")
        return
    click.echo(
        format_table(
            ["appid", "errcode", "since", "until", "state", "run"],
            [
                [
                    h["appid"],
                    str(h["errcode"]),
                    fmt_time(h["held_since"]),
                    fmt_time(h["held_until"]),
                    "held" if h["standing"] else "expired",
                    str(h["sync_run_id"] or "-"),
                ]
                for h in holds
            ],
        )
    )


@quota_command.command("release")
@click.argument("appid")
@click.pass_obj
@_guarded
def quota_release(obj: Context, appid: str) -> None:
    """Lift the hold on APPID: its accounts' next runs call WeChat again (if the quota is
    still used up, WeChat says so again and the hold comes back)."""
    from qrsync.render.text import fmt_time
    from qrsync.store.runs import RunStore

    store = RunStore(obj.app().ready_engine())
    hold = store.release_quota_hold(appid)
    if hold is None:
        standing = [h["appid"] for h in store.quota_holds(datetime.now(UTC)) if h["standing"]]
        held = ", ".join(standing[:10]) or "none"
        raise UsageError(f"no quota hold on {appid} (AppIDs held now: {held})")
    click.echo(
        f"released the hold on {appid} ({hold.errcode}, held since {fmt_time(hold.since)} "
        f"until {fmt_time(hold.until)}): its accounts' next runs call WeChat again"
    )


def _known_account(engine: Engine, account: str | None) -> None:
    """Reports read the database as it is (no mirroring): the account must be there."""
    from qrsync.store.accounts import account_ids

    if account is not None and account not in account_ids(engine):
        raise UsageError(f"--account: no account named '{account}' in the database")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: str) -> timedelta | None:
    """``30m``, ``12h``, ``7d``, ``2w`` (``s`` too) as a timedelta; None if not one."""
    if len(value) > 1 and value[-1] in _DURATION_UNITS and value[:-1].isdigit():
        return timedelta(seconds=int(value[:-1]) * _DURATION_UNITS[value[-1]])
    return None


def _parse_duration(value: str, option: str) -> timedelta:
    parsed = _duration(value)
    if parsed is None or parsed <= timedelta(0):
        raise UsageError(f"{option}: '{value}' is not a duration (30m, 12h, 7d, 2w)")
    return parsed


def _parse_since(value: str) -> datetime:
    window = _duration(value)
    if window is not None:
        return datetime.now(UTC) - window
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since: '{value}' is neither a duration (30m, 12h, 7d, 2w) nor a date (2026-11-01)"
        ) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


REPORT_FORMATS = ("text", "json", "csv", "html")


@cli.command()
@click.option("--since", default="7d", show_default=True, help="Window: 12h, 7d, 2w, or a date.")
@click.option(
    "--account", metavar="NAME", help="Only this account.", shell_complete=_complete_account
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(REPORT_FORMATS),
    default="text",
    show_default=True,
    help="text for people, json/csv for machines, html: one self-contained page with charts.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--output", type=click.Path(dir_okay=False, writable=True), help="Write to FILE, not stdout."
)
@click.pass_obj
@_guarded
def report(
    obj: Context,
    since: str,
    account: str | None,
    output_format: str,
    as_json: bool,
    output: str | None,
) -> None:
    """Rules by state, the publish queue, publications, deletions, quota, sync health."""
    from qrsync.report import build_report

    start = _parse_since(since)
    app = obj.app()
    engine = app.ready_engine()
    _known_account(engine, account)
    built = build_report(engine, since=start, account=account)
    rendered = _render(built, "json" if as_json else output_format)
    if output is None:
        click.echo(rendered)
        return
    try:
        Path(output).write_text(rendered + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output: cannot write {output}: {exc.strerror}") from None
    click.echo(f"report written to {output}", err=True)


def _render(built: Report, output_format: str) -> str:
    if output_format == "json":
        return to_json(built)
    if output_format == "csv":
        from qrsync.render.csvout import render_csv

        return render_csv(built)
    if output_format == "html":
        from qrsync.render.html import render_html

        return render_html(built)
    from qrsync.render.text import render_report

    return render_report(built)


@cli.command()
@click.option("--name", metavar="REPLICA", help="This replica's name (default: host name and pid).")
@click.option("--http-port", type=int, metavar="N", help="Port of /metrics and probes (0: off).")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "text", "json"]),
    default="auto",
    show_default=True,
    help="auto: text on a terminal, JSON lines otherwise.",
)
@click.pass_context
@_guarded
def daemon(ctx: click.Context, name: str | None, http_port: int | None, log_format: str) -> None:
    """Run the schedules until SIGTERM or SIGINT, then finish or abandon runs cleanly."""
    from qrsync.daemon import Daemon, default_replica_name
    from qrsync.logs import setup_logging

    verbose = ctx.find_root().params.get("verbose", 0)
    setup_logging(max(1, verbose), log_format)
    obj: Context = ctx.obj
    runner = Daemon(
        obj.config_path, name=name or default_replica_name(), http_port=http_port, notify=_notice
    )
    sys.exit(runner.run())


@cli.command()
@click.option("--rounds", default=5, show_default=True, help="Rounds of changes and syncs (2-6).")
@click.option(
    "--html",
    "html_path",
    default="qrsync-demo-report.html",
    show_default=True,
    help="Where to write the HTML report of the demo.",
)
@_guarded
def demo(rounds: int, html_path: str) -> None:
    """The demo of `make demo`: embedded PostgreSQL, simulator, rounds of changes, report."""
    from qrsync.demo import SCHEMA, run_demo
    from qrsync.render.text import render_report
    from qrsync.report import build_report
    from qrsync.store.engine import make_engine

    outcome = run_demo(click.echo, rounds=rounds)
    engine = make_engine(outcome.psql_url, SCHEMA)
    try:
        built = build_report(engine, since=datetime.now(UTC) - timedelta(days=8))
    finally:
        engine.dispose()
    click.echo("\n" + render_report(built))
    Path(html_path).write_text(_render(built, "html") + "\n", encoding="utf-8")
    click.echo(f"\nThe same report as one HTML page with charts: {html_path}")
    click.echo(
        "\nLook around with psql (the embedded PostgreSQL stays up until "
        "`.venv/bin/qrsync db stop`):\n"
        f'  psql "{outcome.psql_url}"\n'
        "  SELECT account, state_name, count(*) FROM qrsync.current_rules GROUP BY 1, 2;\n"
        "  SELECT account, prefix, wait FROM qrsync.publications\n"
        "    WHERE NOT in_baseline ORDER BY published_observed_at DESC LIMIT 10;\n"
        "  SELECT account, count(*), max(waiting) FROM qrsync.unpublished_rules GROUP BY 1;\n"
        "  SELECT * FROM qrsync.quota_daily ORDER BY account, day;\n"
        "  SELECT account, last_status, failure_streak, last_error FROM qrsync.sync_health;\n"
        "More questions and their SQL: docs/analysts.md"
    )


@cli.command(
    "simulator",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """The bundled WeChat API simulator (--port N, --seed, --world FILE; --help for all)."""
    from qrsync.simulator.command import simulator_command  # loaded only when used

    simulator_command.main(
        ctx.args,
        prog_name="qrsync simulator",
        standalone_mode=True,
        help_option_names=["-h", "--help"],  # as every other command
    )


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM ends qrsync like Ctrl-C does: runs stop cleanly, the embedded server stops."""
    raise SystemExit(128 + signum)


GC_THRESHOLD = (100_000, 50, 50)
"""Allocations between collections of the youngest generation (CPython's default is 700)."""


def _tune_gc() -> None:
    """A listing makes hundreds of thousands of short-lived objects (parsed JSON, rules) that
    reference counting frees at once; with CPython's defaults the cycle collector still walks
    them, and every long-lived one, again and again: about 15 % of syncing 100,000 rules.
    Objects made by the imports are frozen (never walked), and young ones are looked at every
    100,000 allocations, which bounds what cycles can hold to a few megabytes."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _tune_gc()
    cli(prog_name="qrsync")
