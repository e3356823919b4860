"""SMART `patient/` scopes (the patient compartment) and granular v2 scopes on every FHIR path
(research/smart.md 2.6 S5, S6, S7, S9; 6 item 13).

Two Synthea patients are loaded once per module by a system/*.cruds token (the integration engine);
a token with a patient context sees the first one's compartment only. Every expectation is computed
from the unconfined view at test time (plus our own filtering of the JSON), so the module also runs
against the shared live server, where other tests' data is around."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from tests.conftest import MODE, FhirClient, inproc_client, make_app, synthea_files

from .support import (
    IDSYS,
    assert_oo,
    delete_entry,
    entries,
    get_entry,
    link,
    observation,
    oo_text,
    post_bundle,
    post_entry,
    put_entry,
    refs,
    status_of,
    tx,
)

CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"{CAT}|laboratory"
VITAL = f"{CAT}|vital-signs"
BUNDLES = ("Buster_Hoeger", "Clemente_Kreiger")


@dataclass
class World:
    app: Any
    admin: FhirClient  # system/*.cruds
    a: str  # the patient in the tokens' context
    b: str  # another patient
    loaded: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # patient -> type -> ids

    def client(self, scope: str, patient: str | None = None) -> FhirClient:
        from app.auth import internal_token

        tok = internal_token(self.app, self.admin.base, scope=scope, lifetime_s=3600, client_id="patient-scope-tests",
                             patient=patient)
        return FhirClient(self.admin.base, self.admin._send, tok)

    def of_a(self, scope: str = "patient/*.cruds") -> FhirClient:
        return self.client(scope, self.a)


def _load(admin: FhirClient, name: str) -> tuple[str, dict[str, list[str]]]:
    path = next(f for f in synthea_files() if name in f.name)
    bundle = orjson.loads(path.read_bytes())
    r = admin.post("", json=bundle)
    assert r.status_code == 200, r.text[:2000]
    made: dict[str, list[str]] = {}
    for e in r.json()["entry"]:
        rtype, rid = e["response"]["location"].split("/")[:2]
        made.setdefault(rtype, []).append(rid)
    return made["Patient"][0], made


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    app = None
    if MODE == "http":
        srv = request.getfixturevalue("live_server")
        app, admin = srv.app(), srv.client()
    else:
        app = make_app(tmp_path_factory.mktemp("patient-scopes"), "ps_" + uuid.uuid4().hex[:8])
        admin = inproc_client(app)
    (a, made_a), (b, made_b) = (_load(admin, n) for n in BUNDLES)
    yield World(app, admin, a, b, {a: made_a, b: made_b})
    if MODE != "http":
        app.extensions["fhirtwin"].db.dispose()


# ---------------------------------------------------------------- helpers


def every(fhir: FhirClient, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """All matches of a search, following next links (pages of 50)."""
    r = fhir.get(path, params={**(params or {}), "_count": "50"})
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = []
    while True:
        b = r.json()
        out.extend(e["resource"] for e in entries(b))
        nxt = link(b, "next")
        if not nxt:
            return out
        r = fhir.get(nxt)
        assert r.status_code == 200, r.text


def id_set(resources: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in resources}


def categories(res: dict[str, Any]) -> set[str]:
    return {f"{c.get('system')}|{c.get('code')}" for cat in res.get("category", []) for c in cat.get("coding", [])}


def same_as_missing(fhir: FhirClient, path: str, rid: str) -> None:
    """`path` (naming `rid`) answers exactly as the same path for an id that does not exist."""
    ghost = f"ghost-{uuid.uuid4().hex[:12]}"
    hidden, missing = fhir.get(path), fhir.get(path.replace(rid, ghost))
    assert_oo(hidden, 404)
    assert_oo(missing, 404)
    assert oo_text(hidden).replace(rid, "X") == oo_text(missing).replace(ghost, "X")


def own_obs(world: World, uid: str, subject: str | None = None, **kw: Any) -> dict[str, Any]:
    return observation(uid, f"Patient/{subject or world.a}", **kw)


def found(world: World, ident: str, rtype: str = "Observation") -> list[dict[str, Any]]:
    """What the unconfined view holds with this identifier."""
    return every(world.admin, rtype, {"identifier": f"{IDSYS}|{ident}"})


# ---------------------------------------------------------------- read, vread, instance history


def test_read_own_records_and_not_another_patients(world: World) -> None:
    fhir = world.of_a("patient/*.rs")
    assert fhir.get(f"Patient/{world.a}").status_code == 200  # a Patient is in its own compartment
    own = world.loaded[world.a]["Observation"][0]
    r = fhir.get(f"Observation/{own}")
    assert r.status_code == 200 and r.json()["subject"]["reference"] == f"Patient/{world.a}"
    assert fhir.get(f"Observation/{own}/_history/1").status_code == 200
    assert fhir.get(f"Observation/{own}/_history").status_code == 200
    for rtype in ("Observation", "Condition", "Encounter"):
        other = world.loaded[world.b][rtype][0]
        assert world.admin.get(f"{rtype}/{other}").status_code == 200
        same_as_missing(fhir, f"{rtype}/{other}", other)
        same_as_missing(fhir, f"{rtype}/{other}/_history/1", other)
        same_as_missing(fhir, f"{rtype}/{other}/_history", other)
    same_as_missing(fhir, f"Patient/{world.b}", world.b)


def test_resources_outside_any_compartment_are_out_of_reach(world: World) -> None:
    # Practitioner and Organization are never in a patient compartment: patient/ scopes do not reach them.
    fhir = world.of_a("patient/*.rs")
    doc = world.loaded[world.a]["Practitioner"][0]
    assert world.admin.get(f"Practitioner/{doc}").status_code == 200
    same_as_missing(fhir, f"Practitioner/{doc}", doc)
    assert every(fhir, "Practitioner", {"_id": doc}) == []


def test_patient_scopes_without_a_patient_are_refused(world: World) -> None:
    fhir = world.client("patient/*.rs")  # never issued by the server itself (S7), refused anyway
    for path in (f"Patient/{world.a}", "Observation"):
        r = fhir.get(path)
        assert_oo(r, 403)
        assert "names no patient" in oo_text(r)


# ---------------------------------------------------------------- search


@pytest.mark.parametrize("rtype", ["Observation", "Condition", "Encounter", "Patient"])
def test_search_without_patient_returns_only_own_data(world: World, rtype: str) -> None:
    fhir = world.of_a("patient/*.rs")
    want = id_set(every(world.admin, rtype, {"_id": world.a} if rtype == "Patient" else {"patient": world.a}))
    assert want
    got = every(fhir, rtype)
    assert id_set(got) == want and len(got) == len(want)
    # POST _search answers the same.
    r = fhir.post(f"{rtype}/_search", data="", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert len(entries(r.json())) == min(len(want), 20)


def test_search_for_another_patient_is_an_empty_bundle(world: World) -> None:
    fhir = world.of_a("patient/*.rs")
    assert every(world.admin, "Observation", {"patient": world.b})
    for params in ({"patient": world.b}, {"subject": f"Patient/{world.b}"}, {"_id": world.loaded[world.b]["Observation"][0]}):
        r = fhir.get("Observation", params=params)
        assert r.status_code == 200
        assert r.json().get("entry", []) == [] and r.json()["total"] == 0
    r = fhir.post("Observation/_search", data=f"patient={world.b}",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json().get("entry", []) == []
    # The patient's own id works as a parameter too.
    assert id_set(every(fhir, "Observation", {"patient": world.a})) == id_set(every(fhir, "Observation"))


def test_total_and_count_do_not_count_other_patients(world: World) -> None:
    fhir = world.of_a("patient/*.rs")
    n = len(every(world.admin, "Observation", {"patient": world.a}))
    r = fhir.get("Observation", params={"_total": "accurate", "_count": "2"})
    assert r.json()["total"] == n and len(entries(r.json())) == 2
    assert fhir.get("Observation", params={"_summary": "count"}).json()["total"] == n
    assert fhir.get("Observation", params={"_summary": "count", "patient": world.b}).json()["total"] == 0
    assert fhir.get("Observation", params={"_count": "0", "_total": "accurate"}).json()["total"] == n


def test_paging_walks_only_the_compartment(world: World) -> None:
    fhir = world.of_a("patient/*.rs")
    want = [o["id"] for o in every(world.admin, "Observation", {"patient": world.a})]
    r = fhir.get("Observation", params={"_count": "7"})
    seen: list[str] = []
    pages = 0
    while True:
        b = r.json()
        assert all(lk["url"].count("patient") == 0 for lk in b["link"])  # the confinement is not in links
        seen.extend(e["resource"]["id"] for e in entries(b))
        pages += 1
        nxt = link(b, "next")
        if not nxt:
            break
        r = fhir.get(nxt)
    assert seen == want and pages == -(-len(want) // 7)
    # Backwards from the last page lands on the compartment's pages too.
    prev = link(b, "previous")
    assert prev is not None
    back = [e["resource"]["id"] for e in entries(fhir.get(prev).json())]
    assert back == want[(pages - 2) * 7 : (pages - 1) * 7]
    # With _sort (offset links) the same.
    sorted_ids = [o["id"] for o in every(fhir, "Observation", {"_sort": "date"})]
    assert sorted(sorted_ids) == sorted(want)


def test_include_and_revinclude_are_confined(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.rs")
    # Observation -> its Patient: the patient's own, once.
    b = fhir.get("Observation", params={"_include": "Observation:patient", "_count": "5"}).json()
    assert refs(b, "include") == [f"Patient/{world.a}"]
    # Encounter -> Practitioner/Organization: not in the compartment, left out (the admin sees them).
    params = {"_include": "Encounter:participant", "_id": world.loaded[world.a]["Encounter"][0]}
    assert any(r.startswith("Practitioner/") for r in refs(world.admin.get("Encounter", params=params).json(), "include"))
    assert refs(fhir.get("Encounter", params=params).json(), "include") == []
    # Another patient's Observation pointing at this patient (focus is not a compartment link):
    # the admin's _revinclude finds it, the patient's does not.
    stray = world.admin.post("Observation", json=observation(uid, f"Patient/{world.b}",
                                                             focus=[{"reference": f"Patient/{world.a}"}])).json()
    p = {"_id": world.a, "_revinclude": "Observation:focus"}
    assert f"Observation/{stray['id']}" in refs(world.admin.get("Patient", params=p).json(), "include")
    assert refs(fhir.get("Patient", params=p).json(), "include") == []
    own = set(refs(fhir.get("Patient", params={"_id": world.a, "_revinclude": "Observation:subject",
                                                "_count": "1"}).json(), "include"))
    assert own == {f"Observation/{i}" for i in id_set(every(world.admin, "Observation", {"patient": world.a}))}
    # :iterate goes on only from what was let in.
    cond_b = world.loaded[world.b]["Condition"][0]
    mine = world.admin.post("Observation", json=own_obs(world, uid, ident=f"foc-{uid}",
                                                        focus=[{"reference": f"Condition/{cond_b}"}])).json()
    p = {"_id": mine["id"], "_include": "Observation:focus", "_include:iterate": "Condition:subject"}
    assert set(refs(world.admin.get("Observation", params=p).json(), "include")) == {f"Condition/{cond_b}",
                                                                                    f"Patient/{world.b}"}
    assert refs(fhir.get("Observation", params=p).json(), "include") == []
    # Included types the token may not read at all are left out as before.
    narrow = world.of_a("patient/Observation.rs")
    assert refs(narrow.get("Observation", params={"_include": "Observation:patient"}).json(), "include") == []


def test_chains_and_has_see_only_what_the_token_may_search(world: World) -> None:
    fhir = world.of_a("patient/*.rs")
    fam_b = world.admin.get(f"Patient/{world.b}").json()["name"][0]["family"]
    assert every(world.admin, "Observation", {"subject:Patient.family": fam_b})
    assert every(fhir, "Observation", {"subject:Patient.family": fam_b}) == []
    fam_a = world.admin.get(f"Patient/{world.a}").json()["name"][0]["family"]
    assert id_set(every(fhir, "Observation", {"subject:Patient.family": fam_a})) == id_set(every(fhir, "Observation"))
    # _has looks into Observations through the token's own Observation grant: lab results only.
    obs_a = every(world.admin, "Observation", {"patient": world.a})
    vital = next(o for o in obs_a if VITAL in categories(o))["code"]["coding"][0]
    lab = next(o for o in obs_a if LAB in categories(o))["code"]["coding"][0]
    labs_only = world.of_a(f"patient/Patient.rs patient/Observation.rs?category={LAB}")
    has = "_has:Observation:patient:code"
    assert id_set(every(labs_only, "Patient", {has: f"{lab['system']}|{lab['code']}"})) == {world.a}
    assert every(labs_only, "Patient", {has: f"{vital['system']}|{vital['code']}"}) == []
    assert id_set(every(fhir, "Patient", {has: f"{vital['system']}|{vital['code']}"})) == {world.a}


def test_history_is_confined(world: World) -> None:
    fhir = world.of_a("patient/*.rs")
    want = id_set(every(world.admin, "Observation", {"patient": world.a}))
    r = fhir.get("Observation/_history", params={"_count": "1000"})
    assert r.status_code == 200
    got = [e["resource"] for e in r.json()["entry"] if "resource" in e]
    assert {o["id"] for o in got} == want
    assert all(o["subject"]["reference"] == f"Patient/{world.a}" for o in got)
    # Paging by cursor stays inside.
    page = fhir.get("Observation/_history", params={"_count": "4"}).json()
    nxt = link(page, "next")
    assert nxt and {e["resource"]["id"] for e in fhir.get(nxt).json()["entry"]} <= want
    # System-wide search and history stay refused for patient/ tokens.
    assert_oo(fhir.get("_history"), 403)
    assert_oo(fhir.get("", params={"_type": "Observation"}), 403)


# ---------------------------------------------------------------- writes


def test_create_only_inside_the_compartment(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.cruds")
    r = fhir.post("Observation", json=own_obs(world, uid, ident=f"in-{uid}"))
    assert r.status_code == 201, r.text
    assert_oo(fhir.post("Observation", json=own_obs(world, uid, subject=world.b, ident=f"out-{uid}")), 403)
    assert_oo(fhir.post("Observation", json=observation(uid, None, ident=f"none-{uid}")), 403)
    assert_oo(fhir.post("Patient", json={"resourceType": "Patient", "identifier": [{"system": IDSYS, "value": f"p-{uid}"}]}),
              403)
    assert [len(found(world, f"{k}-{uid}")) for k in ("in", "out", "none")] == [1, 0, 0]
    assert found(world, f"p-{uid}", "Patient") == []


def test_update_patch_and_delete_inside_only(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.cruds")
    mine = world.admin.post("Observation", json=own_obs(world, uid, ident=f"mine-{uid}")).json()
    theirs = world.admin.post("Observation", json=own_obs(world, uid, subject=world.b, ident=f"theirs-{uid}")).json()
    mine["status"] = "amended"
    assert fhir.put(f"Observation/{mine['id']}", json=mine).status_code == 200
    # Moving one's own record to another patient, or taking over another patient's, is refused.
    moved = dict(mine, subject={"reference": f"Patient/{world.b}"})
    assert_oo(fhir.put(f"Observation/{mine['id']}", json=moved), 403)
    grab = dict(theirs, subject={"reference": f"Patient/{world.a}"})
    assert_oo(fhir.put(f"Observation/{theirs['id']}", json=grab), 403)
    assert world.admin.get(f"Observation/{mine['id']}").json()["subject"]["reference"] == f"Patient/{world.a}"
    assert world.admin.get(f"Observation/{theirs['id']}").json()["subject"]["reference"] == f"Patient/{world.b}"
    # Update-as-create with a client id: inside only.
    assert fhir.put(f"Observation/new-{uid}", json=dict(own_obs(world, uid), id=f"new-{uid}")).status_code == 201
    assert_oo(fhir.put(f"Observation/newb-{uid}", json=dict(own_obs(world, uid, subject=world.b), id=f"newb-{uid}")),
              403)
    assert world.admin.get(f"Observation/newb-{uid}").status_code == 404
    # JSON Patch.
    patch = [{"op": "replace", "path": "/status", "value": "corrected"}]
    hdr = {"Content-Type": "application/json-patch+json"}
    assert fhir.patch(f"Observation/{mine['id']}", data=_json(patch), headers=hdr).status_code == 200
    assert_oo(fhir.patch(f"Observation/{theirs['id']}", data=_json(patch), headers=hdr), 403)
    away = [{"op": "replace", "path": "/subject/reference", "value": f"Patient/{world.b}"}]
    assert_oo(fhir.patch(f"Observation/{mine['id']}", data=_json(away), headers=hdr), 403)
    assert world.admin.get(f"Observation/{theirs['id']}").json()["status"] == "final"
    # Delete.
    assert_oo(fhir.delete(f"Observation/{theirs['id']}"), 403)
    assert world.admin.get(f"Observation/{theirs['id']}").status_code == 200
    assert fhir.delete(f"Observation/{mine['id']}").status_code == 204
    assert world.admin.get(f"Observation/{mine['id']}").status_code == 410
    # Once deleted it has no compartment: the patient's token gets a plain 404.
    same_as_missing(fhir, f"Observation/{mine['id']}", mine["id"])


def test_conditional_writes_match_within_the_compartment(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.cruds")
    theirs = world.admin.post("Observation", json=own_obs(world, uid, subject=world.b, ident=f"c-{uid}")).json()
    crit = f"identifier={IDSYS}|c-{uid}"
    # Conditional create: the other patient's match is not seen, so a new one is made in the compartment.
    r = fhir.post("Observation", json=own_obs(world, uid, ident=f"c-{uid}"), headers={"If-None-Exist": crit})
    assert r.status_code == 201 and r.json()["id"] != theirs["id"]
    mine = r.json()
    # ...and now its own is the one match.
    r = fhir.post("Observation", json=own_obs(world, uid, ident=f"c-{uid}"), headers={"If-None-Exist": crit})
    assert r.status_code == 200 and r.json()["id"] == mine["id"]
    # Conditional update updates its own (the other patient's is not a second match).
    body = dict(own_obs(world, uid, ident=f"c-{uid}"), status="amended")
    r = fhir.put(f"Observation?{crit}", json=body)
    assert r.status_code == 200 and r.json()["id"] == mine["id"]
    # Conditional delete deletes its own only.
    assert fhir.delete(f"Observation?{crit}").status_code == 204
    assert world.admin.get(f"Observation/{mine['id']}").status_code == 410
    assert fhir.delete(f"Observation?{crit}").status_code == 204
    assert world.admin.get(f"Observation/{theirs['id']}").status_code == 200
    # Conditional patch: no match in the compartment.
    patch = [{"op": "replace", "path": "/status", "value": "corrected"}]
    r = fhir.patch(f"Observation?{crit}", data=_json(patch), headers={"Content-Type": "application/json-patch+json"})
    assert_oo(r, 404)
    assert world.admin.get(f"Observation/{theirs['id']}").json()["status"] == "final"


def _json(doc: Any) -> bytes:
    return orjson.dumps(doc)


# ---------------------------------------------------------------- batch and transaction


def test_batch_entries_are_confined_one_by_one(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.cruds")
    theirs = world.loaded[world.b]["Observation"][0]
    b = post_bundle(fhir, [
        post_entry(own_obs(world, uid, ident=f"b1-{uid}")),
        post_entry(own_obs(world, uid, subject=world.b, ident=f"b2-{uid}")),
        get_entry(f"Observation/{theirs}"),
        get_entry(f"Observation/{world.loaded[world.a]['Observation'][0]}"),
        get_entry(f"Observation?patient={world.b}"),
        delete_entry(f"Observation/{theirs}"),
        put_entry(dict(own_obs(world, uid, subject=world.b), id=f"b3-{uid}"), f"Observation/b3-{uid}"),
    ], "batch")
    assert [status_of(e) for e in b["entry"]] == [201, 403, 404, 200, 200, 403, 403]
    assert b["entry"][4]["resource"].get("entry", []) == []
    assert [len(found(world, f"b{i}-{uid}")) for i in (1, 2)] == [1, 0]
    assert world.admin.get(f"Observation/{theirs}").status_code == 200


def test_a_transaction_with_a_refused_entry_writes_nothing(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.cruds")
    theirs = world.loaded[world.b]["Observation"][0]
    cases = [
        [post_entry(own_obs(world, uid, ident=f"t1-{uid}")), post_entry(own_obs(world, uid, subject=world.b))],
        [post_entry(own_obs(world, uid, ident=f"t1-{uid}")), delete_entry(f"Observation/{theirs}")],
        [post_entry(own_obs(world, uid, ident=f"t1-{uid}")),
         put_entry(dict(world.admin.get(f"Observation/{theirs}").json(), status="amended"), f"Observation/{theirs}")],
    ]
    for case in cases:
        r = fhir.post("", json=tx(case))
        assert_oo(r, 403)
        assert "Bundle.entry[1]" in oo_text(r)
        assert found(world, f"t1-{uid}") == []
    assert world.admin.get(f"Observation/{theirs}").json()["status"] == "final"
    # References to the patient inside the transaction: fine.
    ok = post_bundle(fhir, [post_entry(own_obs(world, uid, ident=f"t2-{uid}")),
                            get_entry(f"Observation?identifier={IDSYS}|t2-{uid}")], "transaction")
    assert [status_of(e) for e in ok["entry"]] == [201, 200]


def test_conditional_references_resolve_within_what_the_token_may_search(world: World, uid: str) -> None:
    fhir = world.of_a("patient/*.cruds")
    other = world.admin.post("Observation", json=own_obs(world, uid, subject=world.b, ident=f"ref-{uid}")).json()
    entry = post_entry(own_obs(world, uid, ident=f"refd-{uid}",
                               focus=[{"reference": f"Observation?identifier={IDSYS}|ref-{uid}"}]))
    # The other patient's Observation is not found: as if it did not exist (412: no match).
    assert_oo(fhir.post("", json=tx([entry])), 412)
    assert world.admin.post("", json=tx([copy.deepcopy(entry)])).status_code == 200
    assert other["id"]


# ---------------------------------------------------------------- granular scopes (S5)


def _lab_ids(world: World, patient: str) -> set[str]:
    return {o["id"] for o in every(world.admin, "Observation", {"patient": patient}) if LAB in categories(o)}


def test_granular_search_returns_exactly_the_matching_resources(world: World) -> None:
    fhir = world.of_a(f"patient/Observation.rs?category={LAB}")
    want = _lab_ids(world, world.a)
    all_a = id_set(every(world.admin, "Observation", {"patient": world.a}))
    assert want and want != all_a
    got = every(fhir, "Observation")
    assert id_set(got) == want and len(got) == len(want)
    assert fhir.get("Observation", params={"_summary": "count"}).json()["total"] == len(want)
    # ANDed with the request's own parameters.
    vital = every(fhir, "Observation", {"category": VITAL})
    assert vital == []
    # Two granular scopes: either.
    both = world.of_a(f"patient/Observation.rs?category={LAB} patient/Observation.rs?category={VITAL}")
    want2 = {o["id"] for o in every(world.admin, "Observation", {"patient": world.a})
             if categories(o) & {LAB, VITAL}}
    assert id_set(every(both, "Observation")) == want2 and want2 > want


def test_granular_read_of_matching_is_200_and_of_others_4xx(world: World) -> None:
    fhir = world.of_a(f"patient/Observation.rs?category={LAB}")
    obs = every(world.admin, "Observation", {"patient": world.a})
    lab = next(o for o in obs if LAB in categories(o))
    other = next(o for o in obs if LAB not in categories(o))
    assert fhir.get(f"Observation/{lab['id']}").status_code == 200
    assert fhir.get(f"Observation/{lab['id']}/_history/1").status_code == 200
    same_as_missing(fhir, f"Observation/{other['id']}", other["id"])
    same_as_missing(fhir, f"Observation/{other['id']}/_history/1", other["id"])
    # Another patient's lab result is outside the compartment.
    theirs = next(iter(_lab_ids(world, world.b)))
    same_as_missing(fhir, f"Observation/{theirs}", theirs)
    # Types without a grant stay 403.
    assert_oo(fhir.get(f"Condition/{world.loaded[world.a]['Condition'][0]}"), 403)


def test_granular_scopes_without_a_patient_filter_across_patients(world: World) -> None:
    fhir = world.client(f"system/Observation.rs?category={LAB}")
    for p in (world.a, world.b):
        assert id_set(every(fhir, "Observation", {"patient": p})) == _lab_ids(world, p)


def test_granular_write_scopes_are_checked_on_the_written_resource(world: World, uid: str) -> None:
    fhir = world.of_a(f"patient/Observation.crus?category={LAB}")
    assert fhir.post("Observation", json=own_obs(world, uid, ident=f"g1-{uid}")).status_code == 201
    vital = own_obs(world, uid, ident=f"g2-{uid}", category=[{"coding": [{"system": CAT, "code": "vital-signs"}]}])
    assert_oo(fhir.post("Observation", json=vital), 403)
    assert found(world, f"g2-{uid}") == []
    lab = found(world, f"g1-{uid}")[0]
    assert_oo(fhir.put(f"Observation/{lab['id']}", json=dict(lab, category=vital["category"])), 403)
    assert categories(world.admin.get(f"Observation/{lab['id']}").json()) == {LAB}
    b = post_bundle(fhir, [post_entry(own_obs(world, uid, ident=f"g3-{uid}")), post_entry(vital),
                           post_entry(own_obs(world, uid, ident=f"g4-{uid}"))], "batch")
    assert [status_of(e) for e in b["entry"]] == [201, 403, 201]
    assert [len(found(world, f"g{i}-{uid}")) for i in (2, 3, 4)] == [0, 1, 1]
    r = fhir.post("", json=tx([post_entry(own_obs(world, uid, ident=f"g5-{uid}")), post_entry(vital)]))
    assert_oo(r, 403)
    assert "Bundle.entry[1]" in oo_text(r) and found(world, f"g5-{uid}") == []
