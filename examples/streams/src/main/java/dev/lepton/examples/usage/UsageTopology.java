package dev.lepton.examples.usage;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;

import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Joined;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.WindowStore;

/**
 * Each tenant's usage per window: {@code lepton.node.heartbeats} joined with the tenant of
 * each job, from {@code lepton.jobs.events}.
 *
 * <pre>
 * jobs.events ─ queued ─▶ job → tenant (table: the first tenant named, kept)
 *                                  │ join by job id
 * heartbeats ─ one share per listed job (Usage) ─▶ (tenant, share) ─▶ sum per tenant and
 *   tumbling window of sent_at ─▶ lepton.usage.by-tenant
 * </pre>
 *
 * The output is a changelog: its key is {@code <tenant>@<window start, ISO-8601>}, its value
 * the window's total so far as JSON ({@link Usage#json}); the latest record of a key is the
 * figure. A heartbeat later than its window's end plus the grace period is left out.
 */
final class UsageTopology {
  static final String JOB_EVENTS = "lepton.jobs.events";
  static final String HEARTBEATS = "lepton.node.heartbeats";
  static final String USAGE = "lepton.usage.by-tenant";

  private UsageTopology() {}

  static Topology build(String prefix, Duration window, Duration grace) {
    StreamsBuilder builder = new StreamsBuilder();
    Serde<String> text = Serdes.String();
    Serde<Usage> usage = Usage.serde();

    // The tenant of a job is named by the scheduler's `queued` event, before any node runs
    // it. The first one is kept: a later record claiming another tenant for the same job
    // (a client may write to this topic, and only a holder of the master key can check
    // signatures) cannot move usage already attributed to another tenant.
    KTable<String, String> tenants =
        builder.stream(
                prefix + JOB_EVENTS,
                Consumed.with(text, AvroSerde.of("job_event"))
                    .withTimestampExtractor(new EventTime("time")))
            .filter((job, event) -> event != null && "queued".equals(event.get("kind").toString()))
            .mapValues(event -> event.get("tenant").toString())
            .groupByKey(Grouped.with(text, text))
            .reduce(
                (first, later) -> first,
                Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("job-tenants")
                    .withKeySerde(text)
                    .withValueSerde(text));

    builder.stream(
            prefix + HEARTBEATS,
            Consumed.with(text, AvroSerde.of("node_heartbeat"))
                .withTimestampExtractor(new EventTime("sent_at")))
        .filter((node, heartbeat) -> heartbeat != null)
        .flatMap((node, heartbeat) -> shares(heartbeat))
        .join(
            tenants,
            (share, tenant) -> KeyValue.pair(tenant, share),
            Joined.with(text, usage, text, "shares-by-job"))
        .map((job, tenantShare) -> tenantShare)
        .groupByKey(Grouped.with("shares-by-tenant", text, usage))
        .windowedBy(TimeWindows.ofSizeAndGrace(window, grace))
        .reduce(
            Usage::plus,
            Materialized.<String, Usage, WindowStore<Bytes, byte[]>>as("usage-windows")
                .withKeySerde(text)
                .withValueSerde(usage))
        .toStream()
        .map(
            (windowed, total) ->
                KeyValue.pair(
                    windowed.key() + "@" + windowed.window().startTime(),
                    total.json(
                        windowed.key(), windowed.window().start(), windowed.window().end())))
        .to(prefix + USAGE, Produced.with(text, text));
    return builder.build();
  }

  /** One share per distinct job the heartbeat lists, keyed by job id. */
  private static List<KeyValue<String, Usage>> shares(GenericRecord heartbeat) {
    List<?> listed = (List<?>) heartbeat.get("running_job_ids");
    List<String> jobs =
        new ArrayList<>(new HashSet<>(listed.stream().map(Object::toString).toList()));
    List<KeyValue<String, Usage>> out = new ArrayList<>(jobs.size());
    for (String job : jobs) {
      out.add(KeyValue.pair(job, Usage.share(heartbeat, jobs.size())));
    }
    return out;
  }
}
