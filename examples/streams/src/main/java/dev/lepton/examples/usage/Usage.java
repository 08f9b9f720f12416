package dev.lepton.examples.usage;

import java.nio.ByteBuffer;
import java.time.Instant;

import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;

/**
 * Usage of the compute nodes, summed over heartbeats: the share of one job in one heartbeat,
 * or a tenant's total in a window.
 *
 * <p>A heartbeat says which jobs its node was running when it was sent, and what the node
 * measured in use over its last interval. Each job it lists is credited with:
 *
 * <ul>
 *   <li>{@code jobMs}: the heartbeat's {@code interval_ms}, the running time one heartbeat
 *       stands for (a job on two nodes, a gang, is counted on each);
 *   <li>{@code cpuMillicoreMs}: the node's measured {@code usage.cpu_millicores} times that
 *       interval, split equally among the jobs the heartbeat lists (integer division: the
 *       remainder of a split is dropped, so that any reader recomputes the same figure);
 *   <li>{@code heartbeats}: 1, the number of observations the figures rest on.
 * </ul>
 *
 * All three are exact integers, so sums do not depend on the order they were added in.
 */
public record Usage(long jobMs, long cpuMillicoreMs, long heartbeats) {
  private static final int BYTES = 3 * Long.BYTES;

  /** Each job's share of one heartbeat ({@code lepton.NodeHeartbeat}) with {@code jobs} jobs. */
  static Usage share(GenericRecord heartbeat, int jobs) {
    long interval = ((Number) heartbeat.get("interval_ms")).longValue();
    GenericRecord usage = (GenericRecord) heartbeat.get("usage");
    long millicores = ((Number) usage.get("cpu_millicores")).longValue();
    return new Usage(interval, millicores * interval / jobs, 1);
  }

  Usage plus(Usage other) {
    return new Usage(
        jobMs + other.jobMs, cpuMillicoreMs + other.cpuMillicoreMs, heartbeats + other.heartbeats);
  }

  /**
   * The output record's value: one JSON object per tenant and window, the window's running
   * total so far (a later record for the same key replaces it).
   */
  String json(String tenant, long windowStart, long windowEnd) {
    return "{\"tenant\":"
        + Json.string(tenant)
        + ",\"window_start\":\""
        + Instant.ofEpochMilli(windowStart)
        + "\",\"window_end\":\""
        + Instant.ofEpochMilli(windowEnd)
        + "\",\"window_start_ms\":"
        + windowStart
        + ",\"window_end_ms\":"
        + windowEnd
        + ",\"job_ms\":"
        + jobMs
        + ",\"cpu_millicore_ms\":"
        + cpuMillicoreMs
        + ",\"heartbeats\":"
        + heartbeats
        + ",\"job_seconds\":"
        + jobMs / 1e3
        + ",\"cpu_core_seconds\":"
        + cpuMillicoreMs / 1e6
        + "}";
  }

  /** Fixed-width binary, for the repartition topics and the window store. */
  static Serde<Usage> serde() {
    Serializer<Usage> serializer =
        (topic, usage) ->
            usage == null
                ? null
                : ByteBuffer.allocate(BYTES)
                    .putLong(usage.jobMs)
                    .putLong(usage.cpuMillicoreMs)
                    .putLong(usage.heartbeats)
                    .array();
    Deserializer<Usage> deserializer =
        (topic, bytes) -> {
          if (bytes == null) {
            return null;
          }
          ByteBuffer in = ByteBuffer.wrap(bytes);
          return new Usage(in.getLong(), in.getLong(), in.getLong());
        };
    return Serdes.serdeFrom(serializer, deserializer);
  }
}
