"""Gateway settings, read once from the environment (docs/architecture.md#settings)."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator import contract
from orchestrator.contract import SharedSettings

T = TypeVar("T")
DEFAULT_ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def _items(value: Any) -> Any:
    """A list as the environment writes it: a JSON list, or items separated by commas (blank ones dropped)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None  # '[::1],localhost' is a list of hosts, not JSON
        if isinstance(parsed, list):
            return parsed
    return [item for item in text.split(",") if item.strip()]


# Every list setting: a comma-separated string or a JSON list (NoDecode: pydantic-settings must not
# take the text for JSON first), each item then checked by its own type below.
ListSetting = Annotated[list[T], NoDecode, BeforeValidator(_items)]


def _variable(info: ValidationInfo) -> str:
    """The environment variable a setting is read from, for error messages."""
    return f"CONSTELLATION_{(info.field_name or '').upper()}"


_EVERY_ADDRESS_HINT = {
    "allow_anonymous_from": "unset CONSTELLATION_API_TOKEN instead if the gateway is really meant to be open",
    "trusted_proxies": "any client could then claim any address; name your proxies' addresses",
}


def _network(value: Any, info: ValidationInfo) -> Any:
    try:
        network = ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{_variable(info)}: {value!r} is not a network like 172.30.0.0/16 or an address") from None
    if network.prefixlen == 0:
        hint = _EVERY_ADDRESS_HINT.get(info.field_name or "", "list only the networks meant")
        raise ValueError(f"{_variable(info)}: {value!r} is every address; {hint}")
    return network


def _host(value: Any, info: ValidationInfo) -> str:
    """A host name as a Host header writes it: lower case, IPv6 addresses in brackets; no scheme, port or path."""
    host = str(value).strip().lower()
    bracketed = host.startswith("[")
    if not host or "/" in host or (host.count(":") == 1 and not bracketed) or bracketed != host.endswith("]"):
        raise ValueError(f"{_variable(info)}: {value!r} is not a host name (no scheme, port or path)")
    if ":" in host and not bracketed:
        host = f"[{host}]"  # ::1 -> [::1]
    if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
        raise ValueError(f"{_variable(info)}: {value!r}: a wildcard is only '*' or '*.example.com'")
    return host


def _origin(value: Any, info: ValidationInfo) -> str:
    origin = str(value).strip().rstrip("/")
    # A browser sends scheme://host[:port]; anything else would silently never match.
    if origin != "*" and (not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]):
        raise ValueError(f"{_variable(info)}: {origin!r} is not an origin like https://app.example.com")
    return origin


Network = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)]
Host = Annotated[str, BeforeValidator(_host)]
Origin = Annotated[str, BeforeValidator(_origin)]


class Settings(SharedSettings):
    """The gateway's settings: those shared with the code location (artifact root, model server), and its own."""

    model_config = SettingsConfigDict(env_prefix="CONSTELLATION_", extra="ignore")

    dagster_url: str = "http://127.0.0.1:3000"
    # Unset: the gateway is open, which is only for a local machine. Compose always sets it.
    # When set, /docs, /redoc and /openapi.json are off (404): they would answer without it.
    api_token: str | None = None
    # Networks (CIDRs, comma-separated or a JSON list) whose requests may come without the token,
    # e.g. a product's private Docker network whose back-end sends none. Empty (default): none may.
    # Only for a gateway that is not published on the host (deploy/README.md, Agentic Earth).
    allow_anonymous_from: ListSetting[Network] = []
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client. Empty (default):
    # the client is the socket's peer and X-Forwarded-For is ignored. uvicorn is always started with
    # --no-proxy-headers (its default trusts 127.0.0.1), so this is the only place that decides.
    trusted_proxies: ListSetting[Network] = []
    location_name: str = contract.CODE_LOCATION
    repository_name: str = contract.REPOSITORY
    job_name: str = contract.JOB
    max_body_bytes: int = Field(1_000_000, ge=1_000)
    # Bodies up to this size are read and discarded before answering 413, so the client
    # reads the answer instead of a reset connection; beyond it the gateway stops reading.
    max_drain_bytes: int = 64 * 1024 * 1024
    catalog_ttl_s: float = 10.0
    dagster_timeout_s: float = 10.0
    # Web pages allowed to call the gateway from a browser (CORS), e.g. https://app.example.com;
    # comma-separated or a JSON list. Empty: no page of another origin may (closed).
    cors_origins: ListSetting[Origin] = []
    # Names the gateway answers for in the Host header (DNS rebinding defence); comma-separated or a
    # JSON list, '*.example.com' for subdomains, '*' for any (only behind a proxy that checks Host).
    # `make run` adds the host it binds to; Compose adds the service names.
    allowed_hosts: ListSetting[Host] = list(DEFAULT_ALLOWED_HOSTS)

    @field_validator("api_token")
    @classmethod
    def _no_placeholder(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in {"", "changeme", "change-me", "secret", "token"}:
            raise ValueError("CONSTELLATION_API_TOKEN is a placeholder; set a real token or unset it")
        return value


class HostSettings(BaseSettings):
    """Only CONSTELLATION_ALLOWED_HOSTS, for the Dagster webserver's guard (api/dagster_ui.py)."""

    model_config = SettingsConfigDict(env_prefix="CONSTELLATION_", extra="ignore")

    allowed_hosts: ListSetting[Host] = list(DEFAULT_ALLOWED_HOSTS)


@lru_cache
def get_settings() -> Settings:
    return Settings()
