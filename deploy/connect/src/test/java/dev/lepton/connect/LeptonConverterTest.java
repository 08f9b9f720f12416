package dev.lepton.connect;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.data.Timestamp;
import org.apache.kafka.connect.errors.DataException;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.api.Test;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

class LeptonConverterTest {
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final HexFormat HEX = HexFormat.of();
    // Fixtures made with lepton.contract (Python) from a master key of bytes 0..31.
    private static final String MASTER = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    private static final String ACME = "tenant:acme:Dn-eTt0wU4t-bJ2P2SWqa9tzZ6ant7cIMmbz33MZmfA";
    private static final String ACME_SIGNATURE = "7728551da04ee6802d3a50840d1a666d5b5193f19dd1fbabb82e89995836deca";
    // The first model_evaluated golden vector, sealed for tenant:acme.
    private static final String SEALED = "c3530b74656e616e743a61636d65046e668e2a5dae1f2c75b9389d116edae7aa6dec91c783a9697c5888ee9bf"
            + "5385203ec8894ca4c993cae6c6e9397ba682460f69143ad23ea156e814cc1ecbf96681baf72b801fcd5966ed846438e6b7d49571"
            + "3b48bf9055c73ac3f718bbb77b11b34095ba889c2f381b6e5de08ac06866398df3f3afab98f82afad208d5e5a5479a273a1a50de77"
            + "67232c1053ebbce932288edf8f7b9f20720355c076a";

    record Vector(String file, String description, JsonNode record, byte[] bytes) {
        @Override
        public String toString() {
            return file + ": " + description;
        }
    }

    static Stream<Vector> vectors() throws IOException {
        List<Vector> all = new ArrayList<>();
        for (String file : List.of("alert", "audit_event", "data_ready", "data_rejected", "dataset_requested",
                "job_assigned", "job_event", "job_requested", "model_evaluated", "model_promoted", "model_ready",
                "node_heartbeat", "predict_requested", "prediction_result")) {
            try (InputStream in = LeptonConverterTest.class.getClassLoader().getResourceAsStream("lepton/vectors/" + file + ".json")) {
                for (JsonNode vector : MAPPER.readTree(in)) {
                    all.add(new Vector(file, vector.get("description").asText(), vector.get("record"),
                            HEX.parseHex(vector.get("bytes_hex").asText())));
                }
            }
        }
        return all.stream();
    }

    private static Vector first(String file) {
        try {
            return vectors().filter(v -> v.file().equals(file)).findFirst().orElseThrow();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    private static LeptonConverter converter(Map<String, ?> config) {
        LeptonConverter converter = new LeptonConverter();
        converter.configure(config, false);
        return converter;
    }

    @ParameterizedTest
    @MethodSource("vectors")
    void everyGoldenVectorBecomesAStructAndBackToTheSameRecord(Vector vector) {
        LeptonConverter converter = converter(Map.of());
        SchemaAndValue read = converter.toConnectData("t", vector.bytes());
        Struct struct = (Struct) read.value();
        struct.validate();
        // Maps come back from Avro unordered, so bytes may differ in map order: compare decoded.
        byte[] written = converter.fromConnectData("t", read.schema(), struct);
        assertEquals(struct, converter.toConnectData("t", written).value());
        // The golden vector's JSON record (as a FileStreamSource line would carry it) too.
        LeptonConverter fromText = converter(Map.of(LeptonConverter.EVENT, read.schema().name()));
        byte[] fromJson = fromText.fromConnectData("t", null, vector.record().toString());
        assertEquals(struct, converter.toConnectData("t", fromJson).value());
    }

    @Test
    void timestampsAreConnectTimestampsAndUnionsOptional() {
        Vector event = first("job_event");
        SchemaAndValue read = converter(Map.of()).toConnectData("t", event.bytes());
        assertEquals(Timestamp.LOGICAL_NAME, read.schema().field("time").schema().name());
        assertTrue(read.schema().field("node_id").schema().isOptional());
        assertEquals("lepton.JobEvent", read.schema().name());
        assertEquals(event.record().get("time").asLong(), ((java.util.Date) ((Struct) read.value()).get("time")).getTime());
        assertEquals(event.record().get("kind").asText(), ((Struct) read.value()).get("kind"));
    }

    @Test
    void collectionsAsJsonAreJsonText() throws IOException {
        Vector evaluated = first("model_evaluated");
        SchemaAndValue read = converter(Map.of(LeptonConverter.COLLECTIONS_AS_JSON, "true")).toConnectData("t", evaluated.bytes());
        assertEquals(AvroConnect.JSON, read.schema().field("metrics").schema().name());
        String metrics = (String) ((Struct) read.value()).get("metrics");
        assertEquals(evaluated.record().get("metrics"), MAPPER.readTree(metrics));
    }

    @Test
    void dataOfAHistorySchemaIsReadAsTheCurrentOne() throws IOException {
        Schema old;
        try (InputStream in = getClass().getClassLoader().getResourceAsStream("lepton/schemas/history/1/model_ready.avsc")) {
            old = new Schema.Parser().parse(in);
        }
        GenericRecord record = randomish(old);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(LeptonConverter.header(old));
        BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(old).write(record, encoder);
        encoder.flush();
        SchemaAndValue read = converter(Map.of()).toConnectData("t", out.toByteArray());
        // Read with the current schema: its fields, the old record's values.
        Schema current = LeptonSchemas.packaged().current("lepton.ModelReady");
        assertEquals(current.getFields().size(), read.schema().fields().size());
        assertEquals(record.get("model_id").toString(), ((Struct) read.value()).get("model_id"));
    }

    /** A record of {@code schema} filled with the defaults, and simple values elsewhere. */
    private static GenericRecord randomish(Schema schema) {
        GenericData.Record record = new GenericData.Record(schema);
        for (Schema.Field field : schema.getFields()) {
            record.put(field.pos(), field.hasDefaultValue() ? GenericData.get().getDefaultValue(field) : simple(field.schema()));
        }
        return record;
    }

    private static Object simple(Schema schema) {
        return switch (schema.getType()) {
            case STRING -> "m-1";
            case INT -> 3;
            case LONG -> 1767225600000L;
            case DOUBLE -> 0.5;
            case FLOAT -> 0.5f;
            case BOOLEAN -> true;
            case BYTES -> java.nio.ByteBuffer.wrap(new byte[] {1});
            case ENUM -> new GenericData.EnumSymbol(schema, schema.getEnumSymbols().get(1));
            case RECORD -> randomish(schema);
            case ARRAY -> new GenericData.Array<>(schema, List.of());
            case MAP -> Map.of();
            case UNION -> null;
            default -> null;
        };
    }

    @Test
    void sealedValuesOpenWithTheMasterKeyOrTheTenantsOwn() {
        Vector evaluated = first("model_evaluated");
        Object expected = converter(Map.of()).toConnectData("t", evaluated.bytes()).value();
        assertEquals(expected, converter(Map.of(LeptonConverter.IDENTITY_KEY, MASTER)).toConnectData("t", HEX.parseHex(SEALED)).value());
        assertEquals(expected, converter(Map.of(LeptonConverter.SIGNING_KEY, ACME)).toConnectData("t", HEX.parseHex(SEALED)).value());
    }

    @Test
    void aSealedValueNotOursFailsOrIsSkipped() {
        String other = "tenant:other:" + MASTER; // any 32 bytes: not acme's key
        DataException error = assertThrows(DataException.class,
                () -> converter(Map.of()).toConnectData("lepton.models.evaluated", HEX.parseHex(SEALED)));
        assertEquals("lepton.models.evaluated: sealed for tenant:acme, whose key this converter does not hold", error.getMessage());
        assertNull(converter(Map.of(LeptonConverter.SIGNING_KEY, other, LeptonConverter.SEALED_OTHERS, "skip"))
                .toConnectData("t", HEX.parseHex(SEALED)).value());
        byte[] altered = HEX.parseHex(SEALED);
        altered[altered.length - 1] ^= 1;
        error = assertThrows(DataException.class,
                () -> converter(Map.of(LeptonConverter.IDENTITY_KEY, MASTER)).toConnectData("t", altered));
        assertEquals("t: sealed for tenant:acme but does not open: altered, or sealed with another key", error.getMessage());
    }

    @Test
    void malformedBytesSayWhatIsWrong() {
        LeptonConverter converter = converter(Map.of());
        byte[] good = first("job_event").bytes();
        assertEquals("t: 3 bytes is shorter than the 10-byte header",
                assertThrows(DataException.class, () -> converter.toConnectData("t", new byte[] {(byte) 0xC3, 1, 0})).getMessage());
        assertEquals("t: not Avro single-object encoding: starts with 7b22, not c301",
                assertThrows(DataException.class, () -> converter.toConnectData("t", "{\"job_id\": 1}".getBytes(StandardCharsets.UTF_8))).getMessage());
        byte[] unknown = good.clone();
        unknown[2] ^= 0x55;
        assertTrue(assertThrows(DataException.class, () -> converter.toConnectData("t", unknown)).getMessage()
                .startsWith("t: unknown schema fingerprint "));
        byte[] truncated = java.util.Arrays.copyOf(good, good.length - 3);
        assertEquals("t: body ends before the lepton.JobEvent record does (truncated, or a length inside it is corrupt)",
                assertThrows(DataException.class, () -> converter.toConnectData("t", truncated)).getMessage());
        byte[] longer = java.util.Arrays.copyOf(good, good.length + 2);
        assertEquals("t: bytes left over after the lepton.JobEvent record",
                assertThrows(DataException.class, () -> converter.toConnectData("t", longer)).getMessage());
        assertEquals("t: expected lepton.JobRequested, got lepton.JobEvent",
                assertThrows(DataException.class, () -> converter(Map.of(LeptonConverter.EVENT, "lepton.JobRequested"))
                        .toConnectData("t", good)).getMessage());
    }

    @Test
    void aJsonRequestThatBreaksTheSchemaNamesTheField() {
        LeptonConverter converter = converter(Map.of(LeptonConverter.EVENT, "lepton.JobRequested"));
        Vector request = first("job_requested");
        com.fasterxml.jackson.databind.node.ObjectNode record = request.record().deepCopy();
        ((com.fasterxml.jackson.databind.node.ObjectNode) record.get("demand")).put("gpus", "two");
        assertEquals("t: JobRequested.demand.gpus: expected a whole number, got String",
                assertThrows(DataException.class, () -> converter.fromConnectData("t", null, record.toString())).getMessage());
        record.remove("tenant");
        assertEquals("t: JobRequested.tenant: required, and missing or null",
                assertThrows(DataException.class, () -> converter.fromConnectData("t", null, record.toString())).getMessage());
        assertEquals("t: not JSON: Unexpected character ('n' (code 110)): was expecting double-quote to start field name",
                assertThrows(DataException.class, () -> converter.fromConnectData("t", null, "{nope")).getMessage());
    }

    @Test
    void keysAreRefusedAndBadKeysNamedWithoutTheirValue() {
        assertThrows(ConfigException.class, () -> new LeptonConverter().configure(Map.of(), true));
        ConfigException error = assertThrows(ConfigException.class,
                () -> converter(Map.of(LeptonConverter.IDENTITY_KEY, "c2VjcmV0")));
        assertEquals("identity.secret must be 32 bytes, base64url", error.getMessage());
    }

    @Test
    void theInterceptorSignsAsLeptonDoes() {
        SigningInterceptor interceptor = new SigningInterceptor();
        interceptor.configure(Map.of(SigningInterceptor.SIGNING_KEY, ACME));
        ProducerRecord<byte[], byte[]> record = new ProducerRecord<>("lepton.jobs.requested", null, null,
                "job-1".getBytes(StandardCharsets.UTF_8), new byte[] {(byte) 0xC3, 1, 'a', 'b', 'c'}, new RecordHeaders());
        ProducerRecord<byte[], byte[]> signed = interceptor.onSend(record);
        assertArrayEquals("tenant:acme".getBytes(StandardCharsets.UTF_8), signed.headers().lastHeader("lepton-principal").value());
        assertEquals(ACME_SIGNATURE, HEX.formatHex(signed.headers().lastHeader("lepton-signature").value()));
    }
}
