"""The PII corpus: true positives with their exact redactions, and near misses left alone."""

from __future__ import annotations

import pytest

from flaregate.guardrails.pii import find, luhn, redact

TRUE_POSITIVES = [
    ("write to ada.lovelace@example.co.uk today", "write to [REDACTED_EMAIL] today"),
    ("cc: a+b@mail-host.io, c_d@x.org.", "cc: [REDACTED_EMAIL], [REDACTED_EMAIL]."),
    ("card 4111 1111 1111 1111 expires", "card [REDACTED_CARD] expires"),
    ("amex 3782-822463-10005", "amex [REDACTED_CARD]"),
    ("pay 5555555555554444 now", "pay [REDACTED_CARD] now"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [REDACTED_IBAN] please"),
    ("DE89370400440532013000", "[REDACTED_IBAN]"),
    ("call +44 20 7946 0958 or +1-202-555-0143", "call [REDACTED_PHONE] or [REDACTED_PHONE]"),
    ("US (415) 555-2671.", "US [REDACTED_PHONE]."),
    ("from 192.168.1.20.", "from [REDACTED_IP]."),
    ("v6 2001:db8::8a2e:370:7334 here", "v6 [REDACTED_IP] here"),
    ("key sk-proj-abcdefghijklmnopqrstuvwx1234", "key [REDACTED_SECRET]"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED_SECRET]"),
    ("gh ghp_" + "a" * 36, "gh [REDACTED_SECRET]"),
]

NEAR_MISSES = [
    "card-like 4111 1111 1111 1112 fails Luhn",
    "order 1234567890123 (fails Luhn)",
    "IBAN GB82 WEST 1234 5698 7654 33 has a bad check",
    "no ip 999.1.1.1 or 1.2.3",
    "time 12:30:45 and date 2024-01-15",
    "user@localhost has no domain",
    "version v1.2 and sk-short",
    "a phone-ish 555-1234 without country code",
    "ratio 3:4:5",
]


@pytest.mark.parametrize(("text", "expected"), TRUE_POSITIVES)
def test_true_positives_are_redacted_exactly(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_left_alone(text):
    assert redact(text) == text
    assert find(text) == {}


def test_counts_by_kind_and_only_chosen_kinds():
    text = "a@b.io c@d.io 4111111111111111"
    assert find(text) == {"email": 2, "card": 1}
    assert redact(text, ("card",)) == "a@b.io c@d.io [REDACTED_CARD]"


def test_luhn():
    assert luhn("79927398713") and not luhn("79927398710")


@pytest.mark.parametrize("text", ["\x00" * 1000, "@" * 5000, "1" * 5000, ":" * 5000, "a@" * 2000 + "b.c",
                                  "+" + "1 " * 3000, "🙂@🙂.com 4111\u00a01111"])
def test_hostile_text_does_not_crash(text):
    assert isinstance(redact(text), str)
