"""Sealed tokens: a value the gateway hands a client that the client can neither read nor
forge (the MCP session id, holding the upstream session ids).

Stdlib only (the core runs under Pyodide): encrypt-then-MAC with HMAC-SHA256 throughout.
Two keys are derived from the configured secret (HMAC(secret, label)); the plaintext is
XORed with a keystream of HMAC(enc_key, nonce || counter) blocks (a PRF in counter mode,
a fresh random 16-byte nonce per token), and a 128-bit tag HMAC(mac_key, version || nonce
|| ciphertext) authenticates it all. The tag is checked (constant time) before anything is
decrypted. See docs/security.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_VERSION = b"s1"
_NONCE = 16
_TAG = 16
_BLOCK = 32  # one SHA-256 output


class Sealer:
    def __init__(self, secret: bytes, purpose: str) -> None:
        root = hmac.new(secret, b"flaregate-seal:" + purpose.encode(), hashlib.sha256).digest()
        self._enc = hmac.new(root, b"encrypt", hashlib.sha256).digest()
        self._mac = hmac.new(root, b"authenticate", hashlib.sha256).digest()

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        # hmac.digest: the one-shot C path, several times cheaper than hmac.new per block.
        blocks = [hmac.digest(self._enc, nonce + i.to_bytes(4, "big"), "sha256")
                  for i in range((length + _BLOCK - 1) // _BLOCK)]
        return b"".join(blocks)[:length]

    def _tag(self, nonce: bytes, ciphertext: bytes) -> bytes:
        return hmac.digest(self._mac, _VERSION + nonce + ciphertext, "sha256")[:_TAG]

    def seal(self, plaintext: bytes, nonce: bytes | None = None) -> str:
        nonce = nonce if nonce is not None else os.urandom(_NONCE)
        ciphertext = _xor(plaintext, self._keystream(nonce, len(plaintext)))
        token = nonce + ciphertext + self._tag(nonce, ciphertext)
        return _VERSION.decode() + "." + base64.urlsafe_b64encode(token).rstrip(b"=").decode()

    def open(self, token: str) -> bytes | None:
        """The plaintext, or None for anything not sealed by this key (never raises)."""
        prefix, _, body = token.partition(".")
        if prefix != _VERSION.decode() or not body or len(body) > 8192:
            return None
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        if len(raw) < _NONCE + _TAG:
            return None
        nonce, ciphertext, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(nonce, ciphertext)):
            return None
        return _xor(ciphertext, self._keystream(nonce, len(ciphertext)))


def _xor(data: bytes, stream: bytes) -> bytes:
    """Byte-wise XOR as one big-integer operation (a Python loop per byte costs far more,
    under Pyodide most of all)."""
    if not data:
        return b""
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")
