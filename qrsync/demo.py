"""`qrsync demo` / `make demo`: the product seen working with nothing installed but Python.

It starts the embedded PostgreSQL (a database of its own, ``qrsync_demo``) and the bundled WeChat
simulator, then plays several rounds in which people add, publish, edit and delete rules through
the simulator's copy of the WeChat API, each round followed by a sync through the normal code
path. The accounts of its third-party platform are not listed in its configuration: the demo
discovers them (``[component] discover = true``), and discovers again when a merchant
authorises the platform mid-week. The rounds are spread over the last week on the sync's clock
(nothing else is faked), so that the history, the report's charts and the analyst views have
days to show. At the end it prints the report and how to look around with psql; the database
stays up for that.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from qrsync.config import (
    AccountConfig,
    AccountKind,
    ApiConfig,
    ComponentConfig,
    Config,
    DatabaseConfig,
    NotifyConfig,
    SecretRef,
    SyncConfig,
    TokenConfig,
)
from qrsync.discovery import describe_plan, run_discovery
from qrsync.masking import register_secret
from qrsync.notify.delivery import Sweep, deliver_once
from qrsync.simulator import RunningSimulator, start_simulator
from qrsync.store import migrate
from qrsync.store.accounts import account_ids, discovered_accounts, mirror_accounts
from qrsync.store.embedded import EmbeddedPostgres, data_home
from qrsync.store.engine import Engine, make_engine
from qrsync.store.notifications import mirror_channels
from qrsync.sync import RunResult, Syncer, SyncRequest
from qrsync.wechat.client import WeChatClient

DEMO_DATABASE = "qrsync_demo"
SCHEMA = "qrsync"
DEMO_RATE = 20
"""Requests a second, on both sides: the real limit is 5; the demo raises it to stay short."""
ROUND_DAYS_AGO = (6, 4, 3, 2, 1, 0)
RATE_WINDOW_S = 1.1
"""WeChat's rate window (a second), and a margin."""

MP = "wx00000000000000d1"
OA = "wx00000000000000d2"
SHOP = "wx00000000000000d3"
PARTNER = "wx00000000000000d4"
LEGACY = "wx00000000000000d5"
PLATFORM = "wx00000000000000dc"
CAFE = "wx00000000000000d6"
NEWS = "wx00000000000000d7"
STUDIO = "wx00000000000000d8"
BAKERY = "wx00000000000000d9"
DISCOVER_AGAIN_BEFORE_ROUND = 4

SECRETS = {
    "QRSYNC_DEMO_MP_SECRET": "demo-secret-brand-mp",
    "QRSYNC_DEMO_OA_SECRET": "demo-secret-brand-oa",
    "QRSYNC_DEMO_LEGACY_SECRET": "demo-secret-that-is-wrong",
    "QRSYNC_DEMO_PLATFORM_SECRET": "demo-secret-platform",
    "QRSYNC_DEMO_VERIFY_TICKET": "ticket@@@demo-verify-ticket",
    "QRSYNC_DEMO_PARTNER_REFRESH": "demo-refresh-partner-oa",
    "QRSYNC_DEMO_DINGTALK_SECRET": "SECdemo-dingtalk-signing-secret",
}
DEMO_ROBOT = "demo-robot-token"
"""The simulator's DingTalk robot the demo's notification channel posts to."""
SHOWN_LINES = 8


EDITS: tuple[tuple[str, str, str, str | None, int], ...] = (
    ("brand-mp", MP, SECRETS["QRSYNC_DEMO_MP_SECRET"], None, 3),
    ("brand-oa", OA, SECRETS["QRSYNC_DEMO_OA_SECRET"], MP, 8),
    ("shop-mp", SHOP, "demo-secret-shop", None, 2),
    (f"oa-{PARTNER}-{MP}", PARTNER, "demo-secret-partner", MP, 4),
)
"""Who changes what each round: account, appid, its secret, linked mini program, how many."""


def demo_world() -> dict[str, Any]:
    """A mini program, a service account with 12,000 rules, a mini program behind a central
    token service, one whose secret in the configuration is wrong, and a third-party platform
    whose authorizers are a service account linking a mini program, a mini program, a
    subscription account and a personal mini program (the last two cannot have rules), and a
    bakery's mini program that authorises the platform later in the week."""
    return {
        "token_ttl_s": 7200,
        "accounts": [
            {
                "appid": MP,
                "kind": "miniprogram",
                "secret": SECRETS["QRSYNC_DEMO_MP_SECRET"],
                "qrcodejump_open": 1,
                "pub_quota": 100,
                "total_count_offset": 1,
                "rule_sets": [{"count": 40, "published_fraction": 0.5, "quirks": True}],
            },
            {
                "appid": OA,
                "kind": "service_account",
                "verified": True,
                "secret": SECRETS["QRSYNC_DEMO_OA_SECRET"],
                "linked_miniprograms": [MP],
                "pub_quota": 100,
                "rule_sets": [
                    {"miniprogram_appid": MP, "count": 12_000, "published_fraction": 0.6}
                ],
            },
            {
                "appid": SHOP,
                "kind": "miniprogram",
                "secret": "demo-secret-shop",
                "pub_quota": 60,
                "rule_sets": [{"count": 15, "published_fraction": 0.3, "quirks": True}],
            },
            {
                "appid": PARTNER,
                "kind": "service_account",
                "verified": True,
                "secret": "demo-secret-partner",
                "linked_miniprograms": [MP],
                "pub_quota": 80,
                "rule_sets": [{"miniprogram_appid": MP, "count": 500, "published_fraction": 0.4}],
            },
            {
                "appid": LEGACY,
                "kind": "miniprogram",
                "secret": "the-real-secret",
                "rule_sets": [{"count": 5}],
            },
            {
                "appid": CAFE,
                "kind": "miniprogram",
                "nick_name": "Corner Cafe",
                "rule_sets": [{"count": 30, "published_fraction": 0.5, "quirks": True}],
            },
            {"appid": NEWS, "kind": "service_account", "service_type": 0, "nick_name": "Daily"},
            {"appid": STUDIO, "kind": "miniprogram", "personal": True, "nick_name": "Studio"},
            {
                "appid": BAKERY,
                "kind": "miniprogram",
                "nick_name": "Bakery",
                "rule_sets": [{"count": 12, "published_fraction": 0.5}],
            },
        ],
        "components": [
            {
                "appid": PLATFORM,
                "secret": SECRETS["QRSYNC_DEMO_PLATFORM_SECRET"],
                "verify_ticket": SECRETS["QRSYNC_DEMO_VERIFY_TICKET"],
                "authorizations": [
                    {
                        "authorizer_appid": PARTNER,
                        "refresh_token": SECRETS["QRSYNC_DEMO_PARTNER_REFRESH"],
                        "permission_sets": [3, 18],
                        "rotate_refresh_token": True,
                    },
                    {
                        "authorizer_appid": CAFE,
                        "refresh_token": "demo-refresh-cafe",
                        "permission_sets": [18],
                    },
                    {
                        "authorizer_appid": NEWS,
                        "refresh_token": "demo-refresh-news",
                        "permission_sets": [1, 3],
                    },
                    {
                        "authorizer_appid": STUDIO,
                        "refresh_token": "demo-refresh-studio",
                        "permission_sets": [18],
                    },
                ],
            },
        ],
    }


def demo_config(base_url: str, database_url: str) -> Config:
    """The demo's accounts, and one notification channel: a DingTalk robot of the simulator
    (its URL in ``QRSYNC_DEMO_DINGTALK_URL``, set by :func:`run_demo`)."""

    def env(name: str) -> SecretRef:
        return SecretRef("env", name)

    def account(
        name: str, kind: AccountKind, appid: str, token: TokenConfig, mp: str | None = None
    ) -> AccountConfig:
        return AccountConfig(
            name=name,
            kind=kind,
            appid=appid,
            token=token,
            miniprogram_appid=mp,
        )

    return Config(
        path="(demo)",
        database=DatabaseConfig(url=database_url, schema=SCHEMA),
        api=ApiConfig(base_url=base_url, requests_per_second=DEMO_RATE, retry_backoff_s=0.2),
        sync=SyncConfig(concurrency=5),
        component=ComponentConfig(
            appid=PLATFORM,
            appsecret=env("QRSYNC_DEMO_PLATFORM_SECRET"),
            verify_ticket=env("QRSYNC_DEMO_VERIFY_TICKET"),
            discover=True,
        ),
        accounts=(
            account(
                "brand-mp",
                "miniprogram",
                MP,
                TokenConfig("stable_token", secret=env("QRSYNC_DEMO_MP_SECRET")),
            ),
            account(
                "brand-oa",
                "service_account",
                OA,
                TokenConfig("stable_token", secret=env("QRSYNC_DEMO_OA_SECRET")),
                MP,
            ),
            account(
                "shop-mp",
                "miniprogram",
                SHOP,
                TokenConfig("central", url=f"{base_url}/central/token/{SHOP}"),
            ),
            account(
                "legacy-mp",
                "miniprogram",
                LEGACY,
                TokenConfig("stable_token", secret=env("QRSYNC_DEMO_LEGACY_SECRET")),
            ),
        ),
        notify=(
            NotifyConfig(
                name="demo-dingtalk",
                kind="dingtalk",
                url=env("QRSYNC_DEMO_DINGTALK_URL"),
                secret=env("QRSYNC_DEMO_DINGTALK_SECRET"),
            ),
        ),
    )


@dataclass(frozen=True)
class DemoOutcome:
    psql_url: str
    rounds: int
    results: list[list[RunResult]]


class _Editor:
    """A person editing rules through the simulator's copy of the WeChat API."""

    def __init__(self, client: WeChatClient, sim: RunningSimulator, rng: random.Random) -> None:
        self.client = client
        self.sim = sim
        self.rng = rng
        self._tokens: dict[str, str] = {}

    def _token(self, appid: str, secret: str) -> str:
        if appid not in self._tokens:
            answer = self.client.request(
                "POST",
                "/cgi-bin/stable_token",
                endpoint="stable_token",
                account="demo",
                caller=appid,
                body={"grant_type": "client_credential", "appid": appid, "secret": secret},
            )
            self._tokens[appid] = str(answer["access_token"])
        return self._tokens[appid]

    def _call(self, appid: str, secret: str, name: str, body: dict[str, Any]) -> None:
        self.client.request(
            "POST",
            f"/cgi-bin/wxopen/{name}",
            endpoint=name,
            account="demo",
            caller=appid,
            params={"access_token": self._token(appid, secret)},
            body=body,
        )

    def round_of_changes(self, appid: str, secret: str, mp: str | None, n: int, tag: str) -> str:
        """Publish, edit, delete and add about ``n`` rules each; returns what was done."""
        rules = self.sim.admin.rules(appid, mp)
        extra = {"appid": mp} if mp else {}
        unpublished = [r for r in rules if r["state"] == 1]
        self.rng.shuffle(unpublished)
        publish, edit = unpublished[:n], unpublished[n : n + max(1, n // 2)]
        touched = {r["prefix"] for r in publish + edit}
        others = [r for r in rules if r["prefix"] not in touched]
        delete = self.rng.sample(others, min(max(1, n // 3), len(others)))
        for rule in publish:
            self._call(appid, secret, "qrcodejumppublish", {"prefix": rule["prefix"], **extra})
        for rule in edit:
            body = {
                "prefix": rule["prefix"],
                "path": f"pages/campaign/{tag}",
                "is_edit": 1,
                **extra,
            }
            if not mp:
                body |= {
                    "permit_sub_rule": 1,
                    "open_version": 3,
                    "debug_url": [rule["prefix"] + f"?from={tag}"],
                }
            self._call(appid, secret, "qrcodejumpadd", body)
        for rule in delete:
            self._call(appid, secret, "qrcodejumpdelete", {"prefix": rule["prefix"], **extra})
        for i in range(n):
            prefix = (
                f"http://weixin.qq.com/q/demo{appid[-2:]}{tag}{i:03d}"
                if mp
                else f"https://qr-{appid[-4:]}.example.com/demo/{tag}/{i}"
            )
            body = {"prefix": prefix, "path": f"pages/new/{tag}", "is_edit": 0, **extra}
            if not mp:
                body |= {"permit_sub_rule": 2, "open_version": 3, "debug_url": [prefix + "?x=1"]}
            self._call(appid, secret, "qrcodejumpadd", body)
        return f"{len(publish)} published, {len(edit)} edited, {len(delete)} deleted, {n} added"


def run_demo(say: Callable[[str], None], *, rounds: int = 5, seed: int = 1) -> DemoOutcome:
    """Play the demo; ``say`` prints a line for the person watching."""
    rounds = max(2, min(rounds, len(ROUND_DAYS_AGO)))
    for name, value in SECRETS.items():
        os.environ[name] = value
        register_secret(value)

    embedded = EmbeddedPostgres(data_home(), keep_running=True)
    say(f"Starting the embedded PostgreSQL in {embedded.root} ...")
    embedded.url()
    if embedded.create_database(DEMO_DATABASE, fresh=True):
        say(
            f"Reset the demo database '{DEMO_DATABASE}' left by a previous demo (your own data, "
            "in database 'qrsync', is not touched)"
        )
    database_url = embedded.url(DEMO_DATABASE)
    engine = make_engine(database_url, SCHEMA, pool_size=16)
    sim = start_simulator(port=0, seed=seed, world=demo_world())
    sim.admin.settings(requests_per_second=DEMO_RATE)
    say(
        f"Started the bundled WeChat simulator at {sim.url} (limit raised from 5 to "
        f"{DEMO_RATE} requests a second to keep the demo short)"
    )
    try:
        migrate.upgrade(engine, SCHEMA)
        os.environ["QRSYNC_DEMO_DINGTALK_URL"] = sim.admin.receiver_url("dingtalk", DEMO_ROBOT)
        sim.admin.set_receiver(
            "dingtalk", DEMO_ROBOT, secret=SECRETS["QRSYNC_DEMO_DINGTALK_SECRET"]
        )
        config = demo_config(sim.url, database_url)
        mirror_accounts(engine, config.accounts)
        mirror_channels(engine, config.notify)
        accounts, ids = _discover(config, engine, say)
        editor = _Editor(WeChatClient(config.api), sim, random.Random(seed))
        start = datetime.now(UTC)
        all_results: list[list[RunResult]] = []
        days = ROUND_DAYS_AGO[-rounds:]
        for number, days_ago in enumerate(days, start=1):
            when = start - timedelta(days=days_ago)
            if number > 1:
                tag = f"r{number}"
                say(f"\nRound {number} ({when:%a %d %b}): people change rules in WeChat")
                for name, appid, secret, mp, n in EDITS:
                    # The editor and the sync are two programs sharing each AppID's requests a
                    # second, each counting only its own: a second apart, they never meet 44990.
                    time.sleep(RATE_WINDOW_S)
                    done = editor.round_of_changes(appid, secret, mp, n, tag)
                    say(f"  {name}: {done}")
                time.sleep(RATE_WINDOW_S)
            else:
                say(f"\nRound 1 ({when:%a %d %b}): the first sync of every account")
            if number == DISCOVER_AGAIN_BEFORE_ROUND:
                sim.admin.authorize(PLATFORM, BAKERY, permission_sets=[18])
                say(f"  a bakery's mini program ({BAKERY}) authorises the platform")
                accounts, ids = _discover(config, engine, say)
            results = _sync_round(config, engine, accounts, ids, when)
            all_results.append(results)
            for result in results:
                say("  " + _line(result))
        sweep = deliver_once(engine, config.notify, config_file=config.path, replica="demo")
        _show_notifications(say, sim, sweep)
        psql_url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        return DemoOutcome(psql_url=psql_url, rounds=rounds, results=all_results)
    finally:
        sim.stop()
        engine.dispose()


def _show_notifications(
    say: Callable[[str], None], sim: RunningSimulator, sweep: Sweep | None
) -> None:
    """What the demo's DingTalk robot received: each message's title and its first lines."""
    got = sim.admin.receiver_messages("dingtalk", DEMO_ROBOT, accepted=True)
    sent = 0 if sweep is None else sweep.sent
    say(
        f"\nNotifications: the simulator's DingTalk robot received {len(got)} message(s) "
        f"covering {sent} event(s) of these rounds (channel demo-dingtalk; digests within "
        "DingTalk's 20 messages a minute):"
    )
    for message in got:
        lines = str(message.get("text") or "").splitlines()
        say(f"  [{message.get('title')}]")
        for line in lines[:SHOWN_LINES]:
            say(f"    {line}")
        if len(lines) > SHOWN_LINES:
            say(f"    ... ({len(lines) - SHOWN_LINES} more lines)")
    say("  (qrsync notify status, and the view notification_log, list them all)")


def _discover(
    config: Config, engine: Engine, say: Callable[[str], None]
) -> tuple[tuple[AccountConfig, ...], dict[str, int]]:
    """Discover the platform's authorizers as `qrsync accounts discover` does; the accounts to
    sync (the configuration's, then the discovered ones) and every account's id."""
    say(
        f"Discovering platform {PLATFORM}'s authorizers (api_get_authorizer_list, "
        "api_get_authorizer_info, wxamplinkget) ..."
    )
    outcome = run_discovery(config, engine, notify=lambda line: say(f"  {line}"))
    say(f"  platform {PLATFORM}: {outcome.headline}:")
    for line in describe_plan(outcome.plan):
        say(f"  {line}")
    discovered = tuple(a for a in discovered_accounts(engine) if a.enabled)
    return config.accounts + discovered, account_ids(engine)


def _sync_round(
    config: Config,
    engine: Engine,
    accounts: tuple[AccountConfig, ...],
    ids: dict[str, int],
    when: datetime,
) -> list[RunResult]:
    began = time.monotonic()

    def clock() -> datetime:
        return when + timedelta(seconds=time.monotonic() - began)

    syncer = Syncer(config, engine, clock=clock)
    try:
        requests = [
            SyncRequest(account=a, account_id=ids[a.name], trigger="demo") for a in accounts
        ]
        return syncer.sync_many(requests)
    finally:
        syncer.close()


def _line(r: RunResult) -> str:
    if r.status == "failed":
        return f"{r.account}: failed: {r.error}"
    return (
        f"{r.account}: {r.status}: {r.rules_seen:,} rules, {r.inserted} new, "
        f"{r.updated} changed, {r.deleted} deleted, {r.api_calls} API calls"
    )
