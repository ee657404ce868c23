"""Downloading one file over HTTP(S), streamed to disk with a size cap and an address check.

By default only public addresses are fetched: loopback, private, link-local (which holds the
cloud metadata service at 169.254.169.254), multicast and reserved ranges are refused, at
every redirect hop, so a pipeline cannot make the server reach its own network (SSRF).

The host name is resolved once per hop, every address it gives is checked, and the connection
goes to a checked address: the transport is pinned to it, so a name that answers a public
address to the check and a private one a moment later (DNS rebinding) cannot slip through.
TLS still checks the certificate against the host name (SNI too), and the Host header is the
URL's. IPv6 addresses that embed an IPv4 one (IPv4-mapped and -translated, the deprecated
IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo) are judged by the
IPv4 address inside, which Python's `is_global` does not do. With the public-only policy the
server connects directly: an HTTP(S)_PROXY would resolve names itself, after our check.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

import httpcore
import httpx

from orchestrator.engine import OperationError

if TYPE_CHECKING:
    from orchestrator.preflight import Finding, Preflight

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_REDIRECTS = 5

Resolver = Callable[[str, int], list[str]]  # host, port -> IP addresses as text


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them (IPv6 zone ids dropped)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OperationError(f"cannot resolve {host!r}: {exc.strerror}") from None
    # Stream sockets give IPv4 and IPv6 addresses, whose host is text; typeshed's address type also holds the
    # (number, bytes) pair of a family this Python cannot show, which nothing could connect to: left out.
    hosts = [info[4][0] for info in infos]
    return [host.split("%")[0] for host in hosts if isinstance(host, str)]


@dataclass(frozen=True)
class UrlPolicy:
    """What the server lets pipelines download."""

    max_bytes: int = 2 * 1024**3
    allow_private: bool = False  # e.g. for tests, or a trusted intranet; a server setting, never a pipeline's
    timeout_s: float = 30.0
    resolver: Resolver = field(default=system_resolver, compare=False)  # a seam for tests


def download(url: str, out_dir: Path, policy: UrlPolicy, check_cancelled: Callable[[], None] = lambda: None) -> Path:
    """Fetch `url` into `out_dir`, following up to MAX_REDIRECTS redirects, each one checked."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pins: dict[str, list[str]] = {}
    try:
        with _client(policy, pins) as client:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                parts = urlsplit(current)
                addresses = check_address(current, policy.allow_private, policy.resolver)
                if not policy.allow_private:
                    pins[_connect_host(current)] = addresses  # this hop connects to these and nothing else
                with client.stream("GET", current) as response:
                    if response.is_redirect and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise OperationError(f"{current} answered HTTP {response.status_code}")
                    target = out_dir / _file_name(response, parts.path)
                    try:
                        _save(response, target, policy.max_bytes, url, check_cancelled)
                    except BaseException:
                        target.unlink(missing_ok=True)  # never leave a truncated file behind
                        raise
                    return target
    except httpx.HTTPError as exc:
        raise OperationError(f"could not download {url}: {exc}") from None
    raise OperationError(f"{url} redirects more than {MAX_REDIRECTS} times")


def _client(policy: UrlPolicy, pins: dict[str, list[str]]) -> httpx.Client:
    if policy.allow_private:
        return httpx.Client(timeout=policy.timeout_s, follow_redirects=False)
    # A transport given explicitly also keeps httpx from routing through an environment proxy.
    transport = httpx.HTTPTransport()
    transport._pool._network_backend = _PinnedBackend(pins)  # httpcore's seam for opening sockets
    return httpx.Client(timeout=policy.timeout_s, follow_redirects=False, transport=transport)


class _PinnedBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to the address checked for each host, never resolving again.

    TLS is started on the returned stream by httpcore with the URL's host name, so SNI and the
    certificate check are unchanged.
    """

    def __init__(self, pins: dict[str, list[str]], inner: httpcore.NetworkBackend | None = None):
        self._pins = pins
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # noqa: ANN001, ANN201
        key = (host.decode("ascii") if isinstance(host, bytes) else host).lower()
        addresses = self._pins.get(key)
        if not addresses:
            raise httpcore.ConnectError(f"{key} was not checked before connecting; refused")
        failure: Exception | None = None
        for address in addresses:  # each checked address in turn, as a resolver-driven connect would
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"cannot connect to {key}")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # noqa: ANN001, ANN201
        raise httpcore.ConnectError("unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _connect_host(url: str) -> str:
    """The host name as httpcore will ask to connect to it (IDNA-encoded, no brackets), lower case."""
    return httpx.URL(url).raw_host.decode("ascii").lower()


def check_address(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> list[str]:
    """Refuse URLs that are not http(s), or whose host resolves to a non-public address.

    Returns the checked addresses (empty when private addresses are allowed: nothing is checked).
    """
    try:  # a bracketed host that is no IPv6 address, a port past 65535, a host name IDNA cannot encode...
        parts = urlsplit(url)
        port = parts.port
        host = _connect_host(url) if parts.hostname else ""
        host.encode("idna")  # as the resolver asks for it: no empty label, none longer than 63 characters
    except (ValueError, httpx.InvalidURL) as exc:
        raise OperationError(f"{url!r} is not a valid http(s) URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OperationError(f"{url!r} is not an http(s) URL")
    if allow_private:
        return []
    try:
        addresses = [str(ipaddress.ip_address(host))]  # an address literal: nothing to resolve
    except ValueError:
        addresses = resolver(host, port or (443 if parts.scheme == "https" else 80))
    if not addresses:
        raise OperationError(f"cannot resolve {parts.hostname!r}: no address")
    for text in addresses:
        address = ipaddress.ip_address(text)
        reason = non_public(address)
        if reason is not None:
            raise OperationError(
                f"{parts.hostname} resolves to {address}, a non-public address{reason}; the server refuses "
                "to fetch it (set CONSTELLATION_URL_ALLOW_PRIVATE=1 on the server to allow)"
            )
    return addresses


# Before launch a host name is resolved within this time, by a few threads: a resolver that does not answer
# leaves the name to the run, which resolves it again anyway.
PREFLIGHT_RESOLVE_S = 2.0
_resolving = ThreadPoolExecutor(max_workers=4, thread_name_prefix="preflight-dns")


class _Unresolved(Exception):
    """The name did not resolve before launch (no answer, or not in time): only the run can tell."""


def _bounded_resolver(host: str, port: int) -> list[str]:
    try:
        return _resolving.submit(system_resolver, host, port).result(timeout=PREFLIGHT_RESOLVE_S)
    except (OperationError, FutureTimeout):
        raise _Unresolved(host) from None


def url_findings(parameter: str, url: str, policy: UrlPolicy) -> Iterator[Finding]:
    """What is wrong with fetching `url` under `policy` as far as can be known before launch: not http(s), or a
    host that is (or resolves, within PREFLIGHT_RESOLVE_S, to) a non-public address the policy refuses."""
    from orchestrator.preflight import Finding

    try:
        check_address(url, policy.allow_private, _bounded_resolver)
    except OperationError as refused:
        yield Finding(parameter, str(refused))
    except _Unresolved:
        pass


def preflight(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """import_from_url before launch: an http(s) URL whose host the URL policy lets the server fetch."""
    yield from url_findings("url", params["url"], check.resources.workspace.url_policy())


def non_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """None for a public unicast address; else why not (text to add to a message, maybe empty)."""
    if not address.is_global or address.is_multicast:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        for label, inner in _embedded_ipv4(address):
            if inner is None:
                return f" ({label})"
            if not inner.is_global or inner.is_multicast:
                return f" ({label} of {inner})"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> Iterable[tuple[str, ipaddress.IPv4Address | None]]:
    """The IPv4 addresses an IPv6 address stands for; None where the whole range is refused."""
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        yield "IPv4-mapped", address.ipv4_mapped
    if value >> 32 == 0:  # ::a.b.c.d, deprecated IPv4-compatible
        yield "IPv4-compatible", None
    if value >> 32 == 0xFFFF0000:  # ::ffff:0:a.b.c.d, IPv4-translated (SIIT)
        yield "IPv4-translated", low32
    if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64, well-known prefix
        yield "NAT64", low32
    if address in ipaddress.IPv6Network("64:ff9b:1::/48"):  # NAT64 for local use
        yield "local-use NAT64", None
    if address.sixtofour is not None:
        yield "6to4", address.sixtofour
    if address.teredo is not None:
        server, client = address.teredo
        yield "Teredo server", server
        yield "Teredo client", client


def _save(
    response: httpx.Response, target: Path, max_bytes: int, url: str, check_cancelled: Callable[[], None]
) -> None:
    written = 0
    with target.open("wb") as sink:
        for chunk in response.iter_bytes():  # as received, so a cancel is seen promptly
            check_cancelled()
            written += len(chunk)
            if written > max_bytes:
                raise OperationError(f"{url} is larger than the limit of {max_bytes} bytes")
            sink.write(chunk)


def _file_name(response: httpx.Response, url_path: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    raw = match.group(1) if match else unquote(url_path.rsplit("/", 1)[-1])
    name = _SAFE_NAME.sub("_", Path(raw).name).strip("._")
    return name or "download"
