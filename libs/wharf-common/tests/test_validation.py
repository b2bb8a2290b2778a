"""The shared field types say in their JSON schema what they accept (issue 32): the schema, as a
JSON Schema validator reads it (jsonschema-rs, the one schemathesis uses), and the type agree."""

from __future__ import annotations

import string
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from wharf_common.validation import EMAIL_MAX_LENGTH, Email, Name, trimmed_text


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name = "x"
    email: Email = "x@example.com"
    login: trimmed_text(320) = "x"  # type: ignore[valid-type]


def _schema(field: str) -> Any:
    return jsonschema_rs.validator_for(
        Body.model_json_schema(mode="validation")["properties"][field], validate_formats=True
    )


SCHEMAS = {field: _schema(field) for field in ("name", "email", "login")}


def accepted(field: str, value: str) -> bool:
    try:
        Body.model_validate({field: value})
    except ValidationError:
        return False
    return True


def documented(field: str, value: str) -> bool:
    return SCHEMAS[field].is_valid(value)


EXAMPLES = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
# Text that often comes close to a rule: the characters every rule is about, whitespace, controls.
NEAR_TEXT = st.text(st.sampled_from([*" \t\n\x00\x7f\x85\xa0\u2003\u3000\ufeff", "a", "Z", "é", "😀", "\u0301"]))


@EXAMPLES
@given(st.one_of(st.text(), NEAR_TEXT, st.text(min_size=95, max_size=110)))
@pytest.mark.parametrize("field", ["name", "login"])
def test_free_text_is_accepted_exactly_when_its_schema_says(field: str, value: str) -> None:
    assert accepted(field, value) == documented(field, value), repr(value)


def test_free_text_is_kept_without_its_surrounding_whitespace() -> None:
    assert Body.model_validate({"name": "\u3000 Grace Hopper\u2003"}).name == "Grace Hopper"
    for blank in ("", " ", "\u2003\u00a0", "\x85"):
        assert not accepted("name", blank)
        assert not documented("name", blank)
    assert accepted("name", " " * 99 + "x")
    assert not accepted("name", " " * 100 + "x")  # the length is counted as sent


# ASCII text near an address: the characters of every rule, in the places they matter.
ADDRESS_CHARACTERS = string.ascii_letters[:6] + 'XNxn09-._+!#~"(),:;<>@[\\] '
LABEL = st.text("abcxn09-", min_size=1, max_size=8)
ASCII_ADDRESSES = st.one_of(
    st.emails(),
    st.text(ADDRESS_CHARACTERS, max_size=30),
    st.builds(
        lambda local, labels, top: f"{local}@{'.'.join([*labels, top])}",
        st.text(ADDRESS_CHARACTERS, min_size=0, max_size=6),
        st.lists(LABEL, min_size=0, max_size=3),
        st.sampled_from(["com", "test", "TEST", "Local", "arpa", "io", "c0m", "x1", "b", "localhostx", ""]),
    ),
    st.builds(lambda n, m: "a" * n + "@" + "b" * m + ".com", st.integers(1, 250), st.integers(55, 70)),
)


@EXAMPLES
@given(ASCII_ADDRESSES)
def test_an_ascii_address_is_accepted_exactly_when_its_schema_says(value: str) -> None:
    """email-validator's rules, stated by the pattern, formats and length (Punycode labels aside:
    whether one decodes is beyond a pattern, and the field's description says so)."""
    if "xn--" in value.lower():
        return
    assert accepted("email", value) == documented("email", value), repr(value)


INTERNATIONAL = [
    "josé@exämple.com",
    "用户@例子.广告",
    "a@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com",  # full-width letters: UTS 46 maps them
    "a@example\uff0ecom",  # and takes the full-width full stop for a dot
    "a@xn--bcher-kva.ch",
    "e\u0301@example.com",  # NFC-normalized to é
    "δοκιμή@παράδειγμα.δοκιμή",
]


@pytest.mark.parametrize("value", INTERNATIONAL)
def test_every_internationalized_address_the_service_accepts_its_schema_allows(value: str) -> None:
    assert accepted("email", value)
    assert documented("email", value)


@EXAMPLES
@given(st.from_regex(r"[a-zé\u0301\u00a0\u200b😀.-]{1,8}@[a-zé\u00a0\u3002-]{1,8}\.[a-zé\u3002]{1,5}", fullmatch=True))
def test_an_internationalized_address_the_service_accepts_its_schema_allows(value: str) -> None:
    """Beyond ASCII, the schema cannot say everything (the description states the rest), but it
    never refuses what the service accepts."""
    if accepted("email", value):
        assert documented("email", value), repr(value)


@pytest.mark.parametrize(
    "value",
    ["", " a@example.com", "a@example.com ", '"a b"@example.com', "a@[192.0.2.1]", "a@example", "a@x.test"],
)
def test_what_email_validator_refuses_the_schema_refuses(value: str) -> None:
    assert not accepted("email", value)
    assert not documented("email", value)


def test_the_longest_address_is_the_schemas_longest() -> None:
    longest = "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".com"
    assert len(longest) == EMAIL_MAX_LENGTH
    assert accepted("email", longest)
    assert documented("email", longest)
    assert not accepted("email", "a" + longest)
    assert not documented("email", "a" + longest)
