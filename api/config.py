"""Gateway settings, read once from the environment (DESIGN.md §6)."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from api.guard import DEFAULT_ALLOWED_HOSTS, host_list
from orchestrator import contract
from orchestrator.contract import SharedSettings


class Settings(SharedSettings):
    """The gateway's settings: those shared with the code location (artifact root, model server), and its own."""

    model_config = SettingsConfigDict(env_prefix="CONSTELLATION_", extra="ignore")

    dagster_url: str = "http://127.0.0.1:3000"
    # Unset: the gateway is open, which is only for a local machine. Compose always sets it.
    api_token: str | None = None
    # Networks (CIDRs, comma-separated or a JSON list) whose requests may come without the token,
    # e.g. a product's private Docker network whose back-end sends none. Empty (default): none may.
    # Only for a gateway that is not published on the host (deploy/README.md, Agentic Earth).
    allow_anonymous_from: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = []
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
    cors_origins: Annotated[list[str], NoDecode] = []
    # Names the gateway answers for in the Host header (DNS rebinding defence); comma-separated or a
    # JSON list, '*.example.com' for subdomains, '*' for any (only behind a proxy that checks Host).
    # `make run` adds the host it binds to; Compose adds the service names.
    allowed_hosts: Annotated[list[str], NoDecode] = list(DEFAULT_ALLOWED_HOSTS)

    @field_validator("api_token")
    @classmethod
    def _no_placeholder(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in {"", "changeme", "change-me", "secret", "token"}:
            raise ValueError("CONSTELLATION_API_TOKEN is a placeholder; set a real token or unset it")
        return value

    @field_validator("allow_anonymous_from", mode="before")
    @classmethod
    def _network_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [n for n in text.split(",") if n.strip()]
        if not isinstance(value, list):
            return value
        networks = []
        for given in value:
            try:
                network = ipaddress.ip_network(str(given).strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"CONSTELLATION_ALLOW_ANONYMOUS_FROM: {given!r} is not a network like 172.30.0.0/16"
                ) from None
            if network.prefixlen == 0:
                raise ValueError(
                    f"CONSTELLATION_ALLOW_ANONYMOUS_FROM: {given!r} is every address; unset CONSTELLATION_API_TOKEN "
                    "instead if the gateway is really meant to be open"
                )
            networks.append(network)
        return networks

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        return host_list(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origin_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [o for o in text.split(",") if o.strip()]
        if not isinstance(value, list):
            return value
        origins = [str(o).strip().rstrip("/") for o in value]
        for origin in origins:
            # A browser sends scheme://host[:port]; anything else would silently never match.
            if origin != "*" and (not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]):
                raise ValueError(f"CONSTELLATION_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com")
        return origins


@lru_cache
def get_settings() -> Settings:
    return Settings()
