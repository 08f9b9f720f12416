package dev.lepton.examples;

import java.io.IOException;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Properties;

/**
 * How a Java client reaches Lepton's Kafka: the settings Lepton's own processes take (README
 * "Configuration"), so one environment serves both.
 *
 * <p>{@code LEPTON_KAFKA_CLIENT_PROPERTIES} names a Java client {@code .properties} file,
 * used as it is; each {@code LEPTON_KAFKA_*} variable that is set wins over it:
 * {@code _BOOTSTRAP}, {@code _SECURITY_PROTOCOL}, {@code _SASL_MECHANISM} (default
 * SCRAM-SHA-512), {@code _SASL_USERNAME} and {@code _SASL_PASSWORD}, {@code _SSL_CAFILE} (a
 * PEM file). {@code LEPTON_TOPIC_PREFIX} goes before every topic and group name.
 */
public final class Connection {
  private final Map<String, String> env;

  public Connection(Map<String, String> env) {
    this.env = env;
  }

  /** The environment of this process. */
  public static Connection fromEnvironment() {
    return new Connection(System.getenv());
  }

  /** The installation's prefix of topic and consumer-group names (may be empty). */
  public String prefix() {
    return env.getOrDefault("LEPTON_TOPIC_PREFIX", "");
  }

  /** A topic or group as declared ({@code lepton.jobs.events}), under the prefix. */
  public String name(String declared) {
    return prefix() + declared;
  }

  /** A setting this example takes, or its default. */
  public String get(String variable, String otherwise) {
    String value = env.get(variable);
    return value == null || value.isEmpty() ? otherwise : value;
  }

  /** A setting that must be given. */
  public String require(String variable, String what) {
    String value = env.get(variable);
    if (value == null || value.isEmpty()) {
      throw new IllegalArgumentException(variable + " is not set: " + what);
    }
    return value;
  }

  /** The Kafka client settings: bootstrap servers, security protocol, SASL login, CA file. */
  public Properties kafka() {
    Properties properties = new Properties();
    String file = env.get("LEPTON_KAFKA_CLIENT_PROPERTIES");
    if (file != null && !file.isEmpty()) {
      try (Reader in = Files.newBufferedReader(Path.of(file), StandardCharsets.UTF_8)) {
        properties.load(in);
      } catch (IOException e) {
        throw new UncheckedIOException("cannot read LEPTON_KAFKA_CLIENT_PROPERTIES " + file, e);
      }
    }
    copy("LEPTON_KAFKA_BOOTSTRAP", "bootstrap.servers", properties);
    copy("LEPTON_KAFKA_SECURITY_PROTOCOL", "security.protocol", properties);
    String user = env.get("LEPTON_KAFKA_SASL_USERNAME");
    if (user != null && !user.isEmpty()) {
      String mechanism = get("LEPTON_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512");
      String module =
          mechanism.equals("PLAIN")
              ? "org.apache.kafka.common.security.plain.PlainLoginModule"
              : "org.apache.kafka.common.security.scram.ScramLoginModule";
      String password = require("LEPTON_KAFKA_SASL_PASSWORD", "the SASL user's password");
      properties.setProperty("sasl.mechanism", mechanism);
      properties.setProperty(
          "sasl.jaas.config",
          module + " required username=" + quoted(user) + " password=" + quoted(password) + ";");
    }
    String caFile = env.get("LEPTON_KAFKA_SSL_CAFILE");
    if (caFile != null && !caFile.isEmpty()) {
      properties.setProperty("ssl.truststore.type", "PEM");
      properties.setProperty("ssl.truststore.location", caFile);
    }
    if (!properties.containsKey("bootstrap.servers")) {
      throw new IllegalArgumentException(
          "no Kafka to connect to: set LEPTON_KAFKA_CLIENT_PROPERTIES or LEPTON_KAFKA_BOOTSTRAP");
    }
    return properties;
  }

  private void copy(String variable, String property, Properties properties) {
    String value = env.get(variable);
    if (value != null && !value.isEmpty()) {
      properties.setProperty(property, value);
    }
  }

  private static String quoted(String value) {
    return '"' + value.replace("\\", "\\\\").replace("\"", "\\\"") + '"';
  }
}
