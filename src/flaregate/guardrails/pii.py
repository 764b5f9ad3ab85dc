"""Precise PII patterns, each with a check beyond the regex where one exists.

Payment cards must pass Luhn, IBANs the ISO 7064 mod-97 check, IP addresses parse with
``ipaddress``; phone numbers are taken only in international (``+CC ...``) or North
American ``(NNN) NNN-NNNN`` form, so order numbers and dates are not mistaken for them.
Compiled once per isolate (module level, no I/O).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

KINDS = ("secret", "email", "iban", "card", "phone", "ip")


def luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = ord(ch) - 48
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and luhn(digits)


def _iban(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_PATTERNS: dict[str, tuple[re.Pattern[str], Callable[[str], bool] | None]] = {
    "secret": (re.compile(
        r"(?<![\w-])(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
        r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,})(?![\w-])"), None),
    "email": (re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
                         r"\.[A-Za-z]{2,24}(?![\w-])"), None),
    "iban": (re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"),
             _iban),
    "card": (re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    "phone": (re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}"
                         r"|\(\d{3}\) ?\d{3}-\d{4})(?![\d])"), None),
    "ip": (re.compile(r"(?<![\w.:])(?:(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})"
                      r"(?![\w:]|\.\d)"), _ip),
}


def find(text: str, kinds: tuple[str, ...] = KINDS) -> dict[str, int]:
    """How many of each kind ``text`` holds (the matches themselves are never returned)."""
    found: dict[str, int] = {}
    redact(text, kinds, found)
    return found


def redact(text: str, kinds: tuple[str, ...] = KINDS, found: dict[str, int] | None = None) -> str:
    """``text`` with each match replaced by ``[REDACTED_<KIND>]``; counts go into ``found``."""
    for kind in KINDS:
        if kind not in kinds:
            continue
        pattern, valid = _PATTERNS[kind]

        def replace(match: re.Match[str], kind: str = kind, valid: Callable[[str], bool] | None = valid) -> str:
            if valid is not None and not valid(match.group(0)):
                return match.group(0)
            if found is not None:
                found[kind] = found.get(kind, 0) + 1
            return f"[REDACTED_{kind.upper()}]"

        text = pattern.sub(replace, text)
    return text
