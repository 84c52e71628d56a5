"""The shape of airlock.yaml. Unknown keys are refused everywhere (extra="forbid")."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(Strict):
    """USD per million tokens of each kind, plus a per-request fee; effective from a date."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)
    cached_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    reasoning_per_mtok: float | None = Field(default=None, ge=0)
    per_request: float = Field(default=0.0, ge=0)
    effective_from: date | None = None


class ModelSpec(Strict):
    name: str = Field(min_length=1)
    upstream_model: str | None = None  # the name the upstream knows it by, if different
    tokenizer: str | None = None  # a tokenizer id, e.g. cl100k_base
    context_window: int | None = Field(default=None, gt=0)
    unsupported_params: list[str] = Field(default_factory=list)  # request keys this model refuses
    prices: list[Price] = Field(default_factory=list)


DeploymentType = Literal["self_hosted", "on_prem", "private_cloud", "public_cloud", "simulator"]


class Upstream(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    base_url: str
    api_style: Literal["openai"] = "openai"
    region: str
    jurisdiction: str
    deployment: DeploymentType = "self_hosted"
    api_key_env: str | None = None  # the *name* of an environment variable, never the secret
    api_key_optional: bool = False  # true: serve even when that variable is unset (the upstream takes no key)
    models: list[ModelSpec] = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. http://10.0.0.5:8000/v1")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.replace("_", "").isalnum() or v.startswith(("sk-", "Bearer"))):
            raise ValueError("must name an environment variable (e.g. OPENAI_KEY), not hold the secret")
        return v


class Target(Strict):
    upstream: str
    model: str


class Route(Strict):
    alias: str = Field(min_length=1)
    targets: list[Target] = Field(min_length=1)


class ApiKey(Strict):
    tenant: str = Field(min_length=1)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_env: str | None = None
    key_optional: bool = False  # true: serve even when key_env is unset (this tenant then has no key)

    @model_validator(mode="after")
    def _one_source(self) -> ApiKey:
        if (self.key_sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_sha256 or key_env")
        return self


class Node(Strict):
    name: str = "airlock-1"
    region: str = "local"
    jurisdiction: str | None = None


class Server(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    upstream_pool_size: int = Field(default=256, gt=0)
    # Client timeouts. A request's headers must all arrive within headers_timeout_s of its first byte, and
    # its body within body_timeout_s of its headers (else 408 and the connection is closed); a connection
    # with no request under way is closed after idle_timeout_s (before its first request, and between them).
    headers_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    idle_timeout_s: float = Field(default=75.0, gt=0)


class Recorder(Strict):
    queue_size: int = Field(default=20_000, gt=0)
    batch_max_records: int = Field(default=2_000, gt=0)
    segment_max_records: int = Field(default=50_000, gt=0)
    segment_max_age_s: float = Field(default=1.0, gt=0)
    compact_min_segments: int = Field(default=16, ge=2)
    compact_interval_s: float = Field(default=5.0, gt=0)
    durable: bool = False  # a record reaches the fsynced write-ahead file before its response completes
    group_sync_ms: float = Field(default=2.0, ge=0)
    on_record_failure: Literal["serve", "refuse"] = "serve"
    stream_usage: Literal["inject", "passthrough"] = "inject"
    # Each worker's writer runs as a process of its own at this much lower priority (0: the same), so
    # that on a busy host recording yields the CPU to serving and catches up in the gaps.
    writer_nice: int = Field(default=10, ge=0, le=19)
    # ... and, where the system allows it, under SCHED_IDLE: only CPU time nothing else wants, switched
    # back to normal scheduling while its backlog is long (see record/scheduling.py). Not in durable mode.
    writer_idle: bool = True


class LocalTokenizer(Strict):
    """A user's own Hugging Face tokenizer.json, by local path (never fetched)."""

    name: str = Field(min_length=1)
    path: str


class Preflight(Strict):
    """Before forwarding: estimate the provider's count from the local one and the calibrated drift, and
    when the request plus max_tokens would not fit the model's context window, reject it with a 400
    (reject) or drop the oldest turns until it fits (truncate)."""

    mode: Literal["off", "reject", "truncate"] = "reject"
    default_margin: float = Field(default=0.10, ge=0, le=2)  # used until a cell has enough observations
    default_max_tokens: int = Field(default=1024, ge=0)  # assumed reply length when the request sets none
    calibrate_every_s: float = Field(default=300.0, gt=0)
    calibration_window_s: float = Field(default=7 * 86400.0, gt=0)


class Tokens(Strict):
    tokenizers: list[LocalTokenizer] = Field(default_factory=list)
    preflight: Preflight = Preflight()


class ReplaySettings(Strict):
    judge: str | None = None  # a route or model that compares answers; it must be served locally


class TelemetryStorage(Strict):
    """Airlock's own record as a line item: the bytes its data directory holds, times this price."""

    usd_per_gib_month: float = Field(default=0.10, ge=0)  # block storage with snapshots; set your own
    retention_days: float = Field(default=30.0, gt=0)  # how long a span's bytes are kept (and so paid for)


class Electricity(Strict):
    """Energy as a line item: for upstreams you run yourself, the electricity a call used (from the energy
    report: measured or from profiles, PUE included) at this price."""

    usd_per_kwh: float = Field(ge=0)
    deployments: list[DeploymentType] = Field(default_factory=lambda: list[DeploymentType](("self_hosted", "on_prem")))


FailedAttempt = Literal["timeout", "http_5xx", "connect_error", "cancelled"]


class LedgerSettings(Strict):
    """The cost-of-goods ledger: what is priced beyond the model price tables, and revenue for margins."""

    telemetry_storage: TelemetryStorage = TelemetryStorage()
    # Failed upstream attempts the provider is assumed to bill (their input tokens): a timed-out call was
    # usually processed; a 5xx or a refused connection usually is not.
    failed_attempts_billed: list[FailedAttempt] = Field(default_factory=lambda: list[FailedAttempt](("timeout",)))
    revenue_per_task: float | None = Field(default=None, ge=0)  # USD earned per task, for gross margin
    electricity: Electricity | None = None
    revenue_per_task_by_feature: dict[str, float] = Field(default_factory=dict)


class BatchPoint(Strict):
    """Joules per token at one batch size (requests decoding together on the GPU)."""

    batch: int = Field(ge=1)
    prefill_j_per_token: float = Field(ge=0)
    decode_j_per_token: float = Field(ge=0)


class EnergyProfile(Strict):
    """Energy per token for one model on one upstream (or on every upstream, when upstream is omitted).
    Either a bundled preset (see airlock.energy.presets) or explicit points; explicit keys override it."""

    model: str = Field(min_length=1)  # the model name in upstreams[].models[].name
    upstream: str | None = None
    preset: str | None = None
    tier: str | None = None  # a label to group by (e.g. 8b, 70b); defaults to the preset's
    points: list[BatchPoint] = Field(default_factory=list)  # interpolated on log(batch)
    cache_hit_discount: float | None = Field(default=None, ge=0, le=1)  # share of prefill energy a cached token saves
    idle_share: float | None = Field(default=None, ge=0, lt=1)  # share of GPU energy spent idle, spread over requests
    pue: float | None = Field(default=None, ge=1, le=3)  # data-centre power usage effectiveness

    @model_validator(mode="after")
    def _source(self) -> EnergyProfile:
        if not self.preset and not self.points:
            raise ValueError("give a preset or points [{batch, prefill_j_per_token, decode_j_per_token}]")
        if self.preset:
            from airlock.energy.presets import PRESETS

            if self.preset not in PRESETS:
                raise ValueError(f"unknown energy preset {self.preset!r}; bundled: {', '.join(sorted(PRESETS))}")
        return self


class GpuBinding(Strict):
    """A GPU whose energy counter is read (or pushed), and the upstream whose requests it serves."""

    device: str = Field(min_length=1)  # NVML index or UUID, or any name an external agent pushes under
    upstream: str


class ReadingsKey(Strict):
    """A bearer key that may push GPU energy readings (node-level, so no tenant's key may) and do
    nothing else: it is not a model API key."""

    name: str = Field(min_length=1)  # who holds it, e.g. the GPU host's exporter
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key_env: str | None = None
    key_optional: bool = False  # an unset key_env is then no key, not a refusal to serve

    @model_validator(mode="after")
    def _one_source(self) -> ReadingsKey:
        if (self.key_sha256 is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_sha256 or key_env")
        return self


class EnergySettings(Strict):
    # Grid carbon intensity; set your region's. Default: the world average in 2023 (Ember, Global
    # Electricity Review 2024: about 480 gCO2e/kWh).
    grid_gco2e_per_kwh: float = Field(default=480.0, ge=0)
    pue: float = Field(default=1.2, ge=1, le=3)  # applied to measured GPU energy (profiles carry their own)
    profiles: list[EnergyProfile] = Field(default_factory=list)
    gpus: list[GpuBinding] = Field(default_factory=list)  # measured mode: readings from these GPUs
    readings_keys: list[ReadingsKey] = Field(default_factory=list)  # who may POST /v1/energy/readings
    sample_interval_ms: float = Field(default=200.0, gt=0)
    counter_update_ms: float = Field(default=100.0, gt=0)  # how often the GPU refreshes its energy counter


class SlowPolicy(Strict):
    """Keep traces slower than a fixed bound, or than the rolling quantile of recent traces."""

    over_ms: float | None = Field(default=None, gt=0)
    quantile: float | None = Field(default=0.99, gt=0, lt=1)


class CostlyPolicy(Strict):
    """Keep traces costlier (USD, from the configured prices) or hungrier (tokens) than a fixed bound, or
    than the rolling quantile of recent traces."""

    over_usd: float | None = Field(default=None, gt=0)
    over_tokens: int | None = Field(default=None, gt=0)
    quantile: float | None = Field(default=0.99, gt=0, lt=1)


class RarePolicy(Strict):
    """Keep traces whose attribute signature is rare: estimated (frequent-items sketch) below `below` of
    recent traces. `attributes` names the free attributes in the signature (all of them when unset);
    rare keeps may use at most `max_budget_share` of the hour's span budget."""

    enabled: bool = True
    below: float = Field(default=0.001, gt=0, lt=1)
    attributes: list[str] | None = None
    warmup_traces: int = Field(default=1000, ge=0)
    max_budget_share: float = Field(default=0.2, ge=0, le=1)


class FailedEvalPolicy(Strict):
    """Keep traces with a failed evaluation: a decision of one of these kinds with one of these verdicts,
    or a free attribute with one of these values."""

    decision_kinds: list[str] = Field(default_factory=lambda: ["eval", "judge", "guardrail"])
    verdicts: list[str] = Field(default_factory=lambda: ["fail", "failed"])
    attribute: str | None = "eval.result"


class Sampling(Strict):
    """Tail sampling of whole traces over the written record (off by default: the record stays complete)."""

    enabled: bool = False
    interval_s: float = Field(default=5.0, gt=0)  # how often the gateway's sampler pass runs
    decision_wait_s: float = Field(
        default=30.0, ge=0
    )  # without a finished root, complete this long after its last span
    key: list[str] = Field(default_factory=lambda: ["airlock.tenant", "gen_ai.request.model"])
    span_budget_per_hour: int = Field(default=100_000, gt=0)
    rate_window_s: float = Field(default=300.0, gt=0)  # how far back the per-key traffic rates look (decaying)
    keep_statuses: list[str] = Field(default_factory=lambda: ["error"])
    keep_denied: bool = True  # a decision with verdict deny in airlock.decisions
    slow: SlowPolicy = SlowPolicy()
    costly: CostlyPolicy = CostlyPolicy()
    rare: RarePolicy = RarePolicy()
    failed_eval: FailedEvalPolicy = FailedEvalPolicy()
    replay_reserve: float = Field(default=0.0, ge=0, le=1)  # share of dropped traces whose spans and payloads stay
    max_pending_traces: int = Field(default=100_000, gt=0)
    max_spans_per_trace: int = Field(default=10_000, gt=0)
    max_keys: int = Field(default=10_000, gt=0)
    seed: int = 0


class OtlpReceiver(Strict):
    """POST /v1/traces on the gateway: OTLP/HTTP spans in, authenticated with the same API keys."""

    enabled: bool = True


class OtlpExport(Strict):
    """Send the record's spans on to a collector (OTLP/HTTP protobuf), from a background task that tails
    new segments; a cursor in the state database means a restart resends nothing."""

    endpoint: str  # e.g. http://otel-collector:4318/v1/traces; the only address the exporter may reach
    headers_env: dict[str, str] = Field(default_factory=dict)  # header -> NAME of an environment variable
    interval_s: float = Field(default=5.0, gt=0)
    max_spans_per_request: int = Field(default=2_000, gt=0, le=100_000)
    timeout_s: float = Field(default=10.0, gt=0)
    gzip: bool = True
    include_received: bool = False  # also send spans that arrived over OTLP (they came from a collector)
    backfill: bool = False  # on the exporter's very first start, also send the spans already recorded
    service_name: str = "airlock"

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. http://otel-collector:4318/v1/traces")
        return v

    @field_validator("headers_env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for header, env in v.items():
            if not env.replace("_", "").isalnum():
                raise ValueError(f"{header}: must name an environment variable, not hold the secret")
        return v


class Telemetry(Strict):
    otlp_receiver: OtlpReceiver = OtlpReceiver()
    otlp_export: OtlpExport | None = None


def _env_name(v: str) -> str:
    if not v.replace("_", "").isalnum():
        raise ValueError("must name an environment variable, not hold the secret")
    return v


class PostgresBackend(Strict):
    """Control-plane state (ledger items, energy readings, replay runs, export cursors, sampling
    state, writers) in PostgreSQL; the DSN, which holds the password, is read from `dsn_env`."""

    dsn_env: str
    connect_timeout_s: float = Field(default=3.0, gt=0)

    @field_validator("dsn_env")
    @classmethod
    def _env(cls, v: str) -> str:
        return _env_name(v)


class RedisBackend(Strict):
    """Counters every replica must agree on (rate limits, budgets, idempotency keys) in Redis; the
    URL, which may hold a password, is read from `url_env`. While Redis cannot be reached, limits
    fail closed (refuse, the default) or open (allow), and every answer says which."""

    url_env: str
    prefix: str = Field(default="airlock:", min_length=1, max_length=64)
    on_unavailable: Literal["fail_closed", "fail_open"] = "fail_closed"

    @field_validator("url_env")
    @classmethod
    def _env(cls, v: str) -> str:
        return _env_name(v)


class ClickHouseBackend(Strict):
    """Spans, hops and the blob index in a ClickHouse server, over HTTP: `url_env` names the variable
    holding http(s)://user:password@host:8123. (chdb, the engine in process, runs the backend's tests:
    it opens one engine per process and per folder, so the gateway's workers and writer processes
    could not share it.)"""

    url_env: str
    database: str = Field(default="airlock", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    retention_days: int | None = Field(default=None, gt=0)

    @field_validator("url_env")
    @classmethod
    def _env(cls, v: str) -> str:
        return _env_name(v)


class S3Backend(Strict):
    """Payload packs in an S3-compatible object store."""

    endpoint: str
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    access_key_env: str
    secret_key_env: str
    region: str = "us-east-1"
    prefix: str = Field(default="", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*$")

    @field_validator("access_key_env", "secret_key_env")
    @classmethod
    def _env(cls, v: str) -> str:
        return _env_name(v)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. http://10.0.0.9:9000")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials: name them with access_key_env and secret_key_env")
        return v.rstrip("/")


class RegionStores(Strict):
    """The server backends of one region's nodes. A concern with none named stays embedded."""

    postgres: PostgresBackend | None = None
    redis: RedisBackend | None = None
    clickhouse: ClickHouseBackend | None = None
    s3: S3Backend | None = None


class StoreSettings(Strict):
    """Which backend holds each concern of the store. Every concern is embedded (one data directory:
    SQLite, Parquet, pack files) unless a server backend is named for it: `postgres` (control-plane
    state), `redis` (shared counters), `clickhouse` (spans, hops, blob index), `s3` (payload packs).
    `regions` names them per region instead; a node uses its own region's (node.region), so a region's
    record stays in its region."""

    backend: Literal["embedded"] = "embedded"
    postgres: PostgresBackend | None = None
    redis: RedisBackend | None = None
    clickhouse: ClickHouseBackend | None = None
    s3: S3Backend | None = None
    regions: dict[str, RegionStores] = Field(default_factory=dict)

    def for_region(self, region: str) -> RegionStores:
        """The backends of a node in this region: the region's own entry, else the top-level ones."""
        if region in self.regions:
            return self.regions[region]
        return RegionStores(postgres=self.postgres, redis=self.redis, clickhouse=self.clickhouse, s3=self.s3)

    @model_validator(mode="after")
    def _one_way(self) -> StoreSettings:
        if self.regions and any((self.postgres, self.redis, self.clickhouse, self.s3)):
            raise ValueError("give the server backends either at the top of store: or per region under regions:")
        return self


LimitField = Literal["tenant", "user", "agent", "session", "model"]


def _by_tenant() -> list[LimitField]:
    return ["tenant"]


class LimitRule(Strict):
    """A rate limit on the model API: `requests` per `window_s` for each partition of the calls it
    applies to (a partition: one value of each `per` field; user, agent and session come from the
    x-airlock-user, x-airlock-agent and x-airlock-session headers). Shared by every worker and replica
    through the store (Redis when store.redis is set, else the state database)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    per: list[LimitField] = Field(default_factory=_by_tenant)
    requests: int = Field(gt=0)
    window_s: float = Field(default=60.0, gt=0, le=86_400 * 31)
    burst: int | None = Field(default=None, gt=0)  # how many may come at once; default: the whole quota
    models: list[str] = Field(default_factory=list)  # the model names asked for that it applies to; none: all

    @property
    def rate_per_s(self) -> float:
        return self.requests / self.window_s

    @property
    def burst_or_quota(self) -> int:
        return self.burst if self.burst is not None else self.requests


class Config(Strict):
    data_dir: str = "./data"
    store: StoreSettings = StoreSettings()
    node: Node = Node()
    server: Server = Server()
    recorder: Recorder = Recorder()
    upstreams: list[Upstream] = Field(min_length=1)
    routes: list[Route] = Field(default_factory=list)
    api_keys: list[ApiKey] = Field(min_length=1)
    tokens: Tokens = Tokens()
    replay: ReplaySettings = ReplaySettings()
    ledger: LedgerSettings = LedgerSettings()
    energy: EnergySettings = EnergySettings()
    sampling: Sampling = Sampling()
    telemetry: Telemetry = Telemetry()
    limits: list[LimitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        from airlock.tokens import available

        known = set(available()) | {t.name for t in self.tokens.tokenizers}
        for up in self.upstreams:
            for m in up.models:
                if m.tokenizer and m.tokenizer not in known:
                    raise ValueError(
                        f"upstream {up.name!r} model {m.name!r}: unknown tokenizer {m.tokenizer!r}; bundled: "
                        f"{', '.join(sorted(available()))}, or declare it under tokens.tokenizers with a path"
                    )
        names = [u.name for u in self.upstreams]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"upstream names must be unique; repeated: {sorted(dupes)}")
        served = {u.name: {m.name for m in u.models} for u in self.upstreams}
        for route in self.routes:
            for t in route.targets:
                if t.upstream not in served:
                    raise ValueError(f"route {route.alias!r} names unknown upstream {t.upstream!r}")
                if t.model not in served[t.upstream]:
                    raise ValueError(f"route {route.alias!r}: upstream {t.upstream!r} does not serve model {t.model!r}")
        if self.replay.judge:
            judged = [t.upstream for r in self.routes if r.alias == self.replay.judge for t in r.targets] or [
                u.name for u in self.upstreams if any(m.name == self.replay.judge for m in u.models)
            ]
            if not judged:
                raise ValueError(f"replay.judge {self.replay.judge!r} is neither a route nor a model here")
            hosted = [u for u in judged if self.upstream(u).deployment == "public_cloud"]
            if hosted:
                raise ValueError(
                    f"replay.judge must be served locally, never by a hosted API; {hosted} are public_cloud"
                )
        limit_names = [rule.name for rule in self.limits]
        if len(limit_names) != len(set(limit_names)):
            repeated = sorted({n for n in limit_names if limit_names.count(n) > 1})
            raise ValueError(f"limit names must be unique; repeated: {repeated}")
        for region, servers in (self.store.regions or {"": self.store.for_region(self.node.region)}).items():
            where = f"store.regions.{region}" if region else "store"
            if servers.clickhouse is not None and servers.postgres is None:
                raise ValueError(
                    f"{where}.clickhouse: a record shared by several nodes needs their state shared too "
                    f"(export cursors, sampling and replay state): name {where}.postgres as well"
                )
        if self.store.regions and self.node.region not in self.store.regions:
            raise ValueError(
                f"store.regions has no entry for this node's region {self.node.region!r} (node.region): a node "
                f"writes its record only to its own region's stores; regions given: {sorted(self.store.regions)}"
            )
        bound: list[EnergyProfile | GpuBinding] = [*self.energy.profiles, *self.energy.gpus]
        for item in bound:
            if item.upstream is not None and item.upstream not in served:
                raise ValueError(f"energy: unknown upstream {item.upstream!r}")
        aliases = [r.alias for r in self.routes]
        if len(set(aliases)) != len(aliases):
            raise ValueError("route aliases must be unique")
        return self

    def tokenizer(self, name: str) -> Any:
        """The tokenizer a model names: bundled, or a local file declared under tokens.tokenizers."""
        from airlock.tokens import get_tokenizer, load_local

        for t in self.tokens.tokenizers:
            if t.name == name:
                return load_local(t.path, t.name)
        return get_tokenizer(name)

    def upstream(self, name: str) -> Upstream:
        for u in self.upstreams:
            if u.name == name:
                return u
        raise KeyError(name)
