package dev.lepton.connect;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;

import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

import org.apache.kafka.common.config.ConfigException;

/**
 * Lepton's keys, as {@code lepton/contract/identity.py} and {@code sealed.py} define them:
 * a principal's signing key is {@code HMAC-SHA256(master, "lepton principal\0" ‖ principal)},
 * its sealing key {@code HMAC-SHA256(signing key, "lepton sealing\0")}; a record's signature
 * is the HMAC, with the signing key, of {@code len(topic) ‖ topic ‖ len(key) ‖ key ‖ value}
 * (4-byte big-endian lengths). Key material never appears in a message or a log.
 *
 * <p>Needs nothing but the JDK and Kafka's clients: it is also in the interceptor's jar,
 * which goes on a worker's classpath without Avro.
 */
final class Keys {
    static final byte[] SEALED_MAGIC = {(byte) 0xC3, 0x53};
    private static final int KEY_BYTES = 32;
    private static final int NONCE_BYTES = 12;
    private static final int TAG_BITS = 128;
    private static final int MAX_CACHED = 10_000;
    private static final byte[] PRINCIPAL_LABEL = "lepton principal\0".getBytes(StandardCharsets.UTF_8);
    private static final byte[] SEALING_LABEL = "lepton sealing\0".getBytes(StandardCharsets.UTF_8);

    /** A principal's own key: {@code <kind>:<name>:<32 bytes, base64url>}. */
    record SigningKey(String principal, byte[] secret) {
        static SigningKey parse(String text, String setting) {
            String trimmed = text.strip();
            int last = trimmed.lastIndexOf(':');
            int first = trimmed.indexOf(':');
            byte[] raw = last > first && first > 0 ? decode(trimmed.substring(last + 1)) : null;
            if (raw == null || raw.length != KEY_BYTES) {
                // Never echo the value: it is a secret.
                throw new ConfigException(setting + " must read <kind>:<name>:<32 bytes, base64url>");
            }
            return new SigningKey(trimmed.substring(0, last), raw);
        }

        /** The lepton-signature of a record written to {@code topic}. */
        byte[] sign(String topic, byte[] key, byte[] value) {
            byte[] name = topic.getBytes(StandardCharsets.UTF_8);
            byte[] k = key == null ? new byte[0] : key;
            byte[] v = value == null ? new byte[0] : value;
            ByteBuffer signed = ByteBuffer.allocate(8 + name.length + k.length + v.length);
            signed.putInt(name.length).put(name).putInt(k.length).put(k).put(v);
            return hmac(secret, signed.array());
        }

        @Override
        public String toString() {
            return "SigningKey[" + principal + "]";
        }
    }

    /** A value quoted in an error, cut short: errors reach logs and dead-letter headers. */
    static String clip(String text) {
        return text.length() <= 80 ? text : text.substring(0, 80) + "…";
    }

    private final byte[] master;
    private final SigningKey own;
    private final Map<String, SecretKeySpec> sealingKeys = new HashMap<>();

    Keys(byte[] master, SigningKey own) {
        this.master = master;
        this.own = own;
    }

    static byte[] parseMaster(String text, String setting) {
        byte[] raw = decode(text.strip());
        if (raw == null || raw.length != KEY_BYTES) {
            throw new ConfigException(setting + " must be 32 bytes, base64url");
        }
        return raw;
    }

    private static byte[] decode(String text) {
        try {
            return Base64.getUrlDecoder().decode(text);
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    static byte[] hmac(byte[] key, byte[]... parts) {
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(key, "HmacSHA256"));
            for (byte[] part : parts) {
                mac.update(part);
            }
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HMAC-SHA256 is missing from this JVM", e);
        }
    }

    static boolean sealed(byte[] data) {
        return data.length >= 2 && data[0] == SEALED_MAGIC[0] && data[1] == SEALED_MAGIC[1];
    }

    /** Thrown for a value sealed for a principal whose key is not held: not ours to read. */
    static final class NotOurs extends Exception {
        NotOurs(String message) {
            super(message, null, false, false);
        }
    }

    /** Thrown for a sealed value that is malformed, altered or sealed with another key. */
    static final class Broken extends Exception {
        Broken(String message) {
            super(message, null, false, false);
        }
    }

    /** The plaintext (single-object Avro) of {@code c3 53 | n | principal | nonce | ciphertext ‖ tag}. */
    byte[] open(byte[] data) throws NotOurs, Broken {
        if (data.length < 3) {
            throw new Broken("sealed value ends before its principal");
        }
        int end = 3 + (data[2] & 0xFF);
        if (data.length < end + NONCE_BYTES + TAG_BITS / 8) {
            throw new Broken("sealed value is shorter than its header, nonce and tag");
        }
        String principal = new String(data, 3, end - 3, StandardCharsets.UTF_8);
        SecretKeySpec key = sealingKey(principal);
        if (key == null) {
            throw new NotOurs("sealed for " + clip(principal) + ", whose key this converter does not hold");
        }
        try {
            Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
            cipher.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, data, end, NONCE_BYTES));
            cipher.updateAAD(data, 0, end);
            return cipher.doFinal(data, end + NONCE_BYTES, data.length - end - NONCE_BYTES);
        } catch (AEADBadTagException e) {
            throw new Broken("sealed for " + clip(principal) + " but does not open: altered, or sealed with another key");
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("AES-GCM is missing from this JVM", e);
        }
    }

    private synchronized SecretKeySpec sealingKey(String principal) {
        SecretKeySpec known = sealingKeys.get(principal);
        if (known != null) {
            return known;
        }
        byte[] secret;
        if (own != null && own.principal().equals(principal)) {
            secret = own.secret();
        } else if (master != null && validPrincipal(principal)) {
            secret = hmac(master, PRINCIPAL_LABEL, principal.getBytes(StandardCharsets.UTF_8));
        } else {
            return null;
        }
        // A flood of invented principals must not grow the cache without end.
        if (sealingKeys.size() >= MAX_CACHED) {
            sealingKeys.clear();
        }
        SecretKeySpec key = new SecretKeySpec(hmac(secret, SEALING_LABEL), "AES");
        sealingKeys.put(principal, key);
        return key;
    }

    private static boolean validPrincipal(String principal) {
        int colon = principal.indexOf(':');
        return colon > 0 && switch (principal.substring(0, colon)) {
            case "tenant", "node", "service", "operator" -> true;
            default -> false;
        };
    }
}
