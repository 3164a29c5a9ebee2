"""Base64 decoding as Kong's plugins get it from nginx (``ngx.decode_base64``), so the same
credentials and tokens are accepted or refused: padding optional, decoding stops at the first
``=``, any other character outside the alphabet (whitespace included) refuses the whole value,
and a length of 1 modulo 4 is refused."""

from __future__ import annotations

import base64
import re
from typing import Final

_STANDARD: Final = re.compile(r"[A-Za-z0-9+/]*")
_URL_TO_STANDARD: Final = str.maketrans("-_", "+/")


def decode(text: str) -> bytes | None:
    """``ngx.decode_base64``: the standard alphabet; ``None`` when nginx would return nil."""
    body = text.split("=", 1)[0]
    if len(body) % 4 == 1 or not _STANDARD.fullmatch(body):
        return None
    return base64.b64decode(body + "=" * (-len(body) % 4))


def decode_url(text: str) -> bytes | None:
    """The jwt plugin's ``base64_decode``: URL-safe characters mapped to standard ones first
    (both alphabets are accepted, as in Kong)."""
    return decode(text.translate(_URL_TO_STANDARD))
