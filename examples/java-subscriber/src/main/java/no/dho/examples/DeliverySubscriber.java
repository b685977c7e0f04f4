package no.dho.examples;

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * A care service receiving its deliveries from its topic {@code dho.deliver.<subscriber id>}:
 * each record is a Delivery in the Confluent wire format, decoded with the writer's schema
 * from the registry; offsets are committed only after the records are handled, so a crash
 * re-reads (never skips) a delivery. Prints one line per delivery, without patient data.
 *
 * <pre>java -jar java-subscriber.jar --bootstrap-servers localhost:9092
 *   --schema-registry-url http://localhost:8081 --topic dho.deliver.bergen-home-care
 *   [--group my-service] [--count N]</pre>
 */
public final class DeliverySubscriber {
    public static void main(String[] argv) throws Exception {
        Args.quietLogs();
        Args args = new Args(argv);
        String topic = args.required("topic");
        long count = Long.parseLong(args.optional("count", "-1"));
        RegistrySchemas registry = new RegistrySchemas(args.required("schema-registry-url"));

        Properties config = new Properties();
        config.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.required("bootstrap-servers"));
        config.put(ConsumerConfig.GROUP_ID_CONFIG, args.optional("group", "java-subscriber-" + topic));
        config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        config.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // The router writes transactionally: only committed deliveries are handed over.
        config.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        config.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        config.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());

        try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(config)) {
            Thread main = Thread.currentThread();
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                consumer.wakeup();
                try {
                    main.join(10_000);
                } catch (InterruptedException ignored) {
                    Thread.currentThread().interrupt();
                }
            }));
            consumer.subscribe(List.of(topic));
            long handled = 0;
            try {
                while (count < 0 || handled < count) {
                    for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                        byte[] value = record.value();
                        GenericRecord delivery =
                                ConfluentWire.decode(value, registry.byId(ConfluentWire.schemaId(value)));
                        handle(delivery);
                        handled++;
                    }
                    // After handling, never before: at least once, and the delivery id
                    // lets a handler drop a delivery it has seen.
                    consumer.commitSync();
                }
            } catch (WakeupException stopping) {
                consumer.commitSync();
            }
        }
    }

    private static void handle(GenericRecord delivery) {
        System.out.printf("delivery %s event=%s subscriber=%s consent=%s%n",
                delivery.get("delivery_id"), eventId(delivery), delivery.get("subscriber_id"),
                delivery.get("consent_id"));
        System.out.flush();
    }

    /** The id of what was delivered: exactly one of the four is set. */
    private static Object eventId(GenericRecord delivery) {
        for (String field : List.of("measurement", "self_report", "reference")) {
            if (delivery.get(field) instanceof GenericRecord event) {
                return event.get("event_id");
            }
        }
        if (delivery.get("alert") instanceof GenericRecord alert) {
            return alert.get("alert_id");
        }
        throw new IllegalStateException("a delivery with nothing delivered: " + delivery.get("delivery_id"));
    }
}
