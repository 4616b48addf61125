///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7
//DEPS io.prometheus:prometheus-metrics-core:1.10.0
//DEPS io.prometheus:prometheus-metrics-exporter-httpserver:1.10.0

import java.io.Closeable;
import java.io.EOFException;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandleProxies;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.reflect.InvocationTargetException;
import java.math.BigInteger;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.channels.OverlappingFileLockException;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.FileSystems;
import java.nio.file.InvalidPathException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.StandardWatchEventKinds;
import java.nio.file.WatchEvent;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.OptionalInt;
import java.util.Queue;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;
import java.util.function.LongSupplier;
import java.util.function.Supplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import java.util.stream.Collectors;
import java.util.zip.CRC32C;
import java.util.zip.GZIPInputStream;
import java.util.zip.ZipException;

import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;
import io.prometheus.metrics.core.metrics.CounterWithCallback;
import io.prometheus.metrics.core.metrics.Info;
import io.prometheus.metrics.exporter.httpserver.MetricsHandler;
import io.prometheus.metrics.model.registry.MultiCollector;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import io.prometheus.metrics.model.snapshots.Labels;
import io.prometheus.metrics.model.snapshots.MetricSnapshots;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Option;

/**
 * LogShip: a log-shipping sidecar. It watches one directory and writes every line of every matching
 * file to stdout exactly once, in order per file, following appends, rotation and truncation.
 *
 * <p>Reading map. The file reads top to bottom in the order data flows:
 * <pre>
 *   Configuration  the options (each names its env var), Settings, one parser per kind of value
 *   Wiring         main() and call(): build the parts, run the loop, return the exit code
 *   The loop       Shipper: its follow() is the table of contents of the periodic jobs
 *                  (rescan, poll, close quiet rotated files, remove shipped files, forget, save); Ticker
 *                  says when each is due; PositionSaves writes the offsets out; Removal decides which
 *                  files --remove-after may delete
 *   Tails          the files followed, kept in line with the directory by rescans and event batches
 *   Scanner        which directory entries may be shipped (regular files; symlinks only inside)
 *   Tail           one file being shipped: its names, and how far it got (moved when stdout took lines);
 *                  a PlainTail opens, reads a turn, reopens and closes its file itself, an ArchiveTail
 *                  reads a .gz once; Checkpoint.startOf decides where a new one starts
 *   Identity       FileKey (device+inode), Births (birth time, where real), Fingerprint (first KiB),
 *                  Marker (bytes before the offset)
 *   Lines          LineReader: bytes to whole lines, long lines cut, partial lines held back
 *   Output         Sink: stdout, raw or JSON; an offset moves only after stdout accepted the bytes before it;
 *                  OutputBlock: the block lines are copied into; JsonEncoder: the JSON format, written
 *                  straight into that block; StdoutWriter: the writer thread and the buffers they share
 *   Positions      the positions file: versioned rows (PositionRow), written by temp file, fsync,
 *                  rename; bounded; PositionsLock (one shipper per positions file)
 *   Notification   Watcher (inotify) and Wakeup: lower latency, never needed for correctness
 *   Shutdown       SIGTERM/SIGINT, the shutdown hook, the bounded drain
 *   Observability  Metrics: what the loop publishes (counters, lag per file, heartbeat); Http: /metrics,
 *                  /healthz and /readyz with --http-port, reading those snapshots only
 *   Diagnostics    Log: stderr only, one line each
 * </pre>
 * Advanced, skippable on a first read: Archives and ArchiveTail (gzip copies of files already
 * shipped), Copies (the copy a copytruncate left, shipped from where the truncated file stopped),
 * Descriptors (the open-file budget for thousands of files, and the one bounded open path), inode
 * reuse (Births, Positions.retire) and the watcher's pinning of short-lived files.
 */
@Command(name = "logship", mixinStandardHelpOptions = true, versionProvider = LogShip.Version.class,
        sortOptions = false, usageHelpAutoWidth = true,
        description = {
            "Ships every line of every file in a directory whose name matches a pattern to stdout, once.",
            "Every option can also be set by the environment variable named in its help; the option wins.",
            "Diagnostics go to stderr; stdout carries shipped lines only."},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {
            "0:stopped cleanly (after --once, or after SIGTERM/SIGINT with everything drained)",
            "1:stdout failed, the drain was cut short by a second signal or the drain timeout, or the final"
                    + " save of positions failed",
            "2:a setting or the command line is wrong (the message names it), or another LogShip uses the same"
                    + " positions file"})
public class LogShip implements Callable<Integer> {

    static final String VERSION = "0.1.0";

    // =============================================================================================
    // Configuration. Each option's env var is its descriptionKey (EnvDefaults reads it), and each
    // default is a constant that both the option and its help text use: written once.
    // =============================================================================================

    static final String DEFAULT_PATTERN = ".+\\.log";
    static final String DEFAULT_INTERVAL = "10";
    static final String DEFAULT_START_AT = "head";
    static final String DEFAULT_MAX_LINE_BYTES = "1048576";
    static final String DEFAULT_DRAIN_TIMEOUT = "5s";
    static final String DEFAULT_ROTATE_WAIT = "5s";
    static final String DEFAULT_FORGET_AFTER = "7d";
    static final String DEFAULT_FORMAT = "raw";
    static final String DEFAULT_TIMESTAMP = "false";
    static final String DEFAULT_LOG_LEVEL = "info";

    @Option(names = {"-d", "--directory"}, descriptionKey = "LOG_DIRECTORY", paramLabel = "DIR",
            description = "Directory to watch (not recursive); created with its parents if missing."
                    + " Required.%n  Env: LOG_DIRECTORY")
    String directory;

    @Option(names = {"-p", "--pattern"}, descriptionKey = "LOG_FILE_PATTERN", paramLabel = "REGEX",
            defaultValue = DEFAULT_PATTERN,
            description = "Java regex that must match the whole file name (so .+\\.log never matches"
                    + " app.log.1).%n  Env: LOG_FILE_PATTERN   Default: " + DEFAULT_PATTERN)
    String pattern;

    @Option(names = {"-i", "--interval"}, descriptionKey = "LOG_SCAN_INTERVAL", paramLabel = "DURATION",
            defaultValue = DEFAULT_INTERVAL,
            description = "How often the directory is rescanned and every file polled; the safety net"
                    + " under change notifications. 10, 0.5, 500ms, 10s, 2m or PT10S (bare numbers are"
                    + " seconds).%n  Env: LOG_SCAN_INTERVAL   Default: " + DEFAULT_INTERVAL)
    String interval;

    @Option(names = "--start-at", descriptionKey = "LOG_START_AT", paramLabel = "head|tail",
            defaultValue = DEFAULT_START_AT,
            description = "Where to start in files that already exist at startup and have no saved"
                    + " position. Files found later are always read from their start.%n"
                    + "  Env: LOG_START_AT   Default: " + DEFAULT_START_AT)
    String startAt;

    @Option(names = "--max-line-bytes", descriptionKey = "LOG_MAX_LINE_BYTES", paramLabel = "BYTES",
            defaultValue = DEFAULT_MAX_LINE_BYTES,
            description = "Longer lines are cut at this length and the rest of the line is dropped,"
                    + " with a warning.%n  Env: LOG_MAX_LINE_BYTES   Default: " + DEFAULT_MAX_LINE_BYTES)
    String maxLineBytes;

    @Option(names = "--drain-timeout", descriptionKey = "LOG_DRAIN_TIMEOUT", paramLabel = "DURATION",
            defaultValue = DEFAULT_DRAIN_TIMEOUT,
            description = "Upper bound on shipping what is left after SIGTERM/SIGINT.%n"
                    + "  Env: LOG_DRAIN_TIMEOUT   Default: " + DEFAULT_DRAIN_TIMEOUT)
    String drainTimeout;

    @Option(names = "--state", descriptionKey = "LOG_STATE_FILE", paramLabel = "FILE",
            description = "Positions file, so a restart resumes where the last run stopped. Unset:"
                    + " positions live in memory only.%n  Env: LOG_STATE_FILE")
    String stateFile;

    @Option(names = "--rotate-wait", descriptionKey = "LOG_ROTATE_WAIT", paramLabel = "DURATION",
            defaultValue = DEFAULT_ROTATE_WAIT,
            description = "A file renamed away or deleted is read to its end and closed once it has"
                    + " not grown for this long.%n  Env: LOG_ROTATE_WAIT   Default: " + DEFAULT_ROTATE_WAIT)
    String rotateWait;

    @Option(names = "--forget-after", descriptionKey = "LOG_FORGET_AFTER", paramLabel = "DURATION",
            defaultValue = DEFAULT_FORGET_AFTER,
            description = "Positions of files gone for this long are forgotten.%n"
                    + "  Env: LOG_FORGET_AFTER   Default: " + DEFAULT_FORGET_AFTER)
    String forgetAfter;

    @Option(names = "--remove-after", descriptionKey = "LOG_REMOVE_AFTER", paramLabel = "DURATION",
            description = "Delete a file once every byte of it has been shipped (and, with --state, saved)"
                    + " and it has not changed for this long; it is still read through its open handle for"
                    + " --rotate-wait. Only for files no writer keeps open forever: see --remove-pattern."
                    + " Unset: never delete.%n  Env: LOG_REMOVE_AFTER")
    String removeAfter;

    @Option(names = "--remove-pattern", descriptionKey = "LOG_REMOVE_PATTERN", paramLabel = "REGEX",
            description = "With --remove-after, only files whose whole name matches this Java regex are"
                    + " deleted. Match rotated or time-bucketed names only, never a file a writer keeps open"
                    + " (its later writes would go to a deleted file).%n"
                    + "  Env: LOG_REMOVE_PATTERN   Default: the --pattern")
    String removePattern;

    @Option(names = "--format", descriptionKey = "LOG_FORMAT", paramLabel = "raw|json", defaultValue = DEFAULT_FORMAT,
            description = "raw: each line exactly as the file holds it. json: one object per line with"
                    + " message, log.file.path, log.file.name, log.offset, log.truncated (cut lines only) and"
                    + " k8s.pod.name, k8s.namespace.name, k8s.node.name, k8s.container.name from POD_NAME,"
                    + " POD_NAMESPACE, NODE_NAME and CONTAINER_NAME when set (invalid UTF-8 becomes U+FFFD).%n"
                    + "  Env: LOG_FORMAT   Default: " + DEFAULT_FORMAT)
    String format;

    @Option(names = "--timestamp", descriptionKey = "LOG_TIMESTAMP", paramLabel = "true|false", arity = "0..1",
            fallbackValue = "true", defaultValue = DEFAULT_TIMESTAMP,
            description = "JSON only: add timestamp, the RFC 3339 UTC time the line was read (the node's log"
                    + " agent already stamps every stdout line).%n  Env: LOG_TIMESTAMP   Default: " + DEFAULT_TIMESTAMP)
    String timestamp;

    @Option(names = "--http-port", descriptionKey = "LOG_HTTP_PORT", paramLabel = "PORT",
            description = "Serve /metrics (Prometheus), /healthz (liveness) and /readyz (startup) on this port,"
                    + " on all interfaces; 0 picks a free port and logs it. Unset: no HTTP server.%n"
                    + "  Env: LOG_HTTP_PORT")
    String httpPort;

    @Option(names = "--once",
            description = "Ship what the matching files hold now, then exit 0. A last line still"
                    + " missing its newline waits for the next run with --state, and is shipped as it is"
                    + " without (each run then stands alone).")
    boolean once;

    @Option(names = "--log-level", descriptionKey = "LOG_LEVEL", paramLabel = "LEVEL", defaultValue = DEFAULT_LOG_LEVEL,
            description = "Diagnostics on stderr: debug, info, warn or error.%n"
                    + "  Env: LOG_LEVEL   Default: " + DEFAULT_LOG_LEVEL)
    String logLevel;

    @Option(names = {"-v", "--verbose"}, description = "Same as --log-level debug.")
    boolean verbose;

    @Option(names = {"-q", "--quiet"}, description = "Same as --log-level warn.")
    boolean quiet;

    /** The checked, typed form of the options. Building it is where every user mistake is caught. */
    record Settings(Path directory, Pattern pattern, Duration interval, StartAt startAt, int maxLineBytes,
                    Duration drainTimeout, Path stateFile, Duration rotateWait, Duration forgetAfter,
                    Format format, boolean timestamp, Map<String, String> resource, OptionalInt httpPort,
                    boolean once, Level level, Removal.Rule removal) {}

    /** The Downward API variables the JSON format reads (the constants' names), each with the key it writes. */
    enum Resource {
        POD_NAME("k8s.pod.name"), POD_NAMESPACE("k8s.namespace.name"), NODE_NAME("k8s.node.name"),
        CONTAINER_NAME("k8s.container.name");

        final String key;

        Resource(String key) { this.key = key; }
    }

    enum Switch { TRUE, FALSE }

    enum StartAt { HEAD, TAIL }

    enum Format { RAW, JSON }

    /** A user mistake: its message is the one sentence printed before exiting 2. */
    static final class ConfigError extends Exception {
        ConfigError(String message) { super(message); }
    }

    Settings settings() throws ConfigError {
        Level level = verbose ? Level.DEBUG : quiet ? Level.WARN
                : oneOf(Level.class, "LOG_LEVEL (--log-level)", logLevel);
        Path dir = logDirectory(directory);
        Pattern filePattern = filePattern(pattern);
        Format outputFormat = oneOf(Format.class, "LOG_FORMAT (--format)", format);
        int lineLimit = lineLimit(maxLineBytes);
        lineFitsTheHeap(lineLimit, Runtime.getRuntime().maxMemory());
        Path positions = stateFilePath(stateFile);
        positionsAreNotShipped(positions, dir, filePattern);
        return new Settings(dir, filePattern, scanInterval(interval),
                oneOf(StartAt.class, "LOG_START_AT (--start-at)", startAt), lineLimit,
                positiveDuration("LOG_DRAIN_TIMEOUT (--drain-timeout)", drainTimeout),
                positions,
                positiveDuration("LOG_ROTATE_WAIT (--rotate-wait)", rotateWait),
                positiveDuration("LOG_FORGET_AFTER (--forget-after)", forgetAfter),
                outputFormat,
                oneOf(Switch.class, "LOG_TIMESTAMP (--timestamp)", timestamp) == Switch.TRUE,
                resource(env), httpPort(httpPort), once, level, removal(removeAfter, removePattern, filePattern));
    }

    /** The environment the options were read from: the Downward API variables come from it too. */
    Map<String, String> env = Map.of();

    /** The JSON keys and values of the Downward API variables that are set; never an empty string. */
    static Map<String, String> resource(Map<String, String> env) {
        Map<String, String> fields = new LinkedHashMap<>();
        for (Resource variable : Resource.values()) {
            String value = env.get(variable.name());
            if (value != null && !value.isEmpty()) fields.put(variable.key, value);
        }
        return fields;
    }

    /** The one parser for every choice setting: its constants, lower case, are the accepted words. */
    static <E extends Enum<E>> E oneOf(Class<E> choices, String setting, String value) throws ConfigError {
        for (E choice : choices.getEnumConstants()) {
            if (choice.name().equals(value.trim().toUpperCase(Locale.ROOT))) return choice;
        }
        List<String> words = Arrays.stream(choices.getEnumConstants())
                .map(c -> c.name().toLowerCase(Locale.ROOT)).toList();
        String listed = String.join(", ", words.subList(0, words.size() - 1)) + " or " + words.get(words.size() - 1);
        throw new ConfigError(setting + " must be " + listed + ", not '" + value + "'.");
    }

    static Path logDirectory(String value) throws ConfigError {
        if (value == null || value.isBlank()) {
            throw new ConfigError("LOG_DIRECTORY (--directory) is not set: name the directory to watch.");
        }
        Path dir = pathIn("LOG_DIRECTORY (--directory)", value);
        if (Files.exists(dir) && !Files.isDirectory(dir)) {
            throw new ConfigError("LOG_DIRECTORY (--directory) " + dir + " is not a directory.");
        }
        try {
            Files.createDirectories(dir);
        } catch (IOException | SecurityException e) {
            throw new ConfigError("LOG_DIRECTORY (--directory) " + dir + " cannot be created: " + reason(e) + ".");
        }
        if (!Files.isReadable(dir) || !Files.isExecutable(dir)) {
            throw new ConfigError("LOG_DIRECTORY (--directory) " + dir + " cannot be read by this user.");
        }
        return dir;
    }

    /**
     * Under a C/POSIX locale the JVM can name only ASCII paths (-Dsun.jnu.encoding is ignored), so a
     * non-ASCII directory cannot even be opened: a setting to fix, not an unexpected error.
     */
    static Path pathIn(String setting, String value) throws ConfigError {
        try {
            return Path.of(value).toAbsolutePath().normalize();
        } catch (InvalidPathException e) {
            throw new ConfigError(setting + " '" + value + "' cannot be represented in the file name encoding of"
                    + " this locale (" + localeVariable() + "=" + System.getenv().getOrDefault(localeVariable(), "")
                    + ", " + System.getProperty("sun.jnu.encoding") + "): run LogShip with " + localeVariable()
                    + "=C.UTF-8.");
        }
    }

    /** The variable that decides how file names are encoded: LC_ALL overrides LC_CTYPE, which overrides LANG. */
    static String localeVariable() {
        for (String variable : List.of("LC_ALL", "LC_CTYPE")) {
            String value = System.getenv(variable);
            if (value != null && !value.isEmpty()) return variable;
        }
        return "LANG";
    }

    static Pattern filePattern(String value) throws ConfigError {
        return namePattern("LOG_FILE_PATTERN (--pattern)", value);
    }

    /** Null without --remove-after: then nothing is ever deleted. */
    static Removal.Rule removal(String after, String pattern, Pattern filePattern) throws ConfigError {
        if (after == null || after.isBlank()) return null;
        Duration unchanged = positiveDuration("LOG_REMOVE_AFTER (--remove-after)", after);
        Pattern names = pattern == null || pattern.isBlank() ? filePattern
                : namePattern("LOG_REMOVE_PATTERN (--remove-pattern)", pattern);
        return new Removal.Rule(unchanged, names);
    }

    /** DOTALL: a file name is one string, and '.' should match any of its characters, even a newline. */
    static Pattern namePattern(String setting, String value) throws ConfigError {
        try {
            return Pattern.compile(value, Pattern.DOTALL);
        } catch (PatternSyntaxException e) {
            if (value.startsWith("*") || value.startsWith("?")) {
                throw new ConfigError(setting + " '" + value + "' looks like a glob, but a regex is"
                        + " expected that matches the whole file name: write " + regexForGlob(value) + ".");
            }
            throw new ConfigError(setting + " '" + value + "' is not a valid regex: "
                    + e.getDescription() + " near index " + e.getIndex() + ".");
        }
    }

    /**
     * The regex a shell glob means: * is .*, ? is ., everything else literal. A leading "*." becomes
     * ".+\.", as in the default pattern: a name that is only the extension is not a log file.
     */
    static String regexForGlob(String glob) {
        boolean extensionOnly = glob.startsWith("*.");
        StringBuilder regex = new StringBuilder(extensionOnly ? ".+" : "");
        for (char c : (extensionOnly ? glob.substring(1) : glob).toCharArray()) {
            switch (c) {
                case '*' -> regex.append(".*");
                case '?' -> regex.append('.');
                default -> regex.append(Character.isLetterOrDigit(c) || c == '_' || c == '-' ? String.valueOf(c)
                        : "\\" + c);
            }
        }
        return regex.toString();
    }

    private static final Pattern DURATION = Pattern.compile("(\\d+(?:\\.\\d+)?|\\.\\d+)\\s*(ms|s|m|h|d)?");

    /** Accepts bare seconds (10, 0.5), a number with a unit (500ms, 10s, 2m, 1h, 7d) or ISO-8601 (PT10S). */
    static Duration parseDuration(String value) {
        String text = value.trim();
        if (text.regionMatches(true, 0, "P", 0, 1)) {
            return Duration.parse(text.toUpperCase(Locale.ROOT));
        }
        Matcher m = DURATION.matcher(text.toLowerCase(Locale.ROOT));
        if (!m.matches()) throw new IllegalArgumentException("not a duration");
        long nanosPerUnit = switch (m.group(2) == null ? "s" : m.group(2)) {
            case "ms" -> 1_000_000L;
            case "s" -> 1_000_000_000L;
            case "m" -> 60_000_000_000L;
            case "h" -> 3_600_000_000_000L;
            default -> 86_400_000_000_000L;
        };
        // Exact, in integers: BigDecimal would be simpler, but its class initialisation computes
        // 5^65536 (JDK 25), a few milliseconds of every start.
        String number = m.group(1);
        int point = number.indexOf('.');
        String fraction = point < 0 ? "" : number.substring(point + 1);
        BigInteger digits = new BigInteger(point < 0 ? number : number.substring(0, point) + fraction);
        BigInteger nanos = digits.multiply(BigInteger.valueOf(nanosPerUnit)).divide(BigInteger.TEN.pow(fraction.length()));
        return Duration.ofNanos(nanos.min(BigInteger.valueOf(Long.MAX_VALUE)).longValue());
    }

    static Duration positiveDuration(String setting, String value) throws ConfigError {
        Duration d;
        try {
            d = parseDuration(value);
        } catch (IllegalArgumentException | DateTimeParseException | ArithmeticException e) {
            d = null;
        }
        if (d == null || d.isZero() || d.isNegative()) {
            throw new ConfigError(setting + " must be a positive duration such as 10, 0.5, 500ms, 10s, 2m"
                    + " or PT10S, not '" + value + "'.");
        }
        return d;
    }

    /**
     * Change notification already ships lines within milliseconds; the interval is only the safety
     * net under it, and a rescan of an empty directory every 0.1 ms costs a fifth of a core.
     */
    static final Duration SHORTEST_INTERVAL = Duration.ofMillis(10);

    static Duration scanInterval(String value) throws ConfigError {
        Duration d = positiveDuration("LOG_SCAN_INTERVAL (--interval)", value);
        if (d.compareTo(SHORTEST_INTERVAL) < 0) {
            throw new ConfigError("LOG_SCAN_INTERVAL (--interval) must be at least " + formatDuration(SHORTEST_INTERVAL)
                    + ", not '" + value + "': change notification already ships lines within milliseconds, and"
                    + " rescanning more often only burns CPU.");
        }
        return d;
    }

    /** Bounded so that the one line buffer the reader owns stays a sane size. */
    static final int LARGEST_LINE_LIMIT = 64 * 1024 * 1024;

    static int lineLimit(String value) throws ConfigError {
        try {
            long n = Long.parseLong(value.trim());
            if (n >= 1 && n <= LARGEST_LINE_LIMIT) return (int) n;
        } catch (NumberFormatException e) {
            // falls through to the one message below
        }
        throw new ConfigError("LOG_MAX_LINE_BYTES (--max-line-bytes) must be a whole number of bytes from 1 to "
                + LARGEST_LINE_LIMIT + ", not '" + value + "'.");
    }

    /**
     * The heap one line can take, as a multiple of --max-line-bytes: the line buffer and, while it
     * grows, its previous copy. The same for both formats: JsonEncoder escapes straight into the
     * Sink's direct buffers and decodes invalid UTF-8 a bounded piece at a time. Measured with
     * -Xmx32m and a 10 MB line of control bytes (60 MB once escaped): both formats ship it.
     */
    static final int HEAP_PER_LINE_BYTE = 2;
    /** What the rest of the program holds on the heap besides the line, with room to spare. */
    static final long HEAP_BESIDES_THE_LINE = 4L * 1024 * 1024;

    /**
     * A limit the heap cannot hold would die of out-of-memory on the first long line, and again on
     * every restart, since the offset never passes that line. Only three quarters of -Xmx count:
     * a collector needs room to move things, and a serial old generation is two thirds of the heap.
     */
    static void lineFitsTheHeap(int maxLineBytes, long maxHeap) throws ConfigError {
        long usable = maxHeap / 4 * 3 - HEAP_BESIDES_THE_LINE;
        long largest = Math.max(0, usable / HEAP_PER_LINE_BYTE);
        if (maxLineBytes <= largest) return;
        throw new ConfigError("LOG_MAX_LINE_BYTES (--max-line-bytes) " + maxLineBytes + " needs about "
                + mebibytes((long) maxLineBytes * HEAP_PER_LINE_BYTE + HEAP_BESIDES_THE_LINE)
                + " of heap, but this JVM has " + mebibytes(maxHeap)
                + " (-Xmx): use at most " + largest + " or give the JVM more heap.");
    }

    static String mebibytes(long bytes) { return (bytes + (1 << 19)) / (1 << 20) + " MiB"; }

    static OptionalInt httpPort(String value) throws ConfigError {
        if (value == null || value.isBlank()) return OptionalInt.empty();
        try {
            int port = Integer.parseInt(value.trim());
            if (port >= 0 && port <= 65535) return OptionalInt.of(port);
        } catch (NumberFormatException e) {
            // falls through to the one message below
        }
        throw new ConfigError("LOG_HTTP_PORT (--http-port) must be a port number from 0 to 65535, not '" + value + "'.");
    }

    static Path stateFilePath(String value) throws ConfigError {
        if (value == null || value.isBlank()) return null;
        Path file = pathIn("LOG_STATE_FILE (--state)", value);
        if (Files.isDirectory(file)) {
            throw new ConfigError("LOG_STATE_FILE (--state) " + file + " is a directory, not a file.");
        }
        Path parent = file.getParent();
        try {
            Files.createDirectories(parent);
            // Probe with a real file: permission bits lie to root and to read-only mounts.
            Path probe = createProbe(parent, ".logship-probe");
            Files.delete(probe);
        } catch (IOException | SecurityException e) {
            throw new ConfigError("LOG_STATE_FILE (--state) directory " + parent + " is not writable: "
                    + reason(e) + ".");
        }
        return file;
    }

    /**
     * A new empty file for a probe, deleted at once by the caller. Not Files.createTempFile: it names
     * files by SecureRandom, whose first use (provider lookup, seeding) costs ~8 ms of every start.
     * A probe lives for microseconds and only needs a name no other probe has at the same moment.
     */
    static Path createProbe(Path directory, String prefix) throws IOException {
        while (true) {
            try {
                return Files.createFile(directory.resolve(prefix + System.nanoTime() + ".tmp"));
            } catch (FileAlreadyExistsException e) {
                // another process's probe of the same nanosecond: the next name
            }
        }
    }

    /**
     * A positions file among the logs it describes, matching the pattern, would be shipped after
     * every save, forever. Refused rather than quietly skipped: "every matching file is shipped"
     * then needs no exception in the scanner, and the mistake is seen at once instead of as a
     * missing file later (in the pod the positions file has a volume of its own, so it cannot happen).
     */
    static void positionsAreNotShipped(Path positions, Path directory, Pattern pattern) throws ConfigError {
        if (positions == null) return;
        try {
            if (!Files.isSameFile(positions.getParent(), directory)) return;
        } catch (IOException e) {
            return; // the state directory was just probed; a directory we cannot compare is not ours
        }
        String name = positions.getFileName().toString();
        for (String own : List.of(name, name + ".tmp", name + ".lock", name + ".corrupt")) {
            if (pattern.matcher(own).matches()) {
                throw new ConfigError("LOG_STATE_FILE (--state) " + positions + " is in LOG_DIRECTORY (--directory)"
                        + " and " + own + " matches LOG_FILE_PATTERN (--pattern), so LogShip would ship its own"
                        + " positions: put the positions file in another directory.");
            }
        }
    }

    /** Fills every option that was not given on the command line from its environment variable. */
    record EnvDefaults(Map<String, String> env) implements CommandLine.IDefaultValueProvider {
        @Override
        public String defaultValue(ArgSpec arg) {
            if (arg instanceof OptionSpec option && !option.descriptionKey().isEmpty()) {
                String value = env.get(option.descriptionKey());
                if (value != null && !value.isBlank()) return value;
            }
            return null; // picocli then uses the annotation's default
        }

        /**
         * picocli builds this into a string for every option it fills, traced or not: the record's own
         * would be the whole environment, once per option, on every start (and in any trace).
         */
        @Override
        public String toString() { return "environment variables"; }
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            return new String[] {"logship " + VERSION + " (Java " + Runtime.version() + ")"};
        }
    }

    // =============================================================================================
    // Wiring: build the parts once, hand each what it shares with the others, run the loop.
    // =============================================================================================

    public static void main(String[] args) {
        System.exit(commandLine(new LogShip(), System.getenv()).execute(args));
    }

    static CommandLine commandLine(LogShip app, Map<String, String> env) {
        app.env = env;
        CommandLine cli = new CommandLine(app).setDefaultValueProvider(new EnvDefaults(env));
        cli.setParameterExceptionHandler((e, args) -> {
            e.getCommandLine().getErr().println("logship: " + commandLineMistake(e) + " (try --help)");
            return 2;
        });
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            Log.error("stopped by an unexpected error: " + e);
            return 1;
        });
        return cli;
    }

    /**
     * One sentence for a command-line mistake. picocli's own report adds the whole usage, which
     * scrolls the sentence away, and lists an unknown option's value as a second unknown option.
     */
    static String commandLineMistake(CommandLine.ParameterException e) {
        if (e instanceof CommandLine.UnmatchedArgumentException unmatched && !unmatched.getUnmatched().isEmpty()) {
            String first = unmatched.getUnmatched().get(0);
            if (!unmatched.isUnknownOption()) {
                // The usual way to get one: an unquoted -p *.log, which the shell expands to file names.
                return "unexpected argument '" + first + "': LogShip takes options only"
                        + (Files.exists(Path.of(first)) ? ", and a shell expands an unquoted * or ?, so quote a"
                        + " pattern: -p '.+\\.log'" : "");
            }
            String option = first.contains("=") ? first.substring(0, first.indexOf('=')) : first;
            List<String> similar = unmatched.getSuggestions();
            return "unknown option '" + option + "'"
                    + (similar.isEmpty() ? "" : "; did you mean " + String.join(" or ", similar) + "?");
        }
        if (e instanceof CommandLine.OverwrittenOptionException twice
                && twice.getOverwritten() instanceof OptionSpec option) {
            return option.longestName() + " is given more than once";
        }
        if (e instanceof CommandLine.MissingParameterException missing && !missing.getMissing().isEmpty()
                && missing.getMissing().get(0) instanceof OptionSpec option) {
            return option.longestName() + " needs a value: " + option.longestName() + " " + option.paramLabel();
        }
        String message = e.getMessage().lines().findFirst().orElse("bad command line");
        return Character.toLowerCase(message.charAt(0)) + message.substring(1);
    }

    @Override
    public Integer call() throws IOException {
        Settings settings;
        FileChannel positionsLock;
        try {
            settings = settings();
            positionsLock = PositionsLock.take(settings.stateFile());
        } catch (ConfigError e) {
            System.err.println("logship: " + e.getMessage());
            return 2;
        }
        try (positionsLock) {
            return ship(settings);
        }
    }

    private static int ship(Settings settings) throws IOException {
        Log.level = settings.level();
        // The loop publishes what it does to metrics; the HTTP server only reads them.
        Metrics metrics = new Metrics();
        Http http;
        try {
            http = Http.serve(settings, metrics);
        } catch (ConfigError e) {
            System.err.println("logship: " + e.getMessage());
            return 2;
        }
        try (http) {
            // The loop sleeps on the wakeup; the watcher and the signal handlers both ring it.
            Wakeup wakeup = new Wakeup();
            Shutdown shutdown = new Shutdown(settings.drainTimeout(), wakeup);
            // A channel, not a stream: it says how much a non-blocking stdout took.
            Sink sink = new Sink(new FileOutputStream(FileDescriptor.out).getChannel(), settings, metrics);
            Shipper shipper = new Shipper(settings, sink, shutdown, wakeup, Positions.open(settings.stateFile()),
                    metrics);
            if (!settings.once()) shutdown.install();
            try {
                return shipper.run();
            } finally {
                shutdown.stopped();
            }
        }
    }

    // =============================================================================================
    // The loop. The Shipper decides which file reads next and when each periodic job runs; the
    // files themselves (Tail) do the reading. It is the only owner of tails, so no locks.
    // =============================================================================================

    static final class Shipper {
        /** How many bytes a file may read before the others get a turn. */
        static final long TURN_BYTES = 1024 * 1024;
        static final long NO_DEADLINE = Long.MAX_VALUE;

        private final Settings settings;
        private final Shutdown shutdown;
        private final Wakeup wakeup;
        private final Positions positions;
        private final Scanner scanner;
        private final Tail.Shared shared;
        private final Archives archives;
        /** Null unless --remove-after is set; never with --once. */
        private final Removal removal;
        private final Ticker ticker;
        private final Metrics metrics;
        private final Tails tails;
        private final PositionSaves saves;
        /** Null when polling only (no change notification here, or --once). */
        private Watcher watcher;

        Shipper(Settings settings, Sink sink, Shutdown shutdown, Wakeup wakeup, Positions positions, Metrics metrics)
                throws IOException {
            this.settings = settings;
            this.shutdown = shutdown;
            this.wakeup = wakeup;
            this.positions = positions;
            this.metrics = metrics;
            this.scanner = new Scanner(settings.directory(), settings.pattern(), metrics);
            Births births = Births.provenIn(settings.stateFile(), Path.of(System.getProperty("java.io.tmpdir")));
            // The table of tails: Tails keeps it; Copies only looks (is a copy's name already followed?).
            Map<FileKey, Tail> followed = new LinkedHashMap<>();
            this.shared = new Tail.Shared(new LineReader(settings.maxLineBytes()), sink,
                    Descriptors.fromProcessLimit(), scanner, positions, settings.maxLineBytes(), births, metrics,
                    new Copies(settings.directory(), positions, births, Collections.unmodifiableMap(followed)));
            this.archives = new Archives(positions, shared, metrics);
            this.tails = new Tails(settings, followed, scanner, shared, archives, positions, metrics);
            this.removal = settings.removal() == null || settings.once() ? null
                    : new Removal(settings.removal(), metrics);
            this.ticker = new Ticker(settings.interval());
            this.saves = new PositionSaves(positions, tails, ticker, metrics, settings.forgetAfter());
        }

        int run() {
            Log.info("logship " + VERSION + " shipping files in " + settings.directory() + " whose names match '"
                    + settings.pattern() + "'" + (settings.once() ? " once" : ", rescanning every "
                    + formatDuration(settings.interval())));
            if (!positions.persistent()) {
                Log.info("positions are kept in memory only: set LOG_STATE_FILE to resume after a restart");
            }
            try {
                if (settings.once()) {
                    metrics.ready();
                    discoverAtStartup();
                    // With a positions file, a last line still missing its newline waits for the run
                    // that sees it whole: shipped now, it would go out torn. Without one, each run
                    // stands alone, and shipping the line as it is is the only way it ever ships.
                    boolean standalone = !positions.persistent();
                    readUntilCaughtUp(tails.all(), NO_DEADLINE, standalone);
                    if (!standalone) reportUnfinishedLines();
                    return saves.finalSave() ? 0 : 1;
                }
                // Watch first, then scan: a file created in between is then seen by one or the other.
                watcher = startWatcher();
                try {
                    discoverAtStartup();
                    metrics.ready();
                    Log.info("ready: following " + tails.size() + " file(s)");
                    follow();
                } finally {
                    Descriptors.closeQuietly(watcher);
                }
                return drain();
            } catch (StdoutFailed e) {
                Log.error("cannot write to stdout (" + e.getCause().getMessage() + "); stopping");
                return 1;
            } catch (IOException e) {
                Log.error("stopping: " + e.getMessage());
                return 1;
            } finally {
                tails.all().forEach(Tail::close);
                Log.debug("work: " + scanner.listings + " directory listings, " + shared.descriptors().opens
                        + " opens, " + bytesRead() + " bytes read, " + bytesInflated() + " bytes inflated");
            }
        }

        /** After --once with a positions file: say which lines wait, so that nobody thinks them lost. */
        private void reportUnfinishedLines() {
            for (Tail tail : tails.all()) {
                Positions.Entry entry = tail.entry();
                try {
                    if (!entry.compressed() && Files.size(entry.path()) > entry.offset()) {
                        Log.info(tail.name() + " ends in an unfinished line: it ships with the next run");
                    }
                } catch (IOException e) {
                    // gone since it was read: nothing waits in it
                }
            }
        }

        /**
         * The table of contents: sleep until the watcher, a signal or the ticker wakes us, then run
         * what is due. Each tick runs the always-correct jobs; between ticks only what the watcher
         * saw changing is read.
         */
        private void follow() throws IOException {
            ticker.start();
            readUntilCaughtUp(tails.all(), NO_DEADLINE, false);
            while (!shutdown.requested()) {
                try {
                    wakeup.await(ticker.nanosUntilNextJob(saves.behind()));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
                metrics.beat();
                if (shutdown.requested()) return;
                if (ticker.tickDue()) {
                    tick();
                } else {
                    readUntilCaughtUp(tails.changedSince(watcher), NO_DEADLINE, false);
                    tails.closeQuietRotatedFiles();
                }
                if (ticker.saveDue(saves.behind())) saves.save();
            }
        }

        /** One tick: the periodic jobs, by name, in the order they must run. */
        void tick() throws IOException {
            renewStaleWatcher();
            tails.rescan(false);
            readUntilCaughtUp(tails.snapshot(), NO_DEADLINE, false);
            tails.closeQuietRotatedFiles();
            removeFullyShippedFiles();
            saves.forgetOld();
        }

        void discoverAtStartup() { tails.rescan(true); }

        int tailCount() { return tails.size(); }

        /** Bytes read from plain files and inflated to check archives: what the work costs. */
        long bytesRead() { return shared.reader().bytesRead; }

        long bytesInflated() { return archives.bytesInflated; }

        /**
         * A watcher dies with its directory (deleted and recreated, or a symlinked directory
         * re-pointed, where it goes on watching the old one): once the directory is there again,
         * a new one is started, before the rescan, so nothing falls between the two.
         */
        private void renewStaleWatcher() {
            if (watcher == null || watcher.stillWatching(settings.directory())) return;
            if (!Files.isDirectory(settings.directory())) return;
            Descriptors.closeQuietly(watcher);
            watcher = startWatcher();
            if (watcher != null) Log.info("watching " + settings.directory() + " again");
        }

        private Watcher startWatcher() {
            try {
                return new Watcher(scanner, wakeup, Math.min(1024, shared.descriptors().budget()));
            } catch (IOException | UnsupportedOperationException e) {
                Log.warn("no change notification (" + e.getMessage() + "); polling every "
                        + formatDuration(settings.interval()));
                return null;
            }
        }

        /**
         * Reads the given tails round-robin, each for at most one turn at a time, until none has more
         * or the deadline passes: one busy file cannot starve the others. A backlog can take minutes
         * to ship to a slow reader, so positions are saved between turns when due, and a stop
         * request ends the reading here (the drain then takes over within its bound).
         */
        boolean readUntilCaughtUp(Collection<Tail> due, long deadlineNanos, boolean shipTrailingPartials)
                throws IOException {
            boolean draining = shutdown.requested();
            BooleanSupplier mustStop = () -> shutdown.cutShort() || (!draining && shutdown.requested())
                    || (deadlineNanos != NO_DEADLINE && System.nanoTime() - deadlineNanos >= 0);
            // A turn writing to a slow reader can take seconds: it is bounded in time as well as in
            // bytes, so saves keep their cadence, and it ends at the next line when the loop must stop.
            Turn turn = new Turn(TURN_BYTES, Ticker.SAVE_EVERY_NANOS, shipTrailingPartials, mustStop);
            ArrayDeque<Tail> queue = new ArrayDeque<>(due);
            while (!queue.isEmpty()) {
                if (mustStop.getAsBoolean()) return false;
                Tail tail = queue.poll();
                if (!tails.follows(tail)) continue;
                boolean moreToRead = tail.readTurn(turn);
                metrics.beat();
                if (tail.takeCommitted()) saves.offsetMoved();
                if (moreToRead) queue.add(tail);
                if (ticker.saveDue(saves.behind())) saves.save();
            }
            return true;
        }

        /** With --remove-after: delete what Removal finds due, once the positions that make it due are saved. */
        private void removeFullyShippedFiles() {
            if (removal == null) return;
            List<Tail> due = removal.due(tails.all());
            if (due.isEmpty()) return;
            // Deleted only once the record that its bytes went out is durable: never a file that a
            // restart would still count as unshipped.
            if (positions.persistent()) {
                IOException failed = saves.trySave();
                if (failed != null) {
                    Log.warnOnce("save", "cannot save positions: " + reason(failed) + "; will retry, and delete"
                            + " nothing until then");
                    return;
                }
            }
            for (Tail tail : due) {
                if (!removal.remove(tail)) continue;
                tail.removedByLogShip();
                // An archive holds no handle to read on: it is done now.
                if (tail.compressed) tails.dropRemoved(tail);
            }
            metrics.followOnly(tails.keys());
        }

        /** Saves positions now (tests, and the loop through PositionSaves when due). */
        void savePositions() { saves.save(); }

        /**
         * After a signal: no more discovery beyond one last look, ship what the files hold now, flush,
         * save. Bounded by --drain-timeout, and cut short by a second signal.
         */
        int drain() throws IOException {
            long deadline = System.nanoTime() + settings.drainTimeout().toNanos();
            tails.rescan(false);
            boolean complete = readUntilCaughtUp(tails.snapshot(), deadline, false);
            boolean saved = saves.finalSave();
            if (!complete) {
                Log.warn(shutdown.cutShort() ? "drain cut short by a second signal; unshipped lines remain in the files"
                        : "drain timed out after " + formatDuration(settings.drainTimeout())
                        + "; unshipped lines remain in the files");
                return 1;
            }
            Log.info("drained; shipped " + shared.sink().lines + " line(s) in all");
            return saved ? 0 : 1;
        }
    }

    /**
     * When the loop's periodic jobs are due: the tick (rescan and poll everything, every --interval)
     * and the save (at most once a second, and only when an offset moved).
     */
    static final class Ticker {
        static final long SAVE_EVERY_NANOS = TimeUnit.SECONDS.toNanos(1);
        private final long intervalNanos;
        private long nextTickNanos;
        private long lastSaveNanos;

        Ticker(Duration interval) {
            intervalNanos = interval.toNanos();
            start();
        }

        /** The first tick is an interval after following starts. */
        void start() { nextTickNanos = System.nanoTime() + intervalNanos; }

        long nanosUntilNextJob(boolean positionsDirty) {
            long now = System.nanoTime();
            long wait = nextTickNanos - now;
            return positionsDirty ? Math.min(wait, lastSaveNanos + SAVE_EVERY_NANOS - now) : wait;
        }

        /** True once per interval: the caller runs the tick now, and the next one is an interval away. */
        boolean tickDue() {
            if (System.nanoTime() - nextTickNanos < 0) return false;
            nextTickNanos = System.nanoTime() + intervalNanos;
            return true;
        }

        boolean saveDue(boolean positionsDirty) {
            return positionsDirty && System.nanoTime() - lastSaveNanos >= SAVE_EVERY_NANOS;
        }

        void saved() { lastSaveNanos = System.nanoTime(); }
    }

    /**
     * Writes the followed files' offsets to the positions file: when one moved and the ticker says a
     * save is due, when a file is about to be removed, and at the end; and forgets the positions of
     * files gone for longer than --forget-after.
     */
    static final class PositionSaves {
        private final Positions positions;
        private final Tails tails;
        private final Ticker ticker;
        private final Metrics metrics;
        private final Duration forgetAfter;
        /** An offset moved, or a position was kept, since the last save. */
        private boolean dirty;

        PositionSaves(Positions positions, Tails tails, Ticker ticker, Metrics metrics, Duration forgetAfter) {
            this.positions = positions;
            this.tails = tails;
            this.ticker = ticker;
            this.metrics = metrics;
            this.forgetAfter = forgetAfter;
        }

        void offsetMoved() { dirty = true; }

        /** Whether the positions file is behind the tails. */
        boolean behind() {
            if (tails.takePositionsChanged()) dirty = true;
            return dirty;
        }

        void forgetOld() {
            if (positions.forgetGone(forgetCutoff(), tails.keys())) dirty = true;
        }

        private long forgetCutoff() { return System.currentTimeMillis() - forgetAfter.toMillis(); }

        void save() {
            IOException failed = trySave();
            if (failed != null) Log.warnOnce("save", "cannot save positions: " + reason(failed) + "; will retry");
        }

        /**
         * The save at the end has no retry: if it fails, a restart ships again what went out since the
         * last good save, so it is said, and the exit code says it too.
         */
        boolean finalSave() {
            IOException failed = trySave();
            if (failed == null) return true;
            Log.error("cannot save positions at shutdown (" + reason(failed) + "); a restart will ship again the"
                    + " lines shipped since the last save");
            return false;
        }

        /** Null once saved, else why not. */
        IOException trySave() {
            for (Tail tail : tails.all()) positions.put(tail.entry());
            positions.forgetGone(forgetCutoff(), tails.keys());
            ticker.saved();
            try {
                positions.save();
                dirty = false;
                if (positions.persistent()) metrics.positionsSaves.incrementAndGet();
                Log.forget("save");
                return null;
            } catch (IOException e) {
                metrics.positionsSaveErrors.incrementAndGet();
                return e;
            }
        }
    }

    /**
     * The files being followed, kept in line with the directory: what the scanner lists and the
     * watcher reports becomes a tail, a renamed file keeps its tail under its new name, and a file
     * gone for good leaves its position behind. Only the loop touches it, so no locks.
     */
    static final class Tails {
        private final Map<FileKey, Tail> byKey;
        private final Settings settings;
        private final Scanner scanner;
        private final Tail.Shared shared;
        private final Archives archives;
        private final Positions positions;
        private final Metrics metrics;
        /** A position was kept for a tail that left the table: the positions file is behind. */
        private boolean positionsChanged;

        Tails(Settings settings, Map<FileKey, Tail> byKey, Scanner scanner, Tail.Shared shared, Archives archives,
              Positions positions, Metrics metrics) {
            this.byKey = byKey;
            this.settings = settings;
            this.scanner = scanner;
            this.shared = shared;
            this.archives = archives;
            this.positions = positions;
            this.metrics = metrics;
        }

        Collection<Tail> all() { return byKey.values(); }

        /** A copy to iterate over while reading, which may drop tails from the table. */
        List<Tail> snapshot() { return new ArrayList<>(byKey.values()); }

        boolean follows(Tail tail) { return byKey.containsKey(tail.key); }

        Set<FileKey> keys() { return byKey.keySet(); }

        int size() { return byKey.size(); }

        boolean takePositionsChanged() {
            boolean was = positionsChanged;
            positionsChanged = false;
            return was;
        }

        /**
         * Brings the tails in line with what the directory holds: new files get a tail, renamed ones
         * keep theirs under the new name, and a tail whose name no longer leads to it keeps reading
         * its open handle, because the writer may still be appending to the renamed file.
         */
        void rescan(boolean startup) {
            List<ScannedFile> scanned = scanner.scan();
            if (scanned == null) return;
            Set<FileKey> present = new HashSet<>();
            for (ScannedFile file : scanned) {
                present.add(file.key());
                reconcile(file, startup);
            }
            List<Tail> lost = new ArrayList<>();
            for (Tail tail : byKey.values()) {
                if (!present.contains(tail.key) && !tail.renamedAwayOrDeleted()) lost.add(tail);
            }
            settleLostNames(lost, List.of(), true);
            archives.forgetAllBut(present);
            metrics.followOnly(byKey.keySet());
        }

        /**
         * The same for the entries a batch of events names, and only those: the work is in proportion
         * to the events, not to the directory, so a storm of short-lived files is kept up with.
         * Returns the tails that lost their name in this batch.
         */
        private List<Tail> reconcileNamed(Set<Path> entries) {
            Map<String, List<Tail>> byName = new HashMap<>();
            for (Tail t : byKey.values()) {
                if (!t.renamedAwayOrDeleted()) byName.computeIfAbsent(t.name(), n -> new ArrayList<>()).add(t);
            }
            List<Tail> lost = new ArrayList<>();
            for (Path entry : entries) {
                String name = entry.toString();
                ScannedFile file = scanner.matches(name) ? scanner.inspect(scanner.directory.resolve(entry)) : null;
                for (Tail t : byName.getOrDefault(name, List.of())) {
                    if (file == null || !t.key.equals(file.key())) lost.add(t);
                }
                if (file != null) reconcile(file, false);
            }
            lost.removeIf(Tail::renamedAwayOrDeleted); // found again under another name in this batch
            settleLostNames(lost, entries, false);
            metrics.followOnly(byKey.keySet());
            return lost;
        }

        /**
         * A file created and renamed to a name we do not match before the watcher could open it (a
         * burst of rotations): it is found under its new name among the names just reported, and
         * read to its end there like any file renamed away.
         */
        private void followRenamedBeforeOpened(List<ScannedFile> missed, Set<Path> entries) {
            missed.removeIf(file -> byKey.containsKey(file.key()));
            if (missed.isEmpty()) return;
            Set<FileKey> keys = missed.stream().map(ScannedFile::key).collect(Collectors.toSet());
            Map<FileKey, Path> found = scanner.locate(keys, entries, keys);
            for (ScannedFile file : missed) {
                Path now = found.get(file.key());
                if (now == null || byKey.containsKey(file.key())) continue;
                Tail tail = PlainTail.start(new ScannedFile(now, now, file.key(), file.size()), null, false, shared);
                if (tail == null) continue;
                byKey.put(tail.key, tail);
                tail.lostItsName();
                tail.movedTo(now);
            }
        }

        private void reconcile(ScannedFile file, boolean startup) {
            Tail tail = byKey.get(file.key());
            if (tail instanceof ArchiveTail archive && !archive.sameArchive(file)) {
                // Archives do not grow: another archive got this inode (replaced by logrotate).
                metrics.unread(Metrics.Unread.DELETED, tail.unreadBytes());
                tail.close();
                byKey.remove(tail.key);
                tail = null;
            }
            if (tail != null) tail.foundAt(file);
            else startTail(file, null, startup);
        }

        /**
         * Tails whose name no longer leads to them. One with an open handle reads on through it; one
         * without is looked for under another name (the names just reported first, then at most one
         * listing for all of them: never a listing per file), and dropped, its position kept, if
         * it is gone.
         */
        private void settleLostNames(List<Tail> lost, Collection<Path> likelyEntries, boolean listForAll) {
            Set<FileKey> plain = new HashSet<>();
            for (Tail tail : lost) {
                tail.lostItsName();
                if (tail.compressed) {
                    metrics.unread(Metrics.Unread.DELETED, tail.unreadBytes());
                    tail.close();
                    byKey.remove(tail.key);
                } else {
                    plain.add(tail.key);
                }
            }
            if (plain.isEmpty()) return;
            // Even a tail reading on through its handle is told where its file went: its lines name
            // the file they come from. Between ticks, the directory is listed for that only when a
            // tail without a handle, which can go on nowhere else, is not among the names reported.
            Set<FileKey> worthAListing = new HashSet<>();
            for (FileKey key : plain) if (listForAll || !byKey.get(key).hasHandle()) worthAListing.add(key);
            Map<FileKey, Path> found = scanner.locate(plain, likelyEntries, worthAListing);
            for (FileKey key : plain) {
                Tail tail = byKey.get(key);
                Path now = found.get(key);
                if (now != null) {
                    tail.movedTo(now);
                } else if (!tail.hasHandle()) {
                    metrics.unread(Metrics.Unread.DELETED, tail.unreadBytes());
                    keepPosition(tail);
                    byKey.remove(key);
                }
            }
        }

        /** A new file gets a tail that starts where its saved position (or --start-at) says. */
        private void startTail(ScannedFile file, FileChannel pinned, boolean startup) {
            Tail tail = file.isArchive() ? archives.start(file, byKey.values())
                    : PlainTail.start(file, pinned, startup && settings.startAt() == StartAt.TAIL, shared);
            if (tail != null) byKey.put(tail.key, tail);
        }

        /** The tails a watcher batch concerns, after bringing the table in line with the batch. */
        Collection<Tail> changedSince(Watcher watcher) {
            if (watcher == null) return List.of();
            Set<FileKey> known = new HashSet<>(byKey.keySet());
            for (Watcher.Pinned p : watcher.takePinned()) {
                if (byKey.containsKey(p.file().key())) {
                    Descriptors.closeQuietly(p.channel());
                } else {
                    startTail(p.file(), p.channel(), false);
                }
            }
            Set<Path> entries = watcher.takeChanged();
            Set<String> names = entries.stream().map(Path::toString).collect(Collectors.toSet());
            Collection<Tail> lostNow = List.of();
            if (watcher.takeNeedsRescan()) {
                rescan(false); // events were dropped: only the whole directory tells what changed
            } else {
                lostNow = reconcileNamed(entries);
            }
            followRenamedBeforeOpened(watcher.takeRenamedBeforeOpened(), entries);
            Set<Tail> due = new LinkedHashSet<>(lostNow);
            for (Tail t : byKey.values()) {
                // Renamed-away files read through a handle change under names we cannot map back, so
                // they are always due; files just found are due too, as an overflow may have dropped
                // their own events.
                if ((t.renamedAwayOrDeleted() && t.hasHandle()) || names.contains(t.name()) || !known.contains(t.key)) {
                    due.add(t);
                }
            }
            due.removeIf(t -> !byKey.containsKey(t.key));
            return due;
        }

        /** Renamed-away or deleted files are closed once they have been quiet for --rotate-wait. */
        void closeQuietRotatedFiles() {
            long quiet = settings.rotateWait().toNanos();
            for (Iterator<Tail> it = byKey.values().iterator(); it.hasNext(); ) {
                Tail tail = it.next();
                if (tail.goneAndQuietFor(quiet)) {
                    Log.debug("done with " + tail.name() + " (renamed away or deleted, and quiet)");
                    metrics.unread(Metrics.Unread.UNFINISHED_LINE, tail.unreadBytes());
                    if (tail.removed()) {
                        positions.forget(tail.key);
                        positionsChanged = true;
                    } else {
                        keepPosition(tail);
                    }
                    tail.close();
                    it.remove();
                    metrics.followOnly(byKey.keySet());
                }
            }
        }

        /** A file LogShip removed is forgotten with its handle: per-minute files must not grow the positions file. */
        void dropRemoved(Tail tail) {
            tail.close();
            byKey.remove(tail.key);
            positions.forget(tail.key);
            positionsChanged = true;
        }

        /** A finished tail's position is kept: a restart or its compressed copy may still need it. */
        private void keepPosition(Tail tail) {
            positions.put(tail.entry());
            positionsChanged = true;
        }
    }

    /**
     * --remove-after: deletes files that are fully shipped, so a volume nothing else rotates stays
     * bounded. Safe by construction: a file goes only when every byte of it has been accepted by
     * stdout (and, with a positions file, saved), it has not changed in size or time for
     * --remove-after, its name matches --remove-pattern, and its directory entry is itself the
     * regular file (never a symlink's target). The entry is deleted by name without following links,
     * and the tail keeps reading its handle until quiet for --rotate-wait, so a writer's last write
     * through an old descriptor still ships. The hazard it cannot remove: a writer that keeps one
     * file open forever writes on into the deleted file, so such a file must not match
     * --remove-pattern.
     */
    static final class Removal {
        /** The settings: unchanged for this long, and a name that matches. */
        record Rule(Duration unchanged, Pattern names) {}

        /** A file's size and time as LogShip saw them, and since when they have stayed so. */
        private record Still(long size, long modifiedMicros, long sinceNanos) {}

        private final Rule rule;
        private final Metrics metrics;
        private final Map<FileKey, Still> still = new HashMap<>();
        /** Failed deletes by reason: one warning per reason, with a running count. */
        private final Map<String, Integer> failures = new HashMap<>();

        Removal(Rule rule, Metrics metrics) {
            this.rule = rule;
            this.metrics = metrics;
        }

        /**
         * The tails whose files may be deleted now, by every condition but the saved position
         * (the caller saves them all at once first).
         */
        List<Tail> due(Collection<Tail> tails) {
            long now = System.nanoTime();
            Set<FileKey> looked = new HashSet<>();
            List<Tail> due = new ArrayList<>();
            for (Tail tail : tails) {
                if (tail.renamedAwayOrDeleted() || !rule.names().matcher(tail.name()).matches()) continue;
                Still seen = lookAt(tail);
                if (seen == null) continue;
                looked.add(tail.key);
                Still was = still.get(tail.key);
                if (was == null || was.size() != seen.size() || was.modifiedMicros() != seen.modifiedMicros()) {
                    still.put(tail.key, seen);
                } else if (now - was.sinceNanos() >= rule.unchanged().toNanos() && tail.shippedToEnd(seen.size())) {
                    due.add(tail);
                }
            }
            still.keySet().retainAll(looked);
            return due;
        }

        /** Its size and time now, if its own directory entry is this regular file; else null. */
        private static Still lookAt(Tail tail) {
            if (tail.entryPath() == null) return null;
            try {
                Map<String, Object> attrs = Files.readAttributes(tail.entryPath(),
                        "unix:dev,ino,size,lastModifiedTime,isRegularFile", LinkOption.NOFOLLOW_LINKS);
                FileKey key = new FileKey(((Number) attrs.get("dev")).longValue(), ((Number) attrs.get("ino")).longValue());
                if (!(Boolean) attrs.get("isRegularFile") || !key.equals(tail.key)) return null;
                return new Still((Long) attrs.get("size"), ((FileTime) attrs.get("lastModifiedTime"))
                        .to(TimeUnit.MICROSECONDS), System.nanoTime());
            } catch (IOException e) {
                return null; // gone or unreadable: the scanner will say
            }
        }

        /**
         * Deletes the file's directory entry (the entry itself: a symlink would be unlinked, never
         * followed). True when it went; a failure is warned once per reason and shipping goes on.
         */
        boolean remove(Tail tail) {
            Path entry = tail.entryPath();
            try {
                // The entry is looked at once more right before: it must still be this file, whole.
                Still now = lookAt(tail);
                if (now == null || !tail.holdOpen() || !tail.shippedToEnd(now.size())) return false;
                Files.delete(entry);
            } catch (NoSuchFileException e) {
                return false; // someone else deleted it: the scanner sees it gone
            } catch (IOException e) {
                String why = reason(e);
                int count = failures.merge(why, 1, Integer::sum);
                Log.warnOnce("remove:" + why, "cannot remove " + tail.name() + " (--remove-after): " + why + "; "
                        + count + " failed so far; it stays, and shipping goes on");
                // Not tried again before it has been unchanged for --remove-after once more.
                still.put(tail.key, new Still(-1, -1, System.nanoTime()));
                return false;
            }
            still.remove(tail.key);
            metrics.filesRemoved.incrementAndGet();
            Log.debug("removed " + tail.name() + ": shipped to its end and unchanged for "
                    + formatDuration(rule.unchanged()));
            return true;
        }
    }

    // =============================================================================================
    // Scanner: which directory entries are files we may ship?
    // =============================================================================================

    /**
     * A shippable file as the scanner saw it: its name now, the in-directory regular file to open
     * for it (the name itself, or the entry a symlink names), which file that is, and its size.
     */
    record ScannedFile(Path path, Path source, FileKey key, long size) {
        boolean isArchive() { return path.getFileName().toString().endsWith(".gz"); }
    }

    static final class Scanner {
        final Path directory;
        /** How often the whole directory was listed: work that must not grow with every event. */
        long listings;
        /** Where the directory really is; looked up at each scan, as its path may be re-pointed. */
        private volatile Path realDirectory;
        private final Pattern pattern;
        private boolean everMatched;
        private final Metrics metrics;

        Scanner(Path directory, Pattern pattern, Metrics metrics) throws IOException {
            this.directory = directory;
            this.realDirectory = directory.toRealPath();
            this.pattern = pattern;
            this.metrics = metrics;
        }

        boolean matches(String name) { return pattern.matcher(name).matches(); }

        Path resolve(String name) { return directory.resolve(name); }

        /** Every matching, shippable entry; null if the directory cannot be listed now. */
        List<ScannedFile> scan() {
            List<ScannedFile> found = new ArrayList<>();
            listings++;
            List<String> othersSeen = new ArrayList<>();
            int others = 0;
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
                realDirectory = directory.toRealPath();
                for (Path path : entries) {
                    String name = path.getFileName().toString();
                    if (!matches(name)) {
                        if (others++ < NAMES_SHOWN) othersSeen.add(name);
                        continue;
                    }
                    ScannedFile file = inspect(path);
                    if (file != null) found.add(file);
                }
            } catch (NoSuchFileException e) {
                Log.warnOnce("scan:" + directory, "the watched directory " + directory
                        + " no longer exists (deleted or unmounted); will look for it again at each rescan");
                return null;
            } catch (IOException | UncheckedIOException e) {
                Exception why = e instanceof UncheckedIOException unchecked ? unchecked.getCause() : e;
                Log.warnOnce("scan:" + directory, "cannot list " + directory + ": " + reason(why)
                        + "; will retry at the next rescan");
                return null;
            }
            Log.forget("scan:" + directory);
            // Only until something matched: after that, an empty scan is the gap in a rename rotation.
            everMatched |= !found.isEmpty();
            if (!everMatched && others > 0) Log.warnOnce("unmatched:" + directory, noMatchExplained(othersSeen, others));
            return found;
        }

        static final int NAMES_SHOWN = 5;

        /**
         * "Following 0 files" leaves a user with a wrong pattern guessing: name what is there, and
         * how the pattern was probably meant. Go's MatchString, for one, matched a word such as
         * "access" anywhere in a name.
         */
        private String noMatchExplained(List<String> names, int count) {
            String regex = pattern.pattern();
            String explained = "no file in " + directory + " matches '" + regex + "' (the whole name must match);"
                    + " there " + (count == 1 ? "is " : "are ") + String.join(", ", names)
                    + (count > names.size() ? " and " + (count - names.size()) + " more" : "");
            String fromStart = regex.replaceFirst("^\\^", "");
            String core = fromStart.replaceFirst("(?<!\\\\)\\$$", "");
            Matcher extension = Pattern.compile("\\\\?\\.(\\w+)").matcher(core);
            if (extension.matches()) {
                return explained + "; for names ending in ." + extension.group(1) + " write .+\\." + extension.group(1);
            }
            if (core.matches("[\\w\\\\.-]+") && names.stream().anyMatch(name -> pattern.matcher(name).find())) {
                return explained + "; to match anywhere in the name, write " + (fromStart.equals(regex) ? ".*" : "")
                        + core + (core.equals(fromStart) ? ".*" : "");
            }
            return explained;
        }

        /**
         * Decides whether one entry may be shipped. Only regular files qualify: reading a FIFO or a
         * device could block the whole shipper. A symlink is followed one level, and only to a
         * regular file that is an entry of this same directory, so a compromised app cannot make us
         * ship a mounted secret; that entry (the source) is what is later opened, without following
         * links, so swapping the link between this check and the open gains nothing.
         * Entries that vanish while we look are simply not there.
         */
        ScannedFile inspect(Path path) {
            String name = path.getFileName().toString();
            try {
                BasicFileAttributes attrs = Files.readAttributes(path, BasicFileAttributes.class,
                        LinkOption.NOFOLLOW_LINKS);
                Path source = path;
                if (attrs.isSymbolicLink()) {
                    source = targetInThisDirectory(path, name);
                    if (source == null) return null;
                    attrs = Files.readAttributes(source, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
                    if (attrs.isSymbolicLink()) {
                        Log.warnOnce("chain:" + name, "skipping " + name + ": it is a symlink to another symlink");
                        return null;
                    }
                }
                if (!attrs.isRegularFile()) {
                    skipped(Log.warnOnce("irregular:" + name, "skipping " + name + ": it is "
                            + (attrs.isDirectory() ? "a directory" : "not a regular file (FIFO, socket or device)")));
                    return null;
                }
                return new ScannedFile(path, source, FileKey.of(source), attrs.size());
            } catch (NoSuchFileException e) {
                return null; // vanished between listing and looking: nothing to ship
            } catch (IOException e) {
                if (Log.warnOnce("inspect:" + name, "cannot inspect " + name + ": " + reason(e))) {
                    metrics.fileError(Metrics.FileError.UNREADABLE);
                }
                return null;
            }
        }

        private void skipped(boolean warned) {
            if (warned) metrics.fileError(Metrics.FileError.NOT_REGULAR);
        }

        /** The entry of this directory a symlink names, or null (with a warning) if it names none. */
        private Path targetInThisDirectory(Path link, String name) throws IOException {
            Path target = link.resolveSibling(Files.readSymbolicLink(link)).normalize();
            if (!Files.exists(target, LinkOption.NOFOLLOW_LINKS)) {
                Log.warnOnce("dangling:" + name, "skipping " + name + ": the symlink points nowhere");
                return null;
            }
            Path parent = target.getParent();
            if (!directory.equals(parent) && !realDirectory.equals(parent)) {
                Log.warnOnce("outside:" + name, "skipping " + name + ": it is a symlink to " + target
                        + ", which is outside the log directory");
                return null;
            }
            return target;
        }

        /**
         * Where did these files go, under any name, matching or not? The likely names (those events
         * just reported) are looked at first, one stat each; only if some of those worth a listing
         * are still missing is the directory listed, once for all of them.
         */
        Map<FileKey, Path> locate(Set<FileKey> keys, Collection<Path> likelyEntries, Set<FileKey> worthAListing) {
            Map<FileKey, Path> found = new HashMap<>();
            for (Path entry : likelyEntries) {
                if (found.size() == keys.size()) return found;
                identify(directory.resolve(entry), keys, found);
            }
            if (found.keySet().containsAll(worthAListing)) return found;
            listings++;
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
                for (Path path : entries) {
                    identify(path, keys, found);
                    if (found.size() == keys.size()) break;
                }
            } catch (IOException | UncheckedIOException e) {
                // unlistable now: what was not found is treated as gone, its position kept
            }
            return found;
        }

        private static void identify(Path path, Set<FileKey> keys, Map<FileKey, Path> found) {
            try {
                if (!Files.isRegularFile(path, LinkOption.NOFOLLOW_LINKS)) return;
                FileKey key = FileKey.of(path);
                if (keys.contains(key)) found.putIfAbsent(key, path);
            } catch (IOException e) {
                // gone or unreadable: not the one
            }
        }
    }

    // =============================================================================================
    // Tail: one file being shipped. It owns its reads: opening, reading a turn, committing what
    // stdout accepted, reopening after its handle was given back, and closing.
    // =============================================================================================

    /** Where a tail stands in its file: everything before offset has been accepted by stdout. */
    record Checkpoint(Fingerprint fingerprint, long offset, boolean skippingLongLine, Marker marker) {
        static final Checkpoint START = new Checkpoint(Fingerprint.EMPTY, 0, false, Marker.NONE);

        Checkpoint withFingerprint(Fingerprint now) { return new Checkpoint(now, offset, skippingLongLine, marker); }

        Checkpoint withMarker(Marker now) { return new Checkpoint(fingerprint, offset, skippingLongLine, now); }

        Checkpoint advancedTo(long newOffset, boolean skipping) {
            return new Checkpoint(fingerprint, newOffset, skipping, marker);
        }

        /**
         * Where a new tail starts, as one decision (after Vector's checkpoint-or-fallback): its saved
         * checkpoint if that still describes this file, else the last line with --start-at tail for a
         * file found at startup, else byte 0. A saved row that turns out to be another file's (a
         * reused inode) is retired, so a compressed copy of that file is still recognised.
         */
        static Checkpoint startOf(String name, FileKey key, long born, FileChannel channel, boolean startAtEnd,
                                  Tail.Shared shared) throws IOException {
            Positions.Entry saved = shared.positions().get(key);
            long size = channel.size();
            Checkpoint from = START;
            if (saved != null && !Births.same(saved.born(), born)) {
                // Same inode, maybe the same first bytes too (a new file written like the old one):
                // only its birth tells, and without that check its lines up to the offset were lost.
                Log.debug(name + " has the inode of " + saved.path().getFileName()
                        + " but was created after it: a new file, read from the start");
                shared.positions().retire(key);
            } else if (saved != null && !saved.compressed() && saved.fingerprint().matches(channel)) {
                Checkpoint was = saved.checkpoint();
                if (size >= was.offset() && was.marker().stillBefore(channel, was.offset())) {
                    from = was;
                    Log.debug("resuming " + name + " at byte " + was.offset());
                } else {
                    Log.warn(name + " was truncated since its position was saved; reading it from the start");
                }
            } else if (saved != null) {
                Log.debug(name + " has the inode of " + saved.path().getFileName()
                        + " but other first bytes: a new file, read from the start");
                shared.positions().retire(key);
            } else if (startAtEnd) {
                from = atLastLine(channel, size, shared.maxLineBytes());
            }
            return from.withFingerprint(Fingerprint.read(channel));
        }

        /**
         * Does a file with these first bytes, this length and this checksum of the bytes before
         * our offset ({@code crcBeforeOffset}, null if unknown) hold everything shipped up to
         * here, so that it is a copy of this file? The one rule for copies, compressed (Archives)
         * or plain (Copies), on evidence a look-alike (a shared banner) cannot fake: the same first
         * bytes, the same bytes just before the offset, and at least that long.
         */
        boolean isHeldBy(byte[] head, int headLength, long length, Long crcBeforeOffset) {
            if (fingerprint.length() == 0 || !fingerprint.matchesStartOf(head, headLength) || length < offset) {
                return false;
            }
            if (marker.length() == 0) return offset <= fingerprint.length();
            return crcBeforeOffset != null && crcBeforeOffset == marker.crc();
        }

        /**
         * With --start-at tail: the start of the last, unfinished line, or the end if all lines are
         * whole; inside a cut line when the last one is longer than the limit.
         */
        static Checkpoint atLastLine(FileChannel channel, long size, int maxLineBytes) throws IOException {
            long offset = lastLineStart(channel, size, maxLineBytes);
            boolean insideCutLine = offset == size && size > 0 && !endsWithNewline(channel, size);
            return START.advancedTo(offset, insideCutLine);
        }

        private static long lastLineStart(FileChannel channel, long size, int maxLineBytes) throws IOException {
            byte[] chunk = new byte[LineReader.CHUNK];
            long end = size;
            long lowest = Math.max(0, size - maxLineBytes - 1L);
            while (end > lowest) {
                int length = (int) Math.min(chunk.length, end - lowest);
                long from = end - length;
                int got = readAt(channel, chunk, length, from);
                for (int i = got - 1; i >= 0; i--) {
                    if (chunk[i] == '\n') return from + i + 1;
                }
                end = from;
            }
            return lowest == 0 ? 0 : size;
        }

        private static boolean endsWithNewline(FileChannel channel, long size) throws IOException {
            byte[] last = new byte[1];
            return readAt(channel, last, 1, size - 1) == 1 && last[0] == '\n';
        }
    }

    /**
     * One followed file as the loop sees it: the names it goes by, whether its name still leads to
     * it, and how far it was shipped ({@link #commit} moves that once stdout took the lines). How its bytes are read
     * depends on its kind: a {@link PlainTail} follows a file that may still grow, be truncated or
     * be replaced; an {@link ArchiveTail} reads a complete .gz once.
     */
    abstract static sealed class Tail permits PlainTail, ArchiveTail {
        /** What every tail reads with; passed once, so a tail can own its reads without owning these. */
        record Shared(LineReader reader, Sink sink, Descriptors descriptors, Scanner scanner, Positions positions,
                      int maxLineBytes, Births births, Metrics metrics, Copies copies) {}

        final FileKey key;
        final boolean compressed;
        final Shared shared;
        /** The name it goes by (for messages and output), and the in-directory file opened for it. */
        Path path;
        Path source;
        private Sink.Origin origin;
        /** Every byte before at.offset() has been accepted by stdout; a line start unless skipping. */
        Checkpoint at = Checkpoint.START;
        /** When the file was created (Births), part of its identity where the file system says. */
        long born = Births.UNKNOWN;
        /** When its name stopped leading to it (renamed away or deleted); 0 while it still does. */
        private long goneSinceNanos;
        private long lastGrowthNanos = System.nanoTime();
        /** The file's size when last looked at (of an archive, its decompressed length). */
        long size;
        private long cutLines;
        private boolean committed;
        /** Renamed away, then found under its new name: it can be reopened there. */
        boolean foundElsewhere;
        /** Deleted by LogShip itself (--remove-after): once closed, its position is of no use. */
        private boolean removed;

        Tail(FileKey key, ScannedFile file, boolean compressed, Shared shared) {
            this.key = key;
            this.path = file.path();
            this.source = file.source();
            this.compressed = compressed;
            this.shared = shared;
        }

        String name() { return path.getFileName().toString(); }

        /** The directory entry it goes by, if that entry is the file itself (not a symlink to it); else null. */
        Path entryPath() { return path.equals(source) ? path : null; }

        boolean renamedAwayOrDeleted() { return goneSinceNanos != 0; }

        /** The scanner found this file (again) under this name. */
        void foundAt(ScannedFile file) {
            if (!path.equals(file.path())) Log.debug(name() + " is now " + file.path().getFileName());
            path = file.path();
            source = file.source();
            goneSinceNanos = 0;
            foundElsewhere = false;
        }

        /** Its name no longer leads to it: renamed away or deleted. */
        void lostItsName() {
            goneSinceNanos = System.nanoTime();
            if (compressed) return;
            Log.debug(name() + " was renamed away or deleted; reading it to its end");
            shared.metrics().filesRotated.incrementAndGet();
        }

        abstract boolean hasHandle();

        /**
         * Found under another name (renamed away): read on there, and reopened by that name when
         * due if its handle was given back. Its lines name the file they now come from.
         */
        void movedTo(Path now) {
            if (!path.equals(now)) Log.debug(name() + " is now " + now.getFileName() + "; reading it to its end");
            path = now;
            source = now;
            foundElsewhere = true;
        }

        /** Bytes seen in the file that were never shipped (an unfinished last line, at least). */
        long unreadBytes() { return Math.max(0, size - at.offset()); }

        boolean goneAndQuietFor(long quietNanos) {
            long now = System.nanoTime();
            return renamedAwayOrDeleted() && now - goneSinceNanos >= quietNanos && now - lastGrowthNanos >= quietNanos;
        }

        /** What the file's first bytes are now (they may have grown or been rewritten); null if unreadable. */
        abstract Fingerprint fingerprintNow();

        /** True once after each commit: the positions table is behind. */
        boolean takeCommitted() {
            boolean was = committed;
            committed = false;
            return was;
        }

        Checkpoint checkpoint() { return at; }

        Positions.Entry entry() {
            return new Positions.Entry(key, compressed, at, System.currentTimeMillis(), path, born);
        }

        /**
         * One turn on this file: at most Shipper.TURN_BYTES, never stopping inside a line. True when
         * the turn ran out before the file did. A file that cannot be read now is closed and retried.
         */
        boolean readTurn(Turn turn) throws IOException {
            try {
                return readTurnOrThrow(turn);
            } catch (StdoutFailed e) {
                throw e;
            } catch (IOException e) {
                unreadable(e, "; will retry");
                close();
                return false;
            }
        }

        /** The kind's own reading; an IOException means the file cannot be read now. */
        abstract boolean readTurnOrThrow(Turn turn) throws IOException;

        /**
         * LogShip deleted this file (--remove-after): it is read through its handle until quiet for
         * --rotate-wait, like any deleted file, and then forgotten.
         */
        void removedByLogShip() {
            removed = true;
            goneSinceNanos = System.nanoTime();
        }

        boolean removed() { return removed; }

        /** Every byte of the file, at the size it has now, has been accepted by stdout. */
        abstract boolean shippedToEnd(long sizeNow);

        /**
         * Holds a handle on the file, reopening it if it was given back: a file about to be deleted
         * is read through it afterwards. False if the name no longer leads to this file.
         */
        abstract boolean holdOpen() throws IOException;

        /** Stdout accepted the lines: only now may the offset move past them. */
        void commit(Progress progress) throws IOException {
            shared.sink().flush();
            if (progress.offset() > at.offset()) lastGrowthNanos = System.nanoTime();
            at = at.advancedTo(progress.offset(), progress.skippingLongLine());
            if (progress.cut() > 0) {
                cutLines += progress.cut();
                Log.warnOnce("cut:" + key, name() + ": a line longer than " + shared.maxLineBytes()
                        + " bytes was cut at that length and its rest dropped (" + cutLines + " so far in this file)");
            }
            committed = true;
        }

        Sink.Origin origin() {
            if (origin == null || !origin.path().equals(path)) origin = shared.sink().originOf(path);
            return origin;
        }

        /** Size and offset for the lag gauges, taken together. */
        void sample() { shared.metrics().sample(key, name(), size, at.offset()); }

        void unreadable(IOException e, String outlook) {
            if (Log.warnOnce("read:" + name(), "cannot read " + name() + ": " + reason(e) + outlook)) {
                shared.metrics().fileError(Metrics.FileError.UNREADABLE);
            }
        }

        abstract void close();
    }

    /**
     * A plain file's tail: read through a handle that is given back when over the descriptor budget
     * and reopened when the file changes (then checked for a reused inode); a truncated file is read
     * again from 0, after the copy a copytruncate left of it; a line still being written is held.
     */
    static final class PlainTail extends Tail {
        /** Null while closed to save descriptors; reopened by path when the file changes. */
        private FileChannel channel;
        /** The bytes from the offset up to here hold no line end: a line still being written. */
        private long noLineEndBefore;
        /** When LogShip began reading the file's current content: a copy of it cannot be older. */
        private long contentSinceMillis = System.currentTimeMillis();
        /** Truncated by copytruncate: its copy, shipped from the old offset before the file is read from 0. */
        private Copies.Copy copy;

        private PlainTail(ScannedFile file, Shared shared) { super(file.key(), file, false, shared); }

        /**
         * A plain file's tail, starting where its saved position says if that position is still
         * valid, at the last line's start with --start-at tail, or else at byte 0. Null if the file
         * cannot be opened now (the next scan tries again).
         */
        static PlainTail start(ScannedFile file, FileChannel pinned, boolean startAtEnd, Shared shared) {
            PlainTail tail = new PlainTail(file, shared);
            if (pinned != null) {
                tail.channel = pinned;
                shared.descriptors().countPinned();
            }
            FileChannel channel = pinned != null ? pinned : tail.open();
            if (channel == null) return null;
            try {
                tail.born = shared.births().of(tail.source, tail.key);
                tail.at = Checkpoint.startOf(tail.name(), tail.key, tail.born, channel, startAtEnd, shared);
                tail.size = file.size();
                tail.sample();
                Log.debug("following " + tail.name() + " from byte " + tail.at.offset());
                tail.idle(); // thousands of files at startup must not hold thousands of descriptors
                return tail;
            } catch (IOException e) {
                tail.unreadable(e, "; will retry");
                tail.close();
                return null;
            }
        }

        @Override
        boolean hasHandle() { return channel != null; }

        @Override
        Fingerprint fingerprintNow() {
            if (channel == null) return at.fingerprint();
            try {
                return Fingerprint.read(channel);
            } catch (IOException e) {
                return null;
            }
        }

        @Override
        boolean readTurnOrThrow(Turn turn) throws IOException {
            if (copy != null) return readCopyTurn(turn);
            FileChannel file = channel != null ? channel : reopen();
            if (file == null) return false;
            long seen = size;
            size = file.size();
            // The marker is checked even when the size is unchanged: a file truncated and rewritten to
            // exactly its old length would otherwise pass for unchanged until it grew again.
            if (truncatedSinceRead(file, size) && truncatedWithACopy(seen)) {
                return readCopyTurn(turn);
            }
            sample();
            ByteSource bytes = file::read;
            if (size <= at.offset() || stillTheSamePartialLine(bytes, size, turn)) {
                idle();
                return false;
            }
            long from = at.offset();
            Progress progress = shared.reader().read(bytes, from, at.skippingLongLine(), turn, origin(), shared.sink());
            commit(progress);
            noLineEndBefore = progress.endsInPartialLine() ? progress.readTo() : 0;
            sample();
            at = at.withMarker(Marker.before(file, at.offset()));
            // Retake the fingerprint while reading the file's first KiB: it may have been rewritten at
            // offset 0 (nothing shipped, so no marker to notice), and a short one is widened.
            if (from < Fingerprint.SIZE || at.fingerprint().length() < Fingerprint.SIZE) {
                at = at.withFingerprint(Fingerprint.read(file));
            }
            if (!progress.moreToRead()) idle();
            return progress.moreToRead();
        }

        /** The bytes before the offset are gone: truncated (and maybe written again) since the last read. */
        private boolean truncatedSinceRead(FileChannel file, long size) throws IOException {
            return size < at.offset() || !at.marker().stillBefore(file, at.offset());
        }

        /**
         * Its checkpoint may not describe what its file holds now: its copy is being shipped, or the
         * file was truncated since the last read and the next read has yet to notice. Until then what
         * was shipped from it cannot tell whether an archive is a copy of it.
         */
        boolean checkpointOutdated() {
            if (copy != null) return true;
            if (channel == null) return false; // no handle: its reopen checks the file again
            try {
                return truncatedSinceRead(channel, channel.size());
            } catch (IOException e) {
                return true; // its own read finds out; until then not knowing must not ship an archive twice
            }
        }

        /**
         * Found truncated: true if the copy a copytruncate left holds what was not shipped yet (it is
         * shipped first); else the file is read again from 0, and what was seen but not shipped is lost.
         */
        private boolean truncatedWithACopy(long seen) {
            shared.metrics().filesRotated.incrementAndGet();
            copy = shared.copies().find(key, at, contentSinceMillis);
            if (copy != null) {
                Log.info(name() + " was truncated; shipping the " + (copy.length() - at.offset()) + " bytes its copy "
                        + copy.path().getFileName() + " holds past byte " + at.offset() + " first, then reading it"
                        + " again from the start");
                size = copy.length();
                return true;
            }
            Log.warn(name() + " was truncated; reading it again from the start. No copy of it was found in the"
                    + " directory, so any lines written between the last read and the truncate are lost (with"
                    + " logrotate's copytruncate and compress, add delaycompress)");
            // What was seen but not yet shipped is gone (more may have been, unseen).
            shared.metrics().unread(Metrics.Unread.TRUNCATED, seen - at.offset());
            readAgainFromStart();
            return false;
        }

        /**
         * A turn on the copy of this truncated file: its bytes past the old offset, to its end (a last
         * line without its newline too: the copy never grows). Then the file itself, from 0.
         */
        private boolean readCopyTurn(Turn turn) throws IOException {
            FileChannel from = copy.channel();
            Progress progress = shared.reader().read(from::read, at.offset(), at.skippingLongLine(),
                    turn.shippingTrailingPartials(), shared.sink().originOf(copy.path()), shared.sink());
            commit(progress);
            // Kept in step, so that a tail closed half way finds the same copy again by its rule.
            at = at.withMarker(Marker.before(from, at.offset()));
            if (progress.moreToRead()) return true;
            shared.copies().shippedToEnd(copy, at);
            Descriptors.closeQuietly(from);
            copy = null;
            readAgainFromStart();
            return true; // the truncated file is read next, from its start
        }

        /** Truncated: what the file holds from now on is new content. */
        private void readAgainFromStart() {
            at = Checkpoint.START;
            noLineEndBefore = 0;
            contentSinceMillis = System.currentTimeMillis();
        }

        /** Its file's bytes went out as the copy of another file: a tail that shipped none of them skips them. */
        void shippedAsACopyTo(Checkpoint end) {
            if (at.offset() == 0 && copy == null) at = end;
        }

        @Override
        boolean shippedToEnd(long sizeNow) { return copy == null && at.offset() == sizeNow; }

        @Override
        boolean holdOpen() throws IOException { return channel != null || reopen() != null; }

        /**
         * A line still being written is not read again from its start at every change (that costs
         * the square of its length): only the bytes that arrived since are searched for its end,
         * until it ends or reaches the line limit.
         */
        private boolean stillTheSamePartialLine(ByteSource bytes, long size, Turn turn) throws IOException {
            if (noLineEndBefore <= at.offset() || turn.shipTrailingPartial()
                    || size - at.offset() > shared.maxLineBytes()) {
                return false;
            }
            if (shared.reader().hasNewline(bytes, noLineEndBefore, size)) return false;
            noLineEndBefore = size;
            return true;
        }

        /**
         * Caught up with the file: give its descriptor back if we hold too many. Not for a file
         * renamed away or deleted whose whereabouts are unknown: its handle is the only way to it.
         */
        private void idle() {
            if (shared.descriptors().overBudget() && (!renamedAwayOrDeleted() || foundElsewhere)) close();
        }

        /** Opens the file by its name, if that name still leads to this file. */
        private FileChannel open() {
            try {
                channel = shared.descriptors().open(source, key);
                if (channel != null) Log.forget("read:" + name());
                return channel;
            } catch (NoSuchFileException e) {
                return null;
            } catch (IOException e) {
                unreadable(e, "; skipping it until it can be read");
                return null;
            }
        }

        /**
         * Reopens a tail closed to save descriptors. If its name no longer leads to it, the next
         * rescan or event batch finds where it went.
         */
        private FileChannel reopen() throws IOException {
            if (open() == null) return null;
            long bornNow = shared.births().of(source, key);
            if (!Births.same(born, bornNow) || !at.fingerprint().matches(channel)) {
                // The inode was freed while we held no handle and a new file got it: a new file.
                Log.debug(name() + " is a new file that reuses an old inode; reading it from the start");
                shared.positions().retire(key);
                at = Checkpoint.START;
                noLineEndBefore = 0;
                born = bornNow;
            } else if (born == Births.UNKNOWN) {
                born = bornNow;
            }
            return channel;
        }

        @Override
        void close() {
            if (channel != null) shared.descriptors().released();
            Descriptors.closeQuietly(channel);
            if (copy != null) Descriptors.closeQuietly(copy.channel());
            channel = null;
            copy = null;
        }
    }

    /**
     * The open-file budget, and the one way files are opened. Half the descriptor limit, leaving the
     * rest to the JVM, stdout and the watcher's pinned new files; tails past the budget give their
     * handle back when caught up and reopen it when the file changes.
     */
    static final class Descriptors {
        private final int budget;
        private int open;
        /** Files opened by tails in all. */
        long opens;

        Descriptors(int budget) { this.budget = budget; }

        /** How many handles tails may hold; about as many again are left for pinned new files. */
        int budget() { return budget; }

        /** Read from /proc rather than through the management beans, which cost ~4 MiB of memory. */
        static Descriptors fromProcessLimit() {
            long limit;
            try (var lines = Files.lines(Path.of("/proc/self/limits"))) {
                limit = lines.filter(l -> l.startsWith("Max open files"))
                        .map(l -> l.substring("Max open files".length()).trim().split("\\s+")[0])
                        .filter(soft -> soft.matches("\\d+")).mapToLong(Long::parseLong).findFirst().orElse(1024);
            } catch (IOException | UncheckedIOException e) {
                limit = 1024; // not Linux: a conservative guess
            }
            return new Descriptors((int) Math.max(8, Math.min(4096, (limit - 64) / 2)));
        }

        /**
         * Opens a file by name and keeps the handle only if the name still leads to the expected file
         * afterwards: a rotation between looking and opening would otherwise hand over the next file
         * under that name. Null when it does not. Not counted: the watcher thread uses it too, and a
         * tail counts the handle when it takes it ({@link #countPinned}).
         */
        static FileChannel openIfStill(Path path, FileKey expected) throws IOException {
            try {
                return openLater(path, expected).get();
            } catch (ExecutionException e) {
                if (e.getCause() instanceof UncheckedIOException io) throw io.getCause();
                if (e.getCause() instanceof TimeoutException) {
                    throw new IOException("opening it blocked for " + formatDuration(OPEN_TIMEOUT)
                            + ", so it is no longer a regular file (a FIFO?); " + stuckOpens.get()
                            + " open(s) abandoned so far");
                }
                throw new IOException(e.getCause());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while opening");
            }
        }

        static final Duration OPEN_TIMEOUT = Duration.ofSeconds(1);
        private static final ExecutorService OPENER = Executors.newCachedThreadPool(task -> {
            Thread thread = new Thread(task, "logship-open");
            thread.setDaemon(true);
            return thread;
        });
        static final AtomicInteger stuckOpens = new AtomicInteger();

        /**
         * The one place a log file is opened: never through a symlink (what was checked is what is
         * read), and never waited for longer than OPEN_TIMEOUT. Opening a FIFO swapped in for a file
         * blocks until a writer comes, and Java can neither open without blocking nor interrupt that
         * open, so it runs on an opener thread; a stuck one is abandoned (and counted), and the handle
         * closed should a writer ever free it. The watcher does not wait at all: it takes the
         * handle when it comes.
         */
        static void inBackground(Runnable task) { OPENER.execute(task); }

        static CompletableFuture<FileChannel> openLater(Path path, FileKey expected) {
            CompletableFuture<FileChannel> result = new CompletableFuture<>();
            CompletableFuture.supplyAsync(() -> {
                try {
                    FileChannel channel = FileChannel.open(path, StandardOpenOption.READ, LinkOption.NOFOLLOW_LINKS);
                    if (expected.equals(keyOrNull(path))) return channel;
                    channel.close();
                    return null;
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            }, OPENER).whenComplete((channel, error) -> {
                boolean taken = error == null ? result.complete(channel) : result.completeExceptionally(error.getCause());
                if (!taken) closeQuietly(channel); // it timed out: nobody else will close it
            });
            result.orTimeout(OPEN_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS).exceptionally(error -> {
                if (error instanceof TimeoutException) stuckOpens.incrementAndGet();
                return null;
            });
            return result;
        }

        private static FileKey keyOrNull(Path path) {
            try {
                return FileKey.of(path);
            } catch (IOException e) {
                return null;
            }
        }

        FileChannel open(Path path, FileKey expected) throws IOException {
            FileChannel channel = openIfStill(path, expected);
            if (channel != null) {
                open++;
                opens++;
            }
            return channel;
        }

        /** An archive's decompressed stream; fails if the name no longer leads to the archive checked. */
        InputStream openArchive(Path path, FileKey expected) throws IOException {
            InputStream in = openArchiveStream(path, expected);
            open++;
            return in;
        }

        static InputStream openArchiveStream(Path path, FileKey expected) throws IOException {
            FileChannel channel = openIfStill(path, expected);
            if (channel == null) throw new NoSuchFileException(path.toString(), null, "replaced by another file");
            return new GZIPInputStream(Channels.newInputStream(channel), LineReader.CHUNK);
        }

        /** A tail took over a handle the watcher opened. */
        void countPinned() { open++; }

        void released() { open--; }

        boolean overBudget() { return open > budget; }

        static void closeQuietly(Closeable handle) {
            if (handle == null) return;
            try {
                handle.close();
            } catch (IOException e) {
                // a read-only handle: nothing to lose
            }
        }
    }

    /**
     * gzip archives: a .gz is shipped only once its stream is complete. If it is a compressed copy
     * of a file already shipped (that file, rotated and compressed), only what lies past that
     * file's offset is new. "A copy" needs evidence a look-alike cannot fake: see {@link
     * ArchiveCheck.Complete#isCopyOf}.
     */
    static final class Archives {
        /** A file this archive might be a copy of: a live tail, or a position kept for a gone file. */
        record Original(String name, Checkpoint at, Tail live) {}

        private final Positions positions;
        private final Tail.Shared shared;
        /** .gz files still being written or found corrupt: the size at which we last looked, and
         *  for one being written, its stream inflated as far as it went. */
        private final Map<FileKey, Held> onHold = new HashMap<>();
        static final int MAX_GROWING = 8;
        /** Every byte inflated to check archives, for the cost of checking to be measured. */
        long bytesInflated;

        /** An archive that could not be shipped yet. */
        static final class Held {
            long size;
            GrowingArchive growing;

            Held(long size) { this.size = size; }
        }
        private final Metrics metrics;

        Archives(Positions positions, Tail.Shared shared, Metrics metrics) {
            this.positions = positions;
            this.shared = shared;
            this.metrics = metrics;
        }

        /** A tail for a complete archive, or null while it must wait (or is corrupt). */
        Tail start(ScannedFile file, Collection<Tail> tails) {
            Held held = onHold.get(file.key());
            if (held != null && held.size == file.size()) return null; // unchanged since we last looked
            if (held != null && held.growing != null && !grownComplete(held, file)) return null;
            List<Original> originals = new ArrayList<>();
            ArchiveCheck.Complete archive = checkedWhole(file, tails, originals);
            if (archive == null) return null;
            String name = file.path().getFileName().toString();
            ArchiveTail tail = new ArchiveTail(file, Fingerprint.of(archive.head(), archive.headLength()), shared);
            Positions.Entry saved = positions.get(file.key());
            // This very archive, shipped in part before a restart. An empty fingerprint proves
            // nothing: a replaced archive may have the old one's inode.
            if (saved != null && saved.compressed() && saved.fingerprint().length() > 0
                    && saved.fingerprint().matchesStartOf(archive.head(), archive.headLength())
                    && archive.length() >= saved.offset()) {
                tail.resumeAt(saved.offset(), false, archive.length());
                return tail;
            }
            if (saved != null) positions.retire(file.key()); // its inode went to this archive
            Original live = originals.stream().filter(o -> o.live() != null && isLiveOriginal(o, archive))
                    .findFirst().orElse(null);
            if (live != null) {
                Log.debug("holding " + name + " until " + live.name() + ", its uncompressed original, is done");
                return null;
            }
            Original shipped = originals.stream().filter(o -> o.live() == null && archive.isCopyOf(o.at()))
                    .max(Comparator.comparingLong((Original o) -> o.at().offset())).orElse(null);
            if (shipped != null) {
                Log.info(name + " is " + shipped.name() + " compressed; shipping only the "
                        + (archive.length() - shipped.at().offset()) + " bytes not shipped before");
                tail.resumeAt(shipped.at().offset(), shipped.at().skippingLongLine(), archive.length());
                return tail;
            }
            originals.stream().filter(o -> o.at().offset() > 0).findFirst().ifPresent(o -> Log.warnOnce(
                    "lookalike:" + file.key() + ":" + file.size(), name + " starts like " + o.name()
                    + " but does not hold the bytes shipped from it, so it is not a copy of it: shipping it whole"));
            tail.resumeAt(0, false, archive.length());
            return tail;
        }

        /**
         * The archive, inflated whole, with the files it may be a copy of added to {@code originals};
         * or null while it cannot be shipped: still being written or corrupt (held until it changes),
         * or unreadable now.
         */
        private ArchiveCheck.Complete checkedWhole(ScannedFile file, Collection<Tail> tails, List<Original> originals) {
            ArchiveCheck check;
            try {
                check = ArchiveCheck.of(file, (head, headLength) -> {
                    originals.addAll(originalsStartingLike(head, headLength, tails));
                    return originals.stream().map(Original::at).toList();
                });
            } catch (IOException e) {
                if (Log.warnOnce("read:" + file.path(), "cannot read " + file.path().getFileName() + ": " + reason(e))) {
                    metrics.fileError(Metrics.FileError.UNREADABLE);
                }
                return null;
            }
            String name = file.path().getFileName().toString();
            if (check instanceof ArchiveCheck.Incomplete incomplete) {
                bytesInflated += incomplete.inflated();
                Log.debug(name + " is not a complete gzip stream yet; waiting for its writer");
                hold(file).growing = growing(file);
                return null;
            }
            if (check instanceof ArchiveCheck.Corrupt corrupt) {
                if (Log.warnOnce("corrupt:" + file.key() + ":" + file.size(), "skipping " + name
                        + ": not a valid gzip file (" + corrupt.why() + ")")) {
                    metrics.fileError(Metrics.FileError.CORRUPT_ARCHIVE);
                    metrics.unread(Metrics.Unread.CORRUPT_ARCHIVE, file.size());
                }
                hold(file);
                return null;
            }
            ArchiveCheck.Complete archive = (ArchiveCheck.Complete) check;
            bytesInflated += archive.length();
            release(file.key());
            return archive;
        }

        /** Archives no longer in the directory need no hold. */
        void forgetAllBut(Set<FileKey> present) {
            for (FileKey key : new ArrayList<>(onHold.keySet())) {
                if (!present.contains(key)) release(key);
            }
        }

        private Held hold(ScannedFile file) {
            release(file.key());
            Held held = new Held(file.size());
            onHold.put(file.key(), held);
            return held;
        }

        private void release(FileKey key) {
            Held held = onHold.remove(key);
            if (held != null) Descriptors.closeQuietly(held.growing);
        }

        /**
         * An archive still being written is inflated once, as it grows, instead of from its start at
         * every change (the square of its length). Bounded: past MAX_GROWING they are re-checked whole.
         */
        private GrowingArchive growing(ScannedFile file) {
            if (onHold.values().stream().filter(h -> h.growing != null).count() >= MAX_GROWING) return null;
            try {
                GrowingArchive growing = new GrowingArchive(Descriptors.openArchiveStream(file.source(), file.key()));
                bytesInflated += growing.inflateWhatArrived();
                return growing;
            } catch (IOException e) {
                return null; // the whole check runs again next time
            }
        }

        /** Inflates what arrived since; true once the stream ends (then it is checked whole, once). */
        private boolean grownComplete(Held held, ScannedFile file) {
            held.size = file.size();
            try {
                long inflated = held.growing.inflateWhatArrived();
                bytesInflated += Math.max(0, inflated);
                if (inflated < 0) {
                    return false;
                }
            } catch (IOException e) {
                // A surprise mid-stream (a torn trailer read, a replaced file): the whole check decides.
            }
            Descriptors.closeQuietly(held.growing);
            held.growing = null;
            return true;
        }

        private List<Original> originalsStartingLike(byte[] head, int headLength, Collection<Tail> tails) {
            List<Original> found = new ArrayList<>();
            for (Tail t : tails) {
                // What the open file starts with now: it may have grown since its last read.
                Fingerprint now = t.compressed ? null : t.fingerprintNow();
                if (now != null && now.length() > 0 && now.matchesStartOf(head, headLength)) {
                    found.add(new Original(t.name(), t.checkpoint(), t));
                }
            }
            for (Positions.Entry e : positions.all()) {
                Fingerprint first = e.fingerprint();
                if (!e.compressed() && first.length() > 0 && first.matchesStartOf(head, headLength)) {
                    found.add(new Original(e.path().getFileName().toString(), e.checkpoint(), null));
                }
            }
            return found;
        }

        /**
         * A live file is this archive's original only if the archive holds what was shipped from it
         * so far (if anything was) and the file is at least as long as the archive's head, as it
         * would be: a shorter file that merely starts the same way (a line half written) must not
         * hold the archive back. A file truncated and written again since its tail's last read
         * (copytruncate, then rotate and compress, all between two polls) holds the archive back
         * until that read: the archive may hold the new content, which the tail ships from 0, and the
         * checkpoint of the old content cannot tell; judged on it, the archive would pass for an
         * unrelated file and its lines ship twice. The next read brings the checkpoint up to date.
         */
        private static boolean isLiveOriginal(Original original, ArchiveCheck.Complete archive) {
            if (original.live() instanceof PlainTail plain && plain.checkpointOutdated()) return true;
            Fingerprint now = original.live().fingerprintNow();
            return now != null && now.length() >= Math.min(Fingerprint.SIZE, archive.headLength())
                    && (original.at().offset() == 0 || archive.isCopyOf(original.at()));
        }
    }

    /**
     * A complete .gz archive's tail; Archives decides where it starts. Its decompressed stream stays
     * open at the offset between turns (a stream cannot seek back), and it is read once to its end.
     */
    static final class ArchiveTail extends Tail {
        private ArchiveStream inflated;
        private boolean finished;
        // The archive's size and time when it was found complete.
        private final long archiveSize;
        private final long archiveModifiedMicros;

        ArchiveTail(ScannedFile file, Fingerprint headOfContent, Shared shared) {
            super(file.key(), file, true, shared);
            archiveSize = file.size();
            archiveModifiedMicros = modifiedMicros(file.path());
            at = Checkpoint.START.withFingerprint(headOfContent);
        }

        /** Archives never change; one that did is another archive that got this inode. */
        boolean sameArchive(ScannedFile file) {
            return file.size() == archiveSize && modifiedMicros(file.path()) == archiveModifiedMicros;
        }

        /** An archive that was shipped before (or whose original was) starts past what went out. */
        void resumeAt(long offset, boolean skippingLongLine, long contentLength) {
            at = at.advancedTo(offset, skippingLongLine);
            finished = offset >= contentLength;
            size = contentLength;
            sample();
        }

        @Override
        boolean readTurnOrThrow(Turn turn) throws IOException {
            if (finished) return false;
            if (inflated == null) {
                inflated = new ArchiveStream(shared.descriptors().openArchive(source, key));
                inflated.skip(at.offset());
            }
            // An archive's last line is whole even without a newline: nothing will ever be added.
            Progress progress = shared.reader().read(inflated, at.offset(), at.skippingLongLine(),
                    turn.shippingTrailingPartials(), origin(), shared.sink());
            commit(progress);
            sample();
            if (progress.moreToRead()) return true;
            finished = true;
            close();
            Log.debug("shipped the archive " + name());
            return false;
        }

        @Override
        boolean shippedToEnd(long sizeNow) { return finished && sizeNow == archiveSize; }

        /** Its stream is no handle to read on through: an archive that loses its name is dropped. */
        @Override
        boolean hasHandle() { return false; }

        @Override
        boolean holdOpen() { return true; }

        @Override
        Fingerprint fingerprintNow() { return at.fingerprint(); }

        @Override
        void close() {
            if (inflated != null) shared.descriptors().released();
            Descriptors.closeQuietly(inflated);
            inflated = null;
        }
    }

    /**
     * An archive's decompressed bytes as a ByteSource: read in order, with the bytes a turn did not
     * use kept to be read first next turn (a stream cannot go back).
     */
    static final class ArchiveStream implements ByteSource, Closeable {
        private final InputStream inflated;
        private byte[] kept = new byte[0];
        private int keptFrom;
        private byte[] scratch = new byte[0];

        ArchiveStream(InputStream inflated) { this.inflated = inflated; }

        void skip(long bytes) throws IOException { inflated.skipNBytes(bytes); }

        @Override
        public int read(ByteBuffer into, long position) throws IOException {
            int n = Math.min(into.remaining(), kept.length - keptFrom);
            into.put(kept, keptFrom, n);
            keptFrom += n;
            if (scratch.length < into.remaining()) scratch = new byte[into.remaining()];
            int inflatedBytes = inflated.readNBytes(scratch, 0, into.remaining());
            into.put(scratch, 0, inflatedBytes);
            return n + inflatedBytes;
        }

        @Override
        public void unread(ByteBuffer bytes) {
            byte[] rest = Arrays.copyOfRange(kept, keptFrom, kept.length);
            kept = new byte[bytes.remaining() + rest.length];
            System.arraycopy(rest, 0, kept, bytes.remaining(), rest.length);
            bytes.get(kept, 0, bytes.remaining());
            keptFrom = 0;
        }

        @Override
        public void close() throws IOException { inflated.close(); }
    }

    /** The verdict on a .gz file: ship it, wait for its writer, or give up on it. */
    sealed interface ArchiveCheck {
        /**
         * The whole stream inflates; head holds its first decompressed bytes, and markerCrcs, for
         * each candidate original, the checksum of the archive's bytes just before its offset.
         */
        record Complete(byte[] head, int headLength, long length, Map<Checkpoint, Long> markerCrcs)
                implements ArchiveCheck {
            /**
             * Is this archive a copy of a file that was shipped up to {@code original}? By the one
             * rule for copies, {@link Checkpoint#isHeldBy}. When in doubt it is not, and is shipped
             * whole: a duplicate is better than a loss.
             */
            boolean isCopyOf(Checkpoint original) {
                return original.isHeldBy(head, headLength, length, markerCrcs.get(original));
            }
        }

        record Incomplete(long inflated) implements ArchiveCheck {}

        record Corrupt(String why) implements ArchiveCheck {}

        /** Which checkpoints, of files starting like this head, to take the marker bytes of. */
        interface Candidates {
            List<Checkpoint> startingLike(byte[] head, int headLength);
        }

        /**
         * Inflates the whole file once, discarding the output, so a half-written archive is never
         * shipped half: only a stream that ends properly counts as complete. On the way it takes
         * the bytes before each candidate's offset, so isCopyOf needs no second pass.
         */
        static ArchiveCheck of(ScannedFile archive, Candidates candidates) throws IOException {
            byte[] head = new byte[Fingerprint.SIZE];
            byte[] chunk = new byte[LineReader.CHUNK];
            long length = 0;
            try (InputStream in = Descriptors.openArchiveStream(archive.source(), archive.key())) {
                int headLength = in.readNBytes(head, 0, head.length);
                MarkerBytes markers = new MarkerBytes(candidates.startingLike(head, headLength));
                markers.take(head, headLength, 0);
                length = headLength;
                for (int n; (n = in.read(chunk)) > 0; length += n) markers.take(chunk, n, length);
                return new Complete(head, headLength, length, markers.crcs());
            } catch (EOFException e) {
                return new Incomplete(length);
            } catch (ZipException e) {
                return new Corrupt(e.getMessage());
            }
        }
    }

    /**
     * A gzip stream read as its file grows. Inflating stops at the end of what has arrived (an
     * EOFException, which leaves the inflater ready for more input) and resumes there next time.
     */
    static final class GrowingArchive implements Closeable {
        private final InputStream inflated;
        private final byte[] scratch = new byte[LineReader.CHUNK];

        GrowingArchive(InputStream inflated) { this.inflated = inflated; }

        /** Bytes inflated now; negative (less the count) while the stream has not ended yet. */
        long inflateWhatArrived() throws IOException {
            long n = 0;
            try {
                for (int got; (got = inflated.read(scratch)) > 0; ) n += got;
                return n;
            } catch (EOFException e) {
                return -n - 1;
            }
        }

        @Override
        public void close() throws IOException { inflated.close(); }
    }

    /** Collects, from a stream read once, the bytes just before each checkpoint's offset. */
    static final class MarkerBytes {
        private final Map<Checkpoint, byte[]> windows = new HashMap<>();
        private final Map<Checkpoint, Integer> filled = new HashMap<>();

        MarkerBytes(List<Checkpoint> checkpoints) {
            for (Checkpoint c : checkpoints) {
                if (c.marker().length() > 0 && c.offset() >= c.marker().length()) {
                    windows.put(c, new byte[c.marker().length()]);
                    filled.put(c, 0);
                }
            }
        }

        /** The stream's bytes at [position, position + n). */
        void take(byte[] bytes, int n, long position) {
            for (Map.Entry<Checkpoint, byte[]> w : windows.entrySet()) {
                byte[] window = w.getValue();
                long from = w.getKey().offset() - window.length;
                long start = Math.max(from, position);
                long end = Math.min(w.getKey().offset(), position + n);
                if (start >= end) continue;
                System.arraycopy(bytes, (int) (start - position), window, (int) (start - from), (int) (end - start));
                filled.merge(w.getKey(), (int) (end - start), Integer::sum);
            }
        }

        Map<Checkpoint, Long> crcs() {
            Map<Checkpoint, Long> crcs = new HashMap<>();
            windows.forEach((c, window) -> {
                if (filled.get(c) == window.length) crcs.put(c, Checksum.of(window, window.length).crc());
            });
            return crcs;
        }
    }

    /**
     * copytruncate without loss. logrotate copies the file and then truncates it, so the lines
     * written between LogShip's last read and the truncate exist only in the copy, whose name the
     * pattern usually does not match. A tail that finds its file truncated asks here for the copy,
     * ships the copy's bytes from its old offset to the copy's end, and only then reads the
     * truncated file from 0. A copy logrotate already compressed (compress without delaycompress)
     * is not looked into: the README asks for delaycompress.
     */
    static final class Copies {
        /** A copy found and held open: what the tail ships from until its end. */
        record Copy(Path path, FileKey key, FileChannel channel, long length) {}

        /** File system clocks are coarse (a tick or so behind the wall clock): a copy's time may read that early. */
        static final long CLOCK_SLACK_MILLIS = 1000;

        private final Path directory;
        private final Positions positions;
        private final Births births;
        /** The Shipper's tails, read only: a copy already followed under its own name ships there. */
        private final Map<FileKey, Tail> tails;

        Copies(Path directory, Positions positions, Births births, Map<FileKey, Tail> tails) {
            this.directory = directory;
            this.positions = positions;
            this.births = births;
            this.tails = tails;
        }

        /**
         * The copy of a file that was shipped up to {@code at} and has just been found truncated:
         * among the directory's regular files (any name), the newest that holds everything shipped
         * ({@link Checkpoint#isHeldBy}) and was modified no earlier than {@code notBeforeMillis}, when
         * LogShip began reading the file's current content (an older look-alike is a copy of
         * something else). Null if there is none.
         */
        Copy find(FileKey truncated, Checkpoint at, long notBeforeMillis) {
            record Candidate(Path path, FileKey key, long modifiedMillis) {}
            List<Candidate> candidates = new ArrayList<>();
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
                for (Path path : entries) {
                    Map<String, Object> attrs;
                    try {
                        attrs = Files.readAttributes(path, "unix:dev,ino,size,lastModifiedTime,isRegularFile",
                                LinkOption.NOFOLLOW_LINKS);
                    } catch (IOException e) {
                        continue; // gone or unreadable: not the copy
                    }
                    FileKey key = new FileKey(((Number) attrs.get("dev")).longValue(), ((Number) attrs.get("ino")).longValue());
                    long modified = ((FileTime) attrs.get("lastModifiedTime")).toMillis();
                    Tail follower = tails.get(key);
                    if (!(Boolean) attrs.get("isRegularFile") || key.equals(truncated)
                            || (Long) attrs.get("size") < at.offset() || modified < notBeforeMillis - CLOCK_SLACK_MILLIS
                            || (follower != null && follower.checkpoint().offset() > 0)) {
                        continue;
                    }
                    candidates.add(new Candidate(path, key, modified));
                }
            } catch (IOException | UncheckedIOException e) {
                return null;
            }
            candidates.sort(Comparator.comparingLong(Candidate::modifiedMillis).reversed());
            for (Candidate c : candidates) {
                Copy copy = openIfCopy(c.path(), c.key(), at);
                if (copy != null) return copy;
            }
            return null;
        }

        private static Copy openIfCopy(Path path, FileKey key, Checkpoint at) {
            FileChannel channel = null;
            try {
                channel = Descriptors.openIfStill(path, key);
                if (channel == null) return null;
                byte[] head = new byte[Fingerprint.SIZE];
                int headLength = readAt(channel, head, head.length, 0);
                long length = channel.size();
                int markerLength = at.marker().length();
                Long crcBefore = markerLength == 0 || length < at.offset() ? null
                        : Checksum.at(channel, at.offset() - markerLength, markerLength).crc();
                if (at.isHeldBy(head, headLength, length, crcBefore)) return new Copy(path, key, channel, length);
            } catch (IOException e) {
                // unreadable: not the copy
            }
            Descriptors.closeQuietly(channel);
            return null;
        }

        /**
         * The copy's remainder went out: the copy is never shipped again as a file of its own, should
         * its name match. A tail that already follows it but has shipped nothing moves to its end,
         * and a tail started for it later (or after a restart) resumes there from its position.
         */
        void shippedToEnd(Copy copy, Checkpoint end) throws IOException {
            Checkpoint whole = new Checkpoint(Fingerprint.read(copy.channel()), end.offset(), end.skippingLongLine(),
                    Marker.before(copy.channel(), end.offset()));
            positions.put(new Positions.Entry(copy.key(), false, whole, System.currentTimeMillis(), copy.path(),
                    births.of(copy.path(), copy.key())));
            Tail follower = tails.get(copy.key());
            if (follower instanceof PlainTail plain) plain.shippedAsACopyTo(whole);
        }
    }

    // =============================================================================================
    // Identity: is this the same file as before, whatever its name?
    // =============================================================================================

    /** Device and inode: stable across renames, but reused once a file is deleted. */
    record FileKey(long device, long inode) {
        /** Of the entry itself, never of what a symlink names. */
        static FileKey of(Path path) throws IOException {
            Map<String, Object> attrs = Files.readAttributes(path, "unix:dev,ino", LinkOption.NOFOLLOW_LINKS);
            return new FileKey(((Number) attrs.get("dev")).longValue(), ((Number) attrs.get("ino")).longValue());
        }
    }

    /**
     * When a file was created: with device and inode, it tells a file from a later one that got its
     * inode, even when both hold the same bytes. Linux reports it (statx) on ext4, xfs, btrfs and
     * tmpfs, and the JDK passes it on from 17.0.11; where either does not, creationTime() silently
     * returns the modification time, which changes with every write and would make every file look
     * new after each restart. So a device's birth times count only once proven real: by a probe file
     * whose modification time we set far from its birth, or by any file whose two times differ.
     */
    static final class Births {
        static final long UNKNOWN = 0;
        private final Set<Long> provenDevices = ConcurrentHashMap.newKeySet();

        /** Probes the directories we may write to (the positions file's, the JVM's temp directory). */
        static Births provenIn(Path positionsFile, Path tempDirectory) {
            Births births = new Births();
            if (positionsFile != null) births.probe(positionsFile.getParent());
            births.probe(tempDirectory);
            return births;
        }

        private void probe(Path directory) {
            Path probe = null;
            try {
                probe = createProbe(directory, ".logship-birth");
                Files.setLastModifiedTime(probe, FileTime.fromMillis(1_000_000_000_000L)); // 2001
                of(probe, FileKey.of(probe));
            } catch (IOException | UnsupportedOperationException | SecurityException e) {
                // unproven: the files themselves may still prove the device
            } finally {
                try {
                    if (probe != null) Files.deleteIfExists(probe);
                } catch (IOException e) {
                    // a leftover empty .tmp file harms nobody
                }
            }
        }

        /**
         * The birth time, in nanoseconds since the epoch, of the file this path leads to if it still
         * is the expected one: read by name, it could be the next file's after a rotation, and a
         * wrong birth saved would make the file look new after every restart. UNKNOWN where it
         * cannot be trusted.
         */
        long of(Path path, FileKey expected) {
            try {
                Map<String, Object> attrs = Files.readAttributes(path, "unix:dev,ino,creationTime,lastModifiedTime");
                long device = ((Number) attrs.get("dev")).longValue();
                if (!expected.equals(new FileKey(device, ((Number) attrs.get("ino")).longValue()))) return UNKNOWN;
                FileTime created = (FileTime) attrs.get("creationTime");
                if (!created.equals(attrs.get("lastModifiedTime"))) provenDevices.add(device);
                return provenDevices.contains(device) ? Math.max(UNKNOWN, created.to(TimeUnit.NANOSECONDS)) : UNKNOWN;
            } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
                return UNKNOWN;
            }
        }

        /** Unknown on either side proves nothing: then first bytes and offsets decide, as before. */
        static boolean same(long born, long other) { return born == UNKNOWN || other == UNKNOWN || born == other; }
    }

    /** A CRC32C over some bytes of a file, and how many bytes it covers: what both checks below read. */
    record Checksum(int length, long crc) {
        static Checksum of(byte[] bytes, int length) {
            CRC32C crc = new CRC32C();
            crc.update(bytes, 0, length);
            return new Checksum(length, crc.getValue());
        }

        /** Of the bytes at [position, position + length), or of fewer where the file ends sooner. */
        static Checksum at(FileChannel channel, long position, int length) throws IOException {
            byte[] bytes = new byte[length];
            return of(bytes, readAt(channel, bytes, length, position));
        }
    }

    /**
     * A checksum of a file's first bytes (up to {@link #SIZE}). It tells a reused inode from the file
     * that had it, and recognises a rotated file after it was compressed. While a file is shorter than
     * SIZE the fingerprint covers fewer bytes and is widened as the file grows.
     */
    record Fingerprint(int length, long crc) {
        static final int SIZE = 1024;
        static final Fingerprint EMPTY = new Fingerprint(0, 0);

        static Fingerprint of(byte[] bytes, int length) {
            Checksum sum = Checksum.of(bytes, length);
            return new Fingerprint(sum.length(), sum.crc());
        }

        static Fingerprint read(FileChannel channel) throws IOException {
            Checksum sum = Checksum.at(channel, 0, SIZE);
            return new Fingerprint(sum.length(), sum.crc());
        }

        /** Does a file whose first bytes are these start like the file this fingerprint was taken of? */
        boolean matchesStartOf(byte[] head, int available) {
            return length <= available && Checksum.of(head, length).crc() == crc;
        }

        boolean matches(FileChannel channel) throws IOException {
            if (length == 0) return true;
            Checksum now = Checksum.at(channel, 0, length);
            return now.length() == length && now.crc() == crc;
        }
    }

    /**
     * A checksum of the bytes just before a file's offset (like Fluent Bit's offset_marker). If they
     * changed, the file was truncated and rewritten past our offset while we were not looking; without
     * this check we would resume in the middle of unrelated bytes and ship torn lines.
     */
    record Marker(int length, long crc) {
        static final int SIZE = 64;
        static final Marker NONE = new Marker(0, 0);

        static Marker before(FileChannel channel, long offset) throws IOException {
            int length = (int) Math.min(SIZE, offset);
            if (length == 0) return NONE;
            Checksum sum = Checksum.at(channel, offset - length, length);
            return sum.length() < length ? NONE : new Marker(length, sum.crc());
        }

        boolean stillBefore(FileChannel channel, long offset) throws IOException {
            if (length == 0 || offset < length) return true;
            Checksum now = Checksum.at(channel, offset - length, length);
            return now.length() == length && now.crc() == crc;
        }
    }

    static int readAt(FileChannel channel, byte[] into, int length, long position) throws IOException {
        ByteBuffer buffer = ByteBuffer.wrap(into, 0, length);
        while (buffer.hasRemaining()) {
            int n = channel.read(buffer, position + buffer.position());
            if (n < 0) break;
        }
        return buffer.position();
    }

    // =============================================================================================
    // Lines: bytes in, whole lines out.
    // =============================================================================================

    /**
     * What one turn on one file may do: read about {@code bytes} for at most about {@code nanos},
     * ship a last line that lacks its newline or not, and end early when {@code mustStop} says so.
     * Each limit ends the turn at the next line end (limits are looked at once a chunk).
     */
    record Turn(long bytes, long nanos, boolean shipTrailingPartial, BooleanSupplier mustStop) {
        Turn shippingTrailingPartials() { return new Turn(bytes, nanos, true, mustStop); }
    }

    /** What one turn of reading achieved; moreToRead when the turn ended before the data did. */
    record Progress(long offset, boolean skippingLongLine, boolean moreToRead, long lines, long cut, long readTo) {
        /** Bytes read past the offset that hold no line end yet: a line still being written. */
        boolean endsInPartialLine() { return !moreToRead && !skippingLongLine && readTo > offset; }
    }

    /** Where a LineReader gets bytes from: positional reads for plain files, a stream for archives. */
    interface ByteSource {
        /** Reads into {@code into} from its position up to its limit; fewer than 1 byte read is the end. */
        int read(ByteBuffer into, long position) throws IOException;

        /**
         * Takes back the bytes read but not used (those between the buffer's position and limit), to
         * be read again first. Positional sources read them again by position anyway; a stream (an
         * archive) must keep them.
         */
        default void unread(ByteBuffer bytes) {}
    }

    /**
     * Splits bytes into lines and hands whole lines to the sink. A line longer than the limit is cut
     * at the limit and its rest dropped. A line still missing its newline at the end of the data is
     * not shipped: the offset stays at its start and it is read again once more bytes arrive. One
     * instance serves every file, one turn at a time, so memory is a few chunks plus one line,
     * however many files there are.
     *
     * <p>The whole lines of a chunk go to the sink as one range, not one by one (raw output writes
     * that range as it is); only a line that spans chunks, or is cut, is copied into the line
     * buffer. A line that starts in a chunk but does not end there is read again from its start
     * with the next chunk, so it rarely spans one.
     */
    static final class LineReader {
        static final int CHUNK = Sink.BUFFER_BYTES;
        private byte[] line = new byte[8 * 1024];
        private final int maxLineBytes;
        /** hasNewline's own chunk: it runs between turns, with no sink at hand. */
        private ByteBuffer probe;
        // The turn in progress.
        private Sink sink;
        private Sink.Origin origin;
        private long committed;
        private int lineLength;
        private boolean skipping;
        private boolean stopAtLineEnd;
        /** The turn's bytes are read once a line ends here or past it. */
        private long stopAt;
        private boolean turnEnded;
        private long lines;
        private long cut;
        /** Every byte read, for the cost of reading to be measured. */
        long bytesRead;

        LineReader(int maxLineBytes) { this.maxLineBytes = maxLineBytes; }

        /** Whether [from, to) holds a line end: only the new bytes of a line still being written. */
        boolean hasNewline(ByteSource source, long from, long to) throws IOException {
            if (probe == null) probe = Sink.directBuffer();
            for (long position = from; position < to; ) {
                probe.clear();
                int n = source.read(probe, position);
                if (n <= 0) return false;
                bytesRead += n;
                if (indexOfNewline(probe, 0, (int) Math.min(n, to - position)) >= 0) return true;
                position += n;
            }
            return false;
        }

        /**
         * Reads from {@code start} until the data ends or the turn's limits are reached; never
         * inside a line, so a long line completes within one turn.
         */
        Progress read(ByteSource source, long start, boolean skippingLongLine, Turn turn, Sink.Origin from,
                      Sink to) throws IOException {
            sink = to;
            origin = from;
            committed = start;
            lineLength = 0;
            skipping = skippingLongLine;
            lines = 0;
            cut = 0;
            long position = start;
            long startNanos = System.nanoTime();
            boolean moreToRead = false;
            stopAtLineEnd = false;
            stopAt = start + turn.bytes() < start ? Long.MAX_VALUE : start + turn.bytes();
            while (true) {
                stopAtLineEnd = position - start >= turn.bytes() || System.nanoTime() - startNanos >= turn.nanos()
                        || turn.mustStop().getAsBoolean();
                if (stopAtLineEnd && lineLength == 0) {
                    moreToRead = true;
                    break;
                }
                ByteBuffer chunk = sink.buffer();
                int n;
                int used;
                try {
                    n = source.read(chunk, position);
                    if (n <= 0) break;
                    bytesRead += n;
                    used = split(chunk, position, n);
                    if (used < n) source.unread(chunk.limit(n).position(used));
                } finally {
                    sink.release(chunk);
                }
                position += used;
                if (turnEnded) {
                    moreToRead = true;
                    break;
                }
            }
            if (lineLength > 0 && turn.shipTrailingPartial() && !moreToRead) {
                ship(false);
                committed = position;
            }
            return new Progress(committed, skipping, moreToRead, lines, cut, position);
        }

        /**
         * Splits the chunk just read at {@code chunkStart} into lines; returns how many of its bytes
         * were used: fewer than n when the turn ended at a line end inside it, or when a line starts
         * in it but does not end there (read again from its start with the next chunk).
         */
        private int split(ByteBuffer chunk, long chunkStart, int n) throws StdoutFailed {
            turnEnded = false;
            int i = 0;
            // A run of whole lines not yet handed to the sink: [runFrom, i), runLines of them.
            int runFrom = 0;
            long runLines = 0;
            while (i < n) {
                int newline = indexOfNewline(chunk, i, n);
                boolean lineEnds = newline >= 0;
                if (lineEnds && lineLength == 0 && !skipping && newline - i <= maxLineBytes) {
                    if (runLines++ == 0) runFrom = i;
                    committed = chunkStart + newline + 1;
                } else {
                    if (runLines > 0) shipRun(chunk, runFrom, i, chunkStart + runFrom, runLines);
                    runLines = 0;
                    if (!lineEnds && i > 0 && lineLength == 0 && !skipping) return i;
                    int end = lineEnds ? newline : n;
                    long after = chunkStart + (lineEnds ? newline + 1 : n);
                    if (skipping) {
                        // The rest of a cut line: dropped up to and including its newline.
                        skipping = !lineEnds;
                        committed = after;
                    } else {
                        collect(chunk, i, end, lineEnds, after);
                    }
                }
                i = lineEnds ? newline + 1 : n;
                if (lineEnds && (stopAtLineEnd || chunkStart + i >= stopAt)) {
                    turnEnded = true;
                    break;
                }
            }
            if (runLines > 0) shipRun(chunk, runFrom, i, chunkStart + runFrom, runLines);
            return i;
        }

        private void shipRun(ByteBuffer chunk, int from, int to, long start, long count) throws StdoutFailed {
            sink.lines(origin, chunk, from, to, start, count);
            lines += count;
        }

        /** Adds chunk[from, to) to the line; ships it when it ends or reaches the limit. */
        private void collect(ByteBuffer chunk, int from, int to, boolean lineEnds, long after) throws StdoutFailed {
            int room = maxLineBytes - lineLength;
            int length = to - from;
            append(chunk, from, Math.min(room, length));
            if (length > room) {
                ship(true);
                skipping = !lineEnds;
                committed = after;
            } else if (lineEnds) {
                ship(false);
                committed = after;
            }
        }

        /** Ships the line collected so far; {@code committed} is still where it started. */
        private void ship(boolean wasCut) throws StdoutFailed {
            sink.line(origin, line, 0, lineLength, committed, wasCut);
            lines++;
            if (wasCut) cut++;
            lineLength = 0;
        }

        private void append(ByteBuffer chunk, int from, int length) {
            if (lineLength + length > line.length) {
                int grown = (int) Math.min(maxLineBytes, Math.max((long) line.length * 2, lineLength + length));
                line = Arrays.copyOf(line, grown);
            }
            chunk.get(from, line, lineLength, length);
            lineLength += length;
        }

        private static final long NEWLINES = 0x0A0A0A0A0A0A0A0AL;

        /**
         * The first '\n' in bytes[from, to), 8 bytes at a time (the buffer is little-endian, so the
         * lowest flagged byte is the first; a false flag can only sit above a true one).
         */
        static int indexOfNewline(ByteBuffer bytes, int from, int to) {
            int i = from;
            for (; i + Long.BYTES <= to; i += Long.BYTES) {
                long found = zeroBytes(bytes.getLong(i) ^ NEWLINES);
                if (found != 0) return i + (Long.numberOfTrailingZeros(found) >>> 3);
            }
            for (; i < to; i++) {
                if (bytes.get(i) == '\n') return i;
            }
            return -1;
        }

        /** The high bit of each byte of x that is zero (exact for the lowest such byte). */
        static long zeroBytes(long x) { return (x - 0x0101010101010101L) & ~x & 0x8080808080808080L; }
    }

    // =============================================================================================
    // Output: stdout, whole lines only.
    // =============================================================================================

    /**
     * Writes whole lines to stdout. A writer thread does the writing, so reading the next chunk and
     * writing the last one overlap; the loop fills buffers from a small fixed pool and queues them.
     * flush() returning means stdout accepted every byte handed over so far: tails commit offsets
     * only after it, so a saved position never covers a line stdout has not accepted, and the
     * shipped counters move only there. Raw lines are written from the chunk they were read into;
     * JSON is escaped straight into a pool buffer, with no String per line.
     */
    static final class Sink {
        /** The file lines come from, with what the format writes for it prepared once. */
        record Origin(Path path, byte[] jsonFields) {}

        /**
         * Buffers are direct: a heap buffer written to a channel is first copied into a temporary
         * direct one (cached per thread, counted against -XX:MaxDirectMemorySize), and FileOutputStream
         * copies too. Eight of 128 KiB: the reader's chunk, the block being filled, and six queued.
         */
        static final int BUFFER_BYTES = 128 * 1024;
        static final int BUFFERS = 8;
        private final StdoutWriter writer;
        private final Format format;
        /** The k8s.* fields, the same for every line: written once here and copied into each origin. */
        private final String resourceFields;
        /** Lines stdout accepted, as of the last flush. */
        long lines;
        /** The loop's side: the block being filled with copied lines or JSON. */
        private final OutputBlock block;
        private final JsonEncoder json;
        /** The reader's chunk has ranges queued for writing: it goes back to the pool behind them. */
        private boolean chunkQueued;

        Sink(OutputStream out, Settings settings, Metrics metrics) {
            this(Channels.newChannel(out), settings, metrics);
        }

        Sink(WritableByteChannel out, Settings settings, Metrics metrics) {
            this.writer = new StdoutWriter(out, metrics);
            this.format = settings.format();
            this.block = new OutputBlock(writer);
            this.json = new JsonEncoder(block, settings.timestamp());
            StringBuilder fields = new StringBuilder();
            settings.resource().forEach((key, value) -> fields.append(",\"").append(key).append("\":\"")
                    .append(JsonEncoder.jsonEscape(value)).append('"'));
            this.resourceFields = fields.toString();
        }

        Origin originOf(Path path) {
            byte[] fields = format == Format.JSON
                    ? (",\"log.file.path\":\"" + JsonEncoder.jsonEscape(path.toString()) + "\",\"log.file.name\":\""
                            + JsonEncoder.jsonEscape(path.getFileName().toString()) + "\"" + resourceFields + "}\n")
                            .getBytes(StandardCharsets.UTF_8)
                    : new byte[0];
            return new Origin(path, fields);
        }

        static ByteBuffer directBuffer() {
            return ByteBuffer.allocateDirect(BUFFER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        }

        // ------------------------------------------------------------------------ the reader's side

        /** An empty buffer to read into, waiting while all of them are queued (stdout is behind). */
        ByteBuffer buffer() throws StdoutFailed { return writer.buffer(); }

        /** The reader is done with a chunk: back to the pool, behind any writes of its ranges. */
        void release(ByteBuffer chunk) throws StdoutFailed {
            if (chunkQueued) {
                chunkQueued = false;
                writer.enqueue(new StdoutWriter.Write(null, 0, 0, chunk));
            } else {
                writer.recycle(chunk);
            }
        }

        /**
         * Whole lines, each with its newline, in chunk[from, to); the first starts at {@code start}
         * in its file. Raw output writes the range from the chunk itself.
         */
        void lines(Origin origin, ByteBuffer chunk, int from, int to, long start, long count) throws StdoutFailed {
            if (format == Format.RAW) {
                block.submit(); // lines copied before these go out first
                writer.enqueue(new StdoutWriter.Write(chunk.slice(from, to - from), count, 0, null));
                chunkQueued = true;
                return;
            }
            for (int i = from; i < to; ) {
                int end = json.line(origin, chunk, i, to, start + (i - from), false);
                i = end + 1;
            }
        }

        /** One line that starts at {@code start} in its file (in a .gz, in the decompressed stream). */
        void line(Origin origin, byte[] text, int offset, int length, long start, boolean wasCut) throws StdoutFailed {
            if (format == Format.RAW) {
                block.put(text, offset, length);
                block.room(1).put((byte) '\n');
                block.lineWritten(wasCut);
            } else {
                ByteBuffer in = ByteBuffer.wrap(text, offset, length).order(ByteOrder.LITTLE_ENDIAN);
                json.line(origin, in, offset, offset + length, start, wasCut);
            }
        }

        /** Stdout accepted everything so far: only now do the shipped counters move. */
        void flush() throws StdoutFailed {
            block.submit();
            lines = writer.awaitWritten();
        }
    }

    /**
     * The block the Sink fills with copied lines (raw) or JSON, and how many lines it holds: queued
     * for the writer thread when full and at each flush.
     */
    static final class OutputBlock {
        private final StdoutWriter writer;
        private ByteBuffer block;
        private long lines;
        private long cut;

        OutputBlock(StdoutWriter writer) { this.writer = writer; }

        /** The block being filled, with at least {@code bytes} free (at most BUFFER_BYTES). */
        ByteBuffer room(int bytes) throws StdoutFailed {
            if (block != null && block.remaining() >= bytes) return block;
            submit();
            if (block == null) block = writer.buffer();
            return block;
        }

        void put(byte[] bytes, int offset, int length) throws StdoutFailed {
            for (int at = offset, end = offset + length; at < end; ) {
                ByteBuffer into = room(1);
                int n = Math.min(into.remaining(), end - at);
                into.put(bytes, at, n);
                at += n;
            }
        }

        /** Queues what the block holds, if anything. */
        void submit() throws StdoutFailed {
            if (block == null || block.position() == 0) return;
            ByteBuffer full = block.flip();
            block = null;
            writer.enqueue(new StdoutWriter.Write(full, lines, cut, full));
            lines = 0;
            cut = 0;
        }

        /** A whole line went into the block; counted as accepted once the block is written. */
        void lineWritten(boolean wasCut) {
            lines++;
            if (wasCut) cut++;
        }
    }

    /**
     * The JSON format: one object per line, written straight into the Sink's block, so that no
     * line is built on the heap first (a long line costs no more heap than in raw).
     */
    static final class JsonEncoder {
        private static final byte[] JSON_START = "{\"message\":\"".getBytes(StandardCharsets.US_ASCII);
        private static final byte[] JSON_OFFSET = "\",\"log.offset\":".getBytes(StandardCharsets.US_ASCII);
        private static final byte[] JSON_TRUNCATED = ",\"log.truncated\":true".getBytes(StandardCharsets.US_ASCII);
        private static final byte[] JSON_TIMESTAMP = ",\"timestamp\":\"".getBytes(StandardCharsets.US_ASCII);
        private static final DateTimeFormatter RFC_3339 =
                DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.ROOT).withZone(ZoneOffset.UTC);
        private static final char[] HEX = "0123456789abcdef".toCharArray();
        private static final byte[] HEX_BYTES = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII);
        private final OutputBlock out;
        private final boolean timestamp;
        // The timestamp is formatted again only when the millisecond changed.
        private long stampMillis = -1;
        private byte[] stamp;
        // Invalid UTF-8 is decoded as the JDK decodes it (String's rules), a piece at a time.
        private final CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPLACE).onUnmappableCharacter(CodingErrorAction.REPLACE);
        private final CharBuffer decoded = CharBuffer.allocate(4096);

        JsonEncoder(OutputBlock out, boolean timestamp) {
            this.out = out;
            this.timestamp = timestamp;
        }


        /**
         * One object for the line starting at in[from]; its text ends at the first newline or at
         * {@code to}. Returns where it ended.
         */
        int line(Sink.Origin origin, ByteBuffer in, int from, int to, long start, boolean wasCut)
                throws StdoutFailed {
            put(JSON_START, 0, JSON_START.length);
            int end = escape(in, from, to);
            put(JSON_OFFSET, 0, JSON_OFFSET.length);
            putDecimal(start);
            if (wasCut) put(JSON_TRUNCATED, 0, JSON_TRUNCATED.length);
            if (timestamp) {
                byte[] now = stamp();
                put(JSON_TIMESTAMP, 0, JSON_TIMESTAMP.length);
                put(now, 0, now.length);
                room(1).put((byte) '"');
            }
            put(origin.jsonFields(), 0, origin.jsonFields().length);
            out.lineWritten(wasCut);
            return end;
        }

        /**
         * RFC 8259 string escaping of in[from, to) up to its first newline (returned), straight into
         * the block: 8 plain ASCII bytes at a time, valid UTF-8 copied as it is, and from the first
         * invalid sequence on the JDK's decoder, so that invalid bytes become U+FFFD as in a String.
         */
        private int escape(ByteBuffer in, int from, int to) throws StdoutFailed {
            int i = from;
            while (i < to) {
                ByteBuffer block = room(8);
                if (i + Long.BYTES <= to) {
                    long word = in.getLong(i);
                    long special = specialBytes(word);
                    int plain = special == 0 ? Long.BYTES : Long.numberOfTrailingZeros(special) >>> 3;
                    if (plain > 0) {
                        block.putLong(word); // all 8, then keep only the plain ones
                        block.position(block.position() - Long.BYTES + plain);
                        i += plain;
                        continue;
                    }
                }
                byte b = in.get(i);
                if (b == '\n') return i;
                if (b < 0) {
                    i = utf8(in, i, to);
                } else {
                    escapeAscii(block, b);
                    i++;
                }
            }
            return to;
        }

        /** The high bit of each byte JSON cannot copy as it is: non-ASCII, control, quote, backslash. */
        private static long specialBytes(long w) {
            long nonAscii = w & 0x8080808080808080L;
            long control = (w - 0x2020202020202020L) & ~w & 0x8080808080808080L;
            long quote = LineReader.zeroBytes(w ^ 0x2222222222222222L);
            long backslash = LineReader.zeroBytes(w ^ 0x5C5C5C5C5C5C5C5CL);
            return nonAscii | control | quote | backslash;
        }

        private static void escapeAscii(ByteBuffer block, int c) {
            switch (c) {
                case '"' -> block.put((byte) '\\').put((byte) '"');
                case '\\' -> block.put((byte) '\\').put((byte) '\\');
                case '\n' -> block.put((byte) '\\').put((byte) 'n');
                case '\r' -> block.put((byte) '\\').put((byte) 'r');
                case '\t' -> block.put((byte) '\\').put((byte) 't');
                default -> {
                    if (c < 0x20) {
                        block.put((byte) '\\').put((byte) 'u').put((byte) '0').put((byte) '0')
                                .put(HEX_BYTES[c >> 4]).put(HEX_BYTES[c & 0xf]);
                    } else {
                        block.put((byte) c);
                    }
                }
            }
        }

        /** A multi-byte sequence at in[i]: copied if well-formed, else the rest of the line is decoded. */
        private int utf8(ByteBuffer in, int i, int to) throws StdoutFailed {
            int lead = in.get(i) & 0xff;
            int length = lead >= 0xc2 && lead <= 0xdf ? 2 : lead >= 0xe0 && lead <= 0xef ? 3
                    : lead >= 0xf0 && lead <= 0xf4 ? 4 : 0;
            if (length == 0 || i + length > to || !wellFormed(in, i, lead, length)) return decodeRest(in, i, to);
            ByteBuffer block = room(4);
            for (int k = 0; k < length; k++) block.put(in.get(i + k));
            return i + length;
        }

        /** Unicode's table of well-formed sequences: no overlong forms, surrogates or code points past U+10FFFF. */
        private static boolean wellFormed(ByteBuffer in, int i, int lead, int length) {
            int second = in.get(i + 1) & 0xff;
            int low = lead == 0xe0 ? 0xa0 : lead == 0xf0 ? 0x90 : 0x80;
            int high = lead == 0xed ? 0x9f : lead == 0xf4 ? 0x8f : 0xbf;
            if (second < low || second > high) return false;
            for (int k = 2; k < length; k++) {
                if ((in.get(i + k) & 0xc0) != 0x80) return false;
            }
            return true;
        }

        /**
         * From an invalid sequence to the line's end, through the JDK's decoder: each malformed
         * piece becomes U+FFFD exactly as new String(bytes, UTF_8) would make it (decoding runs left
         * to right, so the valid bytes before need not be decoded again). A piece at a time: a long
         * line of junk takes no more heap than a short one.
         */
        private int decodeRest(ByteBuffer in, int from, int to) throws StdoutFailed {
            int end = LineReader.indexOfNewline(in, from, to);
            if (end < 0) end = to;
            ByteBuffer bytes = in.duplicate().limit(end).position(from);
            decoder.reset();
            decoded.clear();
            boolean done;
            do {
                done = decoder.decode(bytes, decoded, true).isUnderflow();
                if (done) decoder.flush(decoded);
                decoded.flip();
                while (decoded.hasRemaining()) {
                    char c = decoded.get();
                    if (Character.isHighSurrogate(c)) {
                        if (!decoded.hasRemaining()) {
                            decoded.position(decoded.position() - 1); // its pair comes with the next piece
                            break;
                        }
                        putCodePoint(Character.toCodePoint(c, decoded.get()));
                    } else {
                        putCodePoint(c);
                    }
                }
                decoded.compact();
            } while (!done);
            return end;
        }

        private void putCodePoint(int c) throws StdoutFailed {
            ByteBuffer block = room(6);
            if (c < 0x80) {
                escapeAscii(block, c);
            } else if (c < 0x800) {
                block.put((byte) (0xc0 | c >> 6)).put((byte) (0x80 | c & 0x3f));
            } else if (c < 0x10000) {
                block.put((byte) (0xe0 | c >> 12)).put((byte) (0x80 | c >> 6 & 0x3f)).put((byte) (0x80 | c & 0x3f));
            } else {
                block.put((byte) (0xf0 | c >> 18)).put((byte) (0x80 | c >> 12 & 0x3f))
                        .put((byte) (0x80 | c >> 6 & 0x3f)).put((byte) (0x80 | c & 0x3f));
            }
        }

        private void putDecimal(long value) throws StdoutFailed {
            ByteBuffer block = room(20);
            int digits = 1;
            for (long v = value; v >= 10; v /= 10) digits++;
            int at = block.position() + digits;
            for (long v = value; at > block.position(); v /= 10) block.put(--at, (byte) ('0' + v % 10));
            block.position(block.position() + digits);
        }

        private byte[] stamp() {
            long now = System.currentTimeMillis();
            if (now != stampMillis) {
                stampMillis = now;
                stamp = RFC_3339.format(Instant.ofEpochMilli(now)).getBytes(StandardCharsets.US_ASCII);
            }
            return stamp;
        }

        /** RFC 8259 string escaping, for the per-file and per-process fields prepared once. */
        static String jsonEscape(String text) {
            StringBuilder escaped = new StringBuilder(text.length() + 16);
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                switch (c) {
                    case '"' -> escaped.append("\\\"");
                    case '\\' -> escaped.append("\\\\");
                    case '\n' -> escaped.append("\\n");
                    case '\r' -> escaped.append("\\r");
                    case '\t' -> escaped.append("\\t");
                    default -> {
                        if (c < 0x20) escaped.append("\\u00").append(HEX[c >> 4]).append(HEX[c & 0xf]);
                        else escaped.append(c);
                    }
                }
            }
            return escaped.toString();
        }

        private ByteBuffer room(int bytes) throws StdoutFailed { return out.room(bytes); }

        private void put(byte[] bytes, int offset, int length) throws StdoutFailed { out.put(bytes, offset, length); }
    }

    /**
     * The writer thread behind the Sink, and the pool of buffers the two share. Writes go out in the
     * order they were queued; counts move to "accepted" only once stdout took every byte of a write,
     * so the Sink's flush (which waits for them) still means "stdout accepted all of it".
     */
    static final class StdoutWriter {
        /** A write for the writer thread, and the buffer it hands back to the pool once done (or null). */
        record Write(ByteBuffer data, long lines, long cut, ByteBuffer recycle) {}

        /** The writer thread ends after this long without work; the next write starts another. */
        static final long WRITER_IDLE_MILLIS = 10_000;
        /** A non-blocking stdout that is full (EAGAIN) is tried again after this, doubling up to the most. */
        static final long FULL_PAUSE_NANOS = 100_000;
        static final long FULL_PAUSE_MOST_NANOS = 20_000_000;

        private final WritableByteChannel out;
        private final Metrics metrics;
        // Shared by the loop and the writer thread, guarded by this.
        private final ArrayDeque<ByteBuffer> free = new ArrayDeque<>();
        private int allocated;
        private final ArrayDeque<Write> queue = new ArrayDeque<>();
        private long queued;
        private long written;
        private boolean writerRunning;
        private IOException failure;
        private long acceptedLines;
        private long acceptedBytes;
        private long acceptedCut;

        StdoutWriter(WritableByteChannel out, Metrics metrics) {
            this.out = out;
            this.metrics = metrics;
        }

        /** An empty buffer, waiting while all of them are queued (stdout is behind). */
        synchronized ByteBuffer buffer() throws StdoutFailed {
            if (free.isEmpty() && allocated < Sink.BUFFERS) {
                allocated++;
                return Sink.directBuffer();
            }
            awaitWriter(true);
            return free.poll().clear();
        }

        synchronized void recycle(ByteBuffer buffer) { free.add(buffer); }

        /** Waits until everything queued is written; publishes what stdout accepted, and returns its lines. */
        synchronized long awaitWritten() throws StdoutFailed {
            awaitWriter(false);
            metrics.shipped(acceptedLines, acceptedBytes, acceptedCut);
            return acceptedLines;
        }

        synchronized void enqueue(Write write) throws StdoutFailed {
            if (failure != null) {
                if (write.recycle() != null) free.add(write.recycle());
                throw new StdoutFailed(failure);
            }
            queue.add(write);
            queued++;
            if (writerRunning) {
                notifyAll();
            } else {
                writerRunning = true;
                Thread writer = new Thread(this::writeQueued, "logship-stdout");
                writer.setDaemon(true);
                writer.start();
            }
        }

        /**
         * Waits for a free buffer or for the queue to be written. The loop is then blocked writing
         * to stdout: the health check counts that as lag, not a stall. Not interruptible, like a
         * blocking write.
         */
        private void awaitWriter(boolean forBuffer) throws StdoutFailed {
            boolean waiting = false;
            boolean interrupted = false;
            try {
                while (failure == null && (forBuffer ? free.isEmpty() : written < queued)) {
                    if (!waiting) metrics.writing(waiting = true);
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        interrupted = true;
                    }
                }
            } finally {
                if (waiting) metrics.writing(false);
                if (interrupted) Thread.currentThread().interrupt();
            }
            if (failure != null) throw new StdoutFailed(failure);
        }

        /** The writer thread: writes the queue in order, until it has been idle for a while. */
        private void writeQueued() {
            while (true) {
                Write write;
                synchronized (this) {
                    long idleSince = System.nanoTime();
                    while (queue.isEmpty()) {
                        long left = WRITER_IDLE_MILLIS - (System.nanoTime() - idleSince) / 1_000_000;
                        if (left <= 0) {
                            writerRunning = false;
                            return;
                        }
                        try {
                            wait(left);
                        } catch (InterruptedException e) {
                            // nobody interrupts it; it ends when idle
                        }
                    }
                    write = queue.poll();
                }
                IOException failed = null;
                int length = write.data() == null ? 0 : write.data().remaining();
                if (length > 0 && failure == null) {
                    try {
                        writeFully(write.data());
                    } catch (IOException e) {
                        failed = e;
                    }
                }
                synchronized (this) {
                    if (failed != null) {
                        failure = failed;
                    } else if (failure == null) {
                        acceptedLines += write.lines();
                        acceptedBytes += length;
                        acceptedCut += write.cut();
                    }
                    if (write.recycle() != null) free.add(write.recycle());
                    written++;
                    notifyAll();
                }
            }
        }

        /**
         * A channel says how much it wrote: a non-blocking stdout (O_NONBLOCK set by whoever shares
         * the pipe) takes part of a buffer, or nothing while full, and is tried again after a pause.
         * (FileOutputStream would throw on EAGAIN with part of the buffer written, and a shipper that
         * stopped there would have lost no line but stopped for nothing.)
         */
        private void writeFully(ByteBuffer data) throws IOException {
            long pause = FULL_PAUSE_NANOS;
            while (data.hasRemaining()) {
                if (out.write(data) > 0) {
                    pause = FULL_PAUSE_NANOS;
                } else {
                    LockSupport.parkNanos(pause);
                    pause = Math.min(pause * 2, FULL_PAUSE_MOST_NANOS);
                }
            }
        }
    }

    /** stdout is gone (the reader closed the pipe): nothing can be shipped any more. */
    static final class StdoutFailed extends IOException {
        StdoutFailed(IOException cause) { super(cause); }
    }

    // =============================================================================================
    // Positions: how far did we get, saved so a restart resumes there.
    // =============================================================================================

    /**
     * The offsets of files, by identity. Written only with offsets of bytes stdout has accepted.
     * Without a file (LOG_STATE_FILE unset) the same table lives in memory only, where it still
     * recognises rotated files after they are compressed.
     */
    static final class Positions {
        static final int VERSION = 2;
        static final String HEADER = "logship-positions v" + VERSION;
        /** Older formats still read: a row of one becomes a current row, its new columns at their defaults. */
        static final String HEADER_V1 = "logship-positions v1";
        /**
         * Rows of files that no longer exist are dropped, oldest first, beyond this many bytes. The
         * pod's state volume is 1 MiB and must hold, during a save, the old file and the new one
         * (and maybe a .corrupt one): 256 KiB of such rows is about 2,000 files at ~130 bytes a row.
         */
        static final int GONE_ROWS_BYTES = 256 * 1024;

        /** path is for people only (identity is key, birth and first bytes): it may be the name alone. */
        record Entry(FileKey key, boolean compressed, Checkpoint checkpoint, long lastSeenMillis, Path path,
                     long born) {
            Fingerprint fingerprint() { return checkpoint.fingerprint(); }

            long offset() { return checkpoint.offset(); }
        }

        private final Path file;
        private final Map<FileKey, Entry> entries = new LinkedHashMap<>();
        /**
         * Files whose inode now belongs to another file. Kept (until forgotten) because their
         * compressed copies may still turn up and must be recognised by their first bytes.
         */
        private final List<Entry> retired = new ArrayList<>();

        private Positions(Path file) { this.file = file; }

        static Positions open(Path file) {
            Positions positions = new Positions(file);
            if (file != null) positions.load();
            return positions;
        }

        boolean persistent() { return file != null; }

        Entry get(FileKey key) { return entries.get(key); }

        void put(Entry entry) { entries.put(entry.key(), entry); }

        /** Live and retired entries: everything a compressed copy could be a copy of. */
        List<Entry> all() {
            List<Entry> all = new ArrayList<>(entries.values());
            all.addAll(retired);
            return all;
        }

        /** The file this entry described is gone and its inode reused: keep it, but not by key. */
        void retire(FileKey key) {
            Entry old = entries.remove(key);
            if (old != null) retired.add(old);
        }

        /**
         * Drops rows of files gone since before the cutoff, then, whatever the churn, the oldest rows of
         * gone files beyond {@link #GONE_ROWS_BYTES}. Rows of files that exist are never dropped: their
         * offsets are what a restart resumes from. (A file LogShip itself deletes needs no row at all:
         * {@link #forget} drops it at once, before it ever counts against this bound.) True if any
         * row went.
         */
        boolean forgetGone(long cutoffMillis, Set<FileKey> existing) {
            boolean forgot = entries.values().removeIf(e -> !existing.contains(e.key()) && e.lastSeenMillis() < cutoffMillis);
            forgot |= retired.removeIf(e -> e.lastSeenMillis() < cutoffMillis);
            List<Entry> gone = new ArrayList<>(retired);
            for (Entry e : entries.values()) if (!existing.contains(e.key())) gone.add(e);
            gone.sort(Comparator.comparingLong(Entry::lastSeenMillis).reversed());
            long bytes = 0;
            Set<Entry> evicted = new HashSet<>();
            for (Entry e : gone) {
                bytes += PositionRow.rowOf("gone", e).length() + 1;
                if (bytes > GONE_ROWS_BYTES) evicted.add(e);
            }
            if (evicted.isEmpty()) return forgot;
            entries.values().removeIf(evicted::contains);
            retired.removeIf(evicted::contains);
            return true;
        }

        /** A file LogShip deleted (--remove-after) and has closed: nothing will ever resume it. */
        void forget(FileKey key) { entries.remove(key); }

        int size() { return entries.size() + retired.size(); }

        Path tempFile() { return file.resolveSibling(file.getFileName() + ".tmp"); }

        /**
         * A leftover temp file is preferred when it is whole (its trailer checks out): a crash between
         * fsync and rename leaves it newer than the main file. A torn one is discarded.
         */
        private void load() {
            Path temp = tempFile();
            if (Files.exists(temp)) {
                try {
                    parse(temp, entries, retired);
                    Log.info("resuming from " + temp + ", left by an interrupted save");
                    return;
                } catch (IOException | RuntimeException e) {
                    Log.debug("discarding the incomplete " + temp + ": " + e.getMessage());
                } finally {
                    try {
                        Files.deleteIfExists(temp);
                    } catch (IOException e) {
                        // the next save replaces it anyway
                    }
                }
            }
            if (!Files.exists(file)) return;
            try {
                parse(file, entries, retired);
                Log.info("resuming " + entries.size() + " file position(s) from " + file);
            } catch (IOException | RuntimeException e) {
                Path aside = file.resolveSibling(file.getFileName() + ".corrupt");
                try {
                    Files.move(file, aside, StandardCopyOption.REPLACE_EXISTING);
                } catch (IOException moveFailed) {
                    Log.warn("cannot move the unreadable positions file aside: " + moveFailed.getMessage());
                }
                Log.warn("positions file " + file + " is unreadable (" + e.getMessage() + "); moved it to "
                        + aside + " and starting without positions");
                entries.clear();
                retired.clear();
            }
        }

        /** Reads all rows into fresh tables, and only then into ours: a bad file adds nothing. */
        private static void parse(Path path, Map<FileKey, Entry> entries, List<Entry> retired) throws IOException {
            Map<FileKey, Entry> live = new LinkedHashMap<>();
            List<Entry> gone = new ArrayList<>();
            try (var reader = Files.newBufferedReader(path, StandardCharsets.UTF_8)) {
                String header = reader.readLine();
                int version = HEADER.equals(header) ? VERSION : HEADER_V1.equals(header) ? 1 : 0;
                if (version == 0) throw new IOException("not a " + HEADER + " file");
                List<PositionRow.Column> layout = PositionRow.Column.of(version);
                String row;
                while ((row = reader.readLine()) != null) {
                    if (row.startsWith("end ")) {
                        if (Integer.parseInt(row.substring(4)) != live.size() + gone.size()) {
                            throw new IOException("count mismatch");
                        }
                        entries.putAll(live);
                        retired.addAll(gone);
                        return;
                    }
                    String[] fields = row.split(" ", layout.size());
                    String kind = fields[0];
                    if (fields.length != layout.size() || !(kind.equals("file") || kind.equals("gone"))) {
                        throw new IOException("bad row: " + row);
                    }
                    Entry entry = PositionRow.entryOf(PositionRow.current(fields, layout));
                    if (kind.equals("file")) live.put(entry.key(), entry); else gone.add(entry);
                }
            }
            throw new IOException("no end line: the file was cut short");
        }

        /**
         * Temp file, fsync, rename, fsync the directory: at every instant the path holds either the
         * old complete file or the new complete file, so a crash never leaves a torn positions file.
         */
        void save() throws IOException {
            if (file == null) return;
            StringBuilder text = new StringBuilder(HEADER).append('\n');
            for (Entry e : entries.values()) text.append(PositionRow.rowOf("file", e)).append('\n');
            for (Entry e : retired) text.append(PositionRow.rowOf("gone", e)).append('\n');
            text.append("end ").append(entries.size() + retired.size()).append('\n');
            Path temp = tempFile();
            try (FileChannel out = FileChannel.open(temp, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer bytes = ByteBuffer.wrap(text.toString().getBytes(StandardCharsets.UTF_8));
                while (bytes.hasRemaining()) out.write(bytes);
                out.force(true);
            }
            Files.move(temp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            try (FileChannel dir = FileChannel.open(file.getParent(), StandardOpenOption.READ)) {
                dir.force(true);
            } catch (IOException e) {
                // not every file system lets a directory be synced; the rename itself is still atomic
            }
        }

    }

    /**
     * One row of the positions file, both ways: the columns in file order, each field written and
     * read (and range-checked) through the one table, so reading and writing cannot drift apart.
     */
    static final class PositionRow {
        /**
         * The columns of a row, in file order: writing and reading both go through this one table.
         * KIND is "file" for a live entry and "gone" for a retired one. NAME is last because it may
         * hold spaces; v1 wrote the whole path there, of which only the name is kept.
         */
        enum Column {
            KIND(1), DEVICE(1), INODE(1), OFFSET(1), FINGERPRINT_LENGTH(1), FINGERPRINT_CRC(1), MARKER_LENGTH(1),
            MARKER_CRC(1), LAST_SEEN_MILLIS(1), SKIPPING_LONG_LINE(1), COMPRESSED(1), BORN(2, "0"), NAME(1);

            static final int COUNT = values().length;
            /** The format version that added this column, and its value in rows written before. */
            final int since;
            final String before;

            Column(int since) { this(since, null); }

            Column(int since, String before) {
                this.since = since;
                this.before = before;
            }

            /** The columns a file of this version has, in file order. */
            static List<Column> of(int version) {
                return Arrays.stream(values()).filter(c -> c.since <= version).toList();
            }
        }

        /** A row of an older format as a current one: the columns it lacks get their earlier value. */
        static String[] current(String[] fields, List<Column> layout) {
            String[] now = new String[Column.COUNT];
            for (Column c : Column.values()) now[c.ordinal()] = c.before;
            for (int i = 0; i < layout.size(); i++) now[layout.get(i).ordinal()] = fields[i];
            return now;
        }

        /**
         * One row's entry, every field range-checked: a value that parses but cannot be true (a
         * negative offset, a checksum over more bytes than we ever take) makes the whole file
         * corrupt, because acting on it would crash every start.
         */
        static Positions.Entry entryOf(String[] fields) throws IOException {
            long offset = field(fields, Column.OFFSET, 0, Long.MAX_VALUE);
            int markerLength = (int) field(fields, Column.MARKER_LENGTH, 0, Math.min(Marker.SIZE, offset));
            Checkpoint checkpoint = new Checkpoint(
                    new Fingerprint((int) field(fields, Column.FINGERPRINT_LENGTH, 0, Fingerprint.SIZE),
                            field(fields, Column.FINGERPRINT_CRC, 0, CRC_MAX)),
                    offset, field(fields, Column.SKIPPING_LONG_LINE, 0, 1) == 1,
                    new Marker(markerLength, field(fields, Column.MARKER_CRC, 0, CRC_MAX)));
            return new Positions.Entry(new FileKey(field(fields, Column.DEVICE, Long.MIN_VALUE, Long.MAX_VALUE),
                    field(fields, Column.INODE, Long.MIN_VALUE, Long.MAX_VALUE)),
                    field(fields, Column.COMPRESSED, 0, 1) == 1, checkpoint,
                    field(fields, Column.LAST_SEEN_MILLIS, 0, Long.MAX_VALUE),
                    nameOf(unescape(fields[Column.NAME.ordinal()])), field(fields, Column.BORN, 0, Long.MAX_VALUE));
        }

        /**
         * The name is for people only, so one this locale cannot encode must not make the file
         * unreadable: under LANG=C the JVM turns non-ASCII bytes of names into U+FFFD when it lists a
         * directory, and cannot turn them back into a path.
         */
        private static Path nameOf(String text) {
            String name = text.substring(text.lastIndexOf('/') + 1);
            try {
                return Path.of(name);
            } catch (InvalidPathException e) {
                return Path.of(name.replaceAll("[^\\x20-\\x7e]", "?"));
            }
        }

        /** A CRC32C is an unsigned 32-bit value. */
        private static final long CRC_MAX = 0xFFFF_FFFFL;

        private static long field(String[] fields, Column column, long min, long max) throws IOException {
            String text = fields[column.ordinal()];
            try {
                long value = Long.parseLong(text);
                if (value >= min && value <= max) return value;
            } catch (NumberFormatException e) {
                // the one message below
            }
            throw new IOException(column.name().toLowerCase(Locale.ROOT) + " '" + text + "' is out of range "
                    + min + ".." + max);
        }

        static String rowOf(String kind, Positions.Entry e) {
            String[] fields = new String[Column.COUNT];
            fields[Column.KIND.ordinal()] = kind;
            fields[Column.DEVICE.ordinal()] = Long.toString(e.key().device());
            fields[Column.INODE.ordinal()] = Long.toString(e.key().inode());
            fields[Column.OFFSET.ordinal()] = Long.toString(e.offset());
            fields[Column.FINGERPRINT_LENGTH.ordinal()] = Integer.toString(e.fingerprint().length());
            fields[Column.FINGERPRINT_CRC.ordinal()] = Long.toString(e.fingerprint().crc());
            fields[Column.MARKER_LENGTH.ordinal()] = Integer.toString(e.checkpoint().marker().length());
            fields[Column.MARKER_CRC.ordinal()] = Long.toString(e.checkpoint().marker().crc());
            fields[Column.LAST_SEEN_MILLIS.ordinal()] = Long.toString(e.lastSeenMillis());
            fields[Column.SKIPPING_LONG_LINE.ordinal()] = e.checkpoint().skippingLongLine() ? "1" : "0";
            fields[Column.COMPRESSED.ordinal()] = e.compressed() ? "1" : "0";
            fields[Column.BORN.ordinal()] = Long.toString(e.born());
            fields[Column.NAME.ordinal()] = escape(String.valueOf(e.path().getFileName()));
            return String.join(" ", fields);
        }

        private static String escape(String path) {
            return path.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D");
        }

        private static String unescape(String text) {
            return text.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%");
        }
    }

    /**
     * One shipper per positions file: two would ship every line twice and collide on the temp file.
     * The kernel drops the lock when its process ends, however it ends, so a crash never leaves a
     * stale lock; the PID written inside only names the holder, which Java cannot ask the kernel.
     */
    static final class PositionsLock {
        /** Held until the process ends (null without a positions file). */
        static FileChannel take(Path positions) throws ConfigError {
            if (positions == null) return null;
            Path file = positions.resolveSibling(positions.getFileName() + ".lock");
            try {
                FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.READ,
                        StandardOpenOption.WRITE);
                if (!locked(channel)) {
                    String holder = holderOf(channel);
                    channel.close();
                    throw new ConfigError("LOG_STATE_FILE (--state) " + positions + " is in use by another LogShip"
                            + " (PID " + holder + "): run one shipper per positions file.");
                }
                channel.truncate(0);
                channel.write(ByteBuffer.wrap((ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.US_ASCII)), 0);
                channel.force(false);
                return channel;
            } catch (IOException e) {
                throw new ConfigError("LOG_STATE_FILE (--state) lock file " + file + " cannot be used: " + reason(e) + ".");
            }
        }

        private static boolean locked(FileChannel channel) throws IOException {
            try {
                return channel.tryLock() != null;
            } catch (OverlappingFileLockException e) {
                return false; // this very process holds it
            }
        }

        /** The holder writes its PID right after locking: give it a moment before saying "unknown". */
        private static String holderOf(FileChannel channel) throws IOException {
            for (int attempt = 0; attempt < 20; attempt++) {
                byte[] bytes = new byte[20];
                String pid = new String(bytes, 0, Math.max(0, readAt(channel, bytes, bytes.length, 0)),
                        StandardCharsets.US_ASCII).trim();
                if (pid.matches("\\d+")) return pid;
                try {
                    Thread.sleep(50);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
            return "unknown";
        }
    }

    // =============================================================================================
    // Change notification: wakes the loop early. Only an optimisation over the ticker's polling.
    // =============================================================================================

    /** Lets other threads (the watcher, the signal handlers) wake the loop before its next job. */
    static final class Wakeup {
        private final Semaphore permits = new Semaphore(0);

        void signal() { permits.release(); }

        void await(long nanos) throws InterruptedException {
            if (nanos > 0) permits.tryAcquire(nanos, TimeUnit.NANOSECONDS);
            permits.drainPermits();
        }
    }

    /**
     * Change notification (inotify on Linux) for low latency. It is only an optimisation: the loop
     * polls every file at each interval anyway, so a missed or overflowed event delays lines but never
     * loses them.
     */
    static final class Watcher implements Closeable {
        /** A file opened the moment it appeared, before the loop got to it. */
        record Pinned(ScannedFile file, FileChannel channel) {}

        /**
         * Pinned handles are bounded (the loop takes none while stdout is blocked, and descriptors
         * are finite) but generous: they are the slack that lets files living 100 ms at a thousand
         * a second be shipped while the loop catches up. The open-file budget leaves room for them.
         */
        private final int maxPinned;
        private final WatchService service;
        private final Scanner scanner;
        /** Entries as the kernel named them: their names as strings may not survive a C locale. */
        private final Set<Path> changed = ConcurrentHashMap.newKeySet();
        private final AtomicBoolean needsRescan = new AtomicBoolean();
        private final Queue<Pinned> pinned = new ConcurrentLinkedQueue<>();
        /** New files renamed away before they could be opened by their name: the loop looks for them. */
        private final Queue<ScannedFile> renamedBeforeOpened = new ConcurrentLinkedQueue<>();
        /** Pinned files not yet taken, with those still being opened. */
        private final AtomicInteger pinning = new AtomicInteger();
        private final Wakeup wakeup;
        private volatile boolean closed;
        /** The directory as registered (a symlink resolved), and whether it can still be watched. */
        private final Path watched;
        private volatile boolean alive = true;

        Watcher(Scanner scanner, Wakeup wakeup, int maxPinned) throws IOException {
            this.scanner = scanner;
            this.wakeup = wakeup;
            this.maxPinned = maxPinned;
            watched = scanner.directory.toRealPath();
            service = FileSystems.getDefault().newWatchService();
            scanner.directory.register(service, StandardWatchEventKinds.ENTRY_CREATE,
                    StandardWatchEventKinds.ENTRY_DELETE, StandardWatchEventKinds.ENTRY_MODIFY);
            Thread thread = new Thread(() -> watch(wakeup), "logship-watcher");
            thread.setDaemon(true);
            thread.start();
        }

        private void watch(Wakeup wakeup) {
            try {
                while (true) {
                    WatchKey key = service.take();
                    for (WatchEvent<?> event : key.pollEvents()) {
                        if (event.kind() == StandardWatchEventKinds.OVERFLOW) {
                            Log.debug("change notification overflowed: rescanning the directory");
                            needsRescan.set(true);
                        } else {
                            Path entry = (Path) event.context();
                            if (event.kind() == StandardWatchEventKinds.ENTRY_CREATE) pin(entry);
                            changed.add(entry);
                        }
                    }
                    if (!key.reset()) {
                        alive = false;
                        Log.warn("the log directory can no longer be watched (deleted or replaced);"
                                + " polling until it is back");
                        return;
                    }
                    wakeup.signal();
                }
            } catch (InterruptedException | ClosedWatchServiceException e) {
                // closing down
            }
        }

        /**
         * Opens a new matching file at once. The open handle keeps the file reachable even if it is
         * renamed to a non-matching name and deleted before the loop looks: with several rotations
         * between two scans, a file that lived for a moment is still shipped.
         */
        private void pin(Path entry) {
            String name = entry.toString();
            // Past the bound, files are left to the loop, which opens them when it gets to them.
            if (!scanner.matches(name) || name.endsWith(".gz") || pinning.get() >= maxPinned) return;
            // Not waited for: this thread only drains events, or they would overflow under load.
            pinning.incrementAndGet();
            Descriptors.inBackground(() -> {
                // The entry as the kernel named it: its name as a string may not survive a C locale.
                ScannedFile file = scanner.inspect(scanner.directory.resolve(entry));
                if (file == null) {
                    pinning.decrementAndGet();
                } else {
                    open(file);
                }
            });
        }

        private void open(ScannedFile file) {
            Descriptors.openLater(file.source(), file.key()).whenComplete((channel, error) -> {
                if (channel == null) {
                    pinning.decrementAndGet(); // gone or unreadable: the loop decides what to say
                    if (error == null) {
                        renamedBeforeOpened.add(file); // its name already leads to another file
                        wakeup.signal();
                    }
                } else if (closed) {
                    Descriptors.closeQuietly(channel);
                } else {
                    pinned.add(new Pinned(file, channel));
                    wakeup.signal();
                }
            });
        }

        List<Pinned> takePinned() {
            List<Pinned> taken = new ArrayList<>();
            for (Pinned p; (p = pinned.poll()) != null; ) taken.add(p);
            pinning.addAndGet(-taken.size());
            return taken;
        }

        /** Still notified of changes in what the directory's path leads to now? */
        boolean stillWatching(Path directory) {
            try {
                return alive && watched.equals(directory.toRealPath());
            } catch (IOException e) {
                return false;
            }
        }

        List<ScannedFile> takeRenamedBeforeOpened() {
            List<ScannedFile> taken = new ArrayList<>();
            for (ScannedFile f; (f = renamedBeforeOpened.poll()) != null; ) taken.add(f);
            return taken;
        }

        /** Names that changed since the last call. */
        Set<Path> takeChanged() {
            Set<Path> entries = new HashSet<>();
            for (Iterator<Path> it = changed.iterator(); it.hasNext(); ) {
                entries.add(it.next());
                it.remove();
            }
            return entries;
        }

        boolean takeNeedsRescan() { return needsRescan.getAndSet(false); }

        @Override
        public void close() throws IOException {
            closed = true;
            service.close();
            for (Pinned p : takePinned()) p.channel().close();
        }
    }

    // =============================================================================================
    // Shutdown: signals, the shutdown hook, and the bound on the drain.
    // =============================================================================================

    /**
     * SIGTERM/SIGINT handling. The first signal asks the loop to drain; a second one cuts the drain
     * short. Signal handlers first, a shutdown hook only as the fallback: a JVM that is already
     * running its shutdown hooks ignores further signals, and the second one must still be heard.
     */
    static final class Shutdown {
        static final Duration HALT_GRACE = Duration.ofSeconds(2);
        private final AtomicInteger signals = new AtomicInteger();
        private final CountDownLatch stopped = new CountDownLatch(1);
        private final Duration drainTimeout;
        private final Wakeup wakeup;

        Shutdown(Duration drainTimeout, Wakeup wakeup) {
            this.drainTimeout = drainTimeout;
            this.wakeup = wakeup;
        }

        void install() {
            for (String name : List.of("TERM", "INT")) {
                try {
                    handleSignal(name);
                } catch (ReflectiveOperationException | RuntimeException e) {
                    Throwable why = e instanceof InvocationTargetException ite ? ite.getCause() : e;
                    Log.debug("cannot handle SIG" + name + ": " + why.getMessage());
                }
            }
            // The fallback for a JVM that shuts down for any other reason (or where the signals
            // above could not be claimed): still drain, within the same bound, before it exits.
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                if (stopped.getCount() == 0) return;
                request("JVM shutdown");
                try {
                    stopped.await(drainTimeout.toMillis(), TimeUnit.MILLISECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }, "logship-shutdown"));
        }

        /**
         * sun.misc.Signal.handle(new Signal(name), signal -> request("SIG" + name)), reached through
         * reflection: javac warns at every compile (so at every JBang first run) about code that names
         * sun.misc.Signal, and the JDK has no public API to handle a signal.
         */
        private void handleSignal(String name) throws ReflectiveOperationException {
            Class<?> signal = Class.forName("sun.misc.Signal");
            Class<?> handler = Class.forName("sun.misc.SignalHandler");
            MethodHandle request = MethodHandles.lookup()
                    .findVirtual(Shutdown.class, "request", MethodType.methodType(void.class, String.class))
                    .bindTo(this);
            MethodHandle onSignal = MethodHandles.dropArguments(
                    MethodHandles.insertArguments(request, 0, "SIG" + name), 0, signal);
            signal.getMethod("handle", signal, handler).invoke(null,
                    signal.getConstructor(String.class).newInstance(name),
                    MethodHandleProxies.asInterfaceInstance(handler, onSignal));
        }

        /** The shipping loop has finished: nothing left for the shutdown hook to wait for. */
        void stopped() { stopped.countDown(); }

        void request(String why) {
            int n = signals.incrementAndGet();
            if (n == 1) {
                Log.info(why + ": stopping discovery and draining what the files hold");
                haltAfter(drainTimeout.plus(HALT_GRACE));
            } else {
                Log.warn(why + " again: cutting the drain short");
                haltAfter(HALT_GRACE);
            }
            wakeup.signal();
        }

        /**
         * The loop checks for a cut-short drain between reads, but a write to a stdout nobody reads
         * blocks forever; this watchdog makes sure the promised bound holds anyway. Positions are
         * saved only for accepted lines, so halting loses nothing that a restart would not ship.
         */
        private void haltAfter(Duration delay) {
            Thread watchdog = new Thread(() -> {
                try {
                    Thread.sleep(delay.toMillis());
                } catch (InterruptedException e) {
                    return;
                }
                Log.warn("drain did not finish in time (stdout is not being read?); exiting with lines unshipped");
                Runtime.getRuntime().halt(1);
            }, "logship-drain-watchdog");
            watchdog.setDaemon(true);
            watchdog.start();
        }

        boolean requested() { return signals.get() > 0; }

        boolean cutShort() { return signals.get() > 1; }
    }

    // =============================================================================================
    // Observability: what the loop publishes (Metrics) and the HTTP server that reads it (Http).
    // =============================================================================================

    /**
     * What the loop tells the outside world. The loop writes volatile and atomic fields here and never
     * waits for a reader; the HTTP handlers only read them, so a slow scraper cannot slow shipping.
     * Free of the Prometheus client, which is loaded only with --http-port.
     */
    static final class Metrics {
        /** Why bytes could not be shipped: the reason label of logship_bytes_unread_total. */
        enum Unread { TRUNCATED, DELETED, UNFINISHED_LINE, CORRUPT_ARCHIVE }

        /** The reason label of logship_file_errors_total: file problems reported on stderr. */
        enum FileError { UNREADABLE, NOT_REGULAR, CORRUPT_ARCHIVE }

        /** One file's size and offset, sampled at the same moment: size - offset is its lag. */
        record FileSample(String name, long size, long offset) {}

        // Written by the Sink after each flush: what stdout has accepted, never more.
        private volatile long linesShipped;
        private volatile long bytesShipped;
        private volatile long linesTruncated;
        final AtomicLong filesRotated = new AtomicLong();
        final AtomicLong filesRemoved = new AtomicLong();
        final AtomicLong positionsSaves = new AtomicLong();
        final AtomicLong positionsSaveErrors = new AtomicLong();
        private final AtomicLongArray unread = new AtomicLongArray(Unread.values().length);
        private final AtomicLongArray fileErrors = new AtomicLongArray(FileError.values().length);
        private final Map<FileKey, FileSample> files = new ConcurrentHashMap<>();
        private volatile long heartbeatNanos = System.nanoTime();
        private volatile boolean writing;
        private volatile boolean ready;

        void shipped(long lines, long bytes, long truncated) {
            linesShipped = lines;
            bytesShipped = bytes;
            linesTruncated = truncated;
        }

        void unread(Unread why, long bytes) {
            if (bytes > 0) unread.addAndGet(why.ordinal(), bytes);
        }

        void fileError(FileError kind) { fileErrors.incrementAndGet(kind.ordinal()); }

        /** A file grown past what was read (the reader got ahead of its size) has no lag. */
        void sample(FileKey key, String name, long size, long offset) {
            files.put(key, new FileSample(name, Math.max(size, offset), offset));
        }

        /** Files no longer followed lose their series. */
        void followOnly(Set<FileKey> followed) { files.keySet().retainAll(followed); }

        /** The loop is alive: called each time round and after each turn on a file. */
        void beat() { heartbeatNanos = System.nanoTime(); }

        /** Around each write to stdout; leaving one is a heartbeat, however long it was blocked. */
        void writing(boolean now) {
            if (!now) heartbeatNanos = System.nanoTime();
            writing = now;
        }

        /** The directory is watched and positions are loaded. */
        void ready() { ready = true; }

        // ------------------------------------------------------------------------ read by Http

        boolean isReady() { return ready; }

        /** Alive if it beat recently, or if it is inside a write to stdout: that is lag, not a stall. */
        boolean aliveWithin(Duration limit) {
            return writing || System.nanoTime() - heartbeatNanos <= limit.toNanos();
        }

        Duration sinceHeartbeat() { return Duration.ofNanos(System.nanoTime() - heartbeatNanos); }

        long linesShipped() { return linesShipped; }

        long bytesShipped() { return bytesShipped; }

        long linesTruncated() { return linesTruncated; }

        long unread(Unread why) { return unread.get(why.ordinal()); }

        long fileErrors(FileError kind) { return fileErrors.get(kind.ordinal()); }

        /**
         * The samples by file name. Two files can share a name for a while (a deleted file still being
         * read and its successor): their sizes and offsets add up, so the lag stays right.
         */
        Map<String, FileSample> filesByName() {
            Map<String, FileSample> byName = new TreeMap<>();
            for (FileSample f : files.values()) {
                byName.merge(f.name(), f, (a, b) -> new FileSample(a.name(), a.size() + b.size(), a.offset() + b.offset()));
            }
            return byName;
        }

        int filesFollowed() { return files.size(); }
    }

    /**
     * /metrics, /healthz and /readyz on one port of all interfaces (the kubelet probes the pod's IP).
     * /metrics uses the Prometheus client's handler on a JDK server of our own, because the client's
     * own server adds a health endpoint that always answers 200. Handlers only read Metrics.
     */
    static final class Http implements AutoCloseable {
        /** Liveness never fails sooner than this: a GC pause or a slow disk is not a stalled loop. */
        static final Duration SHORTEST_STALL = Duration.ofSeconds(60);
        private final HttpServer server;
        private final ExecutorService handlers;

        Http(int port, Metrics metrics, Duration stallLimit) throws IOException {
            server = HttpServer.create(new InetSocketAddress(port), 0);
            server.createContext("/metrics", new MetricsHandler(registry(metrics)));
            server.createContext("/healthz", probe("/healthz", () -> metrics.aliveWithin(stallLimit) ? null
                    : "the shipping loop has not moved for " + metrics.sinceHeartbeat().toSeconds() + "s"));
            server.createContext("/readyz", probe("/readyz", () -> metrics.isReady() ? null
                    : "not watching the directory yet"));
            // Two threads, so a slow scraper does not hold up the kubelet's probes.
            handlers = Executors.newFixedThreadPool(2, task -> {
                Thread thread = new Thread(task, "logship-http");
                thread.setDaemon(true);
                return thread;
            });
            server.setExecutor(handlers);
            server.start();
        }

        /** Null without --http-port; a port that cannot be bound is a setting to fix. */
        static Http serve(Settings settings, Metrics metrics) throws ConfigError {
            if (settings.httpPort().isEmpty()) return null;
            int port = settings.httpPort().getAsInt();
            try {
                Http http = new Http(port, metrics, stallLimit(settings.interval()));
                Log.info("serving /metrics, /healthz and /readyz on port " + http.port());
                return http;
            } catch (IOException e) {
                throw new ConfigError("LOG_HTTP_PORT (--http-port) " + port + " cannot be used: " + reason(e) + ".");
            }
        }

        /** The loop wakes at least once an interval, so three missed wakeups mean it is stuck. */
        static Duration stallLimit(Duration interval) {
            Duration threeIntervals = interval.multipliedBy(3);
            return threeIntervals.compareTo(SHORTEST_STALL) > 0 ? threeIntervals : SHORTEST_STALL;
        }

        int port() { return server.getAddress().getPort(); }

        /** 200 while {@code problem} says null, else 503 with what it says. */
        private static HttpHandler probe(String path, Supplier<String> problem) {
            return exchange -> {
                try (exchange) {
                    String why = exchange.getRequestURI().getPath().equals(path) ? problem.get() : "not found";
                    int status = why == null ? 200 : why.equals("not found") ? 404 : 503;
                    byte[] body = ((why == null ? "ok" : why) + "\n").getBytes(StandardCharsets.UTF_8);
                    exchange.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
                    exchange.sendResponseHeaders(status, body.length);
                    exchange.getResponseBody().write(body);
                }
            };
        }

        /** The contract's metrics, each a view on Metrics: the client keeps no state of its own. */
        static PrometheusRegistry registry(Metrics m) {
            PrometheusRegistry registry = new PrometheusRegistry();
            counter(registry, "logship_lines_shipped_total", "Lines stdout has accepted.", m::linesShipped);
            counter(registry, "logship_bytes_shipped_total", "Bytes stdout has accepted, newlines included.",
                    m::bytesShipped);
            counter(registry, "logship_lines_truncated_total",
                    "Lines longer than --max-line-bytes, shipped cut at that length.", m::linesTruncated);
            CounterWithCallback.builder().name("logship_bytes_unread_total")
                    .help("Bytes that could not be shipped: truncated or deleted before they were read, an"
                            + " unfinished last line of a file no longer followed, a corrupt archive (its size).")
                    .labelNames("reason")
                    .callback(c -> {
                        for (Metrics.Unread why : Metrics.Unread.values()) c.call(m.unread(why), label(why));
                    }).register(registry);
            counter(registry, "logship_files_rotated_total",
                    "Files renamed away, deleted or truncated in place while followed.", m.filesRotated::get);
            counter(registry, "logship_files_removed_total", "Files deleted by LogShip.", m.filesRemoved::get);
            CounterWithCallback.builder().name("logship_file_errors_total")
                    .help("File problems reported on stderr: unreadable files, entries that are not regular"
                            + " files, corrupt archives.")
                    .labelNames("reason")
                    .callback(c -> {
                        for (Metrics.FileError kind : Metrics.FileError.values()) c.call(m.fileErrors(kind), label(kind));
                    }).register(registry);
            counter(registry, "logship_positions_saves_total", "Positions file saves.", m.positionsSaves::get);
            counter(registry, "logship_positions_save_errors_total", "Positions file saves that failed.",
                    m.positionsSaveErrors::get);
            Info.builder().name("logship_build_info").help("The running LogShip.").labelNames("version")
                    .register(registry).addLabelValues(VERSION);
            registry.register(new FileGauges(m));
            return registry;
        }

        private static void counter(PrometheusRegistry registry, String name, String help, LongSupplier value) {
            CounterWithCallback.builder().name(name).help(help).callback(c -> c.call(value.getAsLong()))
                    .register(registry);
        }

        private static String label(Enum<?> constant) { return constant.name().toLowerCase(Locale.ROOT); }

        /** Size and offset of each file from one and the same sample, so a scrape never sees a torn pair. */
        record FileGauges(Metrics metrics) implements MultiCollector {
            @Override
            public MetricSnapshots collect() {
                Map<String, Metrics.FileSample> files = metrics.filesByName();
                GaugeSnapshot.Builder size = GaugeSnapshot.builder().name("logship_file_size_bytes")
                        .help("Size of each followed file (of a .gz, its decompressed content) when last sampled.");
                GaugeSnapshot.Builder offset = GaugeSnapshot.builder().name("logship_file_offset_bytes")
                        .help("Bytes of each followed file read and accepted by stdout, sampled with its size.");
                files.forEach((name, f) -> {
                    Labels file = Labels.of("file", name);
                    size.dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder().labels(file).value(f.size()).build());
                    offset.dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder().labels(file).value(f.offset()).build());
                });
                GaugeSnapshot open = GaugeSnapshot.builder().name("logship_files_open")
                        .help("Files being followed.")
                        .dataPoint(GaugeSnapshot.GaugeDataPointSnapshot.builder().value(metrics.filesFollowed()).build())
                        .build();
                return new MetricSnapshots(size.build(), offset.build(), open);
            }
        }

        @Override
        public void close() {
            server.stop(0);
            handlers.shutdownNow();
        }
    }

    // =============================================================================================
    // Diagnostics: stderr only, one line each.
    // =============================================================================================

    enum Level { DEBUG, INFO, WARN, ERROR }

    static final class Log {
        static volatile Level level = Level.INFO;
        private static final Set<String> warnedOnce = ConcurrentHashMap.newKeySet();

        static void debug(String msg) { emit(Level.DEBUG, msg); }
        static void info(String msg) { emit(Level.INFO, msg); }
        static void warn(String msg) { emit(Level.WARN, msg); }
        static void error(String msg) { emit(Level.ERROR, msg); }

        /**
         * Warns the first time a key is seen, then only at debug, so a bad file cannot flood stderr.
         * True when it warned: a new problem, which the metrics count too.
         */
        static boolean warnOnce(String key, String msg) {
            boolean first = warnedOnce.add(key);
            if (first) warn(msg); else debug(msg);
            return first;
        }

        static void forget(String key) { warnedOnce.remove(key); }

        private static void emit(Level at, String msg) {
            if (at.compareTo(level) >= 0) {
                System.err.println("logship: " + at.name().toLowerCase(Locale.ROOT) + ": " + msg);
            }
        }
    }

    /** The reason in an I/O error, as a user would say it ("permission denied", not a class name). */
    static String reason(Exception e) {
        if (e instanceof AccessDeniedException) return "permission denied";
        if (e instanceof NoSuchFileException) return "no such file or directory";
        if (e instanceof FileSystemException fse && fse.getReason() != null) return fse.getReason();
        if (e instanceof FileAlreadyExistsException) return "a file is in the way";
        return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
    }

    static long modifiedMicros(Path path) {
        try {
            return Files.getLastModifiedTime(path).to(TimeUnit.MICROSECONDS);
        } catch (IOException e) {
            return -1;
        }
    }

    /** A duration as the user would write it: 500ms, 10s. */
    static String formatDuration(Duration d) {
        if (d.toMillis() % 1000 != 0) return d.toMillis() + "ms";
        return d.toSeconds() + "s";
    }
}
