package dev.onceflow.javatests;

import java.nio.charset.StandardCharsets;
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The seed's first snippet: an idempotent producer with acks=all sending keyed records
 * with headers. Prints one "acked" line per acknowledged record (partition, offset, key)
 * and "done" with the count; exits 1 if any send failed.
 *
 * <p>Flags: --bootstrap, --topic, --count, --prefix (keys are prefix-0, prefix-1, ...),
 * --client-config.
 */
public final class IdempotentProducer {
    private IdempotentProducer() {}

    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String topic = args.get("topic");
        int count = args.integer("count", 100);
        String prefix = args.get("prefix", "key");

        Properties props = args.clientProperties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        // Several batches in flight per partition: the broker's sequence checks are exercised.
        props.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.BATCH_SIZE_CONFIG, "2048");

        int[] failures = {0};
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                String key = prefix + "-" + i;
                ProducerRecord<String, String> record =
                        new ProducerRecord<>(topic, key, "value-" + i);
                record.headers().add("seq", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                record.headers().add("source", "java".getBytes(StandardCharsets.UTF_8));
                producer.send(record, (metadata, error) -> {
                    if (error != null) {
                        failures[0]++;
                        Out.event("failed", "key", key, "error", error.toString());
                    } else {
                        Out.event("acked", "partition", metadata.partition(),
                                "offset", metadata.offset(), "key", key);
                    }
                });
            }
            producer.flush();
        }
        Out.event("done", "count", count, "failures", failures[0]);
        System.exit(failures[0] == 0 ? 0 : 1);
    }
}
