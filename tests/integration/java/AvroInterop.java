import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.Decoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.JsonEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Apache Avro's own Java implementation on the other side of Lepton's wire format.
 *
 * <p>One JVM launch handles a whole batch. Each input line is {@code op TAB schema.avsc TAB
 * payload}:
 *
 * <ul>
 *   <li>{@code decode}: payload is hex of single-object-encoded bytes; prints the record in
 *       Avro's JSON encoding.
 *   <li>{@code encode}: payload is a record in Avro's JSON encoding; prints hex of its
 *       single-object encoding.
 * </ul>
 *
 * Each output line is {@code ok TAB result} or {@code error TAB exception}, in input order,
 * so that one bad line does not hide the others.
 */
public final class AvroInterop {
  private AvroInterop() {}

  public static void main(String[] args) throws Exception {
    List<String> input = Files.readAllLines(Path.of(args[0]), StandardCharsets.UTF_8);
    Map<String, Schema> schemas = new HashMap<>();
    List<String> output = new ArrayList<>();
    for (String line : input) {
      String[] parts = line.split("\t", 3);
      try {
        // A fresh parser per file: each .avsc defines its nested types itself, and one
        // parser would refuse the second definition of, say, lepton.Resources.
        Schema schema =
            schemas.computeIfAbsent(parts[1], path -> parse(Path.of(path)));
        String result =
            switch (parts[0]) {
              case "decode" -> decode(schema, parts[2]);
              case "encode" -> encode(schema, parts[2]);
              default -> throw new IllegalArgumentException("unknown op " + parts[0]);
            };
        output.add("ok\t" + result);
      } catch (Exception e) {
        output.add("error\t" + (e.getClass().getName() + ": " + e.getMessage()).replace('\n', ' '));
      }
    }
    Files.write(Path.of(args[1]), output, StandardCharsets.UTF_8);
  }

  private static Schema parse(Path path) {
    try {
      return new Schema.Parser().parse(path.toFile());
    } catch (java.io.IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }

  private static String decode(Schema schema, String hex) throws Exception {
    // The decoder knows only this schema: it must find it by the fingerprint in our header.
    BinaryMessageDecoder<GenericRecord> decoder =
        new BinaryMessageDecoder<>(GenericData.get(), schema);
    GenericRecord record = decoder.decode(fromHex(hex));
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    JsonEncoder json = EncoderFactory.get().jsonEncoder(schema, out, false);
    new GenericDatumWriter<GenericRecord>(schema).write(record, json);
    json.flush();
    return out.toString(StandardCharsets.UTF_8);
  }

  private static String encode(Schema schema, String json) throws Exception {
    Decoder decoder = DecoderFactory.get().jsonDecoder(schema, json);
    GenericRecord record = new GenericDatumReader<GenericRecord>(schema).read(null, decoder);
    ByteBuffer bytes = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(record);
    byte[] array = new byte[bytes.remaining()];
    bytes.get(array);
    return toHex(array);
  }

  private static byte[] fromHex(String hex) {
    byte[] out = new byte[hex.length() / 2];
    for (int i = 0; i < out.length; i++) {
      out[i] = (byte) Integer.parseInt(hex.substring(2 * i, 2 * i + 2), 16);
    }
    return out;
  }

  private static String toHex(byte[] bytes) {
    StringBuilder out = new StringBuilder(bytes.length * 2);
    for (byte b : bytes) {
      out.append(String.format("%02x", b));
    }
    return out.toString();
  }
}
