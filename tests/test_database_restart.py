"""PostgreSQL restarted under load: while it is down requests fail fast with 503 and
Retry-After (never 500, never a hang), and the server recovers by itself when it returns."""

from __future__ import annotations

import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from cmfhir.config import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' runtime-dir warning at import
    import pgserver
    from pgserver._commands import pg_ctl

FHIR = {"Content-Type": "application/fhir+json"}


class Load(threading.Thread):
    """Reads and writes in a loop until stopped, counting the statuses it gets."""

    def __init__(self, base: str, pid: str) -> None:
        super().__init__(daemon=True)
        self.base, self.pid = base, pid
        self.statuses: Counter[int] = Counter()
        self.slowest = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        body = {"resourceType": "Patient", "active": True}
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self.halt.is_set():
                for method, path, payload in (
                    ("GET", f"Patient/{self.pid}", None),
                    ("POST", "Patient", body),
                ):
                    started = time.monotonic()
                    response = http.request(method, path, json=payload, headers=FHIR)
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.statuses[response.status_code] += 1
                    if response.status_code == 503:
                        assert response.headers.get("Retry-After")
                        assert response.json()["resourceType"] == "OperationOutcome"
                time.sleep(0.02)


def _wait_for(http: httpx.Client, path: str, status: int, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        response = http.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_postgres_restart_under_load(
    settings: Settings, start_server: type, tmp_path: Path
) -> None:
    pgdata = tmp_path / "pg"
    database = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    own = settings.model_copy(update={"database_url": database.get_uri()})
    with start_server(own) as server, httpx.Client(base_url=server.base, timeout=30) as http:
        pid = http.post("Patient", json={"resourceType": "Patient"}, headers=FHIR).json()["id"]
        load = Load(server.base, pid)
        load.start()
        time.sleep(0.5)
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=database.system_user)
        down = _wait_for(http, f"Patient/{pid}", 503, 15)
        assert down.status_code == 503
        assert down.headers["Retry-After"]
        time.sleep(1.0)
        database.ensure_postgres_running()
        back = _wait_for(http, f"Patient/{pid}", 200, 30)
        assert back.status_code == 200, back.text
        time.sleep(0.5)
        load.halt.set()
        load.join(timeout=60)
        assert set(load.statuses) <= {200, 201, 503}, load.statuses
        assert load.statuses[503] > 0 and load.statuses[200] > 0
        assert load.slowest < 10, f"a request took {load.slowest:.1f} s while the database was down"
        created = http.post("Patient", json={"resourceType": "Patient"}, headers=FHIR)
        assert created.status_code == 201
    database.cleanup()
