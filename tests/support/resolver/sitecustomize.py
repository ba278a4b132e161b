"""Test-only DNS for server subprocesses: with this folder on PYTHONPATH and
`RESONATE_TEST_HOSTS=/path/hosts.json` ({"name": ["ip", ...]}), those names resolve to those
addresses, read from the file on every lookup (a test rewrites it to change DNS between
registration and delivery); other names resolve normally. It replaces `_socket.getaddrinfo`,
which both `socket.getaddrinfo` and gevent's threaded resolver call at lookup time."""
import _socket
import json
import os

_FILE = os.environ.get("RESONATE_TEST_HOSTS")
_real = _socket.getaddrinfo


def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    name = host.decode() if isinstance(host, bytes) else host
    try:
        with open(_FILE) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    ips = table.get((name or "").lower().rstrip("."))
    if ips is None:
        return _real(host, port, family, type, proto, flags)
    out = []
    for ip in ips:
        for info in _real(ip, port, family, type, proto, flags | _socket.AI_NUMERICHOST):
            out.append(info)
    if not out:
        raise _socket.gaierror(_socket.EAI_NONAME, "Name or service not known")
    return out


if _FILE:
    _socket.getaddrinfo = _getaddrinfo
