"""The embedded PostgreSQL runs with cmfhir's settings (store/database.py EMBEDDED_SETTINGS)
from its first start, even when several processes start it at once on a fresh directory (a
test run's workers, a server's workers): the first restarts it for them before the others
join."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cmfhir.store.database import EMBEDDED_SETTINGS

_JOIN = """
import sys, time
from pathlib import Path
from cmfhir.store.database import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
server.start()
shown = server._server.psql("SHOW max_connections; SHOW shared_buffers;")
print(" ".join(line.strip() for line in shown.splitlines() if line.strip()))
time.sleep(1.0)
server.stop()
"""


def test_processes_starting_a_fresh_server_at_once_all_get_the_settings(tmp_path: Path) -> None:
    joining = [
        subprocess.Popen(
            [sys.executable, "-c", _JOIN, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=180) for process in joining]
    assert [process.returncode for process in joining] == [0, 0, 0], outputs
    for out, _ in outputs:
        assert f" {EMBEDDED_SETTINGS['max_connections']} " in out
        assert f" {EMBEDDED_SETTINGS['shared_buffers']} " in out
    # The last one to leave stopped it.
    assert not (tmp_path / "pg" / "postmaster.pid").exists()
