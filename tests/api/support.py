"""Helpers shared by the black-box API tests: resource builders and Bundle/OperationOutcome readers.

Every builder takes the test's `uid` so that values are unique on a shared server."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
IDSYS = "urn:fhirtwin:test:id"
TAGSYS = "urn:fhirtwin:test:tag"
MR = "http://terminology.hl7.org/CodeSystem/v2-0203"
SUBSETTED = "SUBSETTED"

ETAG1 = 'W/"1"'


def patient(uid: str, **kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": IDSYS, "value": kw.pop("ident", uid)}],
        "active": True,
        "name": [{"family": kw.pop("family", f"Fam{uid}"), "given": [kw.pop("given", "Ann")]}],
        "gender": kw.pop("gender", "female"),
        "birthDate": kw.pop("birthDate", "1980-05-17"),
    }
    p.update(kw)
    return {k: v for k, v in p.items() if v is not None}


def observation(uid: str, subject: str | None, **kw: Any) -> dict[str, Any]:
    o: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": IDSYS, "value": kw.pop("ident", f"obs-{uid}")}],
        "status": kw.pop("status", "final"),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": kw.pop("code", "2339-0"),
                             "display": kw.pop("display", "Glucose [Mass/volume] in Blood")}]},
        "effectiveDateTime": kw.pop("effective", "2021-03-04T10:00:00+01:00"),
        "valueQuantity": kw.pop("value", {"value": 95, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}),
    }
    if subject:
        o["subject"] = {"reference": subject}
    o.update(kw)
    return {k: v for k, v in o.items() if v is not None}


def organization(uid: str, name: str | None = None) -> dict[str, Any]:
    return {"resourceType": "Organization", "identifier": [{"system": IDSYS, "value": f"org-{uid}"}],
            "active": True, "name": name or f"Org {uid}"}


def create(fhir: Any, resource: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """POST a resource, assert 201, return the stored resource."""
    r = fhir.post(resource["resourceType"], json=resource, **kw)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body.get("id"), body
    return body


def ref(res: dict[str, Any]) -> str:
    return f"{res['resourceType']}/{res['id']}"


def entries(bundle: dict[str, Any], mode: str | None = "match") -> list[dict[str, Any]]:
    out = bundle.get("entry") or []
    if mode is None:
        return out
    return [e for e in out if (e.get("search") or {}).get("mode", "match") == mode]


def ids(bundle: dict[str, Any], mode: str | None = "match") -> list[str]:
    return [e["resource"]["id"] for e in entries(bundle, mode)]


def refs(bundle: dict[str, Any], mode: str | None = "match") -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries(bundle, mode)]


def search(fhir: Any, path: str, params: Any = None, **kw: Any) -> dict[str, Any]:
    """GET a search, assert a 200 searchset Bundle, return it."""
    r = fhir.get(path, params=params, **kw)
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset", b
    return b


def search_ids(fhir: Any, path: str, params: Any = None, **kw: Any) -> list[str]:
    return ids(search(fhir, path, params, **kw))


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for lk in bundle.get("link") or []:
        if lk.get("relation") == relation:
            return str(lk["url"])
    return None


def link_params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def oo_text(resp: Any) -> str:
    """Diagnostics, details and expressions of an OperationOutcome, as one string."""
    body = resp.json()
    parts = []
    for i in body.get("issue") or []:
        parts.append(str(i.get("diagnostics", "")))
        parts.append(str((i.get("details") or {}).get("text", "")))
        parts.extend(str(x) for x in (i.get("expression") or []))
        parts.extend(str(x) for x in (i.get("location") or []))
    return " | ".join(parts)


def expressions(resp: Any) -> list[str]:
    return [str(x) for i in resp.json().get("issue") or [] for x in (i.get("expression") or [])]


_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"/|\.py\", line \d+")


def assert_oo(resp: Any, *statuses: int) -> dict[str, Any]:
    """The response is one of `statuses`, with an OperationOutcome body carrying an error issue and no
    stack trace."""
    assert resp.status_code in statuses, f"expected {statuses}, got {resp.status_code}: {resp.text[:800]}"
    assert not _TRACE.search(resp.text), resp.text
    ctype = resp.headers.get("Content-Type", "")
    assert "json" in ctype, ctype
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body.get("issue"), body
    for i in body["issue"]:
        assert i.get("severity") in ("fatal", "error", "warning", "information"), i
        assert i.get("code"), i
    assert any(i["severity"] in ("fatal", "error") for i in body["issue"]), body
    return dict(body)


def location_id(location: str, rtype: str) -> tuple[str, str]:
    """(id, version) from a Location such as http://h/fhir/Patient/123/_history/1 or Patient/123/_history/1."""
    m = re.search(rf"(?:^|/){rtype}/([A-Za-z0-9\-.]{{1,64}})/_history/([A-Za-z0-9\-.]+)$", location)
    assert m, f"not a {rtype} version location: {location}"
    return m.group(1), m.group(2)


def tx(entries_: list[dict[str, Any]], type_: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": type_, "entry": entries_}


def post_bundle(fhir: Any, entries_: list[dict[str, Any]], type_: str, **kw: Any) -> dict[str, Any]:
    """POST a batch/transaction, assert 200 and a response entry per request entry."""
    r = fhir.post("", json=tx(entries_, type_), **kw)
    assert r.status_code == 200, r.text
    b: dict[str, Any] = r.json()
    assert b["resourceType"] == "Bundle" and b["type"] == f"{type_}-response", b
    assert len(b["entry"]) == len(entries_)
    return b


def post_entry(resource: dict[str, Any], full_url: str | None = None, **req: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **req}}
    if full_url:
        e["fullUrl"] = full_url
    return e


def put_entry(resource: dict[str, Any], url: str, full_url: str | None = None, **req: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"resource": resource, "request": {"method": "PUT", "url": url, **req}}
    if full_url:
        e["fullUrl"] = full_url
    return e


def get_entry(url: str) -> dict[str, Any]:
    return {"request": {"method": "GET", "url": url}}


def delete_entry(url: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": url}}


def status_of(entry: dict[str, Any]) -> int:
    return int(str(entry["response"]["status"]).split()[0])


def count(fhir: Any, path: str, params: dict[str, str] | list[tuple[str, str]]) -> int:
    """Number of matches (one page of up to 1000)."""
    p = list(params.items()) if isinstance(params, dict) else list(params)
    return len(search_ids(fhir, path, [*p, ("_count", "1000")]))


_SYNTHEA_CACHE: dict[str, Any] = {}


def synthea_smallest() -> dict[str, Any]:
    """The smallest SMART Synthea transaction bundle (66 entries), parsed once."""
    if "b" not in _SYNTHEA_CACHE:
        import orjson
        from conftest import synthea_files  # type: ignore[import-not-found]

        files = [f for f in synthea_files() if "Buster_Hoeger" in f.name]
        if not files:
            files = sorted((f for f in synthea_files() if f.name[0].isupper()), key=lambda f: f.stat().st_size)
        _SYNTHEA_CACHE["b"] = orjson.loads(files[0].read_bytes())
    return dict(_SYNTHEA_CACHE["b"])
