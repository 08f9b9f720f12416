package dev.lepton.connect;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.config.types.Password;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.storage.Converter;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Lepton's events for Kafka Connect: a record value in Avro single-object encoding
 * ({@code c3 01} + the writer schema's CRC-64-AVRO fingerprint, little-endian + body), or
 * sealed for a tenant ({@code c3 53 …}), to a Connect {@code Struct} whose schema is derived
 * from the contract's {@code .avsc}; data written with an earlier schema of
 * {@code schemas/history/} is read as the current one. Bytes that are not a Lepton event
 * are a {@link DataException} saying what is wrong with them, for the worker's
 * {@code errors.tolerance} and dead-letter queue.
 *
 * <p>The other way (a source connector writing requests), a Struct, or a JSON object as
 * text or a Map (a line of FileStreamSource, a schemaless source), becomes the event's
 * single-object encoding under the current schema. The record is signed by
 * {@link SigningInterceptor}, which sees the key and the topic too.
 *
 * <p>Keys are plain UTF-8 text in Lepton (ids and names): use {@code StringConverter}.
 */
public class LeptonConverter implements Converter {
    // Named "...secret": connectors that log their whole configuration (Debezium's JDBC sink
    // does, converter settings included) mask the values of names ending so.
    public static final String IDENTITY_KEY = "identity.secret";
    public static final String SIGNING_KEY = "signing.secret";
    public static final String EVENT = "event";
    public static final String SEALED_OTHERS = "sealed.others";
    public static final String COLLECTIONS_AS_JSON = "collections.as.json";

    static final byte[] MAGIC = {(byte) 0xC3, 0x01};
    static final int HEADER_BYTES = 10;
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final LeptonSchemas PACKAGED = LeptonSchemas.packaged();

    static final ConfigDef CONFIG = new ConfigDef()
            .define(IDENTITY_KEY, ConfigDef.Type.PASSWORD, null, ConfigDef.Importance.HIGH,
                    "The master identity key (LEPTON_IDENTITY_KEY, 32 bytes base64url): opens values sealed for any "
                            + "tenant (lepton.models.evaluated, lepton.data.ready, ...). Never logged.")
            .define(SIGNING_KEY, ConfigDef.Type.PASSWORD, null, ConfigDef.Importance.HIGH,
                    "A principal's own key (LEPTON_SIGNING_KEY, <kind>:<name>:<key>): opens values sealed for that "
                            + "tenant only. Never logged.")
            .define(EVENT, ConfigDef.Type.STRING, null, ConfigDef.Importance.MEDIUM,
                    "The full Avro name of the topic's event (lepton.JobRequested): required to write a JSON value, "
                            + "and, when given, an event of another type is a DataException.")
            .define(SEALED_OTHERS, ConfigDef.Type.STRING, "fail", ConfigDef.ValidString.in("fail", "skip"),
                    ConfigDef.Importance.MEDIUM,
                    "A value sealed for a tenant whose key is not held: fail (a DataException) or skip (a null "
                            + "value, which the Filter transform with the RecordIsTombstone predicate drops).")
            .define(COLLECTIONS_AS_JSON, ConfigDef.Type.BOOLEAN, false, ConfigDef.Importance.MEDIUM,
                    "Maps and arrays as JSON text (a string named io.debezium.data.Json) instead of Connect maps "
                            + "and arrays: for relational sinks, which take no nested collections.");

    private final LeptonSchemas schemas;
    private final Map<Long, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();
    private final Map<String, GenericDatumWriter<GenericRecord>> writers = new ConcurrentHashMap<>();
    private final Map<String, byte[]> singleObjectHeaders = new ConcurrentHashMap<>();
    private Keys keys = new Keys(null, null);
    private String event;
    private boolean skipOthers;
    private AvroConnect data = new AvroConnect(false);
    private BinaryDecoder decoder;
    private BinaryEncoder encoder;

    public LeptonConverter() {
        this(PACKAGED);
    }

    LeptonConverter(LeptonSchemas schemas) {
        this.schemas = schemas;
    }

    @Override
    public ConfigDef config() {
        return CONFIG;
    }

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        if (isKey) {
            throw new ConfigException("LeptonConverter converts record values; Lepton's keys are UTF-8 text: "
                    + "use org.apache.kafka.connect.storage.StringConverter as the key converter");
        }
        AbstractConfig config = new AbstractConfig(CONFIG, configs, false);
        Password master = config.getPassword(IDENTITY_KEY);
        Password own = config.getPassword(SIGNING_KEY);
        keys = new Keys(
                master == null ? null : Keys.parseMaster(master.value(), IDENTITY_KEY),
                own == null ? null : Keys.SigningKey.parse(own.value(), SIGNING_KEY));
        event = config.getString(EVENT);
        if (event != null && schemas.current(event) == null) {
            throw new ConfigException(EVENT, event, "no such event in the contract; known: " + schemas.names());
        }
        skipOthers = "skip".equals(config.getString(SEALED_OTHERS));
        data = new AvroConnect(config.getBoolean(COLLECTIONS_AS_JSON));
    }

    @Override
    public SchemaAndValue toConnectData(String topic, byte[] value) {
        if (value == null) {
            return SchemaAndValue.NULL; // a tombstone stays one
        }
        byte[] plain = value;
        if (Keys.sealed(value)) {
            try {
                plain = keys.open(value);
            } catch (Keys.NotOurs e) {
                if (skipOthers) {
                    return SchemaAndValue.NULL;
                }
                throw new DataException(topic + ": " + e.getMessage());
            } catch (Keys.Broken e) {
                throw new DataException(topic + ": " + e.getMessage());
            }
        }
        if (plain.length < HEADER_BYTES) {
            throw new DataException(topic + ": " + plain.length + " bytes is shorter than the " + HEADER_BYTES + "-byte header");
        }
        if (plain[0] != MAGIC[0] || plain[1] != MAGIC[1]) {
            throw new DataException(topic + ": not Avro single-object encoding: starts with "
                    + HexFormat.of().formatHex(plain, 0, 2) + ", not c301");
        }
        long fingerprint = ByteBuffer.wrap(plain, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        LeptonSchemas.Resolved resolved = schemas.byFingerprint(fingerprint);
        if (resolved == null) {
            throw new DataException(topic + ": unknown schema fingerprint " + HexFormat.of().formatHex(plain, 2, HEADER_BYTES));
        }
        Schema reader = resolved.reader();
        if (event != null && !event.equals(reader.getFullName())) {
            throw new DataException(topic + ": expected " + event + ", got " + reader.getFullName());
        }
        GenericRecord record = decode(topic, plain, fingerprint, resolved);
        return new SchemaAndValue(data.schemaOf(reader), data.toConnect(record));
    }

    private GenericRecord decode(String topic, byte[] plain, long fingerprint, LeptonSchemas.Resolved resolved) {
        String name = resolved.writer().getFullName();
        GenericDatumReader<GenericRecord> reader = readers.computeIfAbsent(
                fingerprint, fp -> new GenericDatumReader<>(resolved.writer(), resolved.reader()));
        decoder = DecoderFactory.get().binaryDecoder(plain, HEADER_BYTES, plain.length - HEADER_BYTES, decoder);
        GenericRecord record;
        try {
            record = reader.read(null, decoder);
        } catch (EOFException | ArrayIndexOutOfBoundsException e) {
            throw new DataException(topic + ": body ends before the " + name
                    + " record does (truncated, or a length inside it is corrupt)");
        } catch (IOException | AvroRuntimeException | IllegalArgumentException | UnsupportedOperationException
                | NegativeArraySizeException | OutOfMemoryError e) {
            throw new DataException(topic + ": body is not a valid " + name + ": " + e.getMessage());
        }
        try {
            if (!decoder.isEnd()) {
                throw new DataException(topic + ": bytes left over after the " + name + " record");
            }
        } catch (IOException e) {
            throw new DataException(topic + ": cannot read past the " + name + " record: " + e.getMessage());
        }
        return record;
    }

    @Override
    public byte[] fromConnectData(String topic, org.apache.kafka.connect.data.Schema schema, Object value) {
        if (value == null) {
            return null;
        }
        Schema avro = writerSchema(topic, schema, value);
        Object given = value instanceof String text ? parse(topic, text) : value;
        GenericRecord record;
        try {
            record = AvroConnect.toAvro(avro, given);
        } catch (DataException e) {
            throw new DataException(topic + ": " + e.getMessage());
        }
        GenericDatumWriter<GenericRecord> writer = writers.computeIfAbsent(avro.getFullName(), n -> new GenericDatumWriter<>(avro));
        ByteArrayOutputStream out = new ByteArrayOutputStream(256);
        // The header is made once per schema: a fingerprint computes the canonical form.
        out.writeBytes(singleObjectHeaders.computeIfAbsent(avro.getFullName(), n -> header(avro)));
        encoder = EncoderFactory.get().directBinaryEncoder(out, encoder);
        try {
            writer.write(record, encoder);
            encoder.flush();
        } catch (IOException | AvroRuntimeException | ClassCastException | NullPointerException e) {
            throw new DataException(topic + ": cannot write a " + avro.getFullName() + ": " + e.getMessage(), e);
        }
        return out.toByteArray();
    }

    /**
     * As {@link #fromConnectData(String, org.apache.kafka.connect.data.Schema, Object)}, and
     * the CloudEvents headers Lepton's own producers set (content type, event type, id).
     */
    @Override
    public byte[] fromConnectData(String topic, Headers headers, org.apache.kafka.connect.data.Schema schema, Object value) {
        byte[] encoded = fromConnectData(topic, schema, value);
        if (encoded != null && headers != null) {
            Schema avro = writerSchema(topic, schema, value);
            headers.add("ce_specversion", bytes("1.0"));
            headers.add("ce_id", bytes(UUID.randomUUID().toString()));
            headers.add("ce_source", bytes("lepton-connect"));
            headers.add("ce_type", bytes(avro.getFullName()));
            headers.add("content-type", bytes("application/avro"));
        }
        return encoded;
    }

    private Schema writerSchema(String topic, org.apache.kafka.connect.data.Schema schema, Object value) {
        String name = event;
        if (name == null && schema != null && schema.name() != null && schemas.current(schema.name()) != null) {
            name = schema.name();
        }
        if (name == null) {
            throw new DataException(topic + ": which event is this? Set the converter's '" + EVENT
                    + "' (e.g. lepton.JobRequested), or give a Struct whose schema is named after one");
        }
        return schemas.current(name);
    }

    static byte[] header(Schema schema) {
        return ByteBuffer.allocate(HEADER_BYTES).put(MAGIC).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(LeptonSchemas.fingerprint(schema)).array();
    }

    private static Map<?, ?> parse(String topic, String text) {
        try {
            Object parsed = MAPPER.readValue(text, Object.class);
            if (parsed instanceof Map<?, ?> map) {
                return map;
            }
            throw new DataException(topic + ": a JSON value must be an object, got " + Keys.clip(text));
        } catch (JsonProcessingException e) {
            throw new DataException(topic + ": not JSON: " + e.getOriginalMessage());
        }
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }
}
