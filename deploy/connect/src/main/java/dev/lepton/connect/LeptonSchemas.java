package dev.lepton.connect;

import java.io.IOException;
import java.io.InputStream;
import java.net.URISyntaxException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.stream.Stream;

import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

/**
 * The contract's schemas, packed into this jar from {@code schemas/} at build time: the
 * current ones (the reader schemas) and {@code history/N/} (earlier writer schemas of the
 * same records), found by the CRC-64-AVRO fingerprint of their parsing canonical form, as
 * {@code lepton/contract/codec.py} finds them.
 */
final class LeptonSchemas {
    static final String RESOURCE_DIR = "lepton/schemas/";

    /** A writer schema and the current schema its data is read as. */
    record Resolved(Schema writer, Schema reader) {}

    private final Map<String, Schema> current;
    private final Map<Long, Resolved> byFingerprint;

    private LeptonSchemas(Map<String, Schema> current, Map<Long, Resolved> byFingerprint) {
        this.current = current;
        this.byFingerprint = byFingerprint;
    }

    /** The schemas packed with this class (its jar, or its classes directory in a build). */
    static LeptonSchemas packaged() {
        Map<String, String> texts = new HashMap<>();
        for (String name : resourceNames()) {
            try (InputStream in = LeptonSchemas.class.getClassLoader().getResourceAsStream(name)) {
                if (in == null) {
                    throw new IllegalStateException("schema resource vanished: " + name);
                }
                texts.put(name, new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8));
            } catch (IOException e) {
                throw new IllegalStateException("cannot read " + name, e);
            }
        }
        return of(texts);
    }

    /** Schemas from resource names ({@code lepton/schemas/x.avsc}, {@code .../history/N/x.avsc}) to text. */
    static LeptonSchemas of(Map<String, String> texts) {
        Map<String, Schema> current = new HashMap<>();
        Map<Long, Resolved> byFingerprint = new HashMap<>();
        List<Schema> history = new ArrayList<>();
        for (Map.Entry<String, String> entry : texts.entrySet()) {
            // One parser per file: each file is self-contained and repeats shared named types.
            Schema schema = new Schema.Parser().parse(entry.getValue());
            if (entry.getKey().startsWith(RESOURCE_DIR + "history/")) {
                history.add(schema);
            } else {
                current.put(schema.getFullName(), schema);
                byFingerprint.put(fingerprint(schema), new Resolved(schema, schema));
            }
        }
        for (Schema old : history) {
            Schema reader = current.get(old.getFullName());
            if (reader == null) {
                throw new IllegalStateException("history schema " + old.getFullName() + " has no current version");
            }
            byFingerprint.putIfAbsent(fingerprint(old), new Resolved(old, reader));
        }
        if (current.isEmpty()) {
            throw new IllegalStateException("no schemas under " + RESOURCE_DIR + " in this jar");
        }
        return new LeptonSchemas(Collections.unmodifiableMap(current), Collections.unmodifiableMap(byFingerprint));
    }

    static long fingerprint(Schema schema) {
        return SchemaNormalization.parsingFingerprint64(schema);
    }

    Resolved byFingerprint(long fingerprint) {
        return byFingerprint.get(fingerprint);
    }

    Schema current(String fullName) {
        return current.get(fullName);
    }

    java.util.Set<String> names() {
        return current.keySet();
    }

    private static List<String> resourceNames() {
        Path location;
        try {
            location = Paths.get(LeptonSchemas.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException("cannot locate this jar", e);
        }
        List<String> names = new ArrayList<>();
        try {
            if (Files.isDirectory(location)) {
                Path root = location.resolve(RESOURCE_DIR);
                try (Stream<Path> files = Files.walk(root)) {
                    files.filter(p -> p.toString().endsWith(".avsc"))
                            .forEach(p -> names.add(RESOURCE_DIR + root.relativize(p).toString().replace('\\', '/')));
                }
            } else {
                try (JarFile jar = new JarFile(location.toFile())) {
                    for (JarEntry entry : Collections.list(jar.entries())) {
                        if (entry.getName().startsWith(RESOURCE_DIR) && entry.getName().endsWith(".avsc")) {
                            names.add(entry.getName());
                        }
                    }
                }
            }
        } catch (IOException e) {
            throw new IllegalStateException("cannot list the schemas in " + location, e);
        }
        return names;
    }
}
