"""A device platform sending SpO2 readings as FHIR R4 Observations (HL7 Norway's VKP
profile) through the hub's ingest gateway, in one `batch` Bundle.

The platform's bearer token comes from the environment (DHO_GATEWAY_TOKEN), patient numbers
(FNR, 11 digits) from stdin, one a line: neither shows in a process list or is printed.
"""

import argparse
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone

import requests

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
# The general VKP profile: its organisation performer is the data controller (the vital-sign
# profiles, such as vkp-Observation-Oxygensat, allow only a Practitioner as performer).
VKP_PROFILE = "http://hl7.no/fhir/vkpobservation/StructureDefinition/vkp-Observation"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gateway-url", required=True, help="e.g. http://localhost:8090")
    p.add_argument("--platform-orgnr", required=True, help="this platform's organisation number")
    p.add_argument("--readings", type=int, default=1, help="readings per patient")
    return p.parse_args()


def observation(patient, platform_orgnr, value, taken):
    return {
        "resourceType": "Observation",
        "meta": {"profile": [VKP_PROFILE]},
        # The platform's own id of the reading: a re-sent bundle is acknowledged, not doubled.
        "identifier": [{"value": f"spo2-{uuid.uuid4()}"}],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [
            {"system": "http://loinc.org", "code": "2708-6"},
            {"system": "http://snomed.info/sct", "code": "431314004"}]},
        "subject": {"identifier": {"system": FNR_SYSTEM, "value": patient}},
        "effectiveDateTime": taken.isoformat(timespec="seconds"),
        # The data controller: the platform publishes only as itself.
        "performer": [{"type": "Organization",
                       "identifier": {"system": ORGNR_SYSTEM, "value": platform_orgnr}}],
        "device": {"identifier": {"value": "SN-PY-0002"}, "display": "pulse oximeter"},
        "valueQuantity": {"value": value, "unit": "%",
                          "system": "http://unitsofmeasure.org", "code": "%"},
    }


def main():
    args = parse_args()
    token = os.environ.get("DHO_GATEWAY_TOKEN")
    if not token:
        sys.exit("error: set DHO_GATEWAY_TOKEN to the platform's bearer token")
    patients = [line.strip() for line in sys.stdin if line.strip()]
    taken = datetime.now(timezone.utc) - timedelta(minutes=1)
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
         "resource": observation(patient, args.platform_orgnr, 90.0 + n % 10, taken),
         "request": {"method": "POST", "url": "Observation"}}
        for n in range(args.readings)
        for patient in patients
    ]
    response = requests.post(
        f"{args.gateway_url.rstrip('/')}/fhir/Bundle",
        json={"resourceType": "Bundle", "type": "batch", "entry": entries},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    if response.status_code != 200:
        sys.exit(f"error: the gateway answered {response.status_code}: {response.text}")
    refused = 0
    # One answer per entry, in order; 201 carries the hub's event id in its location.
    for i, entry in enumerate(response.json()["entry"]):
        answer = entry["response"]
        if answer["status"].startswith("201"):
            print(f"accepted {answer['location'].rsplit('/', 1)[-1]}", flush=True)
        else:
            refused += 1
            issue = answer.get("outcome", {}).get("issue", [{}])[0]
            print(f"refused entry {i}: {answer['status']} {issue.get('expression')} "
                  f"{issue.get('diagnostics')}", file=sys.stderr)
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    main()
