package no.dho.examples;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A device platform in Java publishing one SpO2 reading per patient (FNR on stdin, one a
 * line) to the hub's measurements topic, serialised with Apache Avro from the schema the hub
 * registered, framed by {@link ConfluentWire}. Java's default partitioner (murmur2 of the
 * key) puts each patient on the partition the hub expects.
 *
 * <pre>java -cp java-subscriber.jar no.dho.examples.MeasurementPublisher
 *   --bootstrap-servers localhost:9092 --schema-registry-url http://localhost:8081
 *   --topic dho.measurements --platform-orgnr 927000010 &lt; patients.txt</pre>
 */
public final class MeasurementPublisher {
    public static void main(String[] argv) throws Exception {
        Args.quietLogs();
        Args args = new Args(argv);
        String topic = args.optional("topic", "dho.measurements");
        RegistrySchemas.Registered registered =
                new RegistrySchemas(args.required("schema-registry-url")).latest(topic + "-value");
        Schema schema = registered.schema();
        List<String> patients = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))
                .lines().map(String::strip).filter(line -> !line.isEmpty()).toList();

        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.required("bootstrap-servers"));
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        config.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        config.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(config)) {
            for (String patient : patients) {
                GenericRecord reading = measurement(schema, patient, args.required("platform-orgnr"));
                byte[] value = ConfluentWire.encode(registered.id(), schema, reading);
                RecordMetadata sent = producer.send(new ProducerRecord<>(topic, patient, value)).get();
                System.out.printf("published %s partition=%d offset=%d%n",
                        reading.get("event_id"), sent.partition(), sent.offset());
                System.out.flush();
            }
        }
    }

    private static GenericRecord measurement(Schema schema, String patient, String platformOrgnr) {
        long now = System.currentTimeMillis();
        Schema patientSchema = schema.getField("patient").schema();
        GenericRecord patientId = new GenericRecordBuilder(patientSchema)
                .set("system", new GenericData.EnumSymbol(patientSchema.getField("system").schema(), "FNR"))
                .set("value", patient)
                .build();
        Schema sourceSchema = schema.getField("source").schema();
        GenericRecord platform = organisation(sourceSchema.getField("platform").schema(), platformOrgnr);
        GenericRecord source = new GenericRecordBuilder(sourceSchema)
                .set("platform", platform)
                .set("device_id", "SN-JAVA-0001")
                .set("device_type", "pulse oximeter")
                .build();
        // ["null", Quantity]: the record branch.
        Schema quantitySchema = schema.getField("value").schema().getTypes().get(1);
        GenericRecord value = new GenericRecordBuilder(quantitySchema).set("value", 95.0).set("unit", "%").build();
        // Fields left out take their schema defaults (null, no components).
        return new GenericRecordBuilder(schema)
                .set("event_id", UUID.randomUUID().toString())
                .set("source_id", "spo2-" + UUID.randomUUID())
                .set("patient", patientId)
                .set("source", source)
                .set("data_controller", platform)
                .set("code", "2708-6")
                .set("snomed_code", "431314004")
                .set("value", value)
                .set("effective_time", now - 60_000)
                .set("received_time", now)
                .set("status", "final")
                .build();
    }

    private static GenericRecord organisation(Schema schema, String orgnr) {
        return new GenericRecordBuilder(schema)
                .set("system", new GenericData.EnumSymbol(schema.getField("system").schema(), "ORGNR"))
                .set("value", orgnr)
                .build();
    }
}
