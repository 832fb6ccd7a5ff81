"""SPEC behaviours 1-4, through the real CLI, the simulator's HTTP API and the tables."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import (
    DOCUMENT_EXAMPLE_RULES,
    MP,
    MP_SECRET,
    OA,
    OA_MP,
    OA_SECRET,
    WeChatUser,
    mp_account,
    mp_world,
    oa_account,
    oa_world,
    rows,
    rule,
    scalar,
    toml_config,
)

QUIRKY_RULES = DOCUMENT_EXAMPLE_RULES


@pytest.fixture(params=["whole", "groups of 40"])
def chunk_rows(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a test with a listing digested and COPYed in one group (as for a few hundred rules)
    and in groups of 40 rules (as for a large service account), so that page drift crosses
    groups."""
    if request.param != "whole":
        monkeypatch.setattr("qrsync.store.digests.GROUP_ROWS", 40)


def assert_history_consistent(db: Any) -> None:
    """Every rule has exactly one current version, equal to its row; versions do not overlap."""
    assert (
        rows(
            db,
            "SELECT prefix FROM rule_versions WHERE valid_to IS NULL"
            " GROUP BY account_id, prefix HAVING count(*) <> 1",
        )
        == []
    )
    assert (
        rows(
            db,
            "SELECT r.prefix FROM rules r LEFT JOIN rule_versions v"
            " ON v.account_id = r.account_id AND v.prefix = r.prefix AND v.valid_to IS NULL"
            " WHERE v.prefix IS NULL OR v.deleted <> (r.deleted_at IS NOT NULL)"
            " OR (v.path, v.state) IS DISTINCT FROM (r.path, r.state)",
        )
        == []
    )
    assert (
        rows(
            db,
            "SELECT prefix FROM rule_versions"
            " GROUP BY account_id, prefix, valid_from HAVING count(*) <> 1",
        )
        == []
    )
    assert (
        rows(
            db,
            "SELECT a.prefix FROM rule_versions a JOIN rule_versions b"
            " ON a.account_id = b.account_id AND a.prefix = b.prefix"
            " AND a.valid_from < b.valid_from AND b.valid_from < COALESCE(a.valid_to, 'infinity')",
        )
        == []
    )


@pytest.fixture
def mp_setup(simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    simulator.admin.add_account(mp_world(total_count_offset=1, pub_quota=20, qrcodejump_open=0))
    simulator.admin.put_rules(MP, QUIRKY_RULES)
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    return simulator


@pytest.fixture
def oa_setup(fast_simulator: Any, qrsync: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    fast_simulator.admin.add_account(oa_world())
    monkeypatch.setenv("OA_SECRET", OA_SECRET)
    qrsync.write_config(
        toml_config(
            fast_simulator.url,
            oa_account(),
            api="requests_per_second = 1000",
            sync="page_size = 50",
        )
    )
    return fast_simulator


def test_document_example_is_stored_verbatim(mp_setup: Any, qrsync: Any, db: Any) -> None:
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    stored = rows(
        db,
        "SELECT prefix, path, state, open_version, permit_sub_rule, debug_urls "
        "FROM rules ORDER BY prefix",
    )
    assert stored == [
        (
            r["prefix"],
            r["path"],
            r["state"],
            r["open_version"],
            r["permit_sub_rule"],
            r["debug_url"],
        )
        for r in QUIRKY_RULES
    ]


def test_debug_urls_are_distinct_with_their_first_position(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    qrsync("sync")
    urls = rows(
        db,
        "SELECT url, position FROM rule_debug_urls WHERE prefix = %s ORDER BY position",
        "https://weixin.qq.com/qrcodejump",
    )
    assert urls == [
        ("https://weixin.qq.com/qrcodejump?a=1", 1),
        ("https://weixin.qq.com/qrcodejump?a=2", 3),
        ("https: //weixin.qq.com/qrcodejump?a=2", 4),
    ]


def test_miniprogram_total_count_disagreement_is_recorded_and_applied(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    result = qrsync("sync")
    assert result.exit_code == 0
    status, total, seen, message = rows(
        db, "SELECT status, total_count, rules_seen, message FROM sync_runs"
    )[0]
    assert (status, total, seen) == ("succeeded", 3, 2)
    assert "total_count" in message
    assert rows(db, "SELECT total_count, rule_count, complete FROM account_snapshots") == [
        (3, 2, True)
    ]


@pytest.mark.parametrize(
    ("paths", "final"),
    [
        (["pages/other", "pages/index/index"], "pages/index/index"),
        (["pages/index/index", "pages/other"], "pages/other"),
    ],
    ids=["later-one-unchanged", "later-one-changed"],
)
def test_a_rule_listed_twice_takes_its_later_content(
    simulator: Any,
    qrsync: Any,
    db: Any,
    monkeypatch: pytest.MonkeyPatch,
    paths: list[str],
    final: str,
) -> None:
    """One answer holding a live rule twice: the later occurrence stands, compared with what is
    stored (an earlier one that differs must not be written when the later one is unchanged)."""
    simulator.admin.add_account(mp_world())
    prefix = "https://a.example.com/twice"
    simulator.admin.put_rules(MP, [rule(prefix), rule("https://a.example.com/other")])
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    assert qrsync("sync").exit_code == 0
    served = {r["prefix"]: r for r in simulator.admin.rules(MP)}  # as WeChat lists them
    listed = [{**served[prefix], "path": path} for path in paths]
    listed.append(served["https://a.example.com/other"])
    body = {"errcode": 0, "rule_list": listed, "total_count": 2, "list_size": 3}
    simulator.admin.add_fault(endpoint="qrcodejumpget", times=-1, body=json.dumps(body))
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["accounts"][0]
    assert (summary["status"], summary["rules_seen"]) == ("succeeded", 2)
    assert summary["updated"] == (final != "pages/index/index")
    assert scalar(db, "SELECT path FROM rules WHERE prefix = %s", prefix) == final
    versions = scalar(db, "SELECT count(*) FROM rule_versions WHERE prefix = %s", prefix)
    assert versions == (1 if final == "pages/index/index" else 2)
    assert_history_consistent(db)


@pytest.mark.parametrize("group_rows", [2, 5000], ids=["across-groups", "in-one-group"])
def test_a_first_listing_holding_a_rule_twice_keeps_the_later(
    simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch, group_rows: int
) -> None:
    """An account's first listing is inserted group by group; a prefix a later group lists
    again (page drift) takes its later content, with one version, one first-seen state change
    and the later debug URLs, and counts once."""
    monkeypatch.setattr("qrsync.store.digests.GROUP_ROWS", group_rows)
    simulator.admin.add_account(mp_world())
    twice = "https://a.example.com/twice"
    listed = [
        rule(twice, path="pages/first", debug_url=["https://a.example.com/twice?debug=1"]),
        rule("https://a.example.com/b"),
        rule("https://a.example.com/c"),
        rule(twice, state=2, path="pages/later", debug_url=["https://a.example.com/twice?v=2"]),
    ]
    body = {"errcode": 0, "rule_list": listed, "total_count": 3, "list_size": 4}
    simulator.admin.add_fault(endpoint="qrcodejumpget", times=-1, body=json.dumps(body))
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["accounts"][0]
    assert (summary["status"], summary["rules_seen"], summary["inserted"]) == ("succeeded", 3, 3)
    assert rows(
        db,
        "SELECT path, state, published_at = first_seen_at, version_run_id IS NOT NULL"
        " FROM rules WHERE prefix = %s",
        twice,
    ) == [("pages/later", 2, True, True)]
    assert rows(db, "SELECT path, state FROM rule_versions WHERE prefix = %s", twice) == [
        ("pages/later", 2)
    ]
    assert rows(
        db, "SELECT from_state, to_state FROM rule_state_changes WHERE prefix = %s", twice
    ) == [(None, 2)]
    assert rows(db, "SELECT url FROM rule_debug_urls WHERE prefix = %s", twice) == [
        ("https://a.example.com/twice?v=2",)
    ]
    assert scalar(db, "SELECT count(*) FROM rule_state_changes") == 3
    assert_history_consistent(db)


def test_miniprogram_is_listed_with_one_call_and_an_empty_body(mp_setup: Any, qrsync: Any) -> None:
    qrsync("sync")
    calls = mp_setup.admin.calls(endpoint="qrcodejumpget")
    assert len(calls) == 1
    assert calls[0]["get_type"] in (None, 0)


def test_unchanged_rule_is_not_rewritten(mp_setup: Any, qrsync: Any, db: Any) -> None:
    qrsync("sync")
    before = rows(db, "SELECT prefix, xmin::text FROM rules ORDER BY prefix")
    versions = scalar(db, "SELECT count(*) FROM rule_versions")
    urls_before = rows(db, "SELECT prefix, url, xmin::text FROM rule_debug_urls ORDER BY 1, 2")
    result = qrsync("sync")
    assert result.exit_code == 0
    assert rows(db, "SELECT prefix, xmin::text FROM rules ORDER BY prefix") == before
    assert rows(db, "SELECT prefix, url, xmin::text FROM rule_debug_urls ORDER BY 1, 2") == (
        urls_before
    )
    assert scalar(db, "SELECT count(*) FROM rule_versions") == versions
    last = rows(
        db,
        "SELECT inserted, updated, unchanged, deleted, state_changes FROM sync_runs "
        "ORDER BY id DESC LIMIT 1",
    )[0]
    assert last == (0, 0, 2, 0, 0)


def test_first_sighting_is_a_state_change_from_null(mp_setup: Any, qrsync: Any, db: Any) -> None:
    qrsync("sync")
    changes = rows(db, "SELECT from_state, to_state, previous_seen_at FROM rule_state_changes")
    assert changes == [(None, 1, None), (None, 1, None)]


def test_publication_is_recorded_with_its_wait(mp_setup: Any, qrsync: Any, db: Any) -> None:
    qrsync("sync")
    user = WeChatUser(mp_setup.url, MP, MP_SECRET)
    user.publish("https://weixin.qq.com/qrcodejumptest")
    result = qrsync("sync")
    assert result.exit_code == 0
    first_listing = scalar(db, "SELECT min(taken_at) FROM account_snapshots")
    change = rows(
        db,
        "SELECT from_state, to_state, previous_seen_at FROM rule_state_changes "
        "WHERE prefix = %s ORDER BY id",
        "https://weixin.qq.com/qrcodejumptest",
    )
    assert change[-1] == (1, 2, first_listing)
    pub = rows(
        db,
        "SELECT prefix, wait > interval '0', first_seen_published, published_observed_at "
        "FROM publications",
    )
    assert len(pub) == 1 and pub[0][:3] == ("https://weixin.qq.com/qrcodejumptest", True, False)
    published_at = scalar(
        db,
        "SELECT published_at FROM rules WHERE prefix = %s",
        "https://weixin.qq.com/qrcodejumptest",
    )
    assert published_at == pub[0][3]
    quota = rows(db, "SELECT qrcodejump_pub_quota FROM account_snapshots ORDER BY id")
    assert quota == [(20,), (19,)]


def test_edit_closes_the_old_version_and_opens_a_new_one(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    qrsync("sync")
    user = WeChatUser(mp_setup.url, MP, MP_SECRET)
    prefix = "https://weixin.qq.com/qrcodejumptest"
    user.edit(prefix, "pages/new/page", debug_url=[prefix + "?b=1"])
    result = qrsync("sync")
    assert result.exit_code == 0
    versions = rows(
        db,
        "SELECT path, valid_to IS NULL, deleted, debug_urls FROM rule_versions "
        "WHERE prefix = %s ORDER BY valid_from",
        prefix,
    )
    assert versions[0][0] == "pages/index/index" and versions[0][1] is False
    assert versions[1] == ("pages/new/page", True, False, [prefix + "?b=1"])
    assert rows(db, "SELECT url, position FROM rule_debug_urls WHERE prefix = %s", prefix) == [
        (prefix + "?b=1", 1)
    ]
    changed_at, first_seen = rows(
        db, "SELECT changed_at, first_seen_at FROM rules WHERE prefix = %s", prefix
    )[0]
    assert changed_at > first_seen
    # An edit that keeps the state is a new version but not a state change.
    assert scalar(db, "SELECT count(*) FROM rule_state_changes WHERE prefix = %s", prefix) == 1


def test_deleted_rule_is_marked_and_its_history_kept(
    simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule(f"https://a.example.com/{i}", state=2) for i in range(5)])
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    assert qrsync("sync").exit_code == 0
    WeChatUser(simulator.url, MP, MP_SECRET).delete("https://a.example.com/3")
    result = qrsync("sync")
    assert result.exit_code == 0, result.output
    gone = rows(db, "SELECT prefix, state FROM rules WHERE deleted_at IS NOT NULL")
    assert gone == [("https://a.example.com/3", 2)]
    assert scalar(db, "SELECT count(*) FROM current_rules") == 4
    assert rows(
        db,
        "SELECT from_state, to_state FROM rule_state_changes WHERE prefix = %s ORDER BY id",
        "https://a.example.com/3",
    ) == [(None, 2), (2, None)]
    assert rows(
        db,
        "SELECT deleted, valid_to IS NULL FROM rule_versions WHERE prefix = %s ORDER BY valid_from",
        "https://a.example.com/3",
    ) == [(False, False), (True, True)]
    assert scalar(db, "SELECT deleted FROM sync_runs ORDER BY id DESC LIMIT 1") == 1


def test_rule_that_comes_back_is_undeleted(
    simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    five = [rule(f"https://a.example.com/{i}") for i in range(5)]
    simulator.admin.put_rules(MP, five)
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    qrsync("sync")
    simulator.admin.put_rules(MP, five[:4])
    qrsync("sync")
    simulator.admin.put_rules(MP, five)
    assert qrsync("sync").exit_code == 0
    assert (
        scalar(db, "SELECT deleted_at FROM rules WHERE prefix = %s", "https://a.example.com/4")
        is None
    )
    assert rows(
        db,
        "SELECT from_state, to_state FROM rule_state_changes WHERE prefix = %s ORDER BY id",
        "https://a.example.com/4",
    ) == [(None, 1), (1, None), (None, 1)]
    assert (
        scalar(
            db,
            "SELECT count(*) FROM rule_versions WHERE prefix = %s AND valid_to IS NULL",
            "https://a.example.com/4",
        )
        == 1
    )


def test_every_complete_listing_records_a_snapshot(mp_setup: Any, qrsync: Any, db: Any) -> None:
    for _ in range(3):
        assert qrsync("sync").exit_code == 0
    snapshots = rows(
        db,
        "SELECT qrcodejump_open, qrcodejump_pub_quota, rule_count, sync_run_id "
        "FROM account_snapshots ORDER BY id",
    )
    run_ids = [r[0] for r in rows(db, "SELECT id FROM sync_runs ORDER BY id")]
    assert [s[:3] for s in snapshots] == [(0, 20, 2)] * 3
    assert [s[3] for s in snapshots] == run_ids


@pytest.mark.usefixtures("chunk_rows")
def test_service_account_pages_until_every_rule_is_seen(
    oa_setup: Any, qrsync: Any, db: Any
) -> None:
    oa_setup.admin.generate_rules(OA, 10_450, miniprogram_appid=OA_MP, published_fraction=0.4)
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["accounts"][0]
    assert summary["rules_seen"] == 10_450 and summary["pages"] == 209
    truth = {(r["prefix"], r["path"], r["state"]) for r in oa_setup.admin.rules(OA, OA_MP)}
    stored = set(rows(db, "SELECT prefix, path, state FROM rules WHERE deleted_at IS NULL"))
    assert stored == truth
    pages = [c["page_num"] for c in oa_setup.admin.calls(endpoint="qrcodejumpget")]
    assert pages == list(range(1, 210))
    assert {c["get_type"] for c in oa_setup.admin.calls(endpoint="qrcodejumpget")} == {2}


@pytest.mark.usefixtures("chunk_rows")
def test_service_account_changes_after_paging(oa_setup: Any, qrsync: Any, db: Any) -> None:
    oa_setup.admin.generate_rules(OA, 120, miniprogram_appid=OA_MP, published_fraction=0)
    qrsync("sync")
    truth = oa_setup.admin.rules(OA, OA_MP)
    user = WeChatUser(oa_setup.url, OA, OA_SECRET, miniprogram_appid=OA_MP)
    user.publish(truth[0]["prefix"])
    user.delete(truth[1]["prefix"])
    user.add("http://weixin.qq.com/q/brandnew", path="pages/new/index")
    result = qrsync("sync", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)["accounts"][0]
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (1, 1, 1)
    assert summary["unchanged"] == 118
    assert summary["state_changes"] == 3
    stored = set(rows(db, "SELECT prefix, path, state FROM rules WHERE deleted_at IS NULL"))
    assert stored == {(r["prefix"], r["path"], r["state"]) for r in oa_setup.admin.rules(OA, OA_MP)}
    assert_history_consistent(db)


def test_mass_deletion_waits_for_confirmation(
    simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule(f"https://a.example.com/{i}") for i in range(10)])
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account()))
    qrsync("sync")
    simulator.admin.put_rules(MP, [rule("https://a.example.com/0")])
    held = qrsync("sync")
    assert held.exit_code == 0
    assert "qrsync sync --account mp --allow-mass-delete" in held.output
    status, deleted, message = rows(
        db, "SELECT status, deleted, message FROM sync_runs ORDER BY id DESC LIMIT 1"
    )[0]
    assert (status, deleted) == ("partial", 0) and "9 of 10" in message
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NULL") == 10
    assert scalar(db, "SELECT complete FROM account_snapshots ORDER BY id DESC LIMIT 1") is False
    confirmed = qrsync("sync", "--account", "mp", "--allow-mass-delete")
    assert confirmed.exit_code == 0
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NULL") == 1
    assert scalar(db, "SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1") == "succeeded"


def test_empty_listing_never_wipes_an_account(
    simulator: Any, qrsync: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator.admin.add_account(mp_world())
    simulator.admin.put_rules(MP, [rule("https://a.example.com/0")])
    monkeypatch.setenv("MP_SECRET", MP_SECRET)
    qrsync.write_config(toml_config(simulator.url, mp_account(), sync="max_delete_fraction = 1.0"))
    qrsync("sync")
    simulator.admin.put_rules(MP, [])
    assert qrsync("sync").exit_code == 0
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NULL") == 1
    assert scalar(db, "SELECT status FROM sync_runs ORDER BY id DESC LIMIT 1") == "partial"


def test_a_page_that_lost_rules_deletes_nothing(oa_setup: Any, qrsync: Any, db: Any) -> None:
    """A page whose rule_list is shorter than its own list_size lost rules on the way: the
    listing is taken again, and if every attempt says so, applied without deletions."""
    oa_setup.admin.generate_rules(OA, 300, miniprogram_appid=OA_MP)
    qrsync("sync")
    before = scalar(db, "SELECT count(*) FROM rule_versions")
    oa_setup.admin.add_fault(
        endpoint="qrcodejumpget", page_num=2, times=-1, malformed="rule_dropped"
    )
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["accounts"][0]
    assert summary["status"] == "partial"
    assert "page 2 holds 49 rules but its list_size says 50" in summary["message"]
    assert "deleted nothing" in summary["message"]
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NULL") == 300
    assert scalar(db, "SELECT count(*) FROM rule_versions") == before
    # Three attempts, each ending at the short page 2.
    assert scalar(db, "SELECT pages FROM sync_runs ORDER BY id DESC LIMIT 1") == 3 * 2


def test_a_miniprogram_answer_that_lost_rules_deletes_nothing(
    mp_setup: Any, qrsync: Any, db: Any
) -> None:
    assert qrsync("sync").exit_code == 0
    live = scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NULL")
    mp_setup.admin.add_fault(endpoint="qrcodejumpget", times=-1, malformed="rule_dropped")
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["accounts"][0]
    assert summary["status"] == "partial"
    assert "its list_size says" in summary["message"] and "deleted nothing" in summary["message"]
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NULL") == live
    assert scalar(db, "SELECT count(*) FROM rule_state_changes WHERE to_state IS NULL") == 0


@pytest.mark.usefixtures("chunk_rows")
def test_page_drift_is_listed_again_and_then_exact(oa_setup: Any, qrsync: Any, db: Any) -> None:
    oa_setup.admin.generate_rules(OA, 300, miniprogram_appid=OA_MP)
    qrsync("sync")
    oa_setup.admin.add_fault(endpoint="qrcodejumpget", page_num=3, drift={"add": 2, "delete": 3})
    result = qrsync("sync", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)["accounts"][0]
    assert summary["status"] == "succeeded"
    truth = {r["prefix"] for r in oa_setup.admin.rules(OA, OA_MP)}
    assert len(truth) == 299
    assert set(r[0] for r in rows(db, "SELECT prefix FROM current_rules")) == truth
    assert summary["deleted"] == 3 and summary["inserted"] == 2
    assert_history_consistent(db)


@pytest.mark.usefixtures("chunk_rows")
def test_balanced_page_drift_causes_no_false_deletion(oa_setup: Any, qrsync: Any, db: Any) -> None:
    # One rule deleted on page 1 while page 2 is read shifts a rule past the pager, and one
    # added at the end keeps every count right: the listing looks consistent but lacks a rule.
    oa_setup.admin.generate_rules(OA, 300, miniprogram_appid=OA_MP)
    qrsync("sync")
    oa_setup.admin.add_fault(
        endpoint="qrcodejumpget", page_num=2, times=3, drift={"add": 1, "delete": 1}
    )
    result = qrsync("sync", "--json")
    assert result.exit_code == 0
    truth = {r["prefix"] for r in oa_setup.admin.rules(OA, OA_MP)}
    live = {r[0] for r in rows(db, "SELECT prefix FROM rules WHERE deleted_at IS NULL")}
    # The rule deleted after its page was read was seen; nothing that exists is deleted.
    assert truth <= live and len(live - truth) == 1
    oa_setup.admin.clear_faults()
    assert qrsync("sync").exit_code == 0
    live = {r[0] for r in rows(db, "SELECT prefix FROM rules WHERE deleted_at IS NULL")}
    assert live == truth
    assert_history_consistent(db)


@pytest.mark.usefixtures("chunk_rows")
def test_listing_that_never_settles_is_partial_and_deletes_nothing(
    oa_setup: Any, qrsync: Any, db: Any
) -> None:
    oa_setup.admin.generate_rules(OA, 300, miniprogram_appid=OA_MP)
    qrsync("sync")
    oa_setup.admin.add_fault(
        endpoint="qrcodejumpget", page_num=2, times=3, drift={"add": 2, "delete": 1}
    )
    result = qrsync("sync", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)["accounts"][0]
    assert summary["status"] == "partial"
    assert "deleted nothing" in summary["message"]
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NOT NULL") == 0
    # What was seen is applied: rules added during the listing are there.
    assert scalar(db, "SELECT count(*) FROM rules") > 300
    assert scalar(db, "SELECT pages FROM sync_runs ORDER BY id DESC LIMIT 1") == 3 * 7
    assert scalar(db, "SELECT complete FROM account_snapshots ORDER BY id DESC LIMIT 1") is False
    assert_history_consistent(db)


@pytest.mark.usefixtures("chunk_rows")
def test_prefix_refresh_uses_get_type_1_and_deletes_nothing(
    oa_setup: Any, qrsync: Any, db: Any
) -> None:
    oa_setup.admin.generate_rules(OA, 450, miniprogram_appid=OA_MP, published_fraction=0)
    qrsync("sync")
    truth = oa_setup.admin.rules(OA, OA_MP)
    user = WeChatUser(oa_setup.url, OA, OA_SECRET, miniprogram_appid=OA_MP)
    user.publish(truth[5]["prefix"])
    user.delete(truth[6]["prefix"])
    oa_setup.admin.clear_calls()
    wanted = [r["prefix"] for r in truth[:250]]
    args = ["sync", "--account", "oa", "--json"]
    for prefix in wanted:
        args += ["--prefix", prefix]
    result = qrsync(*args)
    assert result.exit_code == 0, result.output
    calls = oa_setup.admin.calls(endpoint="qrcodejumpget")
    assert [c["get_type"] for c in calls] == [1, 1]
    assert scalar(db, "SELECT state FROM rules WHERE prefix = %s", truth[5]["prefix"]) == 2
    assert scalar(db, "SELECT count(*) FROM rules WHERE deleted_at IS NOT NULL") == 0
    summary = json.loads(result.stdout)["accounts"][0]
    assert "1 not found" in summary["message"]
    assert scalar(db, "SELECT complete FROM account_snapshots ORDER BY id DESC LIMIT 1") is False


@pytest.mark.usefixtures("chunk_rows")
def test_deletions_stand_when_the_prefix_check_cannot_answer(
    oa_setup: Any, qrsync: Any, db: Any
) -> None:
    oa_setup.admin.generate_rules(OA, 120, miniprogram_appid=OA_MP)
    qrsync("sync")
    truth = oa_setup.admin.rules(OA, OA_MP)
    oa_setup.admin.put_rules(OA, truth[2:], miniprogram_appid=OA_MP)
    oa_setup.admin.add_fault(endpoint="qrcodejumpget", get_type=1, errcode=40097, times=-1)
    result = qrsync("sync", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["accounts"][0]
    assert summary["status"] == "succeeded" and summary["deleted"] == 2
    assert "not confirmed" in summary["message"]


# --- unchanged listings (digests, migration 0008) ------------------------------------------------


def _rules_and_xmins(db: Any) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT prefix, path, state, xmin::text FROM rules ORDER BY prefix")


def _summary(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)["accounts"][0]
    return summary


@pytest.mark.usefixtures("chunk_rows")
def test_an_unchanged_listing_writes_nothing(oa_setup: Any, qrsync: Any, db: Any) -> None:
    oa_setup.admin.generate_rules(OA, 130, miniprogram_appid=OA_MP, published_fraction=0.5)
    qrsync("sync")
    before = _rules_and_xmins(db)
    history = scalar(db, "SELECT count(*) FROM rule_versions")
    for _ in range(2):
        summary = _summary(qrsync("sync", "--json"))
        assert (summary["rules_seen"], summary["unchanged"]) == (130, 130)
        assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 0, 0)
    assert _rules_and_xmins(db) == before
    assert scalar(db, "SELECT count(*) FROM rule_versions") == history
    assert scalar(db, "SELECT count(*) FROM staged_rules") == 0
    snapshot = rows(db, "SELECT rule_count, complete FROM account_snapshots ORDER BY id DESC")
    assert snapshot[0] == (130, True)


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize("where", [0, 65, 129])
def test_a_listing_that_differs_anywhere_is_applied(
    oa_setup: Any, qrsync: Any, db: Any, where: int
) -> None:
    oa_setup.admin.generate_rules(OA, 130, miniprogram_appid=OA_MP, published_fraction=0)
    qrsync("sync")
    listing = oa_setup.admin.rules(OA, OA_MP)
    listing[where]["path"] += "/v2"
    gone = listing.pop((where + 50) % 130)
    oa_setup.admin.put_rules(OA, listing, miniprogram_appid=OA_MP)
    summary = _summary(qrsync("sync", "--json"))
    assert (summary["updated"], summary["deleted"], summary["unchanged"]) == (1, 1, 128)
    stored = set(rows(db, "SELECT prefix, path FROM rules WHERE deleted_at IS NULL"))
    assert stored == {(r["prefix"], r["path"]) for r in listing}
    assert scalar(db, "SELECT deleted_at IS NOT NULL FROM rules WHERE prefix = %s", gone["prefix"])
    assert_history_consistent(db)


@pytest.mark.usefixtures("chunk_rows")
@pytest.mark.parametrize("change", ["shorter", "longer"])
def test_a_listing_that_only_ends_differently_is_applied(
    oa_setup: Any, qrsync: Any, db: Any, change: str
) -> None:
    oa_setup.admin.generate_rules(OA, 120, miniprogram_appid=OA_MP, published_fraction=0)
    qrsync("sync")
    listing = oa_setup.admin.rules(OA, OA_MP)
    if change == "shorter":
        listing = listing[:-3]
    else:
        listing += [rule(f"http://weixin.qq.com/q/extra{i}", path="pages/x") for i in range(3)]
    oa_setup.admin.put_rules(OA, listing, miniprogram_appid=OA_MP)
    summary = _summary(qrsync("sync", "--json"))
    expected = (0, 3) if change == "shorter" else (3, 0)
    assert (summary["inserted"], summary["deleted"]) == expected
    stored = {p for (p,) in rows(db, "SELECT prefix FROM rules WHERE deleted_at IS NULL")}
    assert stored == {r["prefix"] for r in listing}
    assert_history_consistent(db)


@pytest.mark.usefixtures("chunk_rows")
def test_a_prefix_refresh_in_between_is_not_mistaken_for_no_change(
    oa_setup: Any, qrsync: Any, db: Any
) -> None:
    """Rules changed by a refresh by prefix no longer equal the last listing: when WeChat
    goes back to that listing, the next sync must write the rule back."""
    oa_setup.admin.generate_rules(OA, 130, miniprogram_appid=OA_MP, published_fraction=0)
    qrsync("sync")
    listing = oa_setup.admin.rules(OA, OA_MP)
    target, old_path = listing[70]["prefix"], listing[70]["path"]
    listing[70]["path"] = old_path + "/v2"
    oa_setup.admin.put_rules(OA, listing, miniprogram_appid=OA_MP)
    qrsync("sync", "--account", "oa", "--prefix", target)
    assert scalar(db, "SELECT path FROM rules WHERE prefix = %s", target) == old_path + "/v2"
    listing[70]["path"] = old_path
    oa_setup.admin.put_rules(OA, listing, miniprogram_appid=OA_MP)
    summary = _summary(qrsync("sync", "--json"))
    assert (summary["updated"], summary["unchanged"]) == (1, 129)
    assert scalar(db, "SELECT path FROM rules WHERE prefix = %s", target) == old_path
    assert_history_consistent(db)


@pytest.mark.usefixtures("chunk_rows")
def test_deletions_held_back_are_held_again_until_allowed(
    oa_setup: Any, qrsync: Any, db: Any
) -> None:
    oa_setup.admin.generate_rules(OA, 130, miniprogram_appid=OA_MP, published_fraction=0)
    qrsync("sync")
    listing = oa_setup.admin.rules(OA, OA_MP)[:30]
    oa_setup.admin.put_rules(OA, listing, miniprogram_appid=OA_MP)
    for _ in range(2):
        result = qrsync("sync", "--json")
        summary = json.loads(result.stdout)["accounts"][0]
        assert (summary["status"], summary["deleted"]) == ("partial", 0), result.output
        assert "100 of 130 live rules are missing" in summary["message"]
    summary = _summary(qrsync("sync", "--account", "oa", "--allow-mass-delete", "--json"))
    assert summary["deleted"] == 100
    summary = _summary(qrsync("sync", "--json"))
    assert (summary["status"], summary["unchanged"], summary["deleted"]) == ("succeeded", 30, 0)
