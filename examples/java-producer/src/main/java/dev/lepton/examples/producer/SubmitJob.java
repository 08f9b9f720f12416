package dev.lepton.examples.producer;

import dev.lepton.examples.Connection;
import dev.lepton.examples.Contract;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * Submits a training job as a tenant and waits for its outcome, through the topics alone:
 * a {@code lepton.JobRequested} on {@code lepton.jobs.requested}, signed with the tenant's
 * {@code LEPTON_SIGNING_KEY}, then the job's {@code lepton.JobEvent}s on
 * {@code lepton.jobs.events} until one decides it.
 *
 * <pre>
 * java -jar lepton-submit.jar --dataset houses --target price [--algorithm auto]
 *     [--trials 5] [--cpus 1000] [--memory 1024] [--timeout 600]
 * </pre>
 *
 * Prints {@code submitted <job id>}, one line per event, then {@code outcome <kind>}; exits 0
 * when the job succeeded, 1 when it was rejected, failed or cancelled, 2 on a bad argument or
 * setting, 3 on timeout.
 */
public final class SubmitJob {
  private static final String REQUESTS = "lepton.jobs.requested";
  private static final String EVENTS = "lepton.jobs.events";
  private static final List<String> FINISHING = List.of("succeeded", "failed", "cancelled");

  private SubmitJob() {}

  public static void main(String[] args) throws Exception {
    try {
      submitAndFollow(args);
    } catch (IllegalArgumentException e) {
      // An argument or a setting at fault: one line that names it.
      System.err.println("error: " + e.getMessage());
      System.exit(2);
    }
  }

  private static void submitAndFollow(String[] args) throws Exception {
    Map<String, String> options = options(args);
    Connection connection = Connection.fromEnvironment();
    SigningKey key =
        SigningKey.fromText(
            connection.require(
                "LEPTON_SIGNING_KEY", "the tenant's key (lepton auth issue tenant:<name>)"));
    if (!key.kind().equals("tenant")) {
      throw new IllegalArgumentException(
          "LEPTON_SIGNING_KEY must be a tenant's: a job is asked for in a tenant's name");
    }
    String jobId = "job-" + UUID.randomUUID().toString().replace("-", "").substring(0, 12);
    GenericRecord request = request(jobId, key.name(), options);
    byte[] jobKey = jobId.getBytes(StandardCharsets.UTF_8);
    byte[] value = Contract.bytes(Contract.encoder("job_requested").encode(request));

    Properties kafka = connection.kafka();
    String events = connection.name(EVENTS);
    try (KafkaConsumer<byte[], byte[]> consumer = consumer(kafka)) {
      // The job's events go to the partition of its key (Kafka's default partitioner, which
      // Lepton's producers use too). Read from its end as it is now, before submitting, so
      // that no event of the job can be missed.
      int partitions = consumer.partitionsFor(events).size();
      TopicPartition partition =
          new TopicPartition(events, Utils.toPositive(Utils.murmur2(jobKey)) % partitions);
      consumer.assign(List.of(partition));
      consumer.seekToEnd(List.of(partition));
      consumer.position(partition);

      submit(kafka, connection.name(REQUESTS), jobKey, value, key);
      System.out.println("submitted " + jobId);
      System.out.flush();
      long timeoutS = Long.parseLong(options.getOrDefault("timeout", "600"));
      String outcome = follow(consumer, jobId, Instant.now().plusSeconds(timeoutS));
      System.out.println("outcome " + (outcome == null ? "timeout" : outcome));
      System.exit(outcome == null ? 3 : outcome.equals("succeeded") ? 0 : 1);
    }
  }

  private static Map<String, String> options(String[] args) {
    Map<String, String> options = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("--")) {
        throw new IllegalArgumentException("expected --option value, got " + args[i]);
      }
      options.put(args[i].substring(2), args[i + 1]);
    }
    for (String required : List.of("dataset", "target")) {
      if (!options.containsKey(required)) {
        throw new IllegalArgumentException("--" + required + " is required");
      }
    }
    return options;
  }

  /** The request, every field the contract gives a default left to it. */
  static GenericRecord request(String jobId, String tenant, Map<String, String> options) {
    Schema schema = Contract.schema("job_requested");
    Schema task = schema.getField("task").schema();
    Schema dataset = schema.getField("dataset").schema().getTypes().get(1);
    Schema resources = schema.getField("demand").schema();
    Schema constraints = schema.getField("constraints").schema();
    return new GenericRecordBuilder(schema)
        .set("job_id", jobId)
        .set("tenant", tenant)
        .set("priority_class", "normal")
        .set("priority", 0)
        .set(
            "task",
            new GenericRecordBuilder(task)
                .set("kind", new GenericData.EnumSymbol(task.getField("kind").schema(), "train"))
                .set("algorithm", options.getOrDefault("algorithm", "auto"))
                .set("target_column", options.get("target"))
                .set("trial_budget", Integer.parseInt(options.getOrDefault("trials", "5")))
                .build())
        .set(
            "dataset",
            new GenericRecordBuilder(dataset).set("name", options.get("dataset")).build())
        .set(
            "demand",
            new GenericRecordBuilder(resources)
                .set("cpu_millicores", Integer.parseInt(options.getOrDefault("cpus", "1000")))
                .set("memory_mib", Integer.parseInt(options.getOrDefault("memory", "1024")))
                .set("gpus", 0)
                .set("network_mbps", 0)
                .build())
        .set("constraints", new GenericRecordBuilder(constraints).build())
        .set("submitted_at", System.currentTimeMillis())
        .set("submitted_by", "java-producer")
        .build();
  }

  private static void submit(
      Properties kafka, String topic, byte[] key, byte[] value, SigningKey signer)
      throws Exception {
    Properties config = new Properties();
    config.putAll(kafka);
    config.put(ProducerConfig.ACKS_CONFIG, "all");
    config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    try (KafkaProducer<byte[], byte[]> producer =
        new KafkaProducer<>(config, new ByteArraySerializer(), new ByteArraySerializer())) {
      ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, key, value);
      // CloudEvents' Kafka binding, as Lepton's producers write it; then the signature.
      record.headers().add(header("ce_specversion", "1.0"));
      record.headers().add(header("ce_id", UUID.randomUUID().toString()));
      record.headers().add(header("ce_source", "java-producer"));
      record.headers().add(header("ce_type", "lepton.JobRequested"));
      record.headers().add(header("ce_time", Instant.now().toString()));
      record.headers().add(header("content-type", "application/avro"));
      signer.sign(topic, key, value).forEach(record.headers()::add);
      // Returns once the broker has the request (acks=all).
      producer.send(record).get();
    }
  }

  private static RecordHeader header(String name, String value) {
    return new RecordHeader(name, value.getBytes(StandardCharsets.UTF_8));
  }

  private static KafkaConsumer<byte[], byte[]> consumer(Properties kafka) {
    Properties config = new Properties();
    config.putAll(kafka);
    // No group: the partition is assigned, nothing is committed.
    config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    return new KafkaConsumer<>(config, new ByteArrayDeserializer(), new ByteArrayDeserializer());
  }

  /**
   * Prints the job's events until one decides it, and returns that event's kind (null at the
   * deadline). The decision is the scheduler's: a rejection; or a success, failure or
   * cancellation that names the job's current lease, or none while the job is not placed
   * (a report under a lease the scheduler has since taken back is void).
   */
  private static String follow(
      KafkaConsumer<byte[], byte[]> consumer, String jobId, Instant deadline) {
    BinaryMessageDecoder<GenericRecord> decoder = Contract.decoder("job_event");
    Long epoch = null;
    boolean placed = false;
    while (Instant.now().isBefore(deadline)) {
      for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
        if (record.key() == null
            || !jobId.equals(new String(record.key(), StandardCharsets.UTF_8))) {
          continue;
        }
        GenericRecord event;
        try {
          event = decoder.decode(record.value());
        } catch (Exception e) {
          System.err.println("skipped an event that is not the contract's: " + e);
          continue;
        }
        String kind = event.get("kind").toString();
        Long lease = (Long) event.get("lease_epoch");
        System.out.println(describe(kind, event));
        System.out.flush();
        switch (kind) {
          case "rejected" -> {
            return kind;
          }
          case "assigned" -> {
            if (lease != null && (epoch == null || lease >= epoch)) {
              epoch = lease;
              placed = true;
            }
          }
          case "queued", "requeued" -> placed = false;
          case "preempted" -> {
            if (lease == null || lease.equals(epoch)) {
              placed = false;
            }
          }
          default -> {
            if (FINISHING.contains(kind) && (lease == null ? !placed : lease.equals(epoch))) {
              return kind;
            }
          }
        }
      }
    }
    return null;
  }

  private static String describe(String kind, GenericRecord event) {
    StringBuilder line = new StringBuilder("  ").append(kind);
    if (event.get("node_id") != null) {
      line.append(" on ").append(event.get("node_id"));
    }
    if (event.get("progress_percent") != null) {
      line.append(' ').append(Math.round((Float) event.get("progress_percent"))).append('%');
    }
    if (event.get("reason") != null) {
      line.append(": ").append(event.get("reason"));
    }
    if (event.get("model_id") != null) {
      line.append(" model ").append(event.get("model_id"));
    }
    return line.toString();
  }
}
