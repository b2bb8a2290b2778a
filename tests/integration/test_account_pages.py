"""The pages mailed links open (/account/reset-password, /account/verify-email,
/account/sign-in-alert), served by the edge and used as a person would: Debian's Chromium, driven
headless through Debian's chromedriver by Selenium (no browser download), opening the very link
the mail worker sent to the development sink (PUBLIC_URL's default points at these pages).

One browser for the module. Every page must load nothing from another origin, break no rule of
its Content-Security-Policy and throw nothing. Screenshots are kept in ``test-artifacts/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import ISSUED_SECRETS, PASSWORD, ROOT, Stack, psql_as, register
from .test_recovery_flow import mails_to

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# What runs headless on this kind of machine: no sandbox as root, no GPU, and none of Chromium's
# own background traffic (updates, sync, field trials), which a closed network refuses.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=900,700",
)
ARTIFACTS = ROOT / "test-artifacts"
LINK = re.compile(r"(https?://\S+/account/(reset-password|verify-email|sign-in-alert))#token=([A-Za-z0-9_-]{43})\b")
NEW_PASSWORD = "a fresh passphrase from the page"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; require-trusted-types-for 'script'"
)
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for program in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(program), f"{program} is missing: scripts/test.sh installs Debian's chromium packages"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver named explicitly: Selenium then downloads nothing (no Selenium Manager).
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Visit:
    """A page opened in the browser: what it requested and logged, and its final state."""

    def __init__(self, browser: WebDriver, url: str, screenshot: str) -> None:
        self.browser = browser
        self.screenshot = screenshot
        browser.get_log("performance")  # what came before is not this page's
        browser.get_log("browser")
        browser.get(url)

    def status(self, outcome: str) -> str:
        """The page's status line once it shows ``outcome`` (done or failed)."""
        WebDriverWait(self.browser, WAIT_SECONDS).until(
            lambda b: b.find_element(By.ID, "status").get_attribute("class") == outcome
        )
        ARTIFACTS.mkdir(exist_ok=True)
        self.browser.save_screenshot(str(ARTIFACTS / self.screenshot))
        return self.browser.find_element(By.ID, "status").text

    def requests(self) -> list[tuple[str, str]]:
        """(method, URL) of every request the page made over the network."""
        sent = []
        for entry in self.browser.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                request = message["params"]["request"]
                if request["url"].startswith(("http:", "https:")):
                    sent.append((request["method"], request["url"]))
        return sent

    def assert_clean(self, origin: str, expected_errors: tuple[int, ...] = ()) -> None:
        """Nothing from another origin, no policy violation, no script error; the only failed loads
        are the API answers the test expected (``expected_errors``)."""
        sent = self.requests()
        assert sent, "the page made no request at all"
        assert {_origin(url) for _method, url in sent} == {origin}, sent
        problems = []
        for entry in self.browser.get_log("browser"):
            message = entry["message"]
            expected = any(f"status of {status} " in message for status in expected_errors)
            if entry["level"] in {"SEVERE", "WARNING"} and not expected:
                problems.append(message)
        assert problems == []


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def mailed_link(stack: Stack, email: str, subject: str, page: str, count: int = 1) -> tuple[str, str]:
    """The newest mailed link to ``page`` (the whole URL, as the mail has it) and its token."""
    message = mails_to(stack, email, subject, count)[-1]
    found = [m for m in LINK.findall(message["text"]) if m[1] == page]
    assert found, message["text"]
    base, _page, token = found[-1]
    ISSUED_SECRETS.add(token)
    return f"{base}#token={token}", token


def test_mailed_links_open_the_edges_pages(stack: Stack, http: requests.Session) -> None:
    """PUBLIC_URL's default: the link is the edge's own page, on the port the stack publishes."""
    email = register(stack, http)
    link, _token = mailed_link(stack, email, "Confirm", "verify-email")
    port = urlsplit(stack.base_url).port
    assert link.startswith(f"http://localhost:{port}/account/verify-email#token=")
    page = http.get(link.split("#")[0], timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in page.text
    assert "style=" not in page.text
    assert http.post(link.split("#")[0], timeout=10).status_code == 405
    assert http.get(f"{stack.base_url}/account/", timeout=10).status_code == 404
    assert http.get(f"{stack.base_url}/account/nothing-here", timeout=10).status_code == 404


def test_the_reset_page_sets_a_new_password_from_the_mailed_link(
    stack: Stack, http: requests.Session, browser: WebDriver
) -> None:
    email = register(stack, http)
    assert http.post(f"{stack.base_url}/auth/password-reset", json={"email": email}, timeout=10).status_code == 202
    link, _token = mailed_link(stack, email, "password", "reset-password")
    origin = _origin(link)

    visit = Visit(browser, link, "account-reset-password.png")
    form = WebDriverWait(browser, WAIT_SECONDS).until(lambda b: b.find_element(By.ID, "reset"))
    assert "token" not in browser.current_url  # taken out of the address bar and history
    _fill(browser, "a" * 20, "a" * 20)
    assert "too repetitive" in visit.status("failed")  # the policy's reason, and the token is kept
    _fill(browser, NEW_PASSWORD, NEW_PASSWORD)
    assert "new password is set" in visit.status("done")
    assert not form.is_displayed()
    visit.assert_clean(origin, expected_errors=(422,))

    signed_in = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": NEW_PASSWORD}, timeout=10)
    assert signed_in.status_code == 200
    ISSUED_SECRETS.add(signed_in.json()["refresh_token"])
    assert (
        http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).status_code
        == 401
    )

    # The same link again: the page says why it cannot be used.
    again = Visit(browser, link, "account-reset-password-used.png")
    _fill(browser, "another fresh passphrase here", "another fresh passphrase here")
    assert "already been used" in again.status("failed")
    again.assert_clean(origin, expected_errors=(400,))


def _fill(browser: WebDriver, password: str, repeated: str) -> None:
    """Type into the reset form once the page's script has shown it, and submit."""
    WebDriverWait(browser, WAIT_SECONDS).until(lambda b: b.find_element(By.ID, "reset").is_displayed())
    for field, value in (("new-password", password), ("repeat-password", repeated)):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#reset button").click()


def test_the_verify_page_verifies(stack: Stack, http: requests.Session, browser: WebDriver) -> None:
    email = register(stack, http)
    link, _token = mailed_link(stack, email, "Confirm", "verify-email")
    visit = Visit(browser, link, "account-verify-email.png")
    assert "is confirmed" in visit.status("done")
    visit.assert_clean(_origin(link))
    tokens = http.post(f"{stack.base_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).json()
    ISSUED_SECRETS.add(tokens["refresh_token"])
    me = http.get(
        f"{stack.base_url}/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert me.json()["email_verified"] is True


def test_an_expired_token_shows_its_error(stack: Stack, http: requests.Session, browser: WebDriver) -> None:
    email = register(stack, http)
    link, token = mailed_link(stack, email, "Confirm", "verify-email")
    digest = hashlib.sha256(token.encode()).hexdigest()
    expired = psql_as(
        stack,
        "auth",
        f"UPDATE auth.account_tokens SET expires_at = now() - interval '1 minute' WHERE token_hash = '{digest}'",
    )
    assert expired.stdout.strip() == "UPDATE 1", expired.stderr
    visit = Visit(browser, link, "account-verify-email-expired.png")
    assert visit.status("failed") == "The token has expired; ask for a new link."
    visit.assert_clean(_origin(link), expected_errors=(400,))

    bare = Visit(browser, link.split("#")[0], "account-verify-email-no-token.png")
    assert "needs the link from your mail" in bare.status("failed")


def test_the_sign_in_alert_page_ends_that_session(stack: Stack, http: requests.Session, browser: WebDriver) -> None:
    email = register(stack, http)
    sign_in = {"email": email, "password": PASSWORD}
    mine = http.post(f"{stack.base_url}/auth/login", json=sign_in, timeout=10).json()
    theirs = http.post(
        f"{stack.base_url}/auth/login", json=sign_in, headers={"User-Agent": "curl/8.0 (someone else)"}, timeout=10
    ).json()
    ISSUED_SECRETS.update({mine["refresh_token"], theirs["refresh_token"]})
    link, _token = mailed_link(stack, email, "New sign-in", "sign-in-alert")
    alert = mails_to(stack, email, "New sign-in")[-1]
    assert "curl" in alert["text"]

    visit = Visit(browser, link, "account-sign-in-alert.png")
    WebDriverWait(browser, WAIT_SECONDS).until(lambda b: b.find_element(By.ID, "report").is_displayed())
    browser.find_element(By.CSS_SELECTOR, "#report button").click()
    assert "That session has ended" in visit.status("done")
    visit.assert_clean(_origin(link))

    theirs_header = {"Authorization": f"Bearer {theirs['access_token']}"}
    assert http.get(f"{stack.base_url}/auth/me", headers=theirs_header, timeout=10).status_code == 401
    mine_header = {"Authorization": f"Bearer {mine['access_token']}"}
    assert http.get(f"{stack.base_url}/auth/me", headers=mine_header, timeout=10).status_code == 200
    mailed_link(stack, email, "password", "reset-password")  # and the owner is asked to choose a new password
