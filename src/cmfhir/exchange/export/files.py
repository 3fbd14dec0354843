"""Where an export's NDJSON files live: one directory per job under the export directory
(`CMFHIR_EXPORT_DIR`), shared by the API processes and the workers of one machine."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["file_path", "job_dir", "remove_job_files"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.ndjson$")
_JOB = re.compile(r"^[a-f0-9]{32}$")


def job_dir(root: Path, job_id: str) -> Path:
    if not _JOB.match(job_id):
        raise ValueError("not an export job id")
    return root / job_id


def file_path(root: Path, job_id: str, name: str) -> Path | None:
    """The file `name` of job `job_id`, or None for a name no export writes."""
    if not _JOB.match(job_id) or not _NAME.match(name):
        return None
    return root / job_id / name


def remove_job_files(root: Path, job_id: str) -> None:
    if _JOB.match(job_id):
        shutil.rmtree(root / job_id, ignore_errors=True)
