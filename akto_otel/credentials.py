"""How a request to Akto authenticates: one rule for doctor, the verdict and the delivery client.

Akto's data-ingestion service reads the raw token from the ``Authorization``
header (its ``AuthFilter``, no ``Bearer`` prefix). A gateway in front of it may
instead want HTTP basic auth, which users write into the URL
(``https://user:password@akto.example``). Both need the one ``Authorization``
header, so:

=======================================  ==============================================
settings                                 every request to Akto carries
=======================================  ==============================================
``AKTO_API_TOKEN`` (or ``AKTO_TOKEN``)     ``Authorization: <token>``
``user:password@`` in the URL             ``Authorization: Basic base64(user:password)``
both                                      refused: :class:`AktoConfigError` naming both
neither                                   no ``Authorization`` header
=======================================  ==============================================

The URL actually dialled never carries ``user:password@``: no HTTP library gets
to turn it into auth of its own (aiohttp refuses a URL with credentials next to an
``Authorization`` header; httpx would silently replace the token with them).

Usage::

    from akto_otel.credentials import akto_auth

    auth = akto_auth(settings.ingestion_url, settings.token)
    url = auth.base_url + "/api/ingestData"
    headers = {"Content-Type": "application/json", **auth.headers}
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from akto_otel.errors import AktoConfigError

__all__ = ["AktoAuth", "AuthForm", "akto_auth", "check_credentials"]

#: How a request authenticates: no header, the raw token, or basic auth from the URL.
AuthForm = Literal["none", "token", "basic"]

_CONFLICT = (
    "no user:password@ while AKTO_API_TOKEN (or AKTO_TOKEN, token=) is set: both would be "
    "the request's one Authorization header (basic auth for the URL's user, the raw token "
    "for Akto); keep one of them (docs/configuration.md, 'Credentials')"
)


@dataclass(frozen=True)
class AktoAuth:
    """What every request to Akto uses: the URL to dial and the auth header."""

    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    form: AuthForm = "none"


def _userinfo(url: str) -> tuple[str, str] | None:
    """The URL's (user, password), percent-decoded; None when it carries none."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return None
    info = netloc.rpartition("@")[0]
    user, _, password = info.partition(":")
    return unquote(user), unquote(password)


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def check_credentials(url: str, token: str) -> None:
    """Raise :class:`AktoConfigError` naming both: credentials in the URL and a token."""
    if token and _userinfo(url) is not None:
        raise AktoConfigError("AKTO_DATA_INGESTION_URL", url, _CONFLICT)


def akto_auth(url: str, token: str) -> AktoAuth:
    """The base URL without credentials and the ``Authorization`` header, by the rule above.

    Raises :class:`AktoConfigError` for the one combination that cannot work.
    """
    check_credentials(url, token)
    if token:
        return AktoAuth(url, {"Authorization": token}, "token")
    userinfo = _userinfo(url)
    if userinfo is None:
        return AktoAuth(url)
    pair = f"{userinfo[0]}:{userinfo[1]}".encode()
    header = "Basic " + base64.b64encode(pair).decode("ascii")
    return AktoAuth(_without_userinfo(url), {"Authorization": header}, "basic")
