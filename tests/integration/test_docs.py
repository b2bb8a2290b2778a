"""Interactive API documentation at /docs: Swagger UI on both OpenAPI documents, every file served
by nginx itself, looked at in Debian's headless Chromium on a network with no way out.

Screenshots are kept in ``test-artifacts/`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .conftest import ROOT, Stack

pytestmark = pytest.mark.integration

BROWSER_DIR = Path(__file__).parent / "browser"
BROWSER_IMAGE = "wharf-local/chromium:trixie"
ARTIFACTS = ROOT / "test-artifacts"
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-RL3ie0nH+Lzz2YNqQN83mnU0J1ot4QL7b99vMdIX99w='; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The page's console on stderr; time enough for the page's scripts and fetches (virtual time
# runs ahead whenever the page is idle, so this is a budget, not a wait); the DOM on stdout.
CHROMIUM_FLAGS = (
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1280,1400",
    "--virtual-time-budget=15000",
    "--screenshot=/home/browser/page.png",
    "--dump-dom",
)
OPERATION = re.compile(r'opblock-summary-method">([A-Z]+)<.{0,400}?data-path="([^"]+)"', re.DOTALL)


@dataclass(frozen=True)
class Page:
    dom: str
    console: list[str]  # what the page logged (CSP violations, failed loads, script errors)


@pytest.fixture(scope="session")
def browser_image() -> str:
    """Headless Chromium from Debian's packages, on the same Debian base the stack builds on."""
    base = os.environ.get("DEBIAN_IMAGE", "debian:trixie-slim")
    subprocess.run(
        ["docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={base}", "-t", BROWSER_IMAGE, str(BROWSER_DIR)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return BROWSER_IMAGE


@pytest.fixture
def browse(stack: Stack, browser_image: str) -> Iterator[object]:
    """Load a URL in Chromium attached to the stack's internal `backend` network only (no route out
    of the host: anything the page wanted from elsewhere would fail), after the page's scripts and
    fetches have run; keep a screenshot."""
    containers: list[str] = []

    def load(url: str, screenshot: str) -> Page:
        name = f"{stack.project}-chromium-{uuid.uuid4().hex[:8]}"
        containers.append(name)
        create = ["docker", "create", "--name", name, "--network", f"{stack.project}_backend", browser_image]
        subprocess.run([*create, *CHROMIUM_FLAGS, url], capture_output=True, check=True, timeout=30)
        run = subprocess.run(["docker", "start", "--attach", name], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        ARTIFACTS.mkdir(exist_ok=True)
        subprocess.run(["docker", "cp", f"{name}:/home/browser/page.png", str(ARTIFACTS / screenshot)], check=True)
        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        return Page(run.stdout, console)

    yield load
    for name in containers:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)


def _operations(document: dict[str, object]) -> set[tuple[str, str]]:
    paths: dict[str, dict[str, object]] = document["paths"]  # type: ignore[assignment]
    return {(method.upper(), path) for path, item in paths.items() for method in item}


@pytest.mark.parametrize("name", ["api", "auth"])
def test_docs_page_lists_every_operation_of_both_documents_offline(
    stack: Stack, http: requests.Session, browse: object, name: str
) -> None:
    document = http.get(f"{stack.base_url}/{name}/openapi.json", timeout=10).json()
    expected = _operations(document)
    assert expected

    page: Page = browse(f"http://nginx:8080/docs/?urls.primaryName={name}", f"docs-{name}.png")  # type: ignore[operator]

    assert set(OPERATION.findall(page.dom)) == expected
    assert document["info"]["title"] in page.dom
    # The selector offers both documents, whichever is shown.
    options = dict(re.findall(r'<option value="(/[a-z]+/openapi\.json)">([a-z]+)</option>', page.dom))
    assert options == {"/api/openapi.json": "api", "/auth/openapi.json": "auth"}
    # Nothing was refused by the Content-Security-Policy, failed to load or threw.
    assert page.console == []
    assert (ARTIFACTS / f"docs-{name}.png").stat().st_size > 10_000


def test_a_link_cannot_make_the_docs_load_another_document(stack: Stack, browse: object) -> None:
    url = "http://nginx:8080/docs/?urls.primaryName=evil&url=http://nginx:8080/auth/openapi.json"
    page: Page = browse(url, "docs-query.png")  # type: ignore[operator]
    assert 'data-path="/users"' in page.dom  # the first document, api; the query's url is ignored
    assert 'data-path="/login"' not in page.dom


def test_docs_are_local_files_under_a_self_only_policy(stack: Stack, http: requests.Session) -> None:
    moved = http.get(stack.base_url + "/docs", allow_redirects=False, timeout=5)
    assert (moved.status_code, moved.headers["Location"]) == (301, "/docs/")

    index = http.get(stack.base_url + "/docs/", timeout=5)
    assert index.status_code == 200
    assert index.headers["Content-Type"].startswith("text/html")
    assert index.headers["Content-Security-Policy"] == DOCS_CSP
    assert index.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in index.text  # nothing inline
    assert "style=" not in index.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', index.text)
    assert assets
    assert all(a.startswith("./") for a in assets), assets  # no CDN, nothing absolute
    types = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}
    for asset in assets:
        response = http.get(f"{stack.base_url}/docs/{asset[2:]}", timeout=10)
        assert response.status_code == 200, asset
        assert response.headers["Content-Type"].startswith(types[Path(asset).suffix]), asset
    # The 1.7 MB bundle goes out compressed at build time.
    bundle = http.get(stack.base_url + "/docs/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert bundle.headers["Content-Encoding"] == "gzip"
    assert int(bundle.raw.headers.get("Content-Length", "0")) < 700_000

    # The relaxed policy is for /docs/ only; its errors are the edge's problem+json.
    assert "script-src" not in http.get(stack.base_url + "/api/healthz", timeout=5).headers["Content-Security-Policy"]
    missing = http.get(stack.base_url + "/docs/nothing-here.js", timeout=5)
    assert (missing.status_code, missing.headers["Content-Type"]) == (404, "application/problem+json")
    posted = http.post(stack.base_url + "/docs/", data="x", timeout=5)
    assert (posted.status_code, posted.headers["Allow"]) == (405, "GET, HEAD")
