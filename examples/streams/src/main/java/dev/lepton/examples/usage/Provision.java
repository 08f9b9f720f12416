package dev.lepton.examples.usage;

import dev.lepton.examples.Connection;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

/**
 * What the usage application needs before it runs, made by the cluster's admin (the
 * connection settings are the admin's): its output topic and the ACLs of its principal
 * ({@code USAGE_PRINCIPAL}, default {@code User:lepton-usage}), and, when
 * {@code USAGE_PASSWORD} is set, that user's SCRAM-SHA-512 credential. Running it
 * again changes nothing.
 *
 * <p>The principal is its own, not Lepton's {@code client}: every tenant's client acts as
 * {@code client}, and none of them should be able to write the usage topic.
 */
final class Provision {
  private static final int PARTITIONS = 3;
  private static final String RETENTION_MS = String.valueOf(30L * 24 * 3600 * 1000);

  private Provision() {}

  static void run(Connection connection) throws ExecutionException, InterruptedException {
    String principal = connection.get("USAGE_PRINCIPAL", "User:lepton-usage");
    try (Admin admin = Admin.create(connection.kafka())) {
      int brokers = admin.describeCluster().nodes().get().size();
      NewTopic usage =
          new NewTopic(
                  connection.name(UsageTopology.USAGE),
                  Optional.of(PARTITIONS),
                  Optional.of((short) Math.min(3, brokers)))
              // The latest record of a tenant and window is its figure: compacted, and
              // kept as long as Lepton keeps job events.
              .configs(Map.of("cleanup.policy", "compact,delete", "retention.ms", RETENTION_MS));
      try {
        admin.createTopics(List.of(usage)).all().get();
        System.out.println("created topic " + usage.name());
      } catch (ExecutionException e) {
        if (!(e.getCause() instanceof TopicExistsException)) {
          throw e;
        }
      }
      String password = connection.get("USAGE_PASSWORD", "");
      if (!password.isEmpty()) {
        String user = principal.substring(principal.indexOf(':') + 1);
        admin
            .alterUserScramCredentials(
                List.of(
                    new UserScramCredentialUpsertion(
                        user,
                        new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                        password)))
            .all()
            .get();
        System.out.println("SCRAM-SHA-512 credential set for " + user);
      }
      List<AclBinding> acls = grants(connection, principal);
      admin.createAcls(acls).all().get();
      for (AclBinding acl : acls) {
        System.out.println("allow " + acl.entry().operation() + " on " + acl.pattern());
      }
    }
  }

  /** The least the application needs: read two topics, write one, and its own group,
   * internal topics and transactions (exactly-once), all named from its application id. */
  static List<AclBinding> grants(Connection connection, String principal) {
    String application = connection.name(UsageApp.APPLICATION);
    List<AclBinding> acls = new ArrayList<>();
    for (String input : List.of(UsageTopology.JOB_EVENTS, UsageTopology.HEARTBEATS)) {
      String topic = connection.name(input);
      acls.add(allow(principal, ResourceType.TOPIC, topic, false, AclOperation.READ));
    }
    String usage = connection.name(UsageTopology.USAGE);
    acls.add(allow(principal, ResourceType.TOPIC, usage, false, AclOperation.WRITE));
    acls.add(allow(principal, ResourceType.GROUP, application, false, AclOperation.READ));
    // Its repartition and changelog topics: made, written, read, and purged of what has
    // been processed (DeleteRecords) by Streams.
    for (AclOperation operation :
        List.of(
            AclOperation.CREATE,
            AclOperation.READ,
            AclOperation.WRITE,
            AclOperation.DELETE)) {
      acls.add(allow(principal, ResourceType.TOPIC, application + "-", true, operation));
    }
    for (AclOperation operation : List.of(AclOperation.WRITE, AclOperation.DESCRIBE)) {
      acls.add(allow(principal, ResourceType.TRANSACTIONAL_ID, application + "-", true, operation));
    }
    return acls;
  }

  private static AclBinding allow(
      String principal, ResourceType type, String name, boolean prefixed, AclOperation operation) {
    return new AclBinding(
        new ResourcePattern(type, name, prefixed ? PatternType.PREFIXED : PatternType.LITERAL),
        new AccessControlEntry(principal, "*", operation, AclPermissionType.ALLOW));
  }
}
