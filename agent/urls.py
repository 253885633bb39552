"""URLs as the agent may show them: scheme, host, port and path, and nothing that grants access.

An IP camera's rtsp://user:password@cam/ URL, a signed download link's ?token=..., a fragment:
none of it may reach a log line, a stats payload, an MQTT message (retained ones are readable by
every client allowed on the topic) or an error. `public_url` is the one reduction the whole agent
uses. `scrub` takes a URL's secrets out of a text that may quote it, an exception's message or a
traceback: http.client, urllib and OpenCV put the raw URL, or its path and query, into theirs.

A password must be percent-encoded in the URL (RFC 3986): one holding a raw `?`, `#`, `/` or `@`
is read as ending there, by FFmpeg as by this module.
"""

from __future__ import annotations

import traceback
from urllib.parse import unquote, urlsplit, urlunsplit

HIDDEN = "***"
# A bare piece (a query or a password met without its `?` or `user:` around it) this short is
# also part of ordinary words: replacing it would garble the message and hide nothing real.
_MIN_BARE_CHARS = 4


def public_url(url: str) -> str:
    """`url` as scheme://host:port/path: without user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number, a broken [IPv6] bracket
        return _cut(url)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def shown_uri(uri: str) -> str:
    """A source or config value as it may be shown: URLs reduced by public_url, anything else (a path) as it is."""
    return public_url(uri) if "://" in uri else uri


def scrub(text: str, *urls: str) -> str:
    """`text` with every secret of each of `urls` taken out, in the forms exceptions quote them.

    The whole URL becomes its public_url; then `?query`, `#fragment` and `user:password@` go, in
    their raw, repr-escaped and percent-decoded forms, and the bare query and password become ***.
    """
    replacements: dict[str, str] = {}
    for url in urls:
        for secret, shown in _secrets(url):
            for form in {secret, repr(secret)[1:-1], unquote(secret)}:
                if form and form != shown:
                    replacements.setdefault(form, shown)
    # Longest first: the whole URL is replaced before the pieces it contains.
    for secret in sorted(replacements, key=len, reverse=True):
        text = text.replace(secret, replacements[secret])
    return text


def traceback_text(error: BaseException) -> str:
    """What log.exception would print for `error`, as text to scrub before it is logged."""
    return "".join(traceback.format_exception(error)).rstrip()


def _secrets(url: str) -> list[tuple[str, str]]:
    """(text that must not be shown, what to show instead) for one URL."""
    found = [(url, public_url(url))]
    _, sep, rest = url.partition("://")
    if not sep:
        return found
    netloc, _, _ = rest.partition("/")
    netloc = netloc.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    if at:
        found.append((f"{userinfo}@", ""))
        password = userinfo.partition(":")[2]
        if password:
            found.append((f":{password}@", "@"))
            if len(password) >= _MIN_BARE_CHARS:
                found.append((password, HIDDEN))
    before_fragment, hash_, fragment = url.partition("#")
    if hash_:
        found.append((f"#{fragment}", ""))
        if len(fragment) >= _MIN_BARE_CHARS:
            found.append((fragment, HIDDEN))
    _, question, query = before_fragment.partition("?")
    if question:
        found.append((f"?{query}", ""))
        if len(query) >= _MIN_BARE_CHARS:
            found.append((query, HIDDEN))
    return found


def _cut(url: str) -> str:
    """public_url for what urlsplit refuses: userinfo, query and fragment cut off by hand."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.split("?", 1)[0].split("#", 1)[0]
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2].split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{netloc}{slash}{path.split('?', 1)[0].split('#', 1)[0]}"
