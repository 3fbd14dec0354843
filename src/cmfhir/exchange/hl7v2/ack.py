"""The HL7 v2 acknowledgment (original mode, HL7 v2.x chapter 2, 2.9.2): MSH, MSA with AA,
AE or AR, and for an error an ERR segment saying what and where (ERR-1 in v2.3/2.4,
ERR-2..ERR-8 from v2.5 on)."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count

from cmfhir.exchange.hl7v2.message import V2Error, V2Message

__all__ = ["build_ack", "fallback_ack"]

_ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
_sequence = count(1)


def _escape(text: str) -> str:
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    out = out.replace("&", "\\T\\").replace("~", "\\R\\")
    return out.replace("\r", " ").replace("\n", " ")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def _control_id() -> str:
    return f"ACK{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}{next(_sequence):06d}"


def _err(error: V2Error, version: str) -> str:
    code = error.code
    text = _ERROR_TEXT.get(code, "Application internal error")
    location = ""
    if error.segment:
        location = f"{error.segment}^{error.sequence}"
        if error.field is not None:
            location += f"^{error.field}"
    if version in ("2.3", "2.3.1", "2.4", ""):
        return (
            f"ERR|{location}^{code}&{_escape(text)}&HL70357"
            if location
            else (f"ERR|^^^{code}&{_escape(text)}&HL70357")
        )
    severity = "E"
    return f"ERR||{location}|{code}^{_escape(text)}^HL70357|{severity}||||{_escape(error.text)}"


def build_ack(
    message: V2Message, code: str, *, error: V2Error | None = None, text: str = ""
) -> str:
    """The ACK of `message`, segments ended by CR."""
    msh = message.msh
    version = message.version or "2.5"
    event = message.message_type[1]
    header = "|".join(
        [
            "MSH",
            "^~\\&",
            _escape(msh[5].component(1)),
            _escape(msh[6].component(1)),
            _escape(msh[3].component(1)),
            _escape(msh[4].component(1)),
            _now(),
            "",
            f"ACK^{_escape(event)}^ACK" if event else "ACK",
            _control_id(),
            _escape(msh[11].component(1)) or "P",
            _escape(version),
        ]
    )
    note = error.text if error is not None else text
    segments = [header, f"MSA|{code}|{_escape(message.control_id)}|{_escape(note)}"]
    if error is not None:
        segments.append(_err(error, version))
    return "\r".join(segments) + "\r"


def fallback_ack(error: V2Error) -> str:
    """The ACK of a message whose header could not be read."""
    header = f"MSH|^~\\&|cmfhir||||{_now()}||ACK|{_control_id()}|P|2.5"
    return "\r".join([header, f"MSA|{error.ack}||{_escape(error.text)}", _err(error, "2.5")]) + "\r"
