package dev.lepton.connect;

import java.nio.charset.StandardCharsets;
import java.util.Map;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.ConnectRecord;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.json.JsonConverter;
import org.apache.kafka.connect.json.JsonConverterConfig;
import org.apache.kafka.connect.storage.ConverterType;
import org.apache.kafka.connect.transforms.Transformation;

/**
 * A transform that replaces a record's value by its JSON text (Connect's own JsonConverter,
 * without the schema envelope; timestamps as epoch milliseconds), for sinks that write a
 * value's {@code toString()}: FileStreamSink then writes one JSON object per line.
 */
public class JsonValue<R extends ConnectRecord<R>> implements Transformation<R> {
    private final JsonConverter json = new JsonConverter();

    @Override
    public void configure(Map<String, ?> configs) {
        json.configure(Map.of(
                JsonConverterConfig.SCHEMAS_ENABLE_CONFIG, "false",
                JsonConverterConfig.TYPE_CONFIG, ConverterType.VALUE.getName()));
    }

    @Override
    public R apply(R record) {
        if (record.value() == null) {
            return record;
        }
        byte[] text = json.fromConnectData(record.topic(), record.valueSchema(), record.value());
        return record.newRecord(record.topic(), record.kafkaPartition(), record.keySchema(), record.key(),
                Schema.STRING_SCHEMA, new String(text, StandardCharsets.UTF_8), record.timestamp(), record.headers());
    }

    @Override
    public ConfigDef config() {
        return new ConfigDef();
    }

    @Override
    public void close() {
        json.close();
    }
}
