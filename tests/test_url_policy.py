"""import_from_url fetches public addresses only, unless the server allows more (SSRF)."""

from __future__ import annotations

import pytest

from orchestrator.data.url import check_address
from orchestrator.engine import OperationError

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
