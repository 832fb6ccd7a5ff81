"""masking: every known secret is hidden wherever it stands, however many are known (a fleet's
tokens), registered one by one or all at once."""

from __future__ import annotations

import secrets

from qrsync import masking
from qrsync.masking import MASK, mask, register_secret, register_secrets


def _token(tag: str) -> str:
    return f"{secrets.token_urlsafe(48)}-{tag}"


def test_thousands_of_secrets_registered_one_by_one_are_all_masked() -> None:
    tokens = [_token(f"one{i}") for i in range(3000)]
    for token in tokens:
        register_secret(token)
    text = " | ".join(f"account {i}: token {t}." for i, t in enumerate(tokens))
    masked = mask(text)
    assert not any(token in masked for token in tokens)
    assert masked.count(MASK) == len(tokens)
    assert masked.startswith(f"account 0: token {MASK}.")


def test_secrets_registered_at_once_and_just_now_are_masked() -> None:
    primed = [_token(f"primed{i}") for i in range(500)]
    register_secrets(primed)
    just_now = _token("just-now")
    register_secret(just_now)  # (waits among the recent ones until the next rebuild)
    line = f"url?access_token_x={primed[250]}&other={just_now} end"
    assert mask(line) == f"url?access_token_x={MASK}&other={MASK} end"


def test_overlapping_and_adjacent_secrets_are_masked_whole() -> None:
    long = "Zq8-overlap-secret-long-one"
    short = "Zq8-overlap"  # a prefix of the long one
    tail = "one-and-more-Zq8"  # overlaps the long one's end
    tiny = "Zq9x"  # shorter than the automaton's keys
    register_secrets([long, short, tail, tiny])
    assert mask(f"<{long}>") == f"<{MASK}>"
    assert mask(f"<{short}!>") == f"<{MASK}!>"
    assert mask("<Zq8-overlap-secret-long-one-and-more-Zq8>") == f"<{MASK}>"
    assert mask(f"{tiny}{tiny} {tiny}") == f"{MASK}{MASK} {MASK}"


def test_a_large_document_is_masked_throughout() -> None:
    token = _token("large")
    register_secret(token)
    # (Nothing that a secret registered by another test of this process could match.)
    document = "".join(f"{{'行': {i}, 'token': '{token}'}}\n" for i in range(2000))  # 0.2 MB
    masked = mask(document)
    assert token not in masked
    assert masked.splitlines()[1999] == f"{{'行': 1999, 'token': '{MASK}'}}"


def test_registering_a_known_secret_changes_nothing() -> None:
    token = _token("again")
    register_secret(token)
    finder = masking._finder
    register_secrets([token, token, None, "abc"])  # known, repeated, nothing, too short
    assert masking._finder is finder
