package dev.lepton.examples.usage;

import dev.lepton.examples.Connection;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.LogAndContinueExceptionHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code java -jar lepton-usage.jar run}: the Streams application, as the usage principal.
 * {@code java -jar lepton-usage.jar provision}: as the cluster's admin, what it needs first
 * (its output topic, its ACLs; see {@link Provision}). {@code show}: the figures so far
 * ({@link Show}).
 *
 * <p>Settings, besides the connection ({@link Connection}): {@code USAGE_WINDOW_S}
 * (60) and {@code USAGE_GRACE_S} (60), the window and how late a heartbeat may come;
 * {@code USAGE_STATE_DIR}, where Streams keeps its local state.
 */
public final class UsageApp {
  /** The Streams application id, under the topic prefix: its group and internal topics. */
  static final String APPLICATION = "lepton-usage";

  private static final Logger log = LoggerFactory.getLogger(UsageApp.class);

  private UsageApp() {}

  public static void main(String[] args) throws Exception {
    Connection connection = Connection.fromEnvironment();
    String command = args.length == 1 ? args[0] : "";
    try {
      switch (command) {
        case "run" -> run(connection);
        case "provision" -> Provision.run(connection);
        case "show" -> Show.run(connection);
        default -> throw new IllegalArgumentException(
            "usage: java -jar lepton-usage.jar run|provision|show");
      }
    } catch (IllegalArgumentException e) {
      // A setting or an argument at fault: one line that names it.
      System.err.println("error: " + e.getMessage());
      System.exit(2);
    }
  }

  private static Duration seconds(Connection connection, String variable, String otherwise) {
    String value = connection.get(variable, otherwise);
    try {
      Duration duration = Duration.ofSeconds(Long.parseLong(value));
      if (!duration.isNegative() && !duration.isZero()) {
        return duration;
      }
    } catch (NumberFormatException e) {
      // the message below says what is wanted
    }
    throw new IllegalArgumentException(
        variable + " must be a whole number of seconds above 0, not " + value);
  }

  private static void run(Connection connection) throws InterruptedException {
    Duration window = seconds(connection, "USAGE_WINDOW_S", "60");
    Duration grace = seconds(connection, "USAGE_GRACE_S", "60");
    Properties config = connection.kafka();
    config.put(StreamsConfig.APPLICATION_ID_CONFIG, connection.name(APPLICATION));
    // Usage is money: a crash must neither lose nor double a heartbeat's share.
    config.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    // A record that is not the contract's (a stray producer) is logged and skipped.
    config.put(
        StreamsConfig.DESERIALIZATION_EXCEPTION_HANDLER_CLASS_CONFIG,
        LogAndContinueExceptionHandler.class);
    config.put(
        StreamsConfig.STATE_DIR_CONFIG,
        connection.get(
            "USAGE_STATE_DIR",
            Path.of(System.getProperty("java.io.tmpdir"), "lepton-usage").toString()));

    KafkaStreams streams =
        new KafkaStreams(UsageTopology.build(connection.prefix(), window, grace), config);
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setStateListener(
        (now, before) -> {
          // One line per state, for whoever waits for RUNNING (the tests do).
          log.info("state {}", now);
          if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
            stopped.countDown();
          }
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  // Leaving the group lets a successor take the partitions at once, rather
                  // than after this member's session times out.
                  streams.close(
                      new KafkaStreams.CloseOptions()
                          .timeout(Duration.ofSeconds(30))
                          .leaveGroup(true));
                  stopped.countDown();
                }));
    log.info(
        "usage per tenant: {} + {} -> {}, windows of {}, grace {}",
        connection.name(UsageTopology.JOB_EVENTS),
        connection.name(UsageTopology.HEARTBEATS),
        connection.name(UsageTopology.USAGE),
        window,
        grace);
    streams.start();
    stopped.await();
    if (streams.state() == KafkaStreams.State.ERROR) {
      System.exit(1);
    }
  }
}
