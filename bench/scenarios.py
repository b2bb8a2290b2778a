"""The scenarios `make bench` drives, and what each one measures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.config import BenchConfig

CEILING = "framework_ceiling"
SEED = "seed_recipe"
API_PATH = ("nginx", "api", "redis", "postgres")
AUTH_PATH = ("nginx", "auth", "redis", "postgres")
CEILING_PATH = ("nginx-ceiling", "ceiling")
SEED_PATH = ("nginx-seed", "seed-recipe")
LOGIN_CONNECTIONS = 8
FEW_CONNECTIONS = 8  # the tail at light load, next to the run's default (64)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    url: str
    options: dict[str, str] = field(default_factory=dict)
    rows: int | None = None  # users rows in the table while it ran
    # Concurrency when not the run's default: login is bound by Argon2 (one hash per core at a time),
    # so more connections than auth's workers only queue and reach wrk's timeout.
    connections: int | None = None

    def label(self) -> str:
        return f"{self.title} ({self.rows:,} rows)" if self.rows else self.title


@dataclass(frozen=True)
class DataFiles:
    """Files the Lua script reads (one value a line)."""

    tokens: Path
    cached_ids: Path
    owned_ids: Path
    refresh_tokens: Path
    login_body: Path
    healthz: Path
    seed_ids: Path  # the seed recipe's own users
    me: Path


def cpu_path(scenario: Scenario) -> tuple[str, ...]:
    """The services a scenario's requests pass through, whose CPU time is counted per request."""
    if scenario.key.startswith(CEILING):
        return CEILING_PATH
    if scenario.key == SEED:
        return SEED_PATH
    if scenario.key == "nginx_healthz":
        return ("nginx",)
    return AUTH_PATH if scenario.key in ("login", "refresh", "me") else API_PATH


def _pace_ms(config: BenchConfig, ceiling_rps: float) -> float:
    """The mean gap after each answer at which the run's connections offer half the ceiling's throughput."""
    return config.connections * 1000 / (ceiling_rps / 2)


def _opts(
    mode: str, data: Path | None = None, tokens: Path | None = None, pace_ms: float | None = None
) -> dict[str, str]:
    options = {"mode": mode}
    if data is not None:
        options["data"] = str(data)
    if tokens is not None:
        options["tokens"] = str(tokens)
    if pace_ms is not None:
        options["pace_ms"] = f"{pace_ms:.3f}"
    return options


def references(config: BenchConfig, files: DataFiles) -> list[Scenario]:
    """What every other figure is compared with, each behind the same nginx configuration: nginx alone,
    the framework ceiling and the seed's recipe."""
    return [
        Scenario("nginx_healthz", "nginx answering /healthz itself", config.load_url, _opts("paths", files.healthz)),
        # The same requests (token included, ignored) as the cached GET, to an app that does nothing.
        Scenario(
            CEILING,
            "Framework ceiling: bare Flask GET /api/users/<id>",
            config.ceiling_load_url,
            _opts("get", files.cached_ids, files.tokens),
        ),
        Scenario(
            SEED,
            "Seed recipe: bare Flask users API, gunicorn -w 4",
            config.seed_load_url,
            _opts("get", files.seed_ids, files.tokens),
        ),
    ]


def tails(config: BenchConfig, files: DataFiles, ceiling_rps: float) -> list[Scenario]:
    """The tail two more ways: closed loop at a few connections, and paced at half the framework
    ceiling's throughput (a steady arrival rate, so the load generator's own queueing cannot hide the
    server's), for the ceiling and the authenticated cached read alike; and the signed-in account."""
    pace_ms = _pace_ms(config, ceiling_rps)
    get, few = _opts("get", files.cached_ids, files.tokens), FEW_CONNECTIONS
    return [
        Scenario(f"{CEILING}_few", "Framework ceiling", config.ceiling_load_url, get, connections=few),
        Scenario("get_cached_few", "GET /api/users/<id>, cache hits", config.load_url, get, connections=few),
        Scenario(
            f"{CEILING}_paced",
            f"Framework ceiling, paced at {ceiling_rps / 2:,.0f}/s",
            config.ceiling_load_url,
            _opts("get", files.cached_ids, files.tokens, pace_ms),
        ),
        Scenario(
            "get_cached_paced",
            f"GET /api/users/<id>, cache hits, paced at {ceiling_rps / 2:,.0f}/s",
            config.load_url,
            _opts("get", files.cached_ids, files.tokens, pace_ms),
        ),
        Scenario("me", "GET /auth/me", config.load_url, _opts("paths", files.me, files.tokens), connections=few),
    ]


def ceiling_again(config: BenchConfig, files: DataFiles) -> Scenario:
    """The framework ceiling once more at the end: how much the machine's load drifted during the run."""
    first = references(config, files)[1]
    return Scenario(CEILING, "Framework ceiling, again at the end", first.url, first.options)


def cached(config: BenchConfig, files: DataFiles, rows: int, first: Path, deep: Path) -> list[Scenario]:
    """The api with its cache on (the default), and the auth service."""
    base, tokens = config.load_url, files.tokens
    return [
        Scenario("get_cached", "GET /api/users/<id>, cache hits", base, _opts("get", files.cached_ids, tokens), rows),
        Scenario(
            "list_first_cached", "GET /api/users (first page), cache on", base, _opts("paths", first, tokens), rows
        ),
        Scenario(
            "list_deep_cached", "GET /api/users?cursor= (90% deep), cache on", base, _opts("paths", deep, tokens), rows
        ),
        Scenario("post", "POST /api/users", base, _opts("post", tokens=tokens), rows),
        Scenario("patch", "PATCH /api/users/<id>", base, _opts("patch", files.owned_ids, tokens), rows),
        Scenario(
            "login",
            "POST /auth/login (Argon2id)",
            base,
            _opts("login", files.login_body),
            connections=LOGIN_CONNECTIONS,
        ),
        Scenario("refresh", "POST /auth/refresh", base, _opts("refresh", files.refresh_tokens)),
    ]


MIX = (80, 10, 10)  # percentages of cached reads, list pages and creates in the mixed scenario


def mixed(config: BenchConfig, files: DataFiles, rows: int, pages: Path, ceiling_rps: float) -> Scenario:
    """What an application's clients do, paced at half the framework ceiling: mostly cached reads of
    single users, some list pages, some creates (each create retires the list pages' cached copies,
    so the pages read after it are misses). Its p99 shows what writes do to the readers' tail."""
    get, pages_share, posts = MIX
    options = _opts("mix", files.cached_ids, files.tokens, _pace_ms(config, ceiling_rps))
    options |= {"pages": str(pages), "mix": f"{get},{pages_share},{posts}"}
    title = (
        f"Mixed: {get}% GET /api/users/<id>, {pages_share}% list pages, {posts}% POST, "
        f"paced at {ceiling_rps / 2:,.0f}/s"
    )
    return Scenario("mixed", title, config.load_url, options, rows)


def uncached(config: BenchConfig, files: DataFiles, rows: int, ids: Path, first: Path, deep: Path) -> list[Scenario]:
    """The api with CACHE_TTL_SECONDS=0: every read goes to Postgres (the scale runs)."""
    base, tokens = config.load_url, files.tokens
    return [
        Scenario("get_uncached", "GET /api/users/<id>, cache off", base, _opts("get", ids, tokens), rows),
        Scenario(
            "list_first_uncached", "GET /api/users (first page), cache off", base, _opts("paths", first, tokens), rows
        ),
        Scenario(
            "list_deep_uncached",
            "GET /api/users?cursor= (90% deep), cache off",
            base,
            _opts("paths", deep, tokens),
            rows,
        ),
    ]
