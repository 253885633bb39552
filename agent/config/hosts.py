"""[mqtt] hosts: a broker's nodes as "host:port" entries, read here alone (the agent's config and the fleet's --host).

A clustered broker (EMQX, HiveMQ, VerneMQ, NATS) is reached through any of its nodes; the agent takes
the first that answers and moves to the next in turn when the connection is lost (agent/transport/client.py).
"""

from __future__ import annotations

import re

from agent.config.keys import BadEntry

__all__ = ["HOSTS", "host_port", "valid_hosts"]

HOSTS = 'a list of "host:port" ("host" alone takes mqtt.port, "[IPv6]:port"; a:1883,b:1883 in the environment)'

# A host name or IPv4 address (no spaces, colons, brackets, commas or slashes), or an IPv6 address in brackets.
_ENTRY_RE = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<v6port>\d{1,5}))?|(?P<host>[^\s:\[\],/]+)(?::(?P<port>\d{1,5}))?"
)


def host_port(entry: str, default_port: int) -> tuple[str, int]:
    """("host", port) of one entry; ValueError when it is not "host", "host:port" or "[IPv6]:port" (port 1..65535)."""
    match = _ENTRY_RE.fullmatch(entry.strip())
    if match is None:
        raise ValueError(entry)
    port = int(match["v6port"] or match["port"] or default_port)
    if not 1 <= port <= 65535:
        raise ValueError(entry)
    return match["v6"] or match["host"], port


def valid_hosts(entries: tuple[str, ...]) -> bool:
    """True when every entry reads; BadEntry naming the first that does not (a list is too long to quote whole)."""
    for entry in entries:
        try:
            host_port(entry, 1883)
        except ValueError:
            raise BadEntry(entry) from None
    return True
