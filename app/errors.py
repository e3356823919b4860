"""One error family, one renderer: every failure leaves as an OperationOutcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: what is wrong (diagnostics) and where (expression)."""

    diagnostics: str
    expression: tuple[str, ...] = ()
    code: str | None = None  # overrides the error's code for this issue
    severity: str | None = None

    def to_json(self, default_code: str, default_severity: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity or default_severity,
            "code": self.code or default_code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """Base of every error the server answers with; status/code/severity are class attributes."""

    status = 500
    code = "exception"
    severity = "error"

    def __init__(
        self,
        diagnostics: str = "",
        *,
        expression: str | tuple[str, ...] | list[str] | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        if issues is None:
            if isinstance(expression, str):
                expr: tuple[str, ...] = (expression,)
            else:
                expr = tuple(expression or ())
            issues = [Issue(diagnostics or self.__class__.__doc__ or "", expr)]
        self.issues: list[Issue] = issues
        self.headers: dict[str, str] = headers or {}

    @property
    def diagnostics(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def outcome(self) -> dict[str, Any]:
        return {
            "resourceType": "OperationOutcome",
            "issue": [i.to_json(self.code, self.severity) for i in self.issues],
        }


class BadRequest(FhirError):
    """The request is malformed."""

    status = 400
    code = "invalid"


class InvalidResource(BadRequest):
    """The resource does not conform to FHIR R4."""


class InvalidSearch(BadRequest):
    """A search parameter or value is not understood."""

    code = "invalid"


class NotSupported(BadRequest):
    """The server does not support this."""

    code = "not-supported"


class Unauthorized(FhirError):
    status = 401
    code = "login"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class NotFound(FhirError):
    """The resource or route does not exist."""

    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    status = 406
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    """The resource has been deleted."""

    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class MultipleMatches(PreconditionFailed):
    code = "multiple-matches"


class PayloadTooLarge(FhirError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    """The resource violates a business rule."""

    status = 422
    code = "processing"


def outcome_for(status: int, diagnostics: str, code: str = "exception") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
