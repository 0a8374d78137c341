"""Masking of credentials in text that is shown: error messages, reprs, log lines, observers.

Text-based on purpose: the values that most need masking are the ones that do not parse
(``redis://alice:s3cret@127.0.0.1:abc`` has no valid port, so ``urllib`` refuses it), and
they arrive inside other messages (pydantic's ``input_value=...``, an exception string).

What is masked:

- the password of a URL's user-info: ``redis://alice:s3cret@host`` -> ``redis://alice:***@host``
  (the user name is kept; it identifies the account without opening it);
- the value of a query parameter or ``key=value`` pair whose name says it is secret
  (``password``, ``token``, ``secret``, ``apikey``, ...): ``?password=x`` -> ``?password=***``;
- the value of such a key in the repr of a mapping or in JSON: ``'password': 'x'`` ->
  ``'password': '***'``.
"""

from __future__ import annotations

import re

MASK = "***"

# Parts of a key name that mark its value as a secret, compared without case, "_" or "-".
SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "appkey",
    "accesskey",
    "privatekey",
    "credential",
    "signature",
)

# scheme://user:password@ — the scheme may hold "_" (Kafka's SASL_SSL://) and follow any
# text ("url=redis://"); its length is bounded so that masking takes linear time. The password may
# hold ":", "?", "#" and even "@" (an "@" is the password's when another "@" follows before the
# host ends), never whitespace, a quote or "/": "http://host:80/@scope" holds no password.
_USERINFO = re.compile(
    r"""(?P<head>[A-Za-z][A-Za-z0-9+.\-_]{0,31}://[^\s:/?#@'"]*:)"""
    r"""(?P<password>(?:[^\s/@'"]|@(?=[^\s/?'"@]*@))+)"""
    r"""(?P<at>@)"""
)

# A value: quoted (the quotes stay) or bare, up to a separator.
_VALUE = r"""(?P<value>"[^"]*"|'[^']*'|[^\s&;,'"(){}\[\]]+)"""

# ?password=x, &token=y, ;secret=z, or password=x at the start of a word.
_KEY_VALUE = re.compile(r"""(?:^|(?<=[\s?&;,(]))(?P<key>[\w.\-]+)=""" + _VALUE)

# 'password': 'x', "token": "y", 'pin': 1234 (the repr of a dict, JSON)
_QUOTED_ITEM = re.compile(r"""(?P<q>['"])(?P<key>[\w.\-]+)(?P=q)\s*:\s*""" + _VALUE)


def is_secret_key(name: str) -> bool:
    """Whether a setting or parameter called ``name`` holds a secret (``sasl_password``,
    ``accessToken``, ``secretKey``, ``API-KEY``...)."""
    normal = name.replace("_", "").replace("-", "").lower()
    return any(word in normal for word in SECRET_KEY_WORDS)


def mask_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***``.

    Never raises: a URL that does not parse (bad port, odd scheme) is masked all the same.
    """
    return mask_secrets(url)


def mask_secrets(text: str) -> str:
    """``text`` with every credential it contains replaced by ``***`` (see the module doc)."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _KEY_VALUE.sub(_mask_value, text)
    if "'" in text or '"' in text:
        text = _QUOTED_ITEM.sub(_mask_value, text)
    return text


def _mask_value(match: re.Match[str]) -> str:
    if not is_secret_key(match["key"]):
        return match[0]
    value = match["value"]
    quote = value[0] if value[0] in "'\"" else ""
    head = match[0][: match.start("value") - match.start()]
    return f"{head}{quote}{MASK}{quote}"
