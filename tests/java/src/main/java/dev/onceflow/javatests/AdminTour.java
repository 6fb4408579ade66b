package dev.onceflow.javatests;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Kafka's Java AdminClient through what operators do: topics (create, create again,
 * list, describe, delete), topic configs (describe, incremental alter), consumer groups
 * (list, describe with a live member and empty, committed offsets) and hanging
 * transactions (list, describe, describe producers) while a transaction is open.
 *
 * <p>Prints one event per step with what the AdminClient returned. Flags: --bootstrap,
 * --prefix (names of the topics, group and transactional id).
 */
public final class AdminTour {
    private static final Duration WAIT = Duration.ofSeconds(30);

    private AdminTour() {}

    public static void main(String[] argv) throws Exception {
        Args args = new Args(argv);
        String bootstrap = args.get("bootstrap");
        String prefix = args.get("prefix");
        String compacted = prefix + "-compacted";
        String plain = prefix + "-plain";
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(props)) {
            topics(admin, compacted, plain, prefix);
            configs(admin, compacted);
            transactions(admin, bootstrap, plain, prefix + "-txn");
            groups(admin, args, plain, prefix + "-group");
            admin.deleteTopics(List.of(compacted, plain)).all().get();
            Out.event("deleted", "remaining", prefixed(admin.listTopics().names().get(), prefix));
        }
    }

    private static void topics(Admin admin, String compacted, String plain, String prefix)
            throws Exception {
        NewTopic withConfig = new NewTopic(compacted, 3, (short) 1)
                .configs(Map.of("cleanup.policy", "compact"));
        admin.createTopics(List.of(withConfig, new NewTopic(plain, 1, (short) 1))).all().get();
        Out.event("created", "topics", List.of(compacted, plain));
        try {
            admin.createTopics(List.of(new NewTopic(plain, 1, (short) 1))).all().get();
            Out.event("created-again", "error", null);
        } catch (ExecutionException e) {
            Out.event("created-again", "error", e.getCause().getClass().getSimpleName());
        }
        Out.event("listed", "topics", prefixed(admin.listTopics().names().get(), prefix));
        Map<String, TopicDescription> described =
                admin.describeTopics(List.of(compacted, plain)).allTopicNames().get();
        for (TopicDescription topic : described.values()) {
            List<Object> partitions = new ArrayList<>();
            for (TopicPartitionInfo info : topic.partitions()) {
                partitions.add(Map.of("partition", info.partition(), "leader", info.leader().id(),
                        "replicas", info.replicas().size(), "isr", info.isr().size()));
            }
            Out.event("described-topic", "name", topic.name(), "internal", topic.isInternal(),
                    "partitions", partitions);
        }
    }

    private static void configs(Admin admin, String topic) throws Exception {
        ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Out.event("config", "entries", entries(admin, resource));
        AlterConfigOp setRetention = new AlterConfigOp(
                new ConfigEntry("retention.ms", "123456"), AlterConfigOp.OpType.SET);
        admin.incrementalAlterConfigs(Map.of(resource, List.of(setRetention))).all().get();
        Out.event("config-altered", "entries", entries(admin, resource));
    }

    /** cleanup.policy and retention.ms as {value, source}: the two the test changes. */
    private static Map<String, Object> entries(Admin admin, ConfigResource resource)
            throws Exception {
        Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
        Map<String, Object> shown = new TreeMap<>();
        for (String name : List.of("cleanup.policy", "retention.ms")) {
            ConfigEntry entry = config.get(name);
            shown.put(name, entry == null ? null
                    : Map.of("value", entry.value(), "source", entry.source().name()));
        }
        return shown;
    }

    private static void transactions(Admin admin, String bootstrap, String topic, String txnId)
            throws Exception {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            producer.initTransactions();
            producer.beginTransaction();
            for (int i = 0; i < 3; i++) {
                producer.send(new ProducerRecord<>(topic, 0, "k" + i, "committed-" + i));
            }
            producer.commitTransaction();
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, 0, "k3", "open")).get();

            List<Object> listed = new ArrayList<>();
            for (TransactionListing listing : admin.listTransactions().all().get()) {
                if (listing.transactionalId().equals(txnId)) {
                    listed.add(Map.of("id", listing.transactionalId(),
                            "producer_id", listing.producerId(),
                            "state", listing.state().toString()));
                }
            }
            Out.event("transactions", "listed", listed);
            TransactionDescription txn =
                    admin.describeTransactions(List.of(txnId)).description(txnId).get();
            List<String> partitions = new ArrayList<>();
            txn.topicPartitions().forEach(tp -> partitions.add(tp.toString()));
            Out.event("transaction", "state", txn.state().toString(),
                    "producer_id", txn.producerId(), "epoch", txn.producerEpoch(),
                    "timeout_ms", txn.transactionTimeoutMs(), "partitions", partitions,
                    "coordinator", txn.coordinatorId());
            TopicPartition partition = new TopicPartition(topic, 0);
            List<Object> producers = new ArrayList<>();
            for (ProducerState state : admin.describeProducers(List.of(partition))
                    .partitionResult(partition).get().activeProducers()) {
                producers.add(Map.of("producer_id", state.producerId(),
                        "epoch", state.producerEpoch(), "last_sequence", state.lastSequence(),
                        "txn_start_offset", state.currentTransactionStartOffset().orElse(-1)));
            }
            Out.event("producers", "partition", partition.toString(), "active", producers);
            producer.commitTransaction();
        }
    }

    private static void groups(Admin admin, Args args, String topic, String group)
            throws Exception {
        String[] consumerArgs = {"--bootstrap", args.get("bootstrap"), "--group", group};
        try (KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(Consumers.settings(new Args(consumerArgs), "read_committed"))) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + WAIT.toMillis();
            while (consumer.assignment().isEmpty()) {
                Consumers.checkDeadline(deadline, "joining the group");
                consumer.poll(Duration.ofMillis(100));
            }
            consumer.commitSync(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(2)));
            Out.event("group-live", "description", describe(admin, group));
            List<String> ids = new ArrayList<>();
            for (GroupListing listing : admin.listGroups().all().get()) {
                if (listing.groupId().equals(group)) {
                    ids.add(listing.groupId() + ":" + listing.protocol());
                }
            }
            Out.event("groups", "listed", ids);
        }
        Out.event("group-empty", "description", describe(admin, group));
        Map<String, Long> offsets = new TreeMap<>();
        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                .forEach((tp, om) -> offsets.put(tp.toString(), om.offset()));
        Out.event("group-offsets", "offsets", offsets);
    }

    private static Map<String, Object> describe(Admin admin, String group) throws Exception {
        ConsumerGroupDescription description =
                admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get();
        List<Object> members = new ArrayList<>();
        for (MemberDescription member : description.members()) {
            List<String> assigned = new ArrayList<>();
            member.assignment().topicPartitions().forEach(tp -> assigned.add(tp.toString()));
            members.add(Map.of("client_id", member.clientId(), "assignment", assigned));
        }
        return Map.of("state", description.groupState().toString(),
                "assignor", description.partitionAssignor(),
                "type", description.type().toString(), "members", members,
                "coordinator", description.coordinator().id());
    }

    private static List<String> prefixed(Collection<String> names, String prefix) {
        return names.stream().filter(n -> n.startsWith(prefix)).sorted().toList();
    }
}
