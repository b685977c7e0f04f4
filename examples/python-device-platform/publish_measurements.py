"""A device platform publishing SpO2 readings straight to the hub's measurements topic.

The schema is the one the hub registered (subject `<topic>-value`), used as the registry
serves it: no .avsc file, no hand editing. Patient numbers (FNR, 11 digits) are read from
stdin, one a line, so they never show in a process list; they are never printed.
"""

import argparse
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SPO2_LOINC = "2708-6"
SPO2_SNOMED = "431314004"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--schema-registry-url", required=True)
    p.add_argument("--topic", default="dho.measurements")
    p.add_argument("--platform-orgnr", required=True, help="this platform's organisation number")
    p.add_argument("--platform-name", default="Example device platform AS")
    p.add_argument("--readings", type=int, default=1, help="readings per patient")
    return p.parse_args()


def measurement(patient, platform, value, now_ms):
    """One reading as the registered Measurement schema names its fields."""
    return {
        "event_id": str(uuid.uuid4()),
        "source_id": f"spo2-{uuid.uuid4()}",
        "patient": {"system": "FNR", "value": patient},
        "source": {"platform": platform, "device_id": "SN-PY-0001", "device_type": "pulse oximeter"},
        "data_controller": platform,
        "code": SPO2_LOINC,
        "snomed_code": SPO2_SNOMED,
        "value": {"value": value, "unit": "%"},
        "components": [],
        "effective_time": now_ms - 60_000,
        "received_time": now_ms,
        "severity": None,
        "triage": None,
        "status": "final",
        "effective_end": None,
        "effective_precision": None,
        "value_coding": None,
    }


def main():
    args = parse_args()
    patients = [line.strip() for line in sys.stdin if line.strip()]
    registry = SchemaRegistryClient({"url": args.schema_registry_url})
    # The hub owns the schema: take its latest registered version, never register our own.
    serialize = AvroSerializer(
        registry,
        schema_str=None,
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            # librdkafka's default partitioner differs from Java's: with murmur2_random a
            # patient's key lands on the partition the hub's router owns for that patient.
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    failures = []

    def delivered(err, msg, event_id):
        if err is not None:
            failures.append(f"{event_id}: {err}")
        else:
            print(f"published {event_id} partition={msg.partition()} offset={msg.offset()}", flush=True)

    platform = {"system": "ORGNR", "value": args.platform_orgnr, "name": args.platform_name}
    context = SerializationContext(args.topic, MessageField.VALUE)
    for n in range(args.readings):
        for patient in patients:
            reading = measurement(patient, platform, 90.0 + n % 10, int(time.time() * 1000))
            producer.produce(
                args.topic,
                key=patient.encode(),
                value=serialize(reading, context),
                on_delivery=lambda err, msg, eid=reading["event_id"]: delivered(err, msg, eid),
            )
            producer.poll(0)
    left = producer.flush(30)
    if failures or left:
        print(f"error: {len(failures)} readings failed, {left} unacknowledged: {failures}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
