"""import_from_url fetches public addresses only, unless the server allows more (SSRF)."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from orchestrator.engine import OperationError
from orchestrator.sources.url import UrlPolicy, check_address, download

REFUSED = [
    "http://127.0.0.1/x",
    "http://localhost:8000/admin",
    "http://10.1.2.3/x",
    "http://172.16.0.5/x",
    "http://192.168.1.1/router",
    "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
    "http://[::1]/x",
    "http://[fd00:ec2::254]/x",
    "http://0.0.0.0/x",
    "http://224.0.0.1/x",
    "http://2130706433/x",  # 127.0.0.1 written as one number
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_addresses_are_refused(url: str):
    with pytest.raises(OperationError, match="non-public address; the server refuses"):
        check_address(url, allow_private=False)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "gopher://x", "http:///nohost"])
def test_only_http_urls_are_fetched(url: str):
    with pytest.raises(OperationError, match="is not an http"):
        check_address(url, allow_private=False)


def test_a_public_address_is_allowed():
    check_address("http://93.184.216.34/file.jpg", allow_private=False)


def test_the_server_can_allow_private_addresses():
    check_address("http://127.0.0.1:9/x", allow_private=True)


# Issue 11, item 8: IPv6 forms that embed an internal IPv4 address, which `is_global` lets through


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:0:7f00:1",  # IPv4-translated (SIIT), 127.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254, the metadata service
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::808:808",  # local-use NAT64: never public
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(address: str):
    with pytest.raises(OperationError, match="non-public address"):
        check_address(f"http://[{address}]/x", allow_private=False)
    # ... and so is a name that resolves to one.
    shown = re.escape(str(ipaddress.ip_address(address)))
    with pytest.raises(OperationError, match=f"resolves to {shown}, a non-public address"):
        check_address("http://sneaky.test/x", allow_private=False, resolver=lambda host, port: [address])


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"])
def test_ipv6_forms_of_public_addresses_are_allowed(address: str):
    assert check_address(f"http://[{address}]/x", allow_private=False) == [address]


def test_every_address_of_a_name_is_checked():
    with pytest.raises(OperationError, match="resolves to 10.0.0.1"):
        check_address("http://mixed.test/x", allow_private=False, resolver=lambda h, p: ["93.184.216.34", "10.0.0.1"])


# DNS rebinding: the name answers a public address to the check and a private one right after.


class RebindingResolver:
    """Public first, private second: what a rebinding DNS server answers."""

    def __init__(self, public: str = "93.184.216.34"):
        self.public = public
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return [self.public] if len(self.calls) == 1 else ["127.0.0.1"]


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch):
    """Record every TCP connection httpcore opens; the 'public' address is served by a local server."""
    import httpcore

    opened: list[tuple[str, int]] = []
    routes: dict[str, int] = {}
    real = httpcore.SyncBackend.connect_tcp

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        opened.append((host, port))
        if host in routes:  # the public address "is" the local test server
            return real(self, "127.0.0.1", routes[host], timeout, local_address, socket_options)
        return real(self, host, port, timeout, local_address, socket_options)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", connect_tcp)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return opened, routes


@contextmanager
def serving(files: dict[str, str], tls: ssl.SSLContext | None = None) -> Iterator[HTTPServer]:
    """A local web server (HTTPS with `tls`) answering each path of `files` with its text."""
    server = HTTPServer("127.0.0.1", ssl_context=tls)
    for path, text in files.items():
        server.expect_request(path).respond_with_data(text)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def hosts(server: HTTPServer) -> list[str | None]:
    """The Host header of every request the server received."""
    return [request.headers.get("Host") for request, _ in server.log]


def test_the_connection_goes_to_the_checked_address(tmp_path: Path, connections):
    """Before: checked on one resolution, connected on another (127.0.0.1): the internal file was fetched."""
    opened, routes = connections
    with serving({"/file.txt": "public file"}) as server:
        port = server.port
        routes["93.184.216.34"] = port
        resolver = RebindingResolver()
        got = download(f"http://rebind.test:{port}/file.txt", tmp_path / "out", UrlPolicy(resolver=resolver))
        assert got.read_text() == "public file"
        assert resolver.calls == ["rebind.test"]  # resolved once, never again
        assert opened == [("93.184.216.34", port)]  # connected to what was checked, never 127.0.0.1
        assert hosts(server) == [f"rebind.test:{port}"]  # and the Host header is the URL's


def test_each_redirect_is_resolved_checked_and_pinned(tmp_path: Path, connections):
    opened, routes = connections
    with serving({"/folder/": "moved"}) as server:
        port = server.port
        routes["93.184.216.34"] = port
        # rebind.test redirects (a folder without its slash) to itself; the second lookup answers 127.0.0.1.
        server.expect_request("/folder").respond_with_response(Response(status=301, headers={"Location": "/folder/"}))
        resolver = RebindingResolver()
        with pytest.raises(OperationError, match="rebind.test resolves to 127.0.0.1, a non-public address"):
            download(f"http://rebind.test:{port}/folder", tmp_path / "out", UrlPolicy(resolver=resolver))
        assert resolver.calls == ["rebind.test", "rebind.test"]
        assert all(host == "93.184.216.34" for host, _ in opened)
        assert [request.path for request, _ in server.log] == ["/folder"]  # the redirect was never followed


def test_tls_still_checks_the_certificate_against_the_host_name(tmp_path: Path, connections, monkeypatch):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rebind.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("rebind.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # the client trusts this certificate only
    opened, routes = connections
    with serving({"/file.txt": "over TLS"}, tls) as server:
        port = server.port
        routes["93.184.216.34"] = port
        policy = UrlPolicy(resolver=RebindingResolver())
        got = download(f"https://rebind.test:{port}/file.txt", tmp_path / "out", policy)
        assert got.read_text() == "over TLS"  # verified as rebind.test although the socket went to an address
        assert opened == [("93.184.216.34", port)]
        # A name the certificate does not cover fails verification, pinned or not.
        other = RebindingResolver()
        with pytest.raises(OperationError, match="could not download .*certificate"):
            download(f"https://other.test:{port}/file.txt", tmp_path / "out2", UrlPolicy(resolver=other))
