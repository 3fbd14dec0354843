"""Data in and out: HL7 v2 ADT, $everything, Bulk Data export and import."""
