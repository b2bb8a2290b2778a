"""Which key of the signing-key directory signs: publication times, activation, the fallbacks.

The service-level behaviour (the JWKS, tokens, verifiers) is in test_auth.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from wharf_auth.keys import KeyRing, load_keys

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole second
NAMED_AT_T = "20270115T080000Z.pem"


def ring_at(directory: Path, now: float, activation: float = 10) -> KeyRing:
    return KeyRing(directory, activation_seconds=activation, clock=lambda: now)


def test_a_name_in_the_rotation_format_is_its_publication_time_whatever_its_mtime(
    tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    kid = signing_key_writer(tmp_path, NAMED_AT_T)
    os.utime(tmp_path / NAMED_AT_T, (T - 3600, T - 3600))  # e.g. restored from a backup
    (key,) = load_keys(tmp_path)
    assert (key.kid, key.published) == (kid, T)


def test_a_name_not_in_the_rotation_format_falls_back_to_the_files_mtime(
    tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    first = signing_key_writer(tmp_path, "zz-operator-key.pem")
    second = signing_key_writer(tmp_path, "aa-operator-key.pem")  # sorts first by name, published later
    os.utime(tmp_path / "zz-operator-key.pem", (T - 100, T - 100))
    os.utime(tmp_path / "aa-operator-key.pem", (T - 5, T - 5))
    assert [(k.kid, k.published) for k in load_keys(tmp_path)] == [(first, T - 100), (second, T - 5)]
    assert ring_at(tmp_path, T).signing_key().kid == first  # the second is 5 s old: not yet
    assert ring_at(tmp_path, T + 5).signing_key().kid == second


def test_with_no_key_old_enough_the_oldest_signs_until_a_newer_one_is_activated(
    tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    oldest = signing_key_writer(tmp_path, "20270115T075958Z.pem")  # T - 2
    newest = signing_key_writer(tmp_path, NAMED_AT_T)
    now = T
    ring = KeyRing(tmp_path, activation_seconds=10, clock=lambda: now)
    assert ring.signing_key().kid == oldest  # neither is 10 s old
    now = T + 8  # the oldest is activated, the newest not yet
    assert ring.signing_key().kid == oldest
    now = T + 10
    assert ring.signing_key().kid == newest
    assert {k["kid"] for k in ring.jwks()["keys"]} == {oldest, newest}


def test_a_key_named_in_the_future_waits_behind_an_activated_one(
    tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    current = signing_key_writer(tmp_path, "20200101T000000Z.pem")
    signing_key_writer(tmp_path, NAMED_AT_T)
    assert ring_at(tmp_path, T - 86_400).signing_key().kid == current


def test_without_an_activation_delay_the_newest_key_signs_at_once(
    tmp_path: Path, signing_key_writer: Callable[[Path, str], str]
) -> None:
    signing_key_writer(tmp_path, "20200101T000000Z.pem")
    newest = signing_key_writer(tmp_path, NAMED_AT_T)
    assert ring_at(tmp_path, T, activation=0).signing_key().kid == newest
