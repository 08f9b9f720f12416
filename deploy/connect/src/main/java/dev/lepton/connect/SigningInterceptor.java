package dev.lepton.connect;

import java.nio.charset.StandardCharsets;
import java.util.Map;

import org.apache.kafka.clients.producer.ProducerInterceptor;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.config.types.Password;

/**
 * Signs every record a producer sends as Lepton requires (README "Who wrote a record is
 * proven"): headers {@code lepton-principal} and {@code lepton-signature}, the HMAC-SHA256
 * over the topic, the key and the value as they are sent.
 *
 * <p>Why an interceptor and not the converter: the signature covers the key's bytes, and
 * Connect hands a value converter only the topic, the headers and the value (the key goes
 * through the key converter, separately); single message transforms run before either
 * converter, on Connect data, with no bytes to sign at all. A producer interceptor is the
 * one place that sees the final topic, key, value and headers together. On a source
 * connector: {@code producer.override.interceptor.classes=dev.lepton.connect.SigningInterceptor}
 * and {@code producer.override.lepton.signing.secret=<kind>:<name>:<key>}. A producer loads
 * its interceptors from the worker's classpath, not from a plugin directory: this class and
 * {@link Keys} are built into a jar of their own, {@code target/classpath/}, for it.
 */
public class SigningInterceptor implements ProducerInterceptor<byte[], byte[]> {
    public static final String SIGNING_KEY = "lepton.signing.secret";
    static final String PRINCIPAL_HEADER = "lepton-principal";
    static final String SIGNATURE_HEADER = "lepton-signature";

    private Keys.SigningKey key;
    private byte[] principal;

    @Override
    public void configure(Map<String, ?> configs) {
        Object given = configs.get(SIGNING_KEY);
        String text = given instanceof Password password ? password.value() : given == null ? null : given.toString();
        if (text == null) {
            throw new ConfigException(SIGNING_KEY + " is required: the key (<kind>:<name>:<key>) the records are signed with");
        }
        key = Keys.SigningKey.parse(text, SIGNING_KEY);
        principal = key.principal().getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public ProducerRecord<byte[], byte[]> onSend(ProducerRecord<byte[], byte[]> record) {
        // A record signed already (sent again) would carry two signatures: the reader takes the last.
        record.headers().remove(PRINCIPAL_HEADER);
        record.headers().remove(SIGNATURE_HEADER);
        record.headers().add(PRINCIPAL_HEADER, principal);
        record.headers().add(SIGNATURE_HEADER, key.sign(record.topic(), record.key(), record.value()));
        return record;
    }

    @Override
    public void onAcknowledgement(RecordMetadata metadata, Exception exception) {
        // Nothing to do: signing happens before the send.
    }

    @Override
    public void close() {
        // No resources.
    }
}
