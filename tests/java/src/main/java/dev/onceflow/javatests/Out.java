package dev.onceflow.javatests;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One JSON object per line on stdout: the tests read what the Java client saw from here.
 * Lines are flushed at once so a test can act on a marker (e.g. SIGKILL on "paused").
 */
final class Out {
    private Out() {}

    /** Prints {@code {"event": event, k1: v1, ...}} from alternating keys and values. */
    static synchronized void event(String event, Object... keysAndValues) {
        Map<String, Object> fields = new LinkedHashMap<>();
        fields.put("event", event);
        for (int i = 0; i + 1 < keysAndValues.length; i += 2) {
            fields.put((String) keysAndValues[i], keysAndValues[i + 1]);
        }
        StringBuilder line = new StringBuilder();
        write(line, fields);
        System.out.println(line);
        System.out.flush();
    }

    /**
     * Prints "paused" and blocks until the test writes a line on stdin (or closes it): the
     * window in which a test kills the process or starts a rival instance.
     */
    static void pause(String where) {
        event("paused", "at", where);
        try {
            while (true) {
                int c = System.in.read();
                if (c == -1 || c == '\n') {
                    break;
                }
            }
        } catch (IOException e) {
            throw new IllegalStateException("stdin unreadable while paused", e);
        }
        event("resumed", "at", where);
    }

    private static void write(StringBuilder out, Object value) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof Number || value instanceof Boolean) {
            out.append(value);
        } else if (value instanceof Map<?, ?> map) {
            out.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                if (!first) {
                    out.append(", ");
                }
                first = false;
                write(out, String.valueOf(entry.getKey()));
                out.append(": ");
                write(out, entry.getValue());
            }
            out.append('}');
        } else if (value instanceof List<?> list) {
            out.append('[');
            for (int i = 0; i < list.size(); i++) {
                if (i > 0) {
                    out.append(", ");
                }
                write(out, list.get(i));
            }
            out.append(']');
        } else {
            quote(out, value.toString());
        }
    }

    private static void quote(StringBuilder out, String text) {
        out.append('"');
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        out.append('"');
    }
}
