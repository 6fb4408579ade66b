package dev.onceflow.javatests;

import java.io.IOException;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * A Kafka Streams application with processing.guarantee=exactly_once_v2: orders (key
 * customer, value "orderId:amount") are mapped to payments (stateless) and counted per
 * customer (stateful, a store whose changelog topic is compacted). The store's cache is
 * off, so every count update reaches the counts topic: read_committed, each customer's
 * counts must run 1, 2, 3, ... with no repeat and no gap, across a SIGKILL.
 *
 * <p>Prints "state" on every KafkaStreams state change; stops cleanly ("done") when a
 * line arrives on stdin. Flags: --bootstrap, --application-id, --state-dir, --orders,
 * --payments, --counts, --pause-after N (pause the stream thread inside its open
 * transaction once N orders were counted: the test SIGKILLs it there).
 */
public final class OrdersStreamsApp {
    static final String STORE = "order-counts";

    private OrdersStreamsApp() {}

    public static void main(String[] argv) throws IOException {
        Args args = new Args(argv);
        int pauseAfter = args.integer("pause-after", 0);
        AtomicInteger counted = new AtomicInteger();

        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, String> orders =
                builder.stream(args.get("orders"), Consumed.with(Serdes.String(), Serdes.String()));
        orders.mapValues(order -> "payment-for:" + order)
                .to(args.get("payments"), Produced.with(Serdes.String(), Serdes.String()));
        orders.groupByKey()
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as(STORE)
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
                .toStream()
                .peek((customer, count) -> {
                    if (counted.incrementAndGet() == pauseAfter) {
                        Out.pause("in-transaction");
                    }
                })
                .mapValues(count -> Long.toString(count))
                .to(args.get("counts"), Produced.with(Serdes.String(), Serdes.String()));

        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args.get("application-id"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args.get("bootstrap"));
        props.put(StreamsConfig.STATE_DIR_CONFIG, args.get("state-dir"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // A SIGKILLed instance holds its tasks until its session expires: keep that short.
        props.put(StreamsConfig.consumerPrefix("session.timeout.ms"), 6000);
        props.put(StreamsConfig.consumerPrefix("heartbeat.interval.ms"), 1000);

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) -> Out.event("state", "state", now.name()));
        streams.setUncaughtExceptionHandler(error -> {
            Out.event("error", "error", error.toString());
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.start();
        while (true) {
            int c = System.in.read();
            if (c == -1 || c == '\n') {
                break;
            }
        }
        streams.close();
        Out.event("done", "counted", counted.get());
    }
}
