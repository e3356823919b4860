"""`[base]/Patient/{id}/$simulate` and `[base]/Group/{id}/$simulate`: validated risk models and
the cvd-microsim forward simulation on the twin, answered as RiskAssessment resources.

Parameters (a Parameters body on POST; the simple ones as query parameters on GET):
  model 1..* (valueCode), horizon (valueInteger, years; cvd-microsim), intervention 0..*
  (valueCode statin-moderate | statin-high | smoking-cessation, or bp-target with a part `target`
  valueQuantity in mm[Hg]; on GET `intervention=bp-target&target=130`), samples and seed
  (valueInteger), persist (valueBoolean; POST only), asOf (valueDateTime).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from app.errors import BadRequest, Issue, NotFound, Unprocessable
from app.store.repository import Stored
from app.twin import mapping, risk
from app.twin import simulate as sim
from app.twin.models import MODELS, get
from app.twin.models.base import Model, ModelSpec, Problem, as_arrays, complete, problems
from app.twin.state import TwinState

from .. import interactions as ix
from .facts import SOURCE_TYPES, from_rows
from .twin import parse_instant, patient_state

MAX_SAMPLES = 100_000
MAX_HORIZON = 30
INTERVENTION_CODES = ("statin-moderate", "statin-high", "smoking-cessation", "bp-target")


@dataclass(slots=True)
class Request:
    models: list[str] = field(default_factory=list)
    horizon: int | None = None
    interventions: list[tuple[str, float | None]] = field(default_factory=list)  # (code, bp target)
    samples: int = 1000
    seed: int | None = None
    persist: bool = False
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))


def _int(value: Any, where: str, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"'{name}' must be an integer from {low} to {high}, not {value!r}", expression=where)
    return value


def _check(req: Request, known: frozenset[str], where_models: list[str]) -> Request:
    if not req.models:
        raise BadRequest("$simulate needs at least one 'model' (known: " + ", ".join(sorted(known)) + ")",
                         expression="Parameters.parameter")
    bad = [Issue(f"Unknown model '{m}' (known: {', '.join(sorted(known))})", (w,))
           for m, w in zip(req.models, where_models, strict=True) if m not in known]
    if bad:
        raise BadRequest(issues=bad)
    if len(set(req.models)) != len(req.models):
        raise BadRequest("Each model may be asked for once", expression="Parameters.parameter")
    return req


def from_parameters(body: Any, known: frozenset[str]) -> Request:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("The body of $simulate must be a Parameters resource", expression="resourceType")
    params = body.get("parameter", [])
    if not isinstance(params, list):
        raise BadRequest("Parameters.parameter must be an array", expression="Parameters.parameter")
    req = Request()
    where_models: list[str] = []
    for i, p in enumerate(params):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise BadRequest("Each parameter needs a name", expression=where)
        name = p["name"]
        if name == "model":
            code = p.get("valueCode")
            if not isinstance(code, str):
                raise BadRequest("'model' takes a valueCode", expression=f"{where}.valueCode")
            req.models.append(code)
            where_models.append(f"{where}.valueCode")
        elif name == "horizon":
            req.horizon = _int(p.get("valueInteger"), f"{where}.valueInteger", "horizon", 1, MAX_HORIZON)
        elif name == "samples":
            req.samples = _int(p.get("valueInteger"), f"{where}.valueInteger", "samples", 1, MAX_SAMPLES)
        elif name == "seed":
            req.seed = _int(p.get("valueInteger"), f"{where}.valueInteger", "seed", 0, 2**63 - 1)
        elif name == "persist":
            flag = p.get("valueBoolean")
            if not isinstance(flag, bool):
                raise BadRequest("'persist' takes a valueBoolean", expression=f"{where}.valueBoolean")
            req.persist = flag
        elif name == "asOf":
            when = p.get("valueDateTime", p.get("valueDate"))
            if not isinstance(when, str):
                raise BadRequest("'asOf' takes a valueDateTime", expression=f"{where}.valueDateTime")
            req.as_of = parse_instant(when, f"{where}.valueDateTime")
        elif name == "intervention":
            req.interventions.append(_intervention(p, where))
        else:
            raise BadRequest(f"Unknown parameter '{name}' for $simulate", expression=f"{where}.name")
    return _check(req, known, where_models)


def _intervention(p: dict[str, Any], where: str) -> tuple[str, float | None]:
    code = p.get("valueCode")
    parts = p.get("part") or []
    if code is None and isinstance(parts, list) and any(isinstance(x, dict) and x.get("name") == "target" for x in parts):
        code = "bp-target"
    if code not in INTERVENTION_CODES:
        raise BadRequest(f"Unknown intervention {code!r} (known: {', '.join(INTERVENTION_CODES)})",
                         expression=f"{where}.valueCode")
    if code != "bp-target":
        return code, None
    target = None
    for j, part in enumerate(parts if isinstance(parts, list) else []):
        if isinstance(part, dict) and part.get("name") == "target":
            q = part.get("valueQuantity")
            pw = f"{where}.part[{j}].valueQuantity"
            if not isinstance(q, dict) or not isinstance(q.get("value"), int | float) or isinstance(q.get("value"), bool):
                raise BadRequest("bp-target's 'target' takes a valueQuantity in mm[Hg]", expression=pw)
            if q.get("code", q.get("unit")) not in ("mm[Hg]", "mmHg"):
                raise BadRequest(f"bp-target's 'target' must be in mm[Hg], not {q.get('code', q.get('unit'))!r}",
                                 expression=f"{pw}.code")
            target = float(q["value"])
    if target is None:
        raise BadRequest("bp-target needs a part 'target' with a valueQuantity in mm[Hg]", expression=f"{where}.part")
    _check_target(target, where)
    return code, target


def _check_target(target: float, where: str) -> None:
    if not 90 <= target <= 180:
        raise BadRequest(f"bp-target's target {target:g} mm[Hg] is outside 90 to 180", expression=where)


def from_query(args: list[tuple[str, str]], known: frozenset[str]) -> Request:
    req = Request()
    where_models: list[str] = []
    target: float | None = None
    for k, v in args:
        if k == "model":
            for code in v.split(","):
                req.models.append(code.strip())
                where_models.append("model")
        elif k in ("horizon", "samples", "seed"):
            try:
                n = int(v)
            except ValueError:
                raise BadRequest(f"'{k}' must be an integer, not '{v}'", expression=k) from None
            limits = {"horizon": (1, MAX_HORIZON), "samples": (1, MAX_SAMPLES), "seed": (0, 2**63 - 1)}[k]
            setattr(req, k, _int(n, k, k, *limits))
        elif k == "intervention":
            for code in v.split(","):
                code = code.strip()
                if code not in INTERVENTION_CODES:
                    raise BadRequest(f"Unknown intervention '{code}' (known: {', '.join(INTERVENTION_CODES)})",
                                     expression="intervention")
                req.interventions.append((code, None))
        elif k == "target":
            try:
                target = float(v.split("|")[0])
            except ValueError:
                raise BadRequest(f"'target' must be a number of mm[Hg], not '{v}'", expression="target") from None
        elif k == "asOf":
            req.as_of = parse_instant(v, "asOf")
        elif k == "persist":
            raise BadRequest("persist=true changes the server: use POST with a Parameters body", expression="persist")
        elif k not in ("_format", "_pretty"):
            raise BadRequest(f"Unknown parameter '{k}' for $simulate", expression=k)
    for i, (code, _) in enumerate(req.interventions):
        if code == "bp-target":
            if target is None:
                raise BadRequest("intervention=bp-target needs target=<mm[Hg]>", expression="target")
            _check_target(target, "target")
            req.interventions[i] = (code, target)
    if target is not None and not any(c == "bp-target" for c, _ in req.interventions):
        raise BadRequest("'target' applies only with intervention=bp-target", expression="target")
    return _check(req, known, where_models)


# ---------------------------------------------------------------- running the models


def known_models() -> frozenset[str]:
    return frozenset((*MODELS, sim.SIM_MODEL_CODE))


def _base_model() -> Model:
    """cvd-microsim draws its annual hazards from the 10-year Pooled Cohort Equations."""
    model = get("pce-ascvd-10y")
    assert model is not None
    return model


def _spec_of(code: str) -> ModelSpec:
    model = _base_model() if code == sim.SIM_MODEL_CODE else get(code)
    assert model is not None
    return model.spec


def _problem_issue(code: str, p: Problem, state: TwinState) -> Issue:
    spec = _spec_of(code)
    item = next(i for i in spec.inputs if i.name == p.input)
    shown = f"{p.input} ({item.unit})" if not item.boolean and item.unit not in ("", "1") else p.input
    if p.kind == "out-of-range":
        if item.boolean and p.low == p.high == 0:
            text = f"{code}: {p.input} is present, and the model is validated only for people without it"
        else:
            text = f"{code}: {shown} = {p.value:g} is outside the model's validated range ({item.limits()})"
        return Issue(text, _where(p.input), code="value")
    v = state.variables.get(p.input)
    why = "no resource the caller may read provides it"
    if v is not None and v.flags:
        why = f"the latest value was excluded ({', '.join(v.flags)})"
    codes = mapping.codes_for(p.input)
    provided = "; provided by " + ", ".join(f"{_system_name(s)} {c} {d}".strip() for s, c, d in codes[:8]) if codes else ""
    return Issue(f"{code}: input {shown} is missing: {why}{provided}", _where(p.input), code="required")


def _where(variable: str) -> tuple[str, ...]:
    """The element an issue is about, where the input comes from one (else only the text says)."""
    return {"age": ("Patient.birthDate",), "female": ("Patient.gender",)}.get(variable, ())


def _system_name(system: str) -> str:
    return {"http://loinc.org": "LOINC", "http://snomed.info/sct": "SNOMED CT",
            "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
            "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm"}.get(system, system)


def _inputs_of(spec: ModelSpec, values: dict[str, float | None]) -> dict[str, float]:
    return complete(spec, values)


def _units(spec: ModelSpec) -> dict[str, str]:
    return {i.name: ("1" if i.boolean else i.unit) for i in spec.inputs}


def _mitigation(t: sim.Trajectory, base: sim.Trajectory, horizon: int) -> str:
    b, s = base.at(horizon), t.at(horizon)
    what = " + ".join(i.token for i in t.interventions)
    rr = t.relative_risk
    rr_text = f", relative risk {rr.point:.2f} (95 % interval {rr.low:.2f} to {rr.high:.2f})" if rr is not None else ""
    return f"{what}: {100 * b.point:.1f} % -> {100 * s.point:.1f} % over {horizon} years{rr_text}"


def _assess_patient(req: Request, rid: str, version: int, state: TwinState) -> list[tuple[list[str], dict[str, Any]]]:
    """Each asked model's assessment(s), with the twin variables each one used."""
    values = state.values()
    issues: list[Issue] = []
    for code in req.models:
        issues.extend(_problem_issue(code, p, state) for p in problems(_spec_of(code), values))
    if issues:
        raise Unprocessable(issues=issues)
    age = values.get("age")
    subject = f"Patient/{rid}"
    out: list[tuple[list[str], dict[str, Any]]] = []
    stale = [f"{n} was measured more than the staleness limit ago" for n, v in state.variables.items()
             if "stale" in v.flags]
    for code in req.models:
        if code == sim.SIM_MODEL_CODE:
            out.extend(_microsim(req, subject, state, age, stale))
            continue
        model = get(code)
        assert model is not None
        spec = model.spec
        x = _inputs_of(spec, values)
        p = float(model.risk(as_arrays(x))[0])
        names = [i.name for i in spec.inputs]
        notes = [n for n in stale if n.split()[0] in names]
        out.append((names, risk.assessment(spec=spec, subject=subject, occurrence=req.as_of,
                                           predictions=[risk.Prediction(p, spec.horizon_years)], inputs=x,
                                           units=_units(spec), basis=state.basis(names), age=age, notes=notes)))
    return out


def _microsim(req: Request, subject: str, state: TwinState, age: float | None,
              stale: list[str]) -> list[tuple[list[str], dict[str, Any]]]:
    base = _base_model()
    spec = base.spec
    values = state.values()
    x: dict[str, float] = dict(_inputs_of(spec, values))
    extra = [n for n in ("ldl", "statin") if values.get(n) is not None]
    for n in extra:
        v = values[n]
        assert v is not None
        x[n] = v
    trends = {n: v.trend_per_year for n, v in state.variables.items() if v.trend_per_year is not None}
    interventions = [sim.parse_intervention(code, target) for code, target in req.interventions]
    try:
        result = sim.microsim(base, x, trends=trends, horizon=req.horizon or 10, interventions=interventions,
                              samples=req.samples, seed=req.seed)
    except sim.SimulationError as e:
        raise Unprocessable(f"cvd-microsim: {e}") from None
    names = [i.name for i in spec.inputs] + extra
    basis = state.basis(names)
    msim = _microsim_spec(spec, result.horizon)
    units = {**_units(spec), "ldl": "mg/dL", "statin": "1"}
    used_trends = ", ".join(f"{n} {s:+.3g}/a" for n, s in result.trends) or "none"
    common = [f"Monte Carlo: {result.samples} samples, seed {result.seed}; hazards from {spec.code} "
              f"(version {spec.version}); risk-factor trends used (capped): {used_trends}.",
              *[n for n in stale if n.split()[0] in names]]
    out = []
    for t in (result.baseline, *result.scenarios):
        preds = []
        for year in result.years:
            iv = t.at(year)
            rr = t.relative_risk.point if (t.relative_risk is not None and year == result.horizon) else None
            preds.append(risk.Prediction(iv.point, year, iv.low, iv.high, rr))
        notes = list(common)
        mitigation = None
        if t.interventions:
            mitigation = _mitigation(t, result.baseline, result.horizon)
            notes.append("Effect sizes: " + "; ".join(
                f"{e.code} RR {e.point:g} ({e.low:g} to {e.high:g}) {e.per}, {e.citation}" for e in result.effects))
        out.append((names, risk.assessment(spec=msim, subject=subject, occurrence=req.as_of, predictions=preds,
                                           inputs=x, units=units, basis=basis, age=age, mitigation=mitigation,
                                           notes=notes)))
    return out


def _microsim_spec(base: ModelSpec, horizon: int) -> ModelSpec:
    return ModelSpec(code=sim.SIM_MODEL_CODE, title="CVD microsimulation", version=sim.SIM_VERSION,
                     citation=f"fhirtwin cvd-microsim on {base.title} ({base.citation})", doi=None,
                     horizon_years=horizon, outcome=base.outcome, inputs=base.inputs, population=base.population)


def simulate(ctx: ix.Context, target: str, rid: str, req: Request) -> ix.Result:
    if req.interventions and sim.SIM_MODEL_CODE not in req.models:
        raise BadRequest("Interventions are simulated by cvd-microsim: ask for model cvd-microsim",
                         expression="intervention")
    if req.horizon is not None and sim.SIM_MODEL_CODE not in req.models:
        raise BadRequest("'horizon' applies to cvd-microsim; the equations predict over their own horizons",
                         expression="horizon")
    if target == "Group":
        return group_simulate(ctx, rid, req)
    _, version, state = patient_state(ctx, rid, req.as_of)
    return _respond(ctx, req, rid, _assess_patient(req, rid, version, state))


def _persist(ctx: ix.Context, patient: str, variables: list[str], ra: dict[str, Any]) -> Stored:
    """Store one assessment (a create like any other: validated, scope-checked) and track the
    variables it used, so that new data marks it outdated."""
    r = ix.create(ctx, "RiskAssessment", ra)
    assert r.stored is not None
    ctx.store.track_assessment(r.stored.pk, patient, mapping.sources_of(variables))
    return r.stored


def _respond(ctx: ix.Context, req: Request, rid: str, runs: list[tuple[list[str], dict[str, Any]]]) -> ix.Result:
    assessments = [ra for _, ra in runs]
    if req.persist:
        assessments = []
        for names, ra in runs:
            stored = _persist(ctx, rid, names, ra)
            assert stored.body is not None
            assessments.append(orjson.loads(stored.body))
    if len(assessments) == 1:
        return ix.Result(200, resource=assessments[0])
    entries = []
    for ra in assessments:
        url = f"{ctx.base_url}/RiskAssessment/{ra['id']}" if "id" in ra else f"urn:uuid:{uuid.uuid4()}"
        entries.append({"fullUrl": url, "resource": ra})
    return ix.Result(200, resource={"resourceType": "Bundle", "type": "collection", "entry": entries})


def _members(group: dict[str, Any], as_of: datetime) -> list[str]:
    """The Group's current Patient members (inactive ones and ended periods left out), in order."""
    out: list[str] = []
    seen: set[str] = set()
    stamp = as_of.strftime("%Y-%m-%dT%H:%M:%SZ")
    for m in group.get("member") or []:
        if not isinstance(m, dict) or m.get("inactive") is True:
            continue
        end = (m.get("period") or {}).get("end")
        if isinstance(end, str) and end[:19] < stamp[: len(end[:19])]:
            continue
        ref = (m.get("entity") or {}).get("reference")
        if not isinstance(ref, str):
            continue
        parts = ref.split("/_history/")[0].split("/")
        if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1] not in seen:
            seen.add(parts[-1])
            out.append(parts[-1])
    return out


def group_simulate(ctx: ix.Context, rid: str, req: Request) -> ix.Result:
    """Every model over every member the caller may see, vectorised: one model call per model."""
    if sim.SIM_MODEL_CODE in req.models:
        raise BadRequest("cvd-microsim runs per patient (Patient/{id}/$simulate); on a Group ask for the equations",
                         expression="model")
    s = ctx.store.read("Group", rid, ctx.confine("read", "Group"))
    if s is None or s.deleted or s.body is None:
        raise NotFound(f"Group/{rid} is not known", expression="Group.id")
    group = orjson.loads(s.body)
    members = _members(group, req.as_of)
    access = ctx.guard.reach("read") if ctx.guard is not None else None
    # Members the caller may not read are left out, and counted only as "not visible".
    patients = {p.rid: p for p in ctx.store.read_many([("Patient", m) for m in members], access)}
    visible = [m for m in members if m in patients]
    # Only the variables the models take are read and folded, without trends.
    needed = {i.name for code in req.models if (m := get(code)) is not None for i in m.spec.inputs}
    rows = ctx.store.twin_facts(visible, [t for t in SOURCE_TYPES if t != "Patient"], access,
                                variables=mapping.sources_of(needed))
    facts = from_rows(rows)
    states: list[tuple[str, int, TwinState]] = []
    for pid in visible:
        stored = patients[pid]
        assert stored.body is not None
        states.append((pid, stored.version, mapping.build_state(orjson.loads(stored.body), stored.version,
                                                                 facts.get(pid, []), req.as_of, only=needed,
                                                                 trends=False)))
    params: list[dict[str, Any]] = [
        {"name": "group", "valueReference": {"reference": f"Group/{rid}/_history/{s.version}"}},
        {"name": "asOf", "valueDateTime": req.as_of.strftime("%Y-%m-%dT%H:%M:%SZ")},
        {"name": "members", "valueInteger": len(members)},
        {"name": "visible", "valueInteger": len(visible)},
    ]
    to_store: list[tuple[str, list[str], dict[str, Any]]] = []
    for code in req.models:
        model = get(code)
        assert model is not None
        spec = model.spec
        ok: list[tuple[str, TwinState, dict[str, float]]] = []
        excluded: dict[str, int] = {}
        for pid, _, state in states:
            values = state.values()
            found = problems(spec, values)
            if found:
                for p in found:
                    key = f"{p.input} {p.kind}"
                    excluded[key] = excluded.get(key, 0) + 1
                continue
            ok.append((pid, state, complete(spec, values)))
        part: list[dict[str, Any]] = [{"name": "model", "valueCode": code},
                                      {"name": "evaluated", "valueInteger": len(ok)},
                                      {"name": "excluded", "valueInteger": len(states) - len(ok)}]
        part.extend({"name": "exclusion", "part": [{"name": "reason", "valueString": k},
                                                    {"name": "count", "valueInteger": n}]}
                    for k, n in sorted(excluded.items()))
        if ok:
            x = {i.name: np.fromiter((v[i.name] for _, _, v in ok), dtype=np.float64, count=len(ok))
                 for i in spec.inputs}
            risks = model.risk(x)
            q = np.percentile(risks, [2.5, 25, 50, 75, 97.5])
            part += [{"name": "mean", "valueDecimal": round(float(risks.mean()), 6)}]
            part += [{"name": f"p{k}", "valueDecimal": round(float(v), 6)}
                     for k, v in zip(("2.5", "25", "50", "75", "97.5"), q, strict=True)]
            if req.persist:
                names = [i.name for i in spec.inputs]
                units = _units(spec)
                for (pid, state, xs), prob in zip(ok, risks.tolist(), strict=True):
                    to_store.append((pid, names, risk.assessment(
                        spec=spec, subject=f"Patient/{pid}", occurrence=req.as_of,
                        predictions=[risk.Prediction(prob, spec.horizon_years)], inputs=xs, units=units,
                        basis=state.basis(names), age=xs.get("age"))))
        params.append({"name": "result", "part": part})
    for pid, names, ra in to_store:
        stored_ra = _persist(ctx, pid, names, ra)
        params.append({"name": "assessment", "valueReference": {"reference": f"RiskAssessment/{stored_ra.rid}"}})
    return ix.Result(200, resource={"resourceType": "Parameters", "parameter": params})
