package dev.onceflow.javatests;

import java.io.IOException;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;

/**
 * Command-line flags of the form {@code --name value}; a missing required flag exits 2.
 * {@code --client-config FILE} names a Kafka properties file (security settings) that
 * every client of the program starts from.
 */
final class Args {
    private final Map<String, String> values = new HashMap<>();

    Args(String[] argv) {
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--") || i + 1 == argv.length) {
                fail("expected --name value pairs, got: " + argv[i]);
            }
            values.put(argv[i].substring(2), argv[++i]);
        }
    }

    String get(String name) {
        String value = values.get(name);
        if (value == null) {
            fail("missing --" + name);
        }
        return value;
    }

    String get(String name, String fallback) {
        return values.getOrDefault(name, fallback);
    }

    int integer(String name, int fallback) {
        String value = values.get(name);
        try {
            return value == null ? fallback : Integer.parseInt(value);
        } catch (NumberFormatException e) {
            fail("--" + name + " must be an integer, got: " + value);
            return fallback;
        }
    }

    /** The settings of {@code --client-config}, or none: what a client's props start from. */
    Properties clientProperties() {
        Properties props = new Properties();
        String file = values.get("client-config");
        if (file != null) {
            try (Reader reader = Files.newBufferedReader(Path.of(file))) {
                props.load(reader);
            } catch (IOException e) {
                fail("cannot read --client-config " + file + ": " + e.getMessage());
            }
        }
        return props;
    }

    static void fail(String message) {
        System.err.println("error: " + message);
        System.exit(2);
    }
}
