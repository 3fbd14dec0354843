"""Who may use HL7 v2 intake and Bulk Data until the access predicate covers them: a
backend (system) client or an unrestricted principal, nobody else."""

from __future__ import annotations

import pytest

from cmfhir.auth.principal import OPEN, TRUSTED, Principal
from cmfhir.exchange.access import Forbidden, require_system


@pytest.mark.parametrize(
    "principal",
    [OPEN, TRUSTED, Principal("system", client_id="hie")],
    ids=["open", "trusted", "system"],
)
def test_allowed(principal: Principal) -> None:
    require_system(principal, "HL7 v2 intake")


@pytest.mark.parametrize(
    "principal",
    [Principal("user", fhir_user="Practitioner/1"), Principal("patient", patient="1")],
    ids=["user", "patient"],
)
def test_refused(principal: Principal) -> None:
    with pytest.raises(Forbidden) as refused:
        require_system(principal, "HL7 v2 intake")
    assert refused.value.status == 403
    assert "system/" in refused.value.diagnostics
