package dev.lepton.examples.usage;

import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.streams.processor.TimestampExtractor;

/**
 * A record's time is the event's own (a heartbeat's {@code sent_at}, a job event's
 * {@code time}), not when the broker got it: windows then hold what happened in them, and any
 * reader of the topics can recompute the figures.
 */
final class EventTime implements TimestampExtractor {
  private final String field;

  EventTime(String field) {
    this.field = field;
  }

  @Override
  public long extract(ConsumerRecord<Object, Object> record, long partitionTime) {
    // Streams deserializes before it asks for the time.
    if (record.value() instanceof GenericRecord event
        && event.get(field) instanceof Long millis) {
      return millis;
    }
    return record.timestamp();
  }
}
