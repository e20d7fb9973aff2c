"""Checks a Patient of the FHIR API as a consumer validating against the published FR Core
2.2.0 package would: valid R4 (the fhir.resources models, R4B, which has R4's Patient), then
what the package's own files say, read from tests/fhir/fr-core-2.2.0/ (tests/fhir/SOURCES.md):

* for every profile the resource claims, each element's cardinality, fixed and pattern
  values (including the displays of a pattern's codings), the identifier, name and extension
  slices (an identifier or a name belongs to the slice its type coding or its use designates,
  and must then match the whole slice), and the extensions' own definitions (no
  sub-extension they do not define);
* every binding of `required` strength (the code in the value set) and, for `extensible`
  ones, the code system (one the value set draws from, and a code that system has);
* the FR Core invariants of the profiles, evaluated with fhirpathpy, not paraphrased (the
  base R4 ones such as ele-1 need FHIRPath functions fhirpathpy lacks; the R4 models check
  that structure).

No FR Core fact is written here: change the package and the check changes with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhirpathpy import compile as fhirpath
from fhirpathpy.models import models

HERE = Path(__file__).parent / "fhir"
PACKAGE = HERE / "fr-core-2.2.0"
CORE = "https://hl7.fr/ig/fhir/core"
RELIABILITY = f"{CORE}/StructureDefinition/fr-core-identity-reliability"
PATIENT_INS = f"{CORE}/StructureDefinition/fr-core-patient-ins"
INS_SYSTEMS = {f"urn:oid:1.2.250.1.213.1.4.{n}" for n in (8, 9, 10, 11)}
_CODED = {"code", "Coding", "CodeableConcept"}
_R4_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+")


def _bare(url: str) -> str:
    return url.split("|", 1)[0]


@dataclass
class ValueSet:
    codes: set[tuple[str, str]] = field(default_factory=set)
    systems: set[str] = field(default_factory=set)  # systems drawn from in whole
    excluded: set[tuple[str, str]] = field(default_factory=set)

    def has(self, system: str | None, code: str) -> bool:
        if system is None:  # a `code` element: the value set's system is implied
            return any(c == code for _, c in self.codes - self.excluded) or (
                bool(self.systems) and (next(iter(self.systems)), code) not in self.excluded
            )
        if (system, code) in self.excluded:
            return False
        return (system, code) in self.codes or system in self.systems

    def drawn_from(self) -> set[str]:
        return {s for s, _ in self.codes} | self.systems


class Package:
    """The package's StructureDefinitions, ValueSets and CodeSystems, by canonical URL."""

    def __init__(self, folder: Path) -> None:
        self.manifest = json.loads((folder / "package.manifest.json").read_text())
        self.by_url: dict[str, dict] = {}
        for path in sorted(folder.glob("*.json")):
            res = json.loads(path.read_text())
            if "url" in res:
                self.by_url[res["url"]] = res
        extra = json.loads((HERE / "fhir-r4-valuesets.json").read_text())
        self.r4 = {
            url: ValueSet({(s, c) for s, cs in v.items() for c in cs}) for url, v in extra.items()
        }

    @cache  # noqa: B019 - one Package for the whole run
    def value_set(self, url: str) -> ValueSet | None:
        url = _bare(url)
        if url in self.r4:
            return self.r4[url]
        vs = self.by_url.get(url)
        if vs is None:
            return None
        out = ValueSet()
        for part, into in (("include", True), ("exclude", False)):
            for inc in vs["compose"].get(part, []):
                for nested in inc.get("valueSet", []):
                    found = self.value_set(nested)
                    assert found is not None, f"{url} includes {nested}, not in the package"
                    out.codes |= found.codes
                    out.systems |= found.systems
                system = inc.get("system")
                if not system:
                    continue
                if inc.get("concept"):
                    pairs = {(system, c["code"]) for c in inc["concept"]}
                elif system in self.by_url:
                    pairs = {(system, c) for c in self.code_system(system)}
                else:
                    if into:
                        out.systems.add(system)
                    continue
                if into:
                    out.codes |= pairs
                else:
                    out.excluded |= pairs
        return out

    def code_system(self, url: str) -> set[str] | None:
        cs = self.by_url.get(url)
        if cs is None or cs.get("resourceType") != "CodeSystem":
            return None

        def walk(concepts: list[dict]) -> Iterable[str]:
            for c in concepts:
                yield c["code"]
                yield from walk(c.get("concept", []))

        return set(walk(cs.get("concept", [])))

    def definition(self, url: str) -> dict | None:
        sd = self.by_url.get(_bare(url))
        if sd is None or sd.get("resourceType") != "StructureDefinition":
            return None
        return sd


PKG = Package(PACKAGE)
FR_CORE_VERSION = PKG.manifest["version"]


class Elements:
    """A StructureDefinition's snapshot, by element id."""

    def __init__(self, sd: dict) -> None:
        self.sd = sd
        self.by_id = {e["id"]: e for e in sd["snapshot"]["element"]}

    def children(self, parent_id: str) -> list[dict]:
        """The elements one level under `parent_id`, slices excluded (they are found through
        their sliced element)."""
        prefix = parent_id + "."
        return [
            e
            for eid, e in self.by_id.items()
            if eid.startswith(prefix)
            and "." not in eid[len(prefix) :]
            and ":" not in eid[len(prefix) :]
        ]

    def slices(self, element_id: str) -> list[dict]:
        prefix = element_id + ":"
        return [
            e
            for eid, e in self.by_id.items()
            if eid.startswith(prefix)
            and "." not in eid[len(prefix) :]
            and ":" not in eid[len(prefix) :]
        ]


@cache
def _elements(url: str) -> Elements | None:
    sd = PKG.definition(url)
    return Elements(sd) if sd is not None else None


def _contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: every element of the pattern is in the value (lists: each pattern item
    in some value item)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_contains(v, p) for v in value) for p in pattern)
    return value == pattern


def _fixed_and_pattern(element: dict) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in element.items() if k.startswith(("fixed", "pattern"))]


def _values(node: dict, element: dict) -> list[tuple[str, Any]]:
    """(type suffix, value) of the element in `node`; value[x] finds valueCoding etc."""
    name = element["path"].rsplit(".", 1)[1]
    if name.endswith("[x]"):
        stem = name[:-3]
        found = [(k[len(stem) :], v) for k, v in node.items() if k.startswith(stem) and k != stem]
        return [(t, x) for t, v in found for x in (v if isinstance(v, list) else [v])]
    if name not in node:
        return []
    value = node[name]
    kind = element["type"][0]["code"] if element.get("type") else ""
    return [(kind, x) for x in (value if isinstance(value, list) else [value])]


@dataclass
class Check:
    errors: list[str] = field(default_factory=list)

    def fail(self, where: str, text: str) -> None:
        self.errors.append(f"{where}: {text}")

    def binding(self, where: str, element: dict, kind: str, value: Any) -> None:
        binding = element.get("binding")
        if not binding or binding["strength"] not in ("required", "extensible"):
            return
        if kind not in _CODED:
            return
        vs = PKG.value_set(binding["valueSet"])
        if vs is None:
            return  # a value set neither the package nor FHIR R4's list holds
        strength = binding["strength"]
        if kind == "code":
            if strength == "required" and not vs.has(None, value):
                self.fail(where, f"code {value!r} not in required {binding['valueSet']}")
            return
        codings = value.get("coding", []) if kind == "CodeableConcept" else [value]
        if strength == "required":
            if not any(vs.has(c.get("system"), c.get("code")) for c in codings):
                self.fail(where, f"{codings} not in required {binding['valueSet']}")
            return
        for c in codings:  # extensible: the code system is one the value set draws from
            system = c.get("system")
            if system not in vs.drawn_from():
                self.fail(where, f"system {system} is not one of {binding['valueSet']}")
                continue
            known = PKG.code_system(system)
            if known is not None and c.get("code") not in known:
                self.fail(where, f"code {c.get('code')!r} is not in {system}")

    def node(self, where: str, node: dict, elements: Elements, element_id: str) -> None:
        """`node` (an instance of element `element_id`) against that element's children."""
        for child in elements.children(element_id):
            cwhere = f"{where}.{child['path'].rsplit('.', 1)[1]}"
            values = _values(node, child)
            self.cardinality(cwhere, child, len(values))
            for kind, value in values:
                self.value(cwhere, child, kind, value)
            if child.get("slicing"):
                self.slicing(cwhere, elements, child, [v for _, v in values])
            for _, value in values:
                if isinstance(value, dict):
                    self.node(cwhere, value, elements, child["id"])
                    self.typed(cwhere, child, value)

    def cardinality(self, where: str, element: dict, count: int) -> None:
        high = element.get("max", "*")
        if count < element.get("min", 0):
            self.fail(where, f"{count} present, {element['min']} required")
        if high != "*" and count > int(high):
            self.fail(where, f"{count} present, at most {high}")

    def value(self, where: str, element: dict, kind: str, value: Any) -> None:
        for key, expected in _fixed_and_pattern(element):
            ok = value == expected if key.startswith("fixed") else _contains(value, expected)
            if not ok:
                self.fail(where, f"{value!r} does not match {key} {expected!r}")
        self.binding(where, element, kind, value)

    def typed(self, where: str, element: dict, value: dict) -> None:
        """A value whose type names a profile of the package: checked against it too."""
        for t in element.get("type", []):
            for url in t.get("profile", []):
                inner = _elements(url)
                if inner is not None:
                    root = inner.sd["type"]
                    self.node(where, value, inner, root)
                    if root == "Extension":
                        self.sub_extensions(where, value, inner)

    def sub_extensions(self, where: str, ext: dict, elements: Elements) -> None:
        defined = {s.get("sliceName") for s in elements.slices("Extension.extension")} | {
            elements.by_id.get(f"{s['id']}.url", {}).get("fixedUri")
            for s in elements.slices("Extension.extension")
        }
        for sub in ext.get("extension", []):
            url = sub.get("url", "")
            if ":" not in url and url not in defined:
                self.fail(where, f"sub-extension {url!r} is not defined by {elements.sd['url']}")

    def slicing(self, where: str, elements: Elements, sliced: dict, values: list[Any]) -> None:
        """Each value goes to the slice its discriminator designates; when it designates
        several (NSS-NIR and NSS-NIA share their type), to the one it matches in whole."""
        discriminators = [d["path"] for d in sliced["slicing"].get("discriminator", [])]
        slices = elements.slices(sliced["id"])
        members: dict[str, list[Any]] = {s["id"]: [] for s in slices}
        for value in values:
            candidates = [s for s in slices if self.designates(elements, s, discriminators, value)]
            trials = []
            for slice_ in candidates:
                trial = Check()
                swhere = f"{where}:{slice_['sliceName']}"
                trial.node(swhere, value, elements, slice_["id"])
                trial.typed(swhere, slice_, value)
                trials.append((slice_, trial.errors))
            fitting = [t for t in trials if not t[1]] or trials[:1]
            for slice_, errors in fitting:
                members[slice_["id"]].append(value)
                self.errors += errors
        for slice_ in slices:
            self.cardinality(f"{where}:{slice_['sliceName']}", slice_, len(members[slice_["id"]]))

    @staticmethod
    def designates(elements: Elements, slice_: dict, paths: list[str], value: Any) -> bool:
        """Whether `value` is meant for the slice: its discriminating element says so (a type
        with one of the pattern's system|code, the same use, the extension's url)."""
        if not isinstance(value, dict):
            return False
        for path in paths:
            if path == "url":
                fixed = elements.by_id.get(f"{slice_['id']}.url", {}).get("fixedUri")
                profiles = [p for t in slice_.get("type", []) for p in t.get("profile", [])]
                urls = {fixed} if fixed else set()
                urls |= {_bare(p) for p in profiles}
                if value.get("url") not in urls:
                    return False
            elif path in ("type", "use"):
                child = elements.by_id.get(f"{slice_['id']}.{path}", {})
                pattern = child.get("patternCodeableConcept") or child.get("patternCode")
                if pattern is None:
                    return False
                if path == "use":
                    if value.get("use") != pattern:
                        return False
                else:
                    wanted = {(c.get("system"), c.get("code")) for c in pattern["coding"]}
                    have = {
                        (c.get("system"), c.get("code"))
                        for c in (value.get("type") or {}).get("coding", [])
                    }
                    if not wanted & have:
                        return False
            else:
                return False
        return True

    def invariants(self, resource: dict, elements: Elements, context: str) -> None:
        """The package's own invariants of the definition (source under hl7.fr)."""
        for element in elements.sd["snapshot"]["element"]:
            if ":" in element["id"]:
                continue
            for c in element.get("constraint", []):
                if not c.get("source", "").startswith(CORE):
                    continue
                path = context + element["path"][len(elements.sd["type"]) :]
                result = _invariant(f"{path}.all({c['expression']})")(resource)
                if result != [True]:
                    self.fail(f"invariant {c['key']} ({c['severity']})", c["human"])


@cache
def _invariant(expression: str):
    return fhirpath(expression, models["r4"])


def _systems(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "system" and isinstance(value, str):
                yield value
            else:
                yield from _systems(value)
    elif isinstance(node, list):
        for item in node:
            yield from _systems(item)


def check_package(resource: dict) -> list[str]:
    """What the published package finds wrong with the Patient, one line each."""
    check = Check()
    for system in _systems(resource):  # R4's oid datatype: a urn:oid: URI names an OID
        if system.startswith("urn:oid:") and not _R4_OID.fullmatch(system):
            check.fail("system", f"{system} is not an OID")
    profiles = resource.get("meta", {}).get("profile", [])
    if not profiles:
        check.fail("meta.profile", "no profile claimed")
    for canonical in profiles:
        url, _, version = canonical.partition("|")
        elements = _elements(url)
        if elements is None:
            check.fail("meta.profile", f"{canonical} is not a profile of the package")
            continue
        if version and version != FR_CORE_VERSION:
            check.fail("meta.profile", f"{canonical}: the package is {FR_CORE_VERSION}")
        check.node("Patient", resource, elements, "Patient")
        check.invariants(resource, elements, "Patient")
    return list(dict.fromkeys(check.errors))


# -- what the tests read of a resource -------------------------------------------------------


def _ext(holder: dict, url: str) -> list[dict]:
    return [e for e in holder.get("extension", []) if e["url"] == url]


def reliability(resource: dict) -> dict[str, list]:
    """The identity reliability sub-extensions of every identityReliability extension:
    name -> values (codes or dates), in order."""
    out: dict[str, list] = {}
    for ext in _ext(resource, RELIABILITY):
        for sub in ext["extension"]:
            value = sub.get("valueCoding", sub.get("valueDate"))
            out.setdefault(sub["url"], []).append(
                value["code"] if isinstance(value, dict) else value
            )
    return out


def ins_identifiers(resource: dict) -> list[dict]:
    return [i for i in resource.get("identifier", []) if i.get("system") in INS_SYSTEMS]


def check_patient(resource: dict, view: dict | None = None) -> Patient:
    """Raises AssertionError listing what the package finds wrong; `view` (patient show
    --json) checks what the resource may say of the stored identity."""
    model = Patient.model_validate(resource)  # R4 structure and datatypes
    errors = check_package(resource)
    assert not errors, "FR Core 2.2.0:\n" + "\n".join(errors)
    profiles = [_bare(p) for p in resource["meta"]["profile"]]
    assert resource["meta"]["versionId"].isdigit()
    ins = ins_identifiers(resource)
    if ins:
        assert len(ins) == 1 and resource["active"], "one INS, on an active record"
        assert "VALI" in reliability(resource)["identityStatus"]
    for link in resource.get("link", []):
        assert link["other"]["reference"].startswith("Patient/")
    kinds = {link["type"] for link in resource.get("link", [])}
    if not resource["active"] and kinds:
        assert kinds == {"replaced-by"} and len(resource["link"]) == 1
    if resource["active"]:
        assert kinds <= {"replaces"}
    if view is not None:
        assert resource["id"] == str(view["id"])
        assert resource["active"] == view["active"]
        usable = bool(view["ins_usable"])
        assert bool(ins) == usable, f"INS shown {bool(ins)}, usable {usable}"
        if usable:
            assert ins[0]["value"] == view["ins"]["value"]
            born_in_france = not (view.get("birth_place_insee") or "").startswith("99")
            assert (PATIENT_INS in profiles) == born_in_france
        if not view["active"] and view["merged_into"] is not None:
            assert resource["link"] == [
                {"other": {"reference": f"Patient/{view['merged_into']}"}, "type": "replaced-by"}
            ]
    return model


def check_bundle(resource: dict, kind: str) -> Bundle:
    model = Bundle.model_validate(resource)
    assert resource["type"] == kind
    for entry in resource.get("entry", []):
        check_patient(entry["resource"])
    return model


def check_outcome(resource: dict) -> OperationOutcome:
    return OperationOutcome.model_validate(resource)


def check_capability(resource: dict) -> CapabilityStatement:
    model = CapabilityStatement.model_validate(resource)
    guides = resource.get("implementationGuide", [])
    assert f"{CORE}/ImplementationGuide/hl7.fhir.fr.core|{FR_CORE_VERSION}" in guides, guides
    return model
