"""The care-gap engine: rules over a member snapshot, reconciled into DetectedIssues."""
