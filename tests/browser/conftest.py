"""Browser tests of the built-in apps (/apps/<name>/) in headless Chromium through Selenium.

Skipped, with the reason in the summary, when Debian's `chromium` and `chromedriver` (apt
packages chromium and chromium-driver) or selenium are not installed. One set of fixtures and
helpers for every app:

- `app_server` (package): ONE cmfhir server for the whole package, on a free loopback port,
  made by `server_settings`: CMFHIR_AUTH=smart with its base URL set (so the apps' SMART
  clients are registered for it), the background workers on (the console needs the gap engine
  and the subscription notifications for its worklist), the audit trail on and written every
  0.2 s (the member app's "who looked at my record"). Its methods create users (`add_user`),
  give API clients with tokens it signed (`system()`, `token(...)`), and create resources.
- `browser` (module): a headless Chromium (WebDriver), one per test module.
- `sign_in(browser, app_server, app, username, password)`: the real SMART launch of
  /apps/<app>/ through the authorize form (`fill_sign_in_form` when the browser is on that
  form already); `new_session(browser)` forgets the tab's SMART
  session (sessionStorage) so another user can sign in.
- `go(browser, app_server, app, route)`: another screen (#/route) of a signed-in app.
- `wait_for`, `find`, `wait_text` (which reports what the page shows and the browser log when
  the text never comes), `poll` (for the server's background work).
- `check_accessibility(browser, name)`: axe-core on the page; fails on serious or critical
  violations; saves a screenshot. `save_screenshot(browser, name)`:
  .artifacts/screenshots/<name>.png.
"""

from __future__ import annotations

import hashlib
import os
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
from tests.auth.conftest import Bearer, run_cli

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
PASSWORD = "correct horse battery staple"
WAIT_S = 30.0


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    absent = [
        name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not path
    ]
    if absent:
        return (
            f"{' and '.join(absent)} not found on PATH "
            "(apt-get install chromium chromium-driver to run them)"
        )
    return None


SKIP_REASON = _missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SKIP_REASON is None:
        return
    marker = pytest.mark.skip(reason=f"browser tests skipped: {SKIP_REASON}")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(marker)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SKIP_REASON is not None:
        terminalreporter.write_line(
            f"Browser tests (tests/browser) were skipped: {SKIP_REASON}.", yellow=True, bold=True
        )


@dataclass
class User:
    username: str
    password: str
    fhir_user: str


@dataclass
class AppServer:
    origin: str  # http://127.0.0.1:PORT
    database_url: str
    data_dir: Path

    @property
    def base(self) -> str:
        return f"{self.origin}/fhir"

    def app_url(self, app: str) -> str:
        return f"{self.origin}/apps/{app}/"

    def add_user(self, fhir_user: str, username: str | None = None) -> User:
        """`cmfhir user add`, in this process."""
        username = username or f"user-{uuid.uuid4().hex[:8]}"
        run_cli(
            self.database_url, self.data_dir,
            "user", "add", "--username", username, "--password", PASSWORD,
            "--fhir-user", fhir_user,
        )  # fmt: skip
        return User(username, PASSWORD, fhir_user)

    def token(
        self, scope: str, *, fhir_user: str | None = None, patient: str | None = None
    ) -> Bearer:
        """An API client with a token signed by the server's keys, as after a login."""
        issued = issue_access_token(
            SigningKeys(self.data_dir / "auth-keys"),
            issuer=f"{self.origin}/auth",
            audience=self.base,
            client_id="browser-tests",
            scope=scope,
            lifetime=900,
            subject=fhir_user or "browser-tests",
            fhir_user=fhir_user,
            patient=patient,
        )
        return Bearer(self.base, issued.token)

    def system(self) -> Bearer:
        """An API client that may read and write everything (to set up data)."""
        return self.token("system/*.cruds system/cmfhir-sensitive.read")

    def client(self) -> httpx.Client:
        """Like `system()`, as one httpx.Client (kept connections; close it after use)."""
        return httpx.Client(
            base_url=self.base,
            timeout=60,
            headers={"Authorization": f"Bearer {self.system().token}"},
        )

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """POST the resource with the system client; the stored resource."""
        answer = self.system().post(f"/{resource['resourceType']}", json=resource)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


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
                raise RuntimeError("the browser tests' server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def server_settings(database_url: str, data_dir: Path, origin: str) -> Settings:
    """The settings of the browser tests' server at `origin`: what every app needs at once.

    - both apps: `auth="smart"` and `base_url` (the apps are registered as SMART clients for
      this origin at start);
    - the care-team console: `workers` (on by default: the gap engine opens and closes the
      gaps of its worklist, and the subscription notifications update it live);
    - the member app: `audit` with a short `audit_interval_s` (the AuditEvents of the care
      team's reads show in "who looked at my record" a moment after them).
    """
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        auth="smart",
        base_url=f"{origin}/fhir",
        workers=True,
        audit=True,
        audit_interval_s=0.2,
    )


@pytest.fixture(scope="package")
def app_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The one server of the tests/browser package (every module shares it; each module makes
    its own people and records, so they do not meet)."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    data_dir = tmp_path_factory.mktemp("browser-data")
    with _Server(lambda origin: server_settings(database_url, data_dir, origin)) as running:
        yield AppServer(running.origin, database_url, data_dir)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium at a desktop size; English as the browser's language."""
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    # The browser's clock in North Carolina's time zone, where the reports count their
    # months: the apps' "this month" then agrees with the server's near a month's end.
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": "America/New_York"})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
    """What `condition(driver)` returns once it is truthy (WebDriverWait)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def find(driver: Any, css: str, timeout: float = WAIT_S) -> Any:
    """The first displayed element matching `css`, waiting for it."""
    from selenium.webdriver.common.by import By

    def shown(d: Any) -> Any:
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
        return False

    return wait_for(driver, shown, timeout)


def replace_text(driver: Any, css: str, text: str) -> Any:
    """Type `text` over what the field at `css` holds, as a user would (select all, type),
    so that the app's own state follows each key; then wait until the field shows exactly
    `text` (an app re-rendering the field from older state would otherwise keep it)."""
    from selenium.webdriver.common.keys import Keys

    def typed(d: Any) -> Any:
        field = find(d, css)
        if field.get_attribute("value") != text:
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            field.send_keys(text)
        return field if field.get_attribute("value") == text else False

    return wait_for(driver, typed)


def wait_text(driver: Any, text: str, css: str = "main", timeout: float = WAIT_S) -> None:
    """Wait until an element matching `css` shows `text`; else fail saying what it shows and
    the last errors of the browser's console."""
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


def poll(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """What `check()` returns once truthy (for the server's background work: the gap engine,
    the audit trail)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def sign_in(
    driver: Any, server: AppServer, app: str, username: str, password: str = PASSWORD
) -> None:
    """Open /apps/<app>/ and sign in through the real authorize form. The app either sends
    the browser to /auth/authorize at once or shows a button marked `data-sign-in`; after
    the form, the browser is back on the app (fhirclient has taken the code)."""
    from selenium.webdriver.common.by import By

    driver.get(server.app_url(app))

    def form_or_button(d: Any) -> Any:
        if "/auth/authorize" in d.current_url and d.find_elements(By.ID, "username"):
            return "form"
        buttons = d.find_elements(By.CSS_SELECTOR, "[data-sign-in]")
        return "button" if buttons and buttons[0].is_displayed() else False

    if wait_for(driver, form_or_button) == "button":
        driver.find_element(By.CSS_SELECTOR, "[data-sign-in]").click()
        wait_for(driver, lambda d: d.find_elements(By.ID, "username"))
    fill_sign_in_form(driver, server, app, username, password)


def fill_sign_in_form(
    driver: Any, server: AppServer, app: str, username: str, password: str = PASSWORD
) -> None:
    """On the authorize form (an app's launch brought the browser there): sign in, and wait
    until the browser is back on the app with the code taken."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(
        driver,
        lambda d: d.current_url.startswith(server.app_url(app)) and "code=" not in d.current_url,
    )


def new_session(driver: Any) -> None:
    """Forget the tab's SMART session (fhirclient keeps it in sessionStorage; the server keeps
    none), so that the next `sign_in` is a new user's."""
    if driver.current_url.startswith("http"):
        driver.execute_script("sessionStorage.clear()")


def go(driver: Any, server: AppServer, app: str, route: str) -> None:
    """Another screen of the signed-in app: by its address (#/route) as a link would, with no
    page load when the browser is on the app already (a load keeps the session too, but costs
    a round of SMART's ready())."""
    if driver.current_url.startswith(server.app_url(app)):
        driver.execute_script("window.location.hash = arguments[0]", f"#/{route}")
    else:
        driver.get(f"{server.app_url(app)}#/{route}")


def save_screenshot(driver: Any, name: str) -> Path:
    """The page as a PNG under .artifacts/screenshots/ (not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


_AXE_DIGEST = (HERE / "vendor" / "axe.min.js.sha256").read_text().split()[0]


def check_accessibility(driver: Any, name: str) -> None:
    """Run axe-core (WCAG 2.0/2.1 A and AA rules and best practices) on the current page and
    fail on a serious or critical violation, naming the rule and the elements. Saves a
    screenshot under `name` as well."""
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
