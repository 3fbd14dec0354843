"""Bulk Data Access 2.0 `$export` (https://hl7.org/fhir/uv/bulkdata/export.html): kick-off,
status, cancel and files (`kickoff.py`), the export itself on one snapshot (`job.py`), and
the worker that claims jobs (`worker.py`)."""
