// Makes SCRAM principals and ACLs on a broker through Kafka's own Admin client, in one JVM
// (run from source by dho_devstack::access). Reads its plan from stdin, so no password is
// on a command line:
//   user <name> <SCRAM-SHA-256|SCRAM-SHA-512> <password>
//   allow <principal> <operation> <resource type> <literal|prefixed> <name>
// Returns once the broker answers with every credential and ACL (KRaft applies them from
// its metadata log a moment after the controller accepts them).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class Access {
  /** As kafka-acls.sh spells them (DescribeConfigs, transactional-id) to the enums' names. */
  static String constant(String name) {
    return name.replaceAll("([a-z])([A-Z])", "$1_$2").replace('-', '_').toUpperCase(Locale.ROOT);
  }

  public static void main(String[] args) throws Exception {
    List<UserScramCredentialAlteration> users = new ArrayList<>();
    Set<String> userNames = new HashSet<>();
    List<AclBinding> acls = new ArrayList<>();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
    for (String line; (line = in.readLine()) != null; ) {
      String[] f = line.trim().split("\\s+");
      if (f[0].isEmpty()) continue;
      if (f[0].equals("user") && f.length == 4) {
        ScramMechanism mechanism = ScramMechanism.fromMechanismName(f[2]);
        if (mechanism == ScramMechanism.UNKNOWN) throw new IllegalArgumentException("mechanism " + f[2]);
        users.add(new UserScramCredentialUpsertion(f[1], new ScramCredentialInfo(mechanism, 4096), f[3]));
        userNames.add(f[1]);
      } else if (f[0].equals("allow") && f.length == 6) {
        // Throws on an unknown name.
        ResourcePattern resource = new ResourcePattern(
            ResourceType.valueOf(constant(f[3])), f[5], PatternType.valueOf(constant(f[4])));
        AclOperation operation = AclOperation.valueOf(constant(f[2]));
        acls.add(new AclBinding(resource, new AccessControlEntry(
            "User:" + f[1], "*", operation, AclPermissionType.ALLOW)));
      } else {
        // The line's first word only: a user line holds a password.
        throw new IllegalArgumentException("not a plan line: " + f[0] + " with " + f.length + " words");
      }
    }
    Properties properties = new Properties();
    properties.put("bootstrap.servers", args[0]);
    try (Admin admin = Admin.create(properties)) {
      if (!users.isEmpty()) admin.alterUserScramCredentials(users).all().get();
      if (!acls.isEmpty()) admin.createAcls(acls).all().get();
      for (int i = 0; ; i++) {
        Set<String> known = new HashSet<>();
        if (!userNames.isEmpty()) {
          admin.describeUserScramCredentials().all().get().forEach((name, d) -> known.add(name));
        }
        boolean usersKnown = known.containsAll(userNames);
        boolean aclsKnown = acls.isEmpty()
            || admin.describeAcls(AclBindingFilter.ANY).values().get().containsAll(acls);
        if (usersKnown && aclsKnown) break;
        if (i == 300) throw new IllegalStateException("the broker did not apply the plan within 30 s");
        Thread.sleep(100);
      }
    }
  }
}
