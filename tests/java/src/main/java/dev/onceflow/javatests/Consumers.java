package dev.onceflow.javatests;

import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/** What the consume loops share: the consumer settings and the end-of-input test. */
final class Consumers {
    private Consumers() {}

    static Properties settings(Args args, String isolation) {
        Properties props = args.clientProperties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        props.put(ConsumerConfig.GROUP_ID_CONFIG, args.get("group"));
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, args.get("max-poll-records", "10"));
        props.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG,
                args.get("max-poll-interval-ms", "300000"));
        // A SIGKILLed member holds its partitions until its session expires: keep that
        // short (Kafka's group.min.session.timeout.ms) so a restarted loop takes over soon.
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG,
                StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG,
                StringDeserializer.class.getName());
        return props;
    }

    /** True once every assigned partition's committed offset has reached its end offset. */
    static boolean drained(KafkaConsumer<?, ?> consumer) {
        Set<TopicPartition> assigned = consumer.assignment();
        if (assigned.isEmpty()) {
            return false;
        }
        Map<TopicPartition, Long> ends = consumer.endOffsets(assigned, Duration.ofSeconds(10));
        Map<TopicPartition, OffsetAndMetadata> committed =
                consumer.committed(assigned, Duration.ofSeconds(10));
        for (TopicPartition partition : assigned) {
            OffsetAndMetadata done = committed.get(partition);
            long end = ends.get(partition);
            if (end > 0 && (done == null || done.offset() < end)) {
                return false;
            }
        }
        return true;
    }

    /** Rewinds every assigned partition to its committed offset (the earliest if none). */
    static void rewind(KafkaConsumer<?, ?> consumer) {
        Set<TopicPartition> assigned = consumer.assignment();
        Map<TopicPartition, OffsetAndMetadata> committed =
                consumer.committed(assigned, Duration.ofSeconds(10));
        for (TopicPartition partition : assigned) {
            OffsetAndMetadata done = committed.get(partition);
            if (done == null) {
                consumer.seekToBeginning(Set.of(partition));
            } else {
                consumer.seek(partition, done.offset());
            }
        }
    }

    static long deadline(Args args) {
        return System.currentTimeMillis() + args.integer("timeout-ms", 60000);
    }

    static void checkDeadline(long deadline, String what) {
        if (System.currentTimeMillis() > deadline) {
            Args.fail(what + " did not finish before --timeout-ms");
        }
    }
}
