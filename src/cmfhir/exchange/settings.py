"""The exchange features' settings, read from `CMFHIR_*` environment variables like the
server's own (docs/exchange.md)."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ExchangeSettings"]


class ExchangeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CMFHIR_", extra="ignore")

    mllp_port: int | None = Field(
        default=None, description="TCP port of the HL7 v2 MLLP listener. Unset: no listener."
    )
    mllp_host: str = Field(default="0.0.0.0", description="Address the MLLP listener binds.")
    mllp_allow: str = Field(
        default="127.0.0.1/32,::1/128",
        description="Comma-separated addresses or networks (CIDR) allowed to send over MLLP.",
    )
    mllp_tls_cert: Path | None = Field(default=None, description="PEM certificate: MLLP over TLS.")
    mllp_tls_key: Path | None = Field(default=None, description="PEM private key of the cert.")
    mllp_tls_client_ca: Path | None = Field(
        default=None, description="PEM CA bundle: MLLP peers must present a certificate it signed."
    )
    mllp_max_bytes: int = Field(default=4 * 1024 * 1024, description="Largest MLLP message.")
    export_dir: Path = Field(
        default=Path(".data/exports"), description="Where Bulk Data export files are written."
    )
    export_expiry_s: int = Field(
        default=24 * 3600, description="Seconds an export's files are kept after it completes."
    )
    export_worker: bool = Field(
        default=True, description="Run the export worker in the API process (cmfhir serve)."
    )
    import_dir: Path | None = Field(
        default=None, description="$import reads NDJSON files under this directory only."
    )
    import_allow_hosts: str = Field(
        default="",
        description=(
            "Comma-separated hosts (host or host:port) $import may fetch http(s) inputs from."
            " Empty: none (only files under import_dir and this server's own export files)."
        ),
    )
    import_max_bytes: int = Field(
        default=1024**3, description="Largest http(s) input $import downloads (bytes)."
    )
    import_fetch_timeout_s: float = Field(
        default=600.0, description="Seconds $import may spend downloading one http(s) input."
    )
    import_work_dir: Path = Field(
        default=Path(".data/imports"),
        description="Where $import keeps downloaded inputs and its OperationOutcome files.",
    )
    import_validators: int | None = Field(
        default=None,
        description="Processes that read, validate and index $import's lines ahead of its "
        "writes (0: the worker does). Unset: as many as the CPUs, at most 3.",
    )
    import_worker: bool = Field(
        default=True, description="Run the import worker in the API process (cmfhir serve)."
    )

    def import_hosts(self) -> set[str]:
        return {h.strip().lower() for h in self.import_allow_hosts.split(",") if h.strip()}

    def mllp_networks(self) -> list[IPv4Network | IPv6Network]:
        return [
            ip_network(part.strip(), strict=False)
            for part in self.mllp_allow.split(",")
            if part.strip()
        ]

    def mllp_allows(self, peer: str) -> bool:
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.mllp_networks())
