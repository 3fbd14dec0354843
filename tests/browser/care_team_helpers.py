"""Fixtures and helpers of the care-team console's browser tests (test_care_team.py): a
cmfhir server with CMFHIR_AUTH=smart and its workers (the gap engine) on a free loopback
port, the console's SMART client registered on it, a headless Chromium signed in once through
the real authorize form, axe-core and screenshots.

Skipped, saying why, when selenium, Debian's `chromium` or `chromedriver` (apt packages
chromium and chromium-driver) are absent."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from cmfhir.app import create_app
from cmfhir.auth.keys import SigningKeys
from cmfhir.auth.tokens import issue_access_token
from cmfhir.config import Settings

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCREENSHOTS = ROOT / ".artifacts" / "screenshots"
AXE = HERE / "vendor" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CLIENT_ID = "cmfhir-care-team"
CLIENT_SCOPE = "openid fhirUser launch/patient offline_access user/*.cruds"
PASSWORD = "correct horse battery staple"
WAIT_S = 30.0


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    absent = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    if absent:
        return f"{' and '.join(absent)} not found (apt-get install chromium chromium-driver)"
    return None


@dataclass
class ConsoleServer:
    origin: str
    database_url: str
    data_dir: Path

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    @property
    def app_url(self) -> str:
        return f"{self.origin}/apps/care-team/"

    def system(self) -> httpx.Client:
        """An API client with a system/*.cruds token signed by the server's keys."""
        issued = issue_access_token(
            SigningKeys(self.data_dir / "auth-keys"),
            issuer=f"{self.origin}/auth",
            audience=self.base,
            client_id="care-team-tests",
            scope="system/*.cruds system/cmfhir-sensitive.read",
            lifetime=900,
            subject="care-team-tests",
        )
        return httpx.Client(
            base_url=self.base, timeout=60, headers={"Authorization": f"Bearer {issued.token}"}
        )


class _Server:
    """uvicorn in a thread on a socket bound first, so the settings can name its URL."""

    def __init__(self, settings_for: Callable[[str], Settings]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.origin = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings_for(self.origin)),
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console tests' server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def _register_client(database_url: str, data_dir: Path, redirect_uri: str) -> None:
    """The console's public client, as `cmfhir client register` makes it, unless the server
    registered it already."""
    from cmfhir.store import OAuthStore, open_database
    from cmfhir.store.oauth import Client

    async def run() -> None:
        database = await open_database(database_url, data_dir, pool_size=1)
        try:
            store = OAuthStore(database.engine)
            known = await store.client(CLIENT_ID)
            if known is None or redirect_uri not in known.redirect_uris:
                uris = (*(known.redirect_uris if known else ()), redirect_uri)
                await store.save_client(Client(CLIENT_ID, True, uris, None, CLIENT_SCOPE))
        finally:
            await database.dispose()

    asyncio.run(run())


def _add_user(database_url: str, data_dir: Path, username: str, fhir_user: str) -> None:
    from cmfhir.auth.passwords import hash_password
    from cmfhir.store import OAuthStore, open_database
    from cmfhir.store.oauth import User

    async def run() -> None:
        database = await open_database(database_url, data_dir, pool_size=1)
        try:
            await OAuthStore(database.engine).save_user(
                User(username, hash_password(PASSWORD), fhir_user)
            )
        finally:
            await database.dispose()

    asyncio.run(run())


@pytest.fixture(scope="module")
def console_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleServer]:
    reason = missing_browser()
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")
    data_dir = tmp_path_factory.mktemp("care-team-data")

    def settings(origin: str) -> Settings:
        return Settings(
            database_url=database_url,
            data_dir=data_dir,
            auth="smart",
            base_url=f"{origin}/fhir",
            audit=False,
        )

    with _Server(settings) as running:
        _register_client(database_url, data_dir, f"{running.origin}/apps/care-team/")
        yield ConsoleServer(running.origin, database_url, data_dir)


def add_user(server: ConsoleServer, fhir_user: str) -> str:
    """A login for `fhir_user` (password PASSWORD); its username."""
    username = f"cm-{uuid.uuid4().hex[:8]}"
    _add_user(server.database_url, server.data_dir, username, fhir_user)
    return username


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium at phone-to-desktop width (one per module)."""
    reason = missing_browser()
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def find(driver: Any, css: str, timeout: float = WAIT_S) -> Any:
    """The first displayed element matching `css`, once there is one."""
    from selenium.webdriver.common.by import By

    def shown(d: Any) -> Any:
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return False

    return wait_for(driver, shown, timeout)


def wait_text(driver: Any, text: str, css: str = "main", timeout: float = WAIT_S) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    try:
        wait_for(
            driver,
            lambda d: any(text in e.text for e in d.find_elements(By.CSS_SELECTOR, css)),
            timeout,
        )
    except TimeoutException:
        shown = " | ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
        logs = [entry.get("message", "") for entry in driver.get_log("browser")]
        raise AssertionError(
            f"{text!r} never appeared in {css}; it shows: {shown[:2000]}; browser log: {logs[-5:]}"
        ) from None


def sign_in(driver: Any, server: ConsoleServer, username: str) -> None:
    """Open the console: it sends the browser to the authorize form; sign in there; back on
    the console once fhirclient has exchanged the code."""
    from selenium.webdriver.common.by import By

    driver.get(server.app_url)
    wait_for(
        driver, lambda d: "/auth/authorize" in d.current_url and d.find_elements(By.ID, "username")
    )
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(
        driver,
        lambda d: d.current_url.startswith(server.app_url) and "code=" not in d.current_url,
    )


def go(driver: Any, server: ConsoleServer, route: str) -> None:
    """Another screen of the signed-in console: by its address (#/...) as a link would, no
    page load (a page load would keep the SMART session too, but costs a sign-in round)."""
    if driver.current_url.startswith(server.app_url):
        driver.execute_script("window.location.hash = arguments[0]", f"#/{route}")
    else:
        driver.get(f"{server.app_url}#/{route}")


def save_screenshot(driver: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


_AXE_DIGEST = (HERE / "vendor" / "axe.min.js.sha256").read_text().split()[0]


def check_accessibility(driver: Any, name: str) -> None:
    """axe-core (WCAG A/AA and best practices) on the page: fails on a serious or critical
    violation, naming the rule and the elements. Saves a screenshot under `name` too."""
    save_screenshot(driver, name)
    if not driver.execute_script("return typeof window.axe === 'object'"):
        source = AXE.read_bytes()
        assert hashlib.sha256(source).hexdigest() == _AXE_DIGEST, "vendor/axe.min.js changed"
        driver.execute_script(source.decode("utf-8"))
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ['violations']})
          .then((r) => done(r.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
          }))))
          .catch((e) => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
        """
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe-core on {name}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {', '.join(v['nodes'])}" for v in bad
    )


def poll(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """What `check()` returns once truthy (for the gap engine, which works in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
