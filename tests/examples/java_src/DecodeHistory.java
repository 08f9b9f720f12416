import dev.lepton.examples.Contract;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;

/**
 * Decodes single-object bytes (hex, in the file args[1]) with the examples' decoder of schema
 * args[0], which knows the schema's history, and prints the record as Avro's JSON-like text.
 */
public final class DecodeHistory {
  private DecodeHistory() {}

  public static void main(String[] args) throws Exception {
    String hex = Files.readString(Path.of(args[1]), StandardCharsets.UTF_8).strip();
    System.out.println(Contract.decoder(args[0]).decode(HexFormat.of().parseHex(hex)));
  }
}
