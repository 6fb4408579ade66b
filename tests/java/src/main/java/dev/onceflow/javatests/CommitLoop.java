package dev.onceflow.javatests;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

/**
 * The seed's second snippet, at-least-once: enable.auto.commit=false; poll, process every
 * record, then commitSync. Prints "processed" per record and "committed" with the offsets
 * after each commit; stops with "done" once the committed offsets reach the end.
 *
 * <p>Flags: --bootstrap, --topic, --group, --pause-after N (after N records are processed,
 * pause before their commit: the test SIGKILLs the process there), --max-poll-records,
 * --timeout-ms.
 */
public final class CommitLoop {
    private CommitLoop() {}

    public static void main(String[] argv) {
        Args args = new Args(argv);
        int pauseAfter = args.integer("pause-after", 0);
        long deadline = Consumers.deadline(args);
        int processed = 0;
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(Consumers.settings(args, "read_uncommitted"))) {
            consumer.subscribe(List.of(args.get("topic")));
            while (true) {
                Consumers.checkDeadline(deadline, "commit loop");
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    if (Consumers.drained(consumer)) {
                        break;
                    }
                    continue;
                }
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<String, String> record : records) {
                    Out.event("processed", "partition", record.partition(),
                            "offset", record.offset(), "key", record.key(),
                            "value", record.value());
                    processed++;
                    offsets.put(new TopicPartition(record.topic(), record.partition()),
                            new OffsetAndMetadata(record.offset() + 1));
                }
                if (pauseAfter > 0 && processed >= pauseAfter) {
                    Out.pause("before-commit");
                }
                consumer.commitSync(offsets);
                Map<String, Long> shown = new HashMap<>();
                offsets.forEach((tp, om) -> shown.put(Integer.toString(tp.partition()), om.offset()));
                Out.event("committed", "offsets", shown);
            }
        }
        Out.event("done", "processed", processed);
    }
}
