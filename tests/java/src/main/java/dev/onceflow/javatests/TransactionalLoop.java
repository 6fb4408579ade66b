package dev.onceflow.javatests;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The seed's third snippet, exactly-once: per poll, beginTransaction, send one output
 * record per input, sendOffsetsToTransaction(offsets, consumer.groupMetadata()),
 * commitTransaction; the consumer reads read_committed. A ProducerFencedException closes
 * the producer and builds a new one (never abortTransaction on a fenced producer); any
 * other failure aborts and rewinds to the committed offsets.
 *
 * <p>Each output record keeps the input key, has value "paid:" + input value and a header
 * "input" = "partition:offset". Prints "sent" per record, "committed" per transaction,
 * "fenced", "aborted", and "done" once the group's offsets reach the input's end.
 *
 * <p>Flags: --bootstrap, --input, --output, --group, --transactional-id, --pause-after N
 * (after N records are sent, pause inside the open transaction), --max-poll-records,
 * --max-poll-interval-ms, --timeout-ms, --client-config, --until-sigterm true (run until
 * SIGTERM instead of until the input is drained or the timeout passes: a black-box target
 * of {@code onceflow verify --command}; SIGTERM finishes the current transaction, then
 * closes the clients).
 */
public final class TransactionalLoop {
    /** How long SIGTERM waits for the loop to finish its transaction and close. */
    private static final long STOP_MILLIS = 10_000;

    private TransactionalLoop() {}

    public static void main(String[] argv) {
        Args args = new Args(argv);
        String output = args.get("output");
        int pauseAfter = args.integer("pause-after", 0);
        boolean untilSigterm = Boolean.parseBoolean(args.get("until-sigterm", "false"));
        long deadline = Consumers.deadline(args);
        int sent = 0;
        boolean paused = false;
        AtomicBoolean stopping = new AtomicBoolean();
        Thread main = Thread.currentThread();
        if (untilSigterm) {
            // The JVM runs this on SIGTERM and exits when it returns: let the loop finish
            // its transaction and close the clients first.
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                stopping.set(true);
                try {
                    main.join(STOP_MILLIS);
                } catch (InterruptedException interrupted) {
                    Thread.currentThread().interrupt();
                }
            }));
        }
        KafkaProducer<String, String> producer = newProducer(args);
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(Consumers.settings(args, "read_committed"))) {
            consumer.subscribe(List.of(args.get("input")));
            while (!stopping.get()) {
                if (!untilSigterm) {
                    Consumers.checkDeadline(deadline, "transactional loop");
                }
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    if (!untilSigterm && Consumers.drained(consumer)) {
                        break;
                    }
                    continue;
                }
                try {
                    producer.beginTransaction();
                    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                    for (ConsumerRecord<String, String> record : records) {
                        String source = record.partition() + ":" + record.offset();
                        ProducerRecord<String, String> out =
                                new ProducerRecord<>(output, record.key(), "paid:" + record.value());
                        out.headers().add("input", source.getBytes(StandardCharsets.UTF_8));
                        producer.send(out);
                        sent++;
                        Out.event("sent", "input", source, "key", record.key());
                        offsets.put(new TopicPartition(record.topic(), record.partition()),
                                new OffsetAndMetadata(record.offset() + 1));
                    }
                    if (pauseAfter > 0 && sent >= pauseAfter && !paused) {
                        paused = true;
                        producer.flush();
                        Out.pause("in-transaction");
                    }
                    producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                    producer.commitTransaction();
                    Out.event("committed", "records", records.count());
                } catch (ProducerFencedException fenced) {
                    Out.event("fenced", "error", fenced.toString());
                    producer.close(Duration.ZERO);
                    producer = newProducer(args);
                    Consumers.rewind(consumer);
                } catch (KafkaException failed) {
                    Out.event("aborted", "error", failed.toString());
                    producer.abortTransaction();
                    Consumers.rewind(consumer);
                }
            }
        } finally {
            producer.close();
        }
        Out.event("done", "sent", sent);
    }

    private static KafkaProducer<String, String> newProducer(Args args) {
        Properties props = args.clientProperties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, args.get("transactional-id"));
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        KafkaProducer<String, String> producer = new KafkaProducer<>(props);
        producer.initTransactions();
        Out.event("initialized", "transactional_id", args.get("transactional-id"));
        return producer;
    }
}
