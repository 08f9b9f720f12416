import io.apicurio.registry.serde.SerdeConfig;
import io.apicurio.registry.serde.avro.AvroKafkaDeserializer;
import io.apicurio.registry.serde.avro.AvroKafkaSerializer;
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.DecoderFactory;

/**
 * A registry-aware client, as other systems run one: Apicurio Registry's own Avro serializer
 * and deserializer, configured for the Confluent-compatible framing (magic byte 0, 4-byte
 * big-endian schema id, Avro body) and for the schemas `lepton contract register` put there.
 *
 * <pre>
 * serialize REGISTRY TOPIC SCHEMA.avsc   stdin: records in Avro's JSON encoding, one a line;
 *                                        stdout: the serializer's bytes, hex, one a line
 * deserialize REGISTRY TOPIC             stdin: values, hex, one a line;
 *                                        stdout: each record as JSON, one a line
 * </pre>
 *
 * REGISTRY is the registry's base address (http://127.0.0.1:PORT).
 */
public final class RegistrySerde {
    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String topic = args[2];
        Map<String, Object> config = Map.of(
                SerdeConfig.REGISTRY_URL, args[1] + "/apis/registry/v2",
                // The schema id in the value (not in Kafka headers), 4 bytes: the content id,
                // which the registry's Confluent-compatible API calls the schema id.
                SerdeConfig.ENABLE_CONFLUENT_ID_HANDLER, true,
                SerdeConfig.ENABLE_HEADERS, false,
                SerdeConfig.USE_ID, "contentId",
                // Write with the latest registered version of the subject; register nothing.
                SerdeConfig.FIND_LATEST_ARTIFACT, true);
        HexFormat hex = HexFormat.of();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        if (mode.equals("serialize")) {
            Schema schema = new Schema.Parser().parse(new File(args[3]));
            GenericDatumReader<GenericRecord> json = new GenericDatumReader<>(schema);
            try (AvroKafkaSerializer<GenericRecord> serializer = new AvroKafkaSerializer<>()) {
                serializer.configure(config, false);
                for (String line = in.readLine(); line != null; line = in.readLine()) {
                    GenericRecord record = json.read(null, DecoderFactory.get().jsonDecoder(schema, line));
                    System.out.println(hex.formatHex(serializer.serialize(topic, record)));
                }
            }
        } else if (mode.equals("deserialize")) {
            try (AvroKafkaDeserializer<GenericRecord> deserializer = new AvroKafkaDeserializer<>()) {
                deserializer.configure(config, false);
                for (String line = in.readLine(); line != null; line = in.readLine()) {
                    System.out.println(deserializer.deserialize(topic, hex.parseHex(line.strip())));
                }
            }
        } else {
            throw new IllegalArgumentException("mode: serialize or deserialize, not " + mode);
        }
    }
}
