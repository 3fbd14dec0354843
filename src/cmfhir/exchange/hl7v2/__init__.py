"""HL7 v2 ADT in (docs/exchange.md): parse, match, map to FHIR, one transaction, ACK."""

from cmfhir.exchange.hl7v2.process import Ack, receive

__all__ = ["Ack", "receive"]
