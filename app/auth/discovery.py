"""One source for every advertised auth URL and capability: the SMART configuration, the OpenID
configuration and the CapabilityStatement's oauth-uris extension are all built from endpoints(),
so their URLs are string-equal."""

from __future__ import annotations

from typing import Any

CAPABILITIES = (
    "client-confidential-asymmetric",
    "permission-v1",
    "permission-v2",
)
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def server_root(fhir_base: str) -> str:
    """The origin (and path prefix) the server is mounted at: the FHIR base without /fhir."""
    return fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base


def endpoints(fhir_base: str) -> dict[str, str]:
    root = server_root(fhir_base)
    return {
        "token": f"{root}/auth/token",
        "introspect": f"{root}/auth/introspect",
        "revoke": f"{root}/auth/revoke",
        "jwks": f"{root}/auth/jwks",
    }


def smart_configuration(fhir_base: str, scopes_supported: list[str]) -> dict[str, Any]:
    ep = endpoints(fhir_base)
    return {
        "token_endpoint": ep["token"],
        "introspection_endpoint": ep["introspect"],
        "revocation_endpoint": ep["revoke"],
        "jwks_uri": ep["jwks"],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": scopes_supported,
        "response_types_supported": ["token"],
        "capabilities": list(CAPABILITIES),
        "code_challenge_methods_supported": ["S256"],
    }


def security_extension(fhir_base: str) -> dict[str, Any]:
    """CapabilityStatement.rest[0].security: SMART-on-FHIR with the oauth-uris extension."""
    ep = endpoints(fhir_base)
    return {
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "extension": [{"url": OAUTH_URIS, "extension": [
            {"url": "token", "valueUri": ep["token"]},
            {"url": "introspect", "valueUri": ep["introspect"]},
            {"url": "revoke", "valueUri": ep["revoke"]},
        ]}],
    }
