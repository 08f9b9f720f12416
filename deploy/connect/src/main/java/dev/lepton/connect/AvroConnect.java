package dev.lepton.connect;

import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.avro.Conversions;
import org.apache.avro.LogicalType;
import org.apache.avro.LogicalTypes;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericEnumSymbol;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.connect.data.Date;
import org.apache.kafka.connect.data.Decimal;
import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaBuilder;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.data.Time;
import org.apache.kafka.connect.data.Timestamp;
import org.apache.kafka.connect.errors.DataException;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Avro's data model to Connect's and back.
 *
 * <p>Records become structs named by the record's full name; {@code ["null", X]} an optional
 * X; any other union a struct ({@value #UNION}) with one optional field per branch, of which
 * one is set; enums strings; maps maps with string keys; {@code bytes}/{@code fixed} bytes;
 * {@code timestamp-millis} Connect's Timestamp, {@code date} Date, {@code time-millis} Time,
 * {@code decimal} Decimal. With {@code collectionsAsJson}, maps and arrays are instead JSON
 * text in a string named {@value #JSON} (what Debezium's JDBC sink stores as a {@code json}
 * column): relational sinks take no nested collections.
 */
final class AvroConnect {
    static final String UNION = "lepton.connect.Union";
    static final String JSON = "io.debezium.data.Json";
    private static final long DAY_MS = 86_400_000L;
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final Conversions.DecimalConversion DECIMALS = new Conversions.DecimalConversion();

    private final boolean collectionsAsJson;
    private final Map<org.apache.avro.Schema, Schema> schemas = new ConcurrentHashMap<>();

    AvroConnect(boolean collectionsAsJson) {
        this.collectionsAsJson = collectionsAsJson;
    }

    /** The Connect schema of an Avro record schema (derived once). */
    Schema schemaOf(org.apache.avro.Schema record) {
        return schemas.computeIfAbsent(record, s -> derive(s, false).build());
    }

    private SchemaBuilder derive(org.apache.avro.Schema avro, boolean optional) {
        SchemaBuilder builder = switch (avro.getType()) {
            case RECORD -> {
                SchemaBuilder struct = SchemaBuilder.struct().name(avro.getFullName());
                if (avro.getDoc() != null) {
                    struct.doc(avro.getDoc());
                }
                for (org.apache.avro.Schema.Field field : avro.getFields()) {
                    struct.field(field.name(), derive(field.schema(), false).build());
                }
                yield struct;
            }
            case UNION -> {
                List<org.apache.avro.Schema> branches = nonNull(avro);
                boolean nullable = branches.size() < avro.getTypes().size();
                if (branches.size() == 1) {
                    yield derive(branches.get(0), optional || nullable);
                }
                SchemaBuilder union = SchemaBuilder.struct().name(UNION);
                for (org.apache.avro.Schema branch : branches) {
                    union.field(branchName(branch), derive(branch, true).build());
                }
                yield nullable ? union.optional() : union;
            }
            case ARRAY -> collectionsAsJson ? json() : SchemaBuilder.array(derive(avro.getElementType(), false).build());
            case MAP -> collectionsAsJson
                    ? json()
                    : SchemaBuilder.map(Schema.STRING_SCHEMA, derive(avro.getValueType(), false).build());
            case ENUM, STRING -> SchemaBuilder.string();
            case BYTES, FIXED -> logical(avro) instanceof LogicalTypes.Decimal decimal
                    ? Decimal.builder(decimal.getScale())
                    : SchemaBuilder.bytes();
            case INT -> {
                LogicalType logical = logical(avro);
                if (logical instanceof LogicalTypes.Date) {
                    yield Date.builder();
                }
                yield logical instanceof LogicalTypes.TimeMillis ? Time.builder() : SchemaBuilder.int32();
            }
            case LONG -> logical(avro) instanceof LogicalTypes.TimestampMillis ? Timestamp.builder() : SchemaBuilder.int64();
            case FLOAT -> SchemaBuilder.float32();
            case DOUBLE -> SchemaBuilder.float64();
            case BOOLEAN -> SchemaBuilder.bool();
            case NULL -> throw new DataException("a field of type null alone has no Connect schema");
        };
        return optional ? builder.optional() : builder;
    }

    private static SchemaBuilder json() {
        return SchemaBuilder.string().name(JSON).version(1);
    }

    private static LogicalType logical(org.apache.avro.Schema avro) {
        return avro.getLogicalType();
    }

    private static List<org.apache.avro.Schema> nonNull(org.apache.avro.Schema union) {
        List<org.apache.avro.Schema> branches = new ArrayList<>();
        for (org.apache.avro.Schema branch : union.getTypes()) {
            if (branch.getType() != org.apache.avro.Schema.Type.NULL) {
                branches.add(branch);
            }
        }
        return branches;
    }

    private static String branchName(org.apache.avro.Schema branch) {
        return switch (branch.getType()) {
            case RECORD, ENUM, FIXED -> branch.getName();
            default -> branch.getType().getName();
        };
    }

    // ---- Avro values (as GenericDatumReader returns them) to Connect values ----

    Struct toConnect(GenericRecord record) {
        return (Struct) toConnect(record.getSchema(), schemaOf(record.getSchema()), record);
    }

    private Object toConnect(org.apache.avro.Schema avro, Schema connect, Object value) {
        if (value == null) {
            return null;
        }
        if (JSON.equals(connect.name()) && avro.getType() != org.apache.avro.Schema.Type.STRING) {
            return toJson(avro, value);
        }
        switch (avro.getType()) {
            case RECORD: {
                GenericRecord record = (GenericRecord) value;
                Struct struct = new Struct(connect);
                for (org.apache.avro.Schema.Field field : avro.getFields()) {
                    Field target = connect.field(field.name());
                    struct.put(target, toConnect(field.schema(), target.schema(), record.get(field.pos())));
                }
                return struct;
            }
            case UNION: {
                List<org.apache.avro.Schema> branches = nonNull(avro);
                if (branches.size() == 1) {
                    return toConnect(branches.get(0), connect, value);
                }
                org.apache.avro.Schema branch = avro.getTypes().get(GenericData.get().resolveUnion(avro, value));
                Struct union = new Struct(connect);
                Field target = connect.field(branchName(branch));
                union.put(target, toConnect(branch, target.schema(), value));
                return union;
            }
            case ARRAY: {
                List<Object> out = new ArrayList<>();
                for (Object item : (List<?>) value) {
                    out.add(toConnect(avro.getElementType(), connect.valueSchema(), item));
                }
                return out;
            }
            case MAP: {
                Map<String, Object> out = new LinkedHashMap<>();
                for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                    out.put(entry.getKey().toString(), toConnect(avro.getValueType(), connect.valueSchema(), entry.getValue()));
                }
                return out;
            }
            case ENUM:
            case STRING:
                return value.toString();
            case BYTES:
            case FIXED: {
                ByteBuffer buffer = value instanceof GenericFixed fixed ? ByteBuffer.wrap(fixed.bytes()) : ((ByteBuffer) value).duplicate();
                if (logical(avro) instanceof LogicalTypes.Decimal) {
                    return DECIMALS.fromBytes(buffer, avro, logical(avro));
                }
                byte[] bytes = new byte[buffer.remaining()];
                buffer.get(bytes);
                return bytes;
            }
            case INT:
                if (logical(avro) instanceof LogicalTypes.Date) {
                    return new java.util.Date((Integer) value * DAY_MS);
                }
                return logical(avro) instanceof LogicalTypes.TimeMillis ? new java.util.Date((Integer) value) : value;
            case LONG:
                return logical(avro) instanceof LogicalTypes.TimestampMillis ? new java.util.Date((Long) value) : value;
            default:
                return value;
        }
    }

    /** An Avro value as JSON text: records as objects, enums as strings, bytes as base64. */
    private String toJson(org.apache.avro.Schema avro, Object value) {
        try {
            return MAPPER.writeValueAsString(plain(avro, value));
        } catch (JsonProcessingException e) {
            throw new DataException("cannot write a " + avro.getType() + " as JSON: " + e.getOriginalMessage(), e);
        }
    }

    private static Object plain(org.apache.avro.Schema avro, Object value) {
        if (value == null) {
            return null;
        }
        switch (avro.getType()) {
            case RECORD: {
                GenericRecord record = (GenericRecord) value;
                Map<String, Object> out = new LinkedHashMap<>();
                for (org.apache.avro.Schema.Field field : avro.getFields()) {
                    out.put(field.name(), plain(field.schema(), record.get(field.pos())));
                }
                return out;
            }
            case UNION:
                return plain(avro.getTypes().get(GenericData.get().resolveUnion(avro, value)), value);
            case ARRAY: {
                List<Object> out = new ArrayList<>();
                for (Object item : (List<?>) value) {
                    out.add(plain(avro.getElementType(), item));
                }
                return out;
            }
            case MAP: {
                Map<String, Object> out = new LinkedHashMap<>();
                for (Map.Entry<?, ?> entry : ((Map<?, ?>) value).entrySet()) {
                    out.put(entry.getKey().toString(), plain(avro.getValueType(), entry.getValue()));
                }
                return out;
            }
            case ENUM:
            case STRING:
                return value.toString();
            case BYTES:
            case FIXED: {
                ByteBuffer buffer = value instanceof GenericFixed fixed ? ByteBuffer.wrap(fixed.bytes()) : ((ByteBuffer) value).duplicate();
                byte[] bytes = new byte[buffer.remaining()];
                buffer.get(bytes);
                return Base64.getEncoder().encodeToString(bytes);
            }
            default:
                return value;
        }
    }

    // ---- Connect structs, or plain maps and lists (JSON), to Avro values ----

    /**
     * {@code value} (a Struct, or a Map as from JSON) as a record of {@code schema}: missing
     * or null fields take the schema's default; anything else that does not fit is a
     * DataException naming the field.
     */
    static GenericRecord toAvro(org.apache.avro.Schema schema, Object value) {
        return (GenericRecord) toAvro(schema, value, schema.getName());
    }

    private static Object toAvro(org.apache.avro.Schema avro, Object value, String path) {
        if (value == null) {
            if (avro.getType() == org.apache.avro.Schema.Type.NULL || avro.isNullable()) {
                return null;
            }
            throw new DataException(path + ": required, and missing or null");
        }
        switch (avro.getType()) {
            case RECORD:
                return record(avro, value, path);
            case UNION:
                return union(avro, value, path);
            case ARRAY: {
                List<Object> out = new ArrayList<>();
                int index = 0;
                List<?> items = expect(List.class, value, path, "a list");
                for (Object item : items) {
                    out.add(toAvro(avro.getElementType(), item, path + "[" + index++ + "]"));
                }
                return new GenericData.Array<>(avro, out);
            }
            case MAP: {
                Map<String, Object> out = new LinkedHashMap<>();
                Map<?, ?> entries = expect(Map.class, value, path, "a map");
                for (Map.Entry<?, ?> entry : entries.entrySet()) {
                    String key = expect(String.class, entry.getKey(), path, "text keys");
                    out.put(key, toAvro(avro.getValueType(), entry.getValue(), path + "." + key));
                }
                return out;
            }
            case ENUM: {
                String symbol = expect(String.class, value, path, "text");
                if (!avro.hasEnumSymbol(symbol)) {
                    throw new DataException(path + ": '" + Keys.clip(symbol) + "' is not one of " + avro.getEnumSymbols());
                }
                return new GenericData.EnumSymbol(avro, symbol);
            }
            case STRING:
                return expect(String.class, value, path, "text");
            case BYTES:
            case FIXED:
                return bytes(avro, value, path);
            case INT:
                return integer(avro, value, path);
            case LONG:
                return longValue(avro, value, path);
            case FLOAT:
                return expect(Number.class, value, path, "a number").floatValue();
            case DOUBLE:
                return expect(Number.class, value, path, "a number").doubleValue();
            case BOOLEAN:
                return expect(Boolean.class, value, path, "true or false");
            default:
                throw new DataException(path + ": null expected");
        }
    }

    private static GenericRecord record(org.apache.avro.Schema avro, Object value, String path) {
        GenericData.Record record = new GenericData.Record(avro);
        Struct struct = value instanceof Struct s ? s : null;
        Map<?, ?> map = struct == null ? expect(Map.class, value, path, "a record") : null;
        for (org.apache.avro.Schema.Field field : avro.getFields()) {
            Object given;
            if (struct != null) {
                Field connectField = struct.schema().field(field.name());
                given = connectField == null ? null : struct.get(connectField);
            } else {
                given = map.get(field.name());
            }
            String where = path + "." + field.name();
            if (given == null && field.hasDefaultValue()) {
                record.put(field.pos(), GenericData.get().deepCopy(field.schema(), GenericData.get().getDefaultValue(field)));
            } else {
                record.put(field.pos(), toAvro(field.schema(), given, where));
            }
        }
        if (map != null) {
            for (Object key : map.keySet()) {
                if (avro.getField(String.valueOf(key)) == null) {
                    throw new DataException(path + ": no field '" + Keys.clip(String.valueOf(key)) + "' in " + avro.getFullName());
                }
            }
        }
        return record;
    }

    private static Object union(org.apache.avro.Schema avro, Object value, String path) {
        List<org.apache.avro.Schema> branches = nonNull(avro);
        if (branches.size() == 1) {
            return toAvro(branches.get(0), value, path);
        }
        if (value instanceof Struct struct && UNION.equals(struct.schema().name())) {
            for (org.apache.avro.Schema branch : branches) {
                Field field = struct.schema().field(branchName(branch));
                if (field != null && struct.get(field) != null) {
                    return toAvro(branch, struct.get(field), path);
                }
            }
            return toAvro(avro, null, path);
        }
        // A plain value (JSON): the first branch its Java type fits.
        for (org.apache.avro.Schema branch : branches) {
            if (fits(branch, value)) {
                return toAvro(branch, value, path);
            }
        }
        throw new DataException(path + ": a " + value.getClass().getSimpleName() + " fits none of " + branches);
    }

    private static boolean fits(org.apache.avro.Schema branch, Object value) {
        return switch (branch.getType()) {
            case BOOLEAN -> value instanceof Boolean;
            case INT, LONG -> value instanceof Integer || value instanceof Long || value instanceof Short || value instanceof Byte;
            case FLOAT, DOUBLE -> value instanceof Number;
            case STRING, ENUM -> value instanceof String;
            case BYTES, FIXED -> value instanceof byte[] || value instanceof ByteBuffer;
            case RECORD -> value instanceof Struct || value instanceof Map;
            case ARRAY -> value instanceof List;
            case MAP -> value instanceof Map;
            default -> false;
        };
    }

    private static Object bytes(org.apache.avro.Schema avro, Object value, String path) {
        if (logical(avro) instanceof LogicalTypes.Decimal) {
            BigDecimal decimal = value instanceof BigDecimal d ? d : new BigDecimal(expect(Number.class, value, path, "a number").toString());
            return DECIMALS.toBytes(decimal, avro, logical(avro));
        }
        byte[] raw;
        if (value instanceof byte[] array) {
            raw = array;
        } else if (value instanceof ByteBuffer buffer) {
            raw = new byte[buffer.remaining()];
            buffer.duplicate().get(raw);
        } else {
            try {
                raw = Base64.getDecoder().decode(expect(String.class, value, path, "bytes or base64 text"));
            } catch (IllegalArgumentException e) {
                throw new DataException(path + ": not base64 text", e);
            }
        }
        if (avro.getType() == org.apache.avro.Schema.Type.FIXED) {
            if (raw.length != avro.getFixedSize()) {
                throw new DataException(path + ": " + raw.length + " bytes, not " + avro.getFixedSize());
            }
            return new GenericData.Fixed(avro, raw);
        }
        return ByteBuffer.wrap(raw);
    }

    private static Object integer(org.apache.avro.Schema avro, Object value, String path) {
        if (value instanceof java.util.Date date) {
            long ms = date.getTime();
            return (int) (logical(avro) instanceof LogicalTypes.Date ? Math.floorDiv(ms, DAY_MS) : ms);
        }
        long number = whole(value, path);
        if (number < Integer.MIN_VALUE || number > Integer.MAX_VALUE) {
            throw new DataException(path + ": " + number + " does not fit an int");
        }
        return (int) number;
    }

    private static Object longValue(org.apache.avro.Schema avro, Object value, String path) {
        if (value instanceof java.util.Date date) {
            return date.getTime();
        }
        if (value instanceof String text && logical(avro) instanceof LogicalTypes.TimestampMillis) {
            try {
                return Instant.parse(text).toEpochMilli();
            } catch (DateTimeParseException e) {
                throw new DataException(path + ": '" + Keys.clip(text) + "' is not an ISO-8601 instant nor epoch milliseconds");
            }
        }
        return whole(value, path);
    }

    private static long whole(Object value, String path) {
        Number number = expect(Number.class, value, path, "a whole number");
        if (number instanceof Double || number instanceof Float || number instanceof BigDecimal) {
            double d = number.doubleValue();
            if (d != Math.rint(d) || Double.isInfinite(d)) {
                throw new DataException(path + ": " + number + " is not a whole number");
            }
        }
        return number.longValue();
    }

    private static <T> T expect(Class<T> type, Object value, String path, String what) {
        if (type.isInstance(value)) {
            return type.cast(value);
        }
        if (type == String.class && value instanceof GenericEnumSymbol<?>) {
            return type.cast(value.toString());
        }
        throw new DataException(path + ": expected " + what + ", got " + value.getClass().getSimpleName());
    }
}
