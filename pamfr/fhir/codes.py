"""The FR Core 2.2.0 codes pamfr emits, as the published package defines them (each set names
the file of the package it comes from; docs/fhir.md lists the decisions made with them).
tests/frcore.py checks every Patient against the package itself, not against these sets."""

from __future__ import annotations

FR_CORE_VERSION = "2.2.0"
FR_CORE = "https://hl7.fr/ig/fhir/core"

# CodeSystem-fr-core-cs-v2-0445.json (identityStatus, bound by fr-core-vs-identity-reliability)
CS_0445 = f"{FR_CORE}/CodeSystem/fr-core-cs-v2-0445"
CODES_0445 = frozenset(
    "VIDE PROV VALI DOUB DESA DPOT DOUA COLP COLV FILI CACH ANOM IDVER RECD IDRA USUR HOMD HOMA "
    "INVA FICT DOUT".split()
)
# CodeSystem-fr-core-cs-method-collection.json (methodCollection, extensible)
CS_METHOD_COLLECTION = f"{FR_CORE}/CodeSystem/fr-core-cs-method-collection"
METHOD_COLLECTION = frozenset({"SM", "CV", "INSI", "CB", "RFID"})
# CodeSystem-fr-core-cs-mode-validation-identity.json (validationMode, required binding)
CS_VALIDATION_MODE = f"{FR_CORE}/CodeSystem/fr-core-cs-mode-validation-identity"
VALIDATION_MODE = frozenset("AN CC CE CM CN CS LE PA PC TC DC AC IE".split())
# ValueSet-fr-core-vs-mode-validation-identity-ins.json (the INS profile narrows it)
VALIDATION_MODE_INS = frozenset({"PA", "CN", "AN", "LE"})
# CodeSystem-fr-core-cs-v2-0203.json (the INS identifier types)
CS_FR_V2_0203 = f"{FR_CORE}/CodeSystem/fr-core-cs-v2-0203"
CS_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# StructureDefinition-fr-core-patient.json: the patternCodeableConcept of the PI and RRI
# slices carries these displays, so an identifier of that type must too.
V2_0203_DISPLAYS = {"PI": "Patient internal identifier", "RRI": "Regional registry ID"}
# StructureDefinition-fr-core-patient.json, slices NSS-NIR and NSS-NIA: the billing NIR (PID-3
# typed NH under the INS authorities .8 / .9 in PAM FR) has its own systems in FR Core.
NSS_SYSTEMS = {
    "1.2.250.1.213.1.4.8": "1.2.250.1.213.1.4.13",
    "1.2.250.1.213.1.4.9": "1.2.250.1.213.1.4.14",
}
# ValueSet-fr-core-vs-insee-code.json (the birthPlace INSEE code, required binding): communes.
CS_INSEE_COMMUNE = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"
# ValueSet-fr-core-vs-patient-gender.json (required): male, female, unknown.
GENDER = {"M": "male", "F": "female", "U": "unknown"}
