"""The outbound destination policy: which hosts and addresses the server may push to.

Why: any client that may create a promise or register a listener chooses an address the server
then POSTs to. Without a policy that is a server-side request forgery primitive (the cloud
metadata server hands out the server's credentials; internal services trust the VPC).

The same rules run twice (`Policy.refusal` on a host name and one IP address):
- when an address is registered (`shared.service.Service.check_destinations`, answer 400);
- when a push connects (`shared.delivery.push`): every address the host resolves to *then* is
  filtered and only an allowed one is dialled, so DNS that changes after registration (DNS
  rebinding) cannot reach a refused address.

Rules, in order (the first that matches decides):
1. Always refused: cloud metadata names (`metadata.google.internal`, `metadata`, ...) and
   addresses (169.254.169.254, fd00:ec2::254, 100.100.100.200, ...), link-local 169.254.0.0/16
   and fe80::/10, "this network" 0.0.0.0/8, unspecified, multicast, broadcast and reserved
   ranges. IPv6 forms that embed an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible,
   NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by the IPv4 address too.
2. `deny` entries: always refused.
3. `allow` non-empty: only destinations matching an entry; a matching entry also lifts
   `deny_private` for that destination (it is the operator's explicit statement).
4. `deny_private`: loopback (127.0.0.0/8, ::1), RFC 1918, CGNAT 100.64.0.0/10, fc00::/7, and the
   names `localhost` / `*.localhost`.

Entries are CIDR blocks or single addresses (`10.0.0.0/8`, `2001:db8::1`) matched against the
address, or host names matched against the URL's host: `workers.example.com` matches exactly that
name, `.example.com` (leading dot) every name below it (not `example.com` itself). Names are
compared case-insensitively without a trailing dot; they are never matched by reverse DNS.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata", "metadata.goog",  # Google Cloud
    "instance-data", "instance-data.ec2.internal",  # AWS
})
ALWAYS = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16",  # link-local, incl. the metadata servers of GCP, AWS, Azure, OCI (169.254.169.254)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure wire server
    "0.0.0.0/8",  # "this network" (0.0.0.0 reaches the local host on Linux)
    "::/128",  # unspecified
    "224.0.0.0/4", "ff00::/8",  # multicast
    "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
))
PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",  # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
    "fc00::/7",  # unique local IPv6
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPAT = ipaddress.ip_network("::/96")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


class DestinationRefused(Exception):
    """A push was not sent: no address of its host is allowed (deliberately not an OSError, so
    urllib3 lets it through unwrapped)."""


def _name(host: str) -> str:
    return host.strip().lower().rstrip(".")


def ip_of(host: str) -> IP | None:
    """The address a URL host spells literally (brackets and an IPv6 zone allowed), else None.
    Only the canonical forms: `0251.0376.0251.0376` or `2852039166` are names here, which the
    resolver turns into 169.254.169.254, and that address is what gets judged."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return None


def embedded(ip: IP) -> list[IP]:
    """The address itself and any IPv4 address an IPv6 form carries (and would reach)."""
    out: list[IP] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        packed = int(ip)
        if ip.ipv4_mapped is not None:
            out.append(ip.ipv4_mapped)
        elif ip in _NAT64 or (ip in _COMPAT and packed > 1):
            out.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
    return out


def _valid_name(name: str) -> bool:
    labels = name.split(".")
    return bool(name) and len(name) <= 253 and all(_LABEL.fullmatch(x) for x in labels) \
        and not labels[-1].isdigit()


@dataclass(frozen=True)
class Rules:
    """One list of entries (`allow` or `deny`), parsed."""
    nets: tuple[Net, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com"

    @classmethod
    def parse(cls, key: str, entries: Iterable[str]) -> Rules:
        """ValueError naming `key` and the entry when one is neither a CIDR nor a host name."""
        nets: list[Net] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in entries:
            e = _name(raw)
            try:
                nets.append(ipaddress.ip_network(e.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if e.startswith(".") and _valid_name(e[1:]):
                suffixes.append(e)
            elif _valid_name(e):
                names.add(e)
            else:
                raise ValueError(f"{key}: {raw!r} is neither a CIDR block (e.g. 10.0.0.0/8) nor a host name "
                                 "(e.g. workers.example.com, or .example.com for every name below it)")
        return cls(tuple(nets), frozenset(names), tuple(suffixes))

    def __bool__(self) -> bool:
        return bool(self.nets or self.names or self.suffixes)

    def name_entry(self, host: str) -> str | None:
        h = _name(host)
        if h in self.names:
            return h
        return next((s for s in self.suffixes if h.endswith(s)), None)

    def ip_entry(self, ips: list[IP]) -> str | None:
        return next((str(n) for n in self.nets for ip in ips if ip.version == n.version and ip in n), None)


class Policy:
    """Parsed once from `transports.http_push`; `refusal(host, ip)` says why a destination is
    refused (None: allowed)."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = (), deny_private: bool = False) -> None:
        self.allow = Rules.parse("transports.http_push.allow", allow)
        self.deny = Rules.parse("transports.http_push.deny", deny)
        self.deny_private = deny_private

    @classmethod
    def from_config(cls, push: object) -> Policy:
        return cls(getattr(push, "allow", ()), getattr(push, "deny", ()), bool(getattr(push, "deny_private", False)))

    @property
    def open_names(self) -> bool:
        """No rule can refuse a public name that does not resolve (only the fixed ranges apply)."""
        return not self.allow

    def name_refusal(self, host: str) -> str | None:
        """What the host name alone decides (before any address is known)."""
        h = _name(host)
        if h in METADATA_NAMES:
            return "is a cloud metadata host (always refused)"
        entry = self.deny.name_entry(h)
        if entry is not None:
            return f"matches transports.http_push.deny entry {entry!r}"
        if self.deny_private and _is_localhost(h) and self.allow.name_entry(h) is None:
            return "is a loopback name (transports.http_push.deny_private is on)"
        return None

    def refusal(self, host: str, ip: IP | str) -> str | None:
        """Why pushing to `ip` (an address of `host`, the URL's host) is refused, or None."""
        addr = ipaddress.ip_address(ip.split("%", 1)[0]) if isinstance(ip, str) else ip
        why = self.name_refusal(host)
        if why is not None:
            return why
        ips = embedded(addr)
        for ip4 in ips:
            for net in ALWAYS:
                if ip4.version == net.version and ip4 in net:
                    return f"has address {addr} in {net} (link-local, cloud metadata or reserved: always refused)"
        entry = self.deny.ip_entry(ips)
        if entry is not None:
            return f"has address {addr} in transports.http_push.deny entry {entry!r}"
        allowed = self.allow.name_entry(host) is not None or self.allow.ip_entry(ips) is not None
        if self.allow and not allowed:
            return f"has address {addr}, which transports.http_push.allow does not list"
        if self.deny_private and not allowed:
            for ip4 in ips:
                for net in PRIVATE:
                    if ip4.version == net.version and ip4 in net:
                        return f"has address {addr}, a private or loopback address " \
                               "(transports.http_push.deny_private is on)"
        return None

    def unresolved_refusal(self, host: str) -> str | None:
        """A name that does not resolve now: accepted unless an allow-list exists and does not
        name it (the push re-checks whatever it resolves to when it connects)."""
        if self.allow and self.allow.name_entry(host) is None:
            return "does not resolve, and transports.http_push.allow does not list the name"
        return None


def _is_localhost(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost") or name == "localhost.localdomain"


def resolve(host: str, port: int | None, family: int = socket.AF_UNSPEC) -> list[tuple]:
    """getaddrinfo for a TCP connection (looked up at call time: gevent patches it)."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return socket.getaddrinfo(h, port, family, socket.SOCK_STREAM)


def check_url(policy: Policy, host: str, port: int | None) -> str | None:
    """The registration-time verdict for one http(s) host: None, or why it is refused. Every
    address the name resolves to must be allowed (a name that also points at a refused address
    is refused outright); a name that does not resolve is judged by `unresolved_refusal`."""
    literal = ip_of(host)
    if literal is not None:
        return policy.refusal(host, literal)
    why = policy.name_refusal(host)
    if why is not None:
        return why
    try:
        infos = resolve(host, port)
    except (OSError, UnicodeError):
        return policy.unresolved_refusal(host)
    for info in infos:
        why = policy.refusal(host, info[4][0])
        if why is not None:
            return why
    return None


def project_refusal(allow_projects: Iterable[str], project: str) -> str | None:
    """gcps:// publishes only to listed projects (when the list is set)."""
    allowed = tuple(allow_projects)
    if allowed and project not in allowed:
        return f"project {project!r} is not on transports.gcps.allow_projects"
    return None
