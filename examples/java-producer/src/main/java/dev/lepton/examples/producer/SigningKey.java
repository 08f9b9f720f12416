package dev.lepton.examples.producer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.Base64;
import java.util.List;
import java.util.Set;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;

/**
 * A principal's signing key, and the two headers that prove who wrote a record (README "Who
 * wrote a record is proven"): {@code lepton-principal} ({@code tenant:acme}) and
 * {@code lepton-signature}, HMAC-SHA256 over {@code len(topic) ‖ topic ‖ len(key) ‖ key ‖
 * value}, lengths as 4-byte big-endian, the topic as written (prefix included).
 */
final class SigningKey {
  private static final Set<String> KINDS = Set.of("tenant", "node", "service", "operator");
  private static final int KEY_BYTES = 32;

  private final String principal;
  private final String kind;
  private final String name;
  private final byte[] secret;

  private SigningKey(String kind, String name, byte[] secret) {
    this.kind = kind;
    this.name = name;
    this.principal = kind + ":" + name;
    this.secret = secret;
  }

  /** The text form {@code LEPTON_SIGNING_KEY} holds: {@code <kind>:<name>:<base64url key>}. */
  static SigningKey fromText(String text) {
    String trimmed = text.strip();
    int first = trimmed.indexOf(':');
    int last = trimmed.lastIndexOf(':');
    String kind = first < 0 ? "" : trimmed.substring(0, first);
    byte[] secret;
    try {
      secret =
          first < last ? Base64.getUrlDecoder().decode(trimmed.substring(last + 1)) : new byte[0];
    } catch (IllegalArgumentException e) {
      secret = new byte[0];
    }
    if (!KINDS.contains(kind) || secret.length != KEY_BYTES) {
      // Never the key itself in a message.
      throw new IllegalArgumentException(
          "LEPTON_SIGNING_KEY reads <kind>:<name>:<32 bytes, base64url>");
    }
    return new SigningKey(kind, trimmed.substring(first + 1, last), secret);
  }

  String kind() {
    return kind;
  }

  String name() {
    return name;
  }

  /** The headers proving that this principal wrote {@code value} under {@code key} to
   * {@code topic}. */
  List<Header> sign(String topic, byte[] key, byte[] value) {
    byte[] name = topic.getBytes(StandardCharsets.UTF_8);
    ByteBuffer signed = ByteBuffer.allocate(8 + name.length + key.length + value.length);
    signed.putInt(name.length).put(name).putInt(key.length).put(key).put(value);
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(secret, "HmacSHA256"));
      return List.of(
          new RecordHeader("lepton-principal", principal.getBytes(StandardCharsets.UTF_8)),
          new RecordHeader("lepton-signature", mac.doFinal(signed.array())));
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HMAC-SHA256 is part of every Java runtime", e);
    }
  }
}
