"""One source for every advertised auth URL and capability: the SMART configuration, the OpenID
configuration and the CapabilityStatement's oauth-uris extension are all built from endpoints(),
so their URLs are string-equal."""

from __future__ import annotations

from typing import Any

CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-banner",
    "context-style",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
)
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
ASSERTION_ALGS = ["RS384", "ES384"]
# What smart_style_url serves: colours and fonts an app may use to look at home in the EHR.
STYLE = {
    "color_background": "#f6f7f9", "color_error": "#b00020", "color_highlight": "#0b6e99",
    "color_modal_backdrop": "", "color_success": "#2e7d32", "color_text": "#1f2328",
    "dim_border_radius": "6px", "dim_font_size": "14px", "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif", "font_family_heading": "system-ui, sans-serif",
}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def server_root(fhir_base: str) -> str:
    """The origin (and path prefix) the server is mounted at: the FHIR base without /fhir."""
    return fhir_base[: -len("/fhir")] if fhir_base.endswith("/fhir") else fhir_base


def endpoints(fhir_base: str) -> dict[str, str]:
    root = server_root(fhir_base)
    return {
        "authorize": f"{root}/auth/authorize",
        "token": f"{root}/auth/token",
        "introspect": f"{root}/auth/introspect",
        "revoke": f"{root}/auth/revoke",
        "jwks": f"{root}/auth/jwks",
        "register": f"{root}/auth/register",
        "style": f"{root}/auth/smart-style.json",
        "launch": f"{root}/auth/ehr-launch",
    }


def smart_configuration(fhir_base: str, scopes_supported: list[str]) -> dict[str, Any]:
    ep = endpoints(fhir_base)
    return {
        "issuer": fhir_base,
        "jwks_uri": ep["jwks"],
        "authorization_endpoint": ep["authorize"],
        "token_endpoint": ep["token"],
        "introspection_endpoint": ep["introspect"],
        "revocation_endpoint": ep["revoke"],
        "registration_endpoint": ep["register"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": scopes_supported,
        "response_types_supported": ["code"],
        "capabilities": list(CAPABILITIES),
        "code_challenge_methods_supported": ["S256"],
    }


def openid_configuration(fhir_base: str, scopes_supported: list[str]) -> dict[str, Any]:
    ep = endpoints(fhir_base)
    return {
        "issuer": fhir_base,
        "authorization_endpoint": ep["authorize"],
        "token_endpoint": ep["token"],
        "jwks_uri": ep["jwks"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": scopes_supported,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser", "name"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
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
            {"url": "authorize", "valueUri": ep["authorize"]},
            {"url": "token", "valueUri": ep["token"]},
            {"url": "introspect", "valueUri": ep["introspect"]},
            {"url": "revoke", "valueUri": ep["revoke"]},
            {"url": "register", "valueUri": ep["register"]},
        ]}],
    }
