package dev.lepton.examples.usage;

import dev.lepton.examples.Connection;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * {@code java -jar lepton-usage.jar show}: the usage topic as a reader should take it, the
 * latest record of each tenant and window (committed transactions only), one JSON object a
 * line, by tenant and window. Reads to the topic's end as it is now, then stops.
 */
final class Show {
  private Show() {}

  static void run(Connection connection) {
    Properties config = connection.kafka();
    // What the application's transactions committed, never what an aborted one wrote.
    config.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    config.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    String topic = connection.name(UsageTopology.USAGE);
    Map<String, String> latest = new TreeMap<>();
    try (KafkaConsumer<String, String> consumer =
        new KafkaConsumer<>(config, new StringDeserializer(), new StringDeserializer())) {
      List<TopicPartition> partitions =
          consumer.partitionsFor(topic).stream()
              .map(info -> new TopicPartition(topic, info.partition()))
              .toList();
      consumer.assign(partitions);
      consumer.seekToBeginning(partitions);
      Map<TopicPartition, Long> ends = consumer.endOffsets(partitions);
      while (partitions.stream().anyMatch(p -> consumer.position(p) < ends.get(p))) {
        for (ConsumerRecord<String, String> record : consumer.poll(Duration.ofMillis(500))) {
          latest.put(record.key(), record.value());
        }
      }
    }
    latest.values().forEach(System.out::println);
  }
}
