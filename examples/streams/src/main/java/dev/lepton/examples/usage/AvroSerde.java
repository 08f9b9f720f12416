package dev.lepton.examples.usage;

import dev.lepton.examples.Contract;

import java.io.IOException;
import java.io.UncheckedIOException;

import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/** Lepton's single-object Avro as a Kafka serde, for one schema of the contract. */
final class AvroSerde {
  private AvroSerde() {}

  static Serde<GenericRecord> of(String stem) {
    BinaryMessageDecoder<GenericRecord> decoder = Contract.decoder(stem);
    BinaryMessageEncoder<GenericRecord> encoder = Contract.encoder(stem);
    Serializer<GenericRecord> serializer =
        (topic, record) -> {
          try {
            return record == null ? null : Contract.bytes(encoder.encode(record));
          } catch (IOException e) {
            throw new UncheckedIOException(e);
          }
        };
    Deserializer<GenericRecord> deserializer =
        (topic, bytes) -> {
          if (bytes == null) {
            return null;
          }
          try {
            return decoder.decode(bytes);
          } catch (IOException | RuntimeException e) {
            // Streams' deserialization handler (log and continue) then skips the record.
            throw new SerializationException(
                "not a " + stem + " record of the contract on " + topic + ": " + e, e);
          }
        };
    return Serdes.serdeFrom(serializer, deserializer);
  }
}
