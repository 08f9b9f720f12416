package dev.lepton.examples;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.file.FileSystem;
import java.nio.file.FileSystemAlreadyExistsException;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * Lepton's contract as Apache Avro sees it: the {@code .avsc} files of {@code schemas/}, which
 * the build bundles under {@code lepton/schemas/}, and Avro's own single-object encoding
 * ({@code C3 01}, the CRC-64-AVRO fingerprint, the body), which is Lepton's wire format.
 *
 * <p>A schema is named by its file's stem ({@code job_event}). A decoder knows the current
 * schema and every earlier version of it ({@code schemas/history/N/}): it finds the writer's
 * schema by the fingerprint in each record's header and resolves the record to the current
 * one, as Lepton's own decoder does.
 */
public final class Contract {
  private static final String ROOT = "/lepton/schemas/";

  private Contract() {}

  /** The current schema of {@code stem} ({@code schemas/<stem>.avsc}). */
  public static Schema schema(String stem) {
    try (InputStream in = Contract.class.getResourceAsStream(ROOT + stem + ".avsc")) {
      if (in == null) {
        throw new IllegalArgumentException("no schema " + stem + ".avsc in the contract");
      }
      // A fresh parser per file: each .avsc defines its nested types itself, and one parser
      // would refuse the second definition of, say, lepton.Resources.
      return new Schema.Parser().parse(in);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** A decoder of {@code stem}'s records as written by any version of its schema. */
  public static BinaryMessageDecoder<GenericRecord> decoder(String stem) {
    BinaryMessageDecoder<GenericRecord> decoder =
        new BinaryMessageDecoder<>(GenericData.get(), schema(stem));
    for (Schema earlier : history(stem)) {
      decoder.addSchema(earlier);
    }
    return decoder;
  }

  /** An encoder of {@code stem}'s records in the current schema. */
  public static BinaryMessageEncoder<GenericRecord> encoder(String stem) {
    return new BinaryMessageEncoder<>(GenericData.get(), schema(stem));
  }

  /** The bytes of a buffer the encoder returned. */
  public static byte[] bytes(ByteBuffer buffer) {
    byte[] out = new byte[buffer.remaining()];
    buffer.get(out);
    return out;
  }

  private static List<Schema> history(String stem) {
    URI root;
    try {
      root = Contract.class.getResource(ROOT).toURI();
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
    if (!"jar".equals(root.getScheme())) {
      return historyUnder(Path.of(root), stem);
    }
    try (FileSystem jar = FileSystems.newFileSystem(root, Map.of())) {
      return historyUnder(jar.provider().getPath(root), stem);
    } catch (FileSystemAlreadyExistsException e) {
      return historyUnder(FileSystems.getFileSystem(root).provider().getPath(root), stem);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Every {@code history/<version>/<stem>.avsc} under {@code root}, oldest first. */
  private static List<Schema> historyUnder(Path root, String stem) {
    Path history = root.resolve("history");
    if (!Files.isDirectory(history)) {
      return List.of();
    }
    try (Stream<Path> versions = Files.list(history)) {
      return versions
          .sorted(Comparator.comparing(Contract::versionNumber))
          .map(version -> version.resolve(stem + ".avsc"))
          .filter(Files::isRegularFile)
          .map(Contract::parse)
          .toList();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  private static int versionNumber(Path version) {
    // A directory's name in a jar's file system ends with "/".
    return Integer.parseInt(version.getFileName().toString().replace("/", ""));
  }

  private static Schema parse(Path path) {
    try (InputStream in = Files.newInputStream(path)) {
      return new Schema.Parser().parse(in);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
