package dev.onceflow.javatests;

import java.util.HashMap;
import java.util.Map;

/** Command-line flags of the form {@code --name value}; a missing required flag exits 2. */
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

    static void fail(String message) {
        System.err.println("error: " + message);
        System.exit(2);
    }
}
