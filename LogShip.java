///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7
//DEPS io.prometheus:prometheus-metrics-core:1.10.0
//DEPS io.prometheus:prometheus-metrics-exporter-httpserver:1.10.0

import java.io.BufferedOutputStream;
import java.io.Closeable;
import java.io.EOFException;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.FilterOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.FileSystems;
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
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
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
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
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
 *                  (rescan, poll, close quiet rotated files, forget, save); Ticker says when each is due
 *   Scanner        which directory entries may be shipped (regular files; symlinks only inside)
 *   Tail           one file being shipped: it opens, reads a turn, commits, reopens and closes itself
 *   Identity       FileKey (device+inode), Fingerprint (first KiB), Marker (bytes before the offset)
 *   Lines          LineReader: bytes to whole lines, long lines cut, partial lines held back
 *   Output         Sink: stdout, raw or JSON; an offset moves only after stdout accepted the bytes before it
 *   Positions      the positions file: versioned rows, written by temp file, fsync, rename
 *   Notification   Watcher (inotify) and Wakeup: lower latency, never needed for correctness
 *   Shutdown       SIGTERM/SIGINT, the shutdown hook, the bounded drain
 *   Observability  Metrics: what the loop publishes (counters, lag per file, heartbeat); Http: /metrics,
 *                  /healthz and /readyz with --http-port, reading those snapshots only
 *   Diagnostics    Log: stderr only, one line each
 * </pre>
 * Advanced, skippable on a first read: Archives (gzip copies of files already shipped), Descriptors
 * (the open-file budget for thousands of files) and inode reuse (Positions.retire).
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
            "1:stdout failed, or the drain was cut short by a second signal or the drain timeout",
            "2:a setting is wrong (the message names it)"})
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
            description = "Ship what the matching files hold now, then exit 0. A last line without a"
                    + " newline is shipped as a line.")
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
                    boolean once, Level level) {}

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
        return new Settings(logDirectory(directory), filePattern(pattern),
                positiveDuration("LOG_SCAN_INTERVAL (--interval)", interval),
                oneOf(StartAt.class, "LOG_START_AT (--start-at)", startAt), lineLimit(maxLineBytes),
                positiveDuration("LOG_DRAIN_TIMEOUT (--drain-timeout)", drainTimeout),
                stateFilePath(stateFile),
                positiveDuration("LOG_ROTATE_WAIT (--rotate-wait)", rotateWait),
                positiveDuration("LOG_FORGET_AFTER (--forget-after)", forgetAfter),
                oneOf(Format.class, "LOG_FORMAT (--format)", format),
                oneOf(Switch.class, "LOG_TIMESTAMP (--timestamp)", timestamp) == Switch.TRUE,
                resource(env), httpPort(httpPort), once, level);
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
        Path dir = Path.of(value).toAbsolutePath().normalize();
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

    /** DOTALL: a file name is one string, and '.' should match any of its characters, even a newline. */
    static Pattern filePattern(String value) throws ConfigError {
        try {
            return Pattern.compile(value, Pattern.DOTALL);
        } catch (PatternSyntaxException e) {
            throw new ConfigError("LOG_FILE_PATTERN (--pattern) '" + value + "' is not a valid regex: "
                    + e.getDescription() + " near index " + e.getIndex() + ".");
        }
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
        BigDecimal nanos = new BigDecimal(m.group(1)).multiply(BigDecimal.valueOf(nanosPerUnit));
        return Duration.ofNanos(nanos.min(BigDecimal.valueOf(Long.MAX_VALUE)).longValue());
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
        Path file = Path.of(value).toAbsolutePath().normalize();
        if (Files.isDirectory(file)) {
            throw new ConfigError("LOG_STATE_FILE (--state) " + file + " is a directory, not a file.");
        }
        Path parent = file.getParent();
        try {
            Files.createDirectories(parent);
            // Probe with a real file: permission bits lie to root and to read-only mounts.
            Path probe = Files.createTempFile(parent, ".logship-probe", ".tmp");
            Files.delete(probe);
        } catch (IOException | SecurityException e) {
            throw new ConfigError("LOG_STATE_FILE (--state) directory " + parent + " is not writable: "
                    + reason(e) + ".");
        }
        return file;
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
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            Log.error("stopped by an unexpected error: " + e);
            return 1;
        });
        return cli;
    }

    @Override
    public Integer call() throws IOException {
        Settings settings;
        try {
            settings = settings();
        } catch (ConfigError e) {
            System.err.println("logship: " + e.getMessage());
            return 2;
        }
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
            Sink sink = new Sink(new FileOutputStream(FileDescriptor.out), settings, metrics);
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
        private final Ticker ticker;
        private final Metrics metrics;
        private final Map<FileKey, Tail> tails = new LinkedHashMap<>();
        private boolean positionsDirty;

        Shipper(Settings settings, Sink sink, Shutdown shutdown, Wakeup wakeup, Positions positions, Metrics metrics)
                throws IOException {
            this.settings = settings;
            this.shutdown = shutdown;
            this.wakeup = wakeup;
            this.positions = positions;
            this.metrics = metrics;
            this.scanner = new Scanner(settings.directory(), settings.pattern(), metrics);
            this.shared = new Tail.Shared(new LineReader(settings.maxLineBytes()), sink,
                    Descriptors.fromProcessLimit(), scanner, positions, settings.maxLineBytes(), metrics);
            this.archives = new Archives(positions, shared, metrics);
            this.ticker = new Ticker(settings.interval());
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
                    readUntilCaughtUp(tails.values(), NO_DEADLINE, true);
                    savePositions();
                    return 0;
                }
                // Watch first, then scan: a file created in between is then seen by one or the other.
                try (Watcher watcher = startWatcher()) {
                    discoverAtStartup();
                    metrics.ready();
                    Log.info("ready: following " + tails.size() + " file(s)");
                    follow(watcher);
                }
                return drain();
            } catch (StdoutFailed e) {
                Log.error("cannot write to stdout (" + e.getCause().getMessage() + "); stopping");
                return 1;
            } catch (IOException e) {
                Log.error("stopping: " + e.getMessage());
                return 1;
            } finally {
                tails.values().forEach(Tail::close);
            }
        }

        /**
         * The table of contents: sleep until the watcher, a signal or the ticker wakes us, then run
         * what is due. Each tick runs the always-correct jobs; between ticks only what the watcher
         * saw changing is read.
         */
        private void follow(Watcher watcher) throws IOException {
            ticker.start();
            readUntilCaughtUp(tails.values(), NO_DEADLINE, false);
            while (!shutdown.requested()) {
                try {
                    wakeup.await(ticker.nanosUntilNextJob(positionsDirty));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
                metrics.beat();
                if (shutdown.requested()) return;
                if (ticker.tickDue()) {
                    tick();
                } else {
                    readUntilCaughtUp(changedTails(watcher), NO_DEADLINE, false);
                    closeQuietRotatedFiles();
                }
                if (ticker.saveDue(positionsDirty)) savePositions();
            }
        }

        /** One tick: the periodic jobs, by name, in the order they must run. */
        void tick() throws IOException {
            rescan(false);
            readUntilCaughtUp(new ArrayList<>(tails.values()), NO_DEADLINE, false);
            closeQuietRotatedFiles();
            forgetOldPositions();
        }

        void discoverAtStartup() { rescan(true); }

        int tailCount() { return tails.size(); }

        private Watcher startWatcher() {
            try {
                return new Watcher(scanner, wakeup);
            } catch (IOException | UnsupportedOperationException e) {
                Log.warn("no change notification (" + e.getMessage() + "); polling every "
                        + formatDuration(settings.interval()));
                return null;
            }
        }

        /**
         * Brings the tails in line with what the directory holds: new files get a tail, renamed ones
         * keep theirs under the new name, and a tail whose name no longer leads to it keeps reading
         * its open handle, because the writer may still be appending to the renamed file.
         */
        private void rescan(boolean startup) {
            List<ScannedFile> scanned = scanner.scan();
            if (scanned == null) return;
            Set<FileKey> present = new HashSet<>();
            for (ScannedFile file : scanned) {
                present.add(file.key());
                Tail tail = tails.get(file.key());
                if (tail != null && tail.compressed && !tail.sameArchive(file)) {
                    // Archives do not grow: another archive got this inode (replaced by logrotate).
                    metrics.unread(Metrics.Unread.DELETED, tail.unreadBytes());
                    tail.close();
                    tails.remove(tail.key);
                    tail = null;
                }
                if (tail != null) {
                    tail.foundAt(file.path());
                } else {
                    startTail(file, null, startup);
                }
            }
            for (Iterator<Tail> it = tails.values().iterator(); it.hasNext(); ) {
                Tail tail = it.next();
                if (present.contains(tail.key) || tail.renamedAwayOrDeleted()) continue;
                tail.lostItsName();
                if (tail.compressed) {
                    metrics.unread(Metrics.Unread.DELETED, tail.unreadBytes());
                    tail.close();
                    it.remove();
                } else if (!tail.stillReadable()) {
                    metrics.unread(Metrics.Unread.DELETED, tail.unreadBytes());
                    keepPosition(tail);
                    it.remove();
                }
            }
            archives.forgetAllBut(present);
            metrics.followOnly(tails.keySet());
        }

        /** A new file gets a tail that starts where its saved position (or --start-at) says. */
        private void startTail(ScannedFile file, FileChannel pinned, boolean startup) {
            Tail tail = file.isArchive() ? archives.start(file, tails.values())
                    : Tail.start(file, pinned, startup && settings.startAt() == StartAt.TAIL, shared);
            if (tail != null) tails.put(tail.key, tail);
        }

        /** The tails a watcher batch concerns, rescanning first when names came or went. */
        private Collection<Tail> changedTails(Watcher watcher) {
            if (watcher == null) return List.of();
            Set<FileKey> known = new HashSet<>(tails.keySet());
            for (Watcher.Pinned p : watcher.takePinned()) {
                if (tails.containsKey(p.file().key())) {
                    Descriptors.closeQuietly(p.channel());
                } else {
                    startTail(p.file(), p.channel(), false);
                }
            }
            Set<String> names = watcher.takeChanged();
            boolean rescan = watcher.takeNeedsRescan();
            Set<String> tailNames = tails.values().stream().map(Tail::name).collect(Collectors.toSet());
            for (String name : names) {
                if (!tailNames.contains(name) && scanner.matches(name)) rescan = true;
            }
            if (rescan) rescan(false);
            Set<Tail> due = new LinkedHashSet<>();
            for (Tail t : tails.values()) {
                // Renamed-away files change under names we cannot map back, so they are always due;
                // files just found are due too, as an overflow may have dropped their own events.
                if (t.renamedAwayOrDeleted() || names.contains(t.name()) || !known.contains(t.key)
                        || (rescan && t.compressed)) {
                    due.add(t);
                }
            }
            return due;
        }

        /**
         * Reads the given tails round-robin, each for at most one turn at a time, until none has more
         * or the deadline passes: one busy file cannot starve the others.
         */
        boolean readUntilCaughtUp(Collection<Tail> due, long deadlineNanos, boolean shipTrailingPartials)
                throws IOException {
            ArrayDeque<Tail> queue = new ArrayDeque<>(due);
            while (!queue.isEmpty()) {
                if (deadlineNanos != NO_DEADLINE && System.nanoTime() - deadlineNanos >= 0) return false;
                if (shutdown.cutShort()) return false;
                Tail tail = queue.poll();
                if (!tails.containsKey(tail.key)) continue;
                boolean moreToRead = tail.readTurn(shipTrailingPartials);
                metrics.beat();
                if (tail.takeCommitted()) positionsDirty = true;
                if (moreToRead) queue.add(tail);
            }
            return true;
        }

        /** Renamed-away or deleted files are closed once they have been quiet for --rotate-wait. */
        private void closeQuietRotatedFiles() {
            long quiet = settings.rotateWait().toNanos();
            for (Iterator<Tail> it = tails.values().iterator(); it.hasNext(); ) {
                Tail tail = it.next();
                if (tail.goneAndQuietFor(quiet)) {
                    Log.debug("done with " + tail.name() + " (renamed away or deleted, and quiet)");
                    metrics.unread(Metrics.Unread.UNFINISHED_LINE, tail.unreadBytes());
                    keepPosition(tail);
                    tail.close();
                    it.remove();
                    metrics.followOnly(tails.keySet());
                }
            }
        }

        private void forgetOldPositions() {
            if (positions.forgetOlderThan(forgetCutoff())) positionsDirty = true;
        }

        private long forgetCutoff() { return System.currentTimeMillis() - settings.forgetAfter().toMillis(); }

        /** A finished tail's position is kept: a restart or its compressed copy may still need it. */
        private void keepPosition(Tail tail) {
            positions.put(tail.entry());
            positionsDirty = true;
        }

        void savePositions() {
            for (Tail tail : tails.values()) positions.put(tail.entry());
            positions.forgetOlderThan(forgetCutoff());
            try {
                positions.save();
                positionsDirty = false;
                if (positions.persistent()) metrics.positionsSaves.incrementAndGet();
            } catch (IOException e) {
                metrics.positionsSaveErrors.incrementAndGet();
                Log.warnOnce("save", "cannot save positions: " + reason(e) + "; will retry");
            }
            ticker.saved();
        }

        /**
         * After a signal: no more discovery beyond one last look, ship what the files hold now, flush,
         * save. Bounded by --drain-timeout, and cut short by a second signal.
         */
        int drain() throws IOException {
            long deadline = System.nanoTime() + settings.drainTimeout().toNanos();
            rescan(false);
            boolean complete = readUntilCaughtUp(new ArrayList<>(tails.values()), deadline, false);
            savePositions();
            if (!complete) {
                Log.warn(shutdown.cutShort() ? "drain cut short by a second signal; unshipped lines remain in the files"
                        : "drain timed out after " + formatDuration(settings.drainTimeout())
                        + "; unshipped lines remain in the files");
                return 1;
            }
            Log.info("drained; shipped " + shared.sink().lines + " line(s) in all");
            return 0;
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

    // =============================================================================================
    // Scanner: which directory entries are files we may ship?
    // =============================================================================================

    /** A shippable file as the scanner saw it: its name now, which file it is, and its size. */
    record ScannedFile(Path path, FileKey key, long size) {
        boolean isArchive() { return path.getFileName().toString().endsWith(".gz"); }
    }

    static final class Scanner {
        final Path directory;
        private final Path realDirectory;
        private final Pattern pattern;
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
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
                for (Path path : entries) {
                    if (!matches(path.getFileName().toString())) continue;
                    ScannedFile file = inspect(path);
                    if (file != null) found.add(file);
                }
            } catch (IOException | UncheckedIOException e) {
                Log.warnOnce("scan:" + directory, "cannot list " + directory + ": " + e.getMessage()
                        + "; will retry at the next rescan");
                return null;
            }
            Log.forget("scan:" + directory);
            return found;
        }

        /**
         * Decides whether one entry may be shipped. Only regular files qualify: reading a FIFO or a
         * device could block the whole shipper, and a symlink is followed only to a regular file in
         * this same directory, so a compromised app cannot make us ship a mounted secret.
         * Entries that vanish while we look are simply not there.
         */
        ScannedFile inspect(Path path) {
            String name = path.getFileName().toString();
            try {
                BasicFileAttributes attrs = Files.readAttributes(path, BasicFileAttributes.class,
                        LinkOption.NOFOLLOW_LINKS);
                if (attrs.isSymbolicLink()) {
                    Path target;
                    try {
                        target = path.toRealPath();
                    } catch (NoSuchFileException e) {
                        skipped(Log.warnOnce("dangling:" + name, "skipping " + name + ": the symlink points nowhere"));
                        return null;
                    }
                    if (!realDirectory.equals(target.getParent())) {
                        skipped(Log.warnOnce("outside:" + name, "skipping " + name + ": it is a symlink to " + target
                                + ", which is outside the log directory"));
                        return null;
                    }
                    attrs = Files.readAttributes(target, BasicFileAttributes.class);
                }
                if (!attrs.isRegularFile()) {
                    skipped(Log.warnOnce("irregular:" + name, "skipping " + name + ": it is "
                            + (attrs.isDirectory() ? "a directory" : "not a regular file (FIFO, socket or device)")));
                    return null;
                }
                return new ScannedFile(path, FileKey.of(path), attrs.size());
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

        /** Finds a file by identity under any name, matching or not: where did a closed file go? */
        Path locate(FileKey key) {
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
                for (Path path : entries) {
                    try {
                        if (Files.isRegularFile(path, LinkOption.NOFOLLOW_LINKS) && key.equals(FileKey.of(path))) {
                            return path;
                        }
                    } catch (IOException e) {
                        // gone or unreadable: not the one
                    }
                }
            } catch (IOException e) {
                return null;
            }
            return null;
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

    static final class Tail {
        /** What every tail reads with; passed once, so a tail can own its reads without owning these. */
        record Shared(LineReader reader, Sink sink, Descriptors descriptors, Scanner scanner, Positions positions,
                      int maxLineBytes, Metrics metrics) {}

        final FileKey key;
        final boolean compressed;
        private final Shared shared;
        private Path path;
        private Sink.Origin origin;
        /** Every byte before at.offset() has been accepted by stdout; a line start unless skipping. */
        private Checkpoint at = Checkpoint.START;
        /** Null while closed to save descriptors; reopened by path when the file changes. */
        private FileChannel channel;
        /** When its name stopped leading to it (renamed away or deleted); 0 while it still does. */
        private long goneSinceNanos;
        private long lastGrowthNanos = System.nanoTime();
        /** The file's size when last looked at (of an archive, its decompressed length). */
        private long size;
        private long cutLines;
        private boolean committed;
        // Compressed files only: the decompressed stream positioned at the offset, whether all of it
        // was shipped, and the archive's size and time when it was found complete.
        private InputStream inflated;
        private boolean finished;
        private long archiveSize;
        private long archiveModifiedMicros;

        private Tail(FileKey key, Path path, boolean compressed, Shared shared) {
            this.key = key;
            this.path = path;
            this.compressed = compressed;
            this.shared = shared;
        }

        /**
         * A plain file's tail, starting where its saved position says if that position is still
         * valid, at the last line's start with --start-at tail, or else at byte 0. Null if the file
         * cannot be opened now (the next scan tries again).
         */
        static Tail start(ScannedFile file, FileChannel pinned, boolean startAtEnd, Shared shared) {
            Tail tail = new Tail(file.key(), file.path(), false, shared);
            if (pinned != null) {
                tail.channel = pinned;
                shared.descriptors().countPinned();
            }
            FileChannel channel = pinned != null ? pinned : tail.open();
            if (channel == null) return null;
            try {
                tail.at = tail.startingPoint(channel, startAtEnd);
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

        /** A complete .gz archive's tail; Archives decides where it starts. */
        static Tail archive(ScannedFile file, Fingerprint headOfContent, Shared shared) {
            Tail tail = new Tail(file.key(), file.path(), true, shared);
            tail.archiveSize = file.size();
            tail.archiveModifiedMicros = modifiedMicros(file.path());
            tail.at = Checkpoint.START.withFingerprint(headOfContent);
            return tail;
        }

        private Checkpoint startingPoint(FileChannel channel, boolean startAtEnd) throws IOException {
            Positions.Entry saved = shared.positions().get(key);
            long size = channel.size();
            Checkpoint from = Checkpoint.START;
            if (saved != null && !saved.compressed() && saved.fingerprint().matches(channel)) {
                Checkpoint was = saved.checkpoint();
                if (size >= was.offset() && was.marker().stillBefore(channel, was.offset())) {
                    from = was;
                    Log.debug("resuming " + name() + " at byte " + was.offset());
                } else {
                    Log.warn(name() + " was truncated since its position was saved; reading it from the start");
                }
            } else if (saved != null) {
                Log.debug(name() + " has the inode of " + saved.path().getFileName()
                        + " but other first bytes: a new file, read from the start");
                shared.positions().retire(key);
            } else if (startAtEnd) {
                from = Checkpoint.atLastLine(channel, size, shared.maxLineBytes());
            }
            return from.withFingerprint(Fingerprint.read(channel));
        }

        String name() { return path.getFileName().toString(); }

        boolean renamedAwayOrDeleted() { return goneSinceNanos != 0; }

        /** The scanner found this file (again) under this name. */
        void foundAt(Path now) {
            if (!path.equals(now)) Log.debug(name() + " is now " + now.getFileName());
            path = now;
            goneSinceNanos = 0;
        }

        /** Its name no longer leads to it: renamed away or deleted. */
        void lostItsName() {
            goneSinceNanos = System.nanoTime();
            if (compressed) return;
            Log.debug(name() + " was renamed away or deleted; reading it to its end");
            shared.metrics().filesRotated.incrementAndGet();
            // Its lines name the file they come from: the rotated name, if it still has one.
            Path now = shared.scanner().locate(key);
            if (now != null) path = now;
        }

        /** Bytes seen in the file that were never shipped (an unfinished last line, at least). */
        long unreadBytes() { return Math.max(0, size - at.offset()); }

        /** Can it still be read to its end: through its open handle, or under the name it has now? */
        boolean stillReadable() { return channel != null || reopenElsewhere(); }

        boolean goneAndQuietFor(long quietNanos) {
            long now = System.nanoTime();
            return renamedAwayOrDeleted() && now - goneSinceNanos >= quietNanos && now - lastGrowthNanos >= quietNanos;
        }

        /** Archives never change; one that did is another archive that got this inode. */
        boolean sameArchive(ScannedFile file) {
            return file.size() == archiveSize && modifiedMicros(file.path()) == archiveModifiedMicros;
        }

        /** What the file's first bytes are now (they may have grown or been rewritten); null if unreadable. */
        Fingerprint fingerprintNow() {
            if (channel == null) return at.fingerprint();
            try {
                return Fingerprint.read(channel);
            } catch (IOException e) {
                return null;
            }
        }

        /** True once after each commit: the positions table is behind. */
        boolean takeCommitted() {
            boolean was = committed;
            committed = false;
            return was;
        }

        Positions.Entry entry() {
            return new Positions.Entry(key, compressed, at, System.currentTimeMillis(), path);
        }

        /**
         * One turn on this file: at most Shipper.TURN_BYTES, never stopping inside a line. True when
         * the turn ran out before the file did. A file that cannot be read now is closed and retried.
         */
        boolean readTurn(boolean shipTrailingPartial) throws IOException {
            try {
                return compressed ? readArchiveTurn() : readPlainTurn(shipTrailingPartial);
            } catch (StdoutFailed e) {
                throw e;
            } catch (IOException e) {
                unreadable(e, "; will retry");
                close();
                return false;
            }
        }

        private boolean readPlainTurn(boolean shipTrailingPartial) throws IOException {
            FileChannel file = channel != null ? channel : reopen();
            if (file == null) return false;
            long seen = size;
            size = file.size();
            // The marker is checked even when the size is unchanged: a file truncated and rewritten to
            // exactly its old length would otherwise pass for unchanged until it grew again.
            if (size < at.offset() || !at.marker().stillBefore(file, at.offset())) {
                Log.warn(name() + " was truncated; reading it again from the start");
                shared.metrics().filesRotated.incrementAndGet();
                // What was seen but not yet shipped is gone (more may have been, unseen).
                shared.metrics().unread(Metrics.Unread.TRUNCATED, seen - at.offset());
                at = Checkpoint.START;
            }
            sample();
            if (size <= at.offset()) {
                idle();
                return false;
            }
            long from = at.offset();
            Progress progress = shared.reader().read((into, position) -> file.read(ByteBuffer.wrap(into), position),
                    from, at.skippingLongLine(), Shipper.TURN_BYTES, shipTrailingPartial, origin(), shared.sink());
            commit(progress);
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

        private boolean readArchiveTurn() throws IOException {
            if (finished) return false;
            if (inflated == null) {
                inflated = shared.descriptors().openArchive(path);
                inflated.skipNBytes(at.offset());
            }
            InputStream in = inflated;
            Progress progress = shared.reader().read((into, position) -> in.readNBytes(into, 0, into.length),
                    at.offset(), at.skippingLongLine(), Shipper.TURN_BYTES, true, origin(), shared.sink());
            commit(progress);
            sample();
            if (progress.moreToRead()) return true;
            finished = true;
            close();
            Log.debug("shipped the archive " + name());
            return false;
        }

        /** Stdout accepted the lines: only now may the offset move past them. */
        private void commit(Progress progress) throws IOException {
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

        /** An archive that was shipped before (or whose original was) starts past what went out. */
        void resumeArchiveAt(long offset, boolean skippingLongLine, long contentLength) {
            at = at.advancedTo(offset, skippingLongLine);
            finished = offset >= contentLength;
            size = contentLength;
            sample();
        }

        private Sink.Origin origin() {
            if (origin == null || !origin.path().equals(path)) origin = shared.sink().originOf(path);
            return origin;
        }

        /** Size and offset for the lag gauges, taken together. */
        private void sample() { shared.metrics().sample(key, name(), size, at.offset()); }

        private void unreadable(IOException e, String outlook) {
            if (Log.warnOnce("read:" + name(), "cannot read " + name() + ": " + reason(e) + outlook)) {
                shared.metrics().fileError(Metrics.FileError.UNREADABLE);
            }
        }

        /** Caught up with the file: give its descriptor back if we hold too many. */
        private void idle() {
            if (shared.descriptors().overBudget() && !renamedAwayOrDeleted()) close();
        }

        /** Opens the file by its name, if that name still leads to this file. */
        private FileChannel open() {
            try {
                channel = shared.descriptors().open(path, key);
                if (channel != null) Log.forget("read:" + name());
                return channel;
            } catch (NoSuchFileException e) {
                return null;
            } catch (IOException e) {
                unreadable(e, "; will retry at each rescan");
                return null;
            }
        }

        /** Reopens a tail closed to save descriptors, under its name or wherever it went. */
        private FileChannel reopen() throws IOException {
            if (open() == null && !reopenElsewhere()) return null;
            if (!at.fingerprint().matches(channel)) {
                // The inode was freed while we held no handle and a new file got it: a new file.
                Log.debug(name() + " is a new file that reuses an old inode; reading it from the start");
                shared.positions().retire(key);
                at = Checkpoint.START;
            }
            return channel;
        }

        /** A closed tail whose name moved on: find the file under its new name, if it still exists. */
        private boolean reopenElsewhere() {
            Path now = shared.scanner().locate(key);
            if (now == null) return false;
            path = now;
            return open() != null;
        }

        void close() {
            if (channel != null || inflated != null) shared.descriptors().released();
            Descriptors.closeQuietly(channel);
            Descriptors.closeQuietly(inflated);
            channel = null;
            inflated = null;
        }
    }

    /**
     * The open-file budget, and the one way files are opened. Half the descriptor limit, leaving the
     * rest to the JVM, stdout and the watcher; tails past the budget give their handle back when
     * caught up and reopen it when the file changes.
     */
    static final class Descriptors {
        private final int budget;
        private int open;

        Descriptors(int budget) { this.budget = budget; }

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
            FileChannel channel = FileChannel.open(path, StandardOpenOption.READ);
            FileKey now;
            try {
                now = FileKey.of(path);
            } catch (IOException e) {
                now = null;
            }
            if (expected.equals(now)) return channel;
            channel.close();
            return null;
        }

        FileChannel open(Path path, FileKey expected) throws IOException {
            FileChannel channel = openIfStill(path, expected);
            if (channel != null) open++;
            return channel;
        }

        InputStream openArchive(Path path) throws IOException {
            InputStream in = new GZIPInputStream(Files.newInputStream(path), LineReader.CHUNK);
            open++;
            return in;
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
     * gzip archives: a .gz is shipped only once its stream is complete. If its decompressed start
     * matches a file we already shipped (it is that file, rotated and compressed), only what lies past
     * that file's offset is new.
     */
    static final class Archives {
        private final Positions positions;
        private final Tail.Shared shared;
        /** .gz files still being written or found corrupt, with the size at which we last looked. */
        private final Map<FileKey, Long> onHold = new HashMap<>();
        private final Metrics metrics;

        Archives(Positions positions, Tail.Shared shared, Metrics metrics) {
            this.positions = positions;
            this.shared = shared;
            this.metrics = metrics;
        }

        /** A tail for a complete archive, or null while it must wait (or is corrupt). */
        Tail start(ScannedFile file, Collection<Tail> tails) {
            Long heldAtSize = onHold.get(file.key());
            if (heldAtSize != null && heldAtSize == file.size()) return null; // unchanged since we last looked
            ArchiveCheck check;
            try {
                check = ArchiveCheck.of(file.path());
            } catch (IOException e) {
                if (Log.warnOnce("read:" + file.path(), "cannot read " + file.path().getFileName() + ": " + reason(e))) {
                    metrics.fileError(Metrics.FileError.UNREADABLE);
                }
                return null;
            }
            String name = file.path().getFileName().toString();
            if (check instanceof ArchiveCheck.Incomplete) {
                Log.debug(name + " is not a complete gzip stream yet; waiting for its writer");
                onHold.put(file.key(), file.size());
                return null;
            }
            if (check instanceof ArchiveCheck.Corrupt corrupt) {
                if (Log.warnOnce("corrupt:" + file.key() + ":" + file.size(), "skipping " + name
                        + ": not a valid gzip file (" + corrupt.why() + ")")) {
                    metrics.fileError(Metrics.FileError.CORRUPT_ARCHIVE);
                    metrics.unread(Metrics.Unread.CORRUPT_ARCHIVE, file.size());
                }
                onHold.put(file.key(), file.size());
                return null;
            }
            ArchiveCheck.Complete complete = (ArchiveCheck.Complete) check;
            onHold.remove(file.key());
            Tail tail = Tail.archive(file, Fingerprint.of(complete.head(), complete.headLength()), shared);
            Positions.Entry saved = positions.get(file.key());
            // An empty fingerprint proves nothing: a replaced archive may have the old one's inode.
            if (saved != null && saved.compressed() && saved.fingerprint().length() > 0
                    && saved.fingerprint().matchesStartOf(complete.head(), complete.headLength())) {
                tail.resumeArchiveAt(saved.offset(), false, complete.length());
                return tail;
            }
            if (saved != null) positions.retire(file.key()); // its inode went to this archive
            Tail original = liveOriginalOf(complete, tails);
            if (original != null) {
                Log.debug("holding " + name + " until " + original.name() + ", its uncompressed original, is done");
                return null;
            }
            Positions.Entry shipped = shippedOriginalOf(complete);
            if (shipped != null) {
                long offset = Math.min(shipped.offset(), complete.length());
                Log.info(name + " is " + shipped.path().getFileName() + " compressed; shipping only the "
                        + (complete.length() - offset) + " bytes not shipped before");
                tail.resumeArchiveAt(offset, shipped.checkpoint().skippingLongLine(), complete.length());
            } else {
                tail.resumeArchiveAt(0, false, complete.length());
            }
            return tail;
        }

        /** Archives no longer in the directory need no hold. */
        void forgetAllBut(Set<FileKey> present) { onHold.keySet().retainAll(present); }

        private static Tail liveOriginalOf(ArchiveCheck.Complete archive, Collection<Tail> tails) {
            for (Tail t : tails) {
                if (t.compressed) continue;
                // Compare with what the open file holds now, not the tail's last fingerprint: the file
                // may have grown or been rewritten since, and its compressed copy already says so.
                Fingerprint now = t.fingerprintNow();
                if (now == null) continue;
                // The original is at least as long as its copy: a shorter file that merely starts the
                // same way (a line half written, a shared timestamp) must not hold the archive back.
                boolean longEnough = now.length() >= Math.min(Fingerprint.SIZE, archive.headLength());
                if (now.length() > 0 && longEnough && now.matchesStartOf(archive.head(), archive.headLength())) return t;
            }
            return null;
        }

        private Positions.Entry shippedOriginalOf(ArchiveCheck.Complete archive) {
            return positions.all().stream()
                    .filter(e -> !e.compressed() && e.fingerprint().length() > 0
                            && e.fingerprint().matchesStartOf(archive.head(), archive.headLength()))
                    .max(Comparator.comparingInt((Positions.Entry e) -> e.fingerprint().length())
                            .thenComparingLong(Positions.Entry::lastSeenMillis))
                    .orElse(null);
        }
    }

    /** The verdict on a .gz file: ship it, wait for its writer, or give up on it. */
    sealed interface ArchiveCheck {
        /** The whole stream inflates; head holds its first decompressed bytes. */
        record Complete(byte[] head, int headLength, long length) implements ArchiveCheck {}

        record Incomplete() implements ArchiveCheck {}

        record Corrupt(String why) implements ArchiveCheck {}

        /**
         * Inflates the whole file once, discarding the output, so a half-written archive is never
         * shipped half: only a stream that ends properly counts as complete.
         */
        static ArchiveCheck of(Path path) throws IOException {
            byte[] head = new byte[Fingerprint.SIZE];
            byte[] scratch = new byte[LineReader.CHUNK];
            int headLength = 0;
            long length = 0;
            try (InputStream in = new GZIPInputStream(Files.newInputStream(path), LineReader.CHUNK)) {
                int n;
                while ((n = in.read(scratch)) > 0) {
                    if (headLength < head.length) {
                        int take = Math.min(n, head.length - headLength);
                        System.arraycopy(scratch, 0, head, headLength, take);
                        headLength += take;
                    }
                    length += n;
                }
            } catch (EOFException e) {
                return new Incomplete();
            } catch (ZipException e) {
                return new Corrupt(e.getMessage());
            }
            return new Complete(head, headLength, length);
        }
    }

    // =============================================================================================
    // Identity: is this the same file as before, whatever its name?
    // =============================================================================================

    /** Device and inode: stable across renames, but reused once a file is deleted. */
    record FileKey(long device, long inode) {
        static FileKey of(Path path) throws IOException {
            Map<String, Object> attrs = Files.readAttributes(path, "unix:dev,ino");
            return new FileKey(((Number) attrs.get("dev")).longValue(), ((Number) attrs.get("ino")).longValue());
        }
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

    /** What one turn of reading achieved; moreToRead when the turn ran out before the data did. */
    record Progress(long offset, boolean skippingLongLine, boolean moreToRead, long lines, long cut) {}

    /** Where a LineReader gets bytes from: positional reads for plain files, a stream for archives. */
    interface ByteSource {
        int read(byte[] into, long position) throws IOException;
    }

    /**
     * Splits bytes into lines and writes whole lines to the sink. A line longer than the limit is cut
     * at the limit and its rest dropped. A line still missing its newline at the end of the data is
     * not shipped: the offset stays at its start and it is read again once more bytes arrive. One
     * instance serves every file, one turn at a time, so memory is one chunk plus one line, however
     * many files there are.
     */
    static final class LineReader {
        static final int CHUNK = 64 * 1024;
        private final byte[] chunk = new byte[CHUNK];
        private byte[] line = new byte[8 * 1024];
        private final int maxLineBytes;
        // The turn in progress.
        private Sink sink;
        private Sink.Origin origin;
        private long committed;
        private int lineLength;
        private boolean skipping;
        private long lines;
        private long cut;

        LineReader(int maxLineBytes) { this.maxLineBytes = maxLineBytes; }

        /**
         * Reads from {@code start} until the data ends or {@code turnBytes} are used up; never stops
         * inside a line, so a long line always completes within one turn.
         */
        Progress read(ByteSource source, long start, boolean skippingLongLine, long turnBytes,
                      boolean shipTrailingPartial, Sink.Origin from, Sink to) throws IOException {
            sink = to;
            origin = from;
            committed = start;
            lineLength = 0;
            skipping = skippingLongLine;
            lines = 0;
            cut = 0;
            long position = start;
            boolean moreToRead = false;
            while (true) {
                if (position - start >= turnBytes && lineLength == 0) {
                    moreToRead = true;
                    break;
                }
                int n = source.read(chunk, position);
                if (n <= 0) break;
                split(position, n);
                position += n;
            }
            if (lineLength > 0 && shipTrailingPartial) {
                ship(false);
                committed = position;
            }
            return new Progress(committed, skipping, moreToRead, lines, cut);
        }

        /** Splits the chunk just read at {@code chunkStart} into lines. */
        private void split(long chunkStart, int n) throws StdoutFailed {
            int i = 0;
            while (i < n) {
                int newline = indexOfNewline(chunk, i, n);
                boolean lineEnds = newline >= 0;
                int end = lineEnds ? newline : n;
                long after = chunkStart + (lineEnds ? newline + 1 : n);
                if (skipping) {
                    // The rest of a cut line: dropped up to and including its newline.
                    skipping = !lineEnds;
                    committed = after;
                } else {
                    collect(i, end, lineEnds, after);
                }
                i = lineEnds ? newline + 1 : n;
            }
        }

        /** Adds chunk[from, to) to the line; ships it when it ends or reaches the limit. */
        private void collect(int from, int to, boolean lineEnds, long after) throws StdoutFailed {
            int room = maxLineBytes - lineLength;
            int length = to - from;
            append(from, Math.min(room, length));
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

        private void append(int from, int length) {
            if (lineLength + length > line.length) {
                int grown = (int) Math.min(maxLineBytes, Math.max((long) line.length * 2, lineLength + length));
                line = Arrays.copyOf(line, grown);
            }
            System.arraycopy(chunk, from, line, lineLength, length);
            lineLength += length;
        }

        private static int indexOfNewline(byte[] bytes, int from, int to) {
            for (int i = from; i < to; i++) {
                if (bytes[i] == '\n') return i;
            }
            return -1;
        }
    }

    // =============================================================================================
    // Output: stdout, whole lines only.
    // =============================================================================================

    /**
     * Writes whole lines to stdout through one buffer. flush() returning means stdout accepted
     * every byte handed over so far: tails commit offsets only after it, so a saved position never
     * covers a line stdout has not accepted. (A writer thread could sit behind this seam: flush()
     * would then wait until the writer has written what was queued.)
     */
    static final class Sink {
        /** The file lines come from, with what the format writes for it prepared once. */
        record Origin(Path path, byte[] jsonFields) {}

        private static final byte[] JSON_START = "{\"message\":\"".getBytes(StandardCharsets.US_ASCII);
        private static final byte[] JSON_OFFSET = "\",\"log.offset\":".getBytes(StandardCharsets.US_ASCII);
        private static final byte[] JSON_TRUNCATED = ",\"log.truncated\":true".getBytes(StandardCharsets.US_ASCII);
        private static final byte[] JSON_TIMESTAMP = ",\"timestamp\":\"".getBytes(StandardCharsets.US_ASCII);
        private static final DateTimeFormatter RFC_3339 =
                DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.ROOT).withZone(ZoneOffset.UTC);
        private static final char[] HEX = "0123456789abcdef".toCharArray();
        private final OutputStream out;
        private final Format format;
        private final boolean timestamp;
        /** The k8s.* fields, the same for every line: written once here and copied into each origin. */
        private final String resourceFields;
        private final Metrics metrics;
        long lines;
        private long bytes;
        private long cut;
        // The timestamp is formatted again only when the millisecond changed.
        private long stampMillis = -1;
        private byte[] stamp;

        Sink(OutputStream out, Settings settings, Metrics metrics) {
            this.out = new BufferedOutputStream(new Watched(out, metrics), 64 * 1024);
            this.format = settings.format();
            this.timestamp = settings.timestamp();
            this.metrics = metrics;
            StringBuilder fields = new StringBuilder();
            settings.resource().forEach((key, value) -> fields.append(",\"").append(key).append("\":\"")
                    .append(jsonEscape(value)).append('"'));
            this.resourceFields = fields.toString();
        }

        Origin originOf(Path path) {
            byte[] fields = format == Format.JSON
                    ? (",\"log.file.path\":\"" + jsonEscape(path.toString()) + "\",\"log.file.name\":\""
                            + jsonEscape(path.getFileName().toString()) + "\"" + resourceFields + "}\n")
                            .getBytes(StandardCharsets.UTF_8)
                    : new byte[0];
            return new Origin(path, fields);
        }

        /** One line that starts at {@code start} in its file (in a .gz, in the decompressed stream). */
        void line(Origin origin, byte[] text, int offset, int length, long start, boolean wasCut) throws StdoutFailed {
            try {
                if (format == Format.RAW) {
                    out.write(text, offset, length);
                    out.write('\n');
                    bytes += length + 1;
                } else {
                    bytes += writeJson(origin, text, offset, length, start, wasCut);
                }
            } catch (IOException e) {
                throw new StdoutFailed(e);
            }
            lines++;
            if (wasCut) cut++;
        }

        private int writeJson(Origin origin, byte[] text, int offset, int length, long start, boolean wasCut)
                throws IOException {
            byte[] message = jsonEscape(new String(text, offset, length, StandardCharsets.UTF_8))
                    .getBytes(StandardCharsets.UTF_8);
            byte[] at = Long.toString(start).getBytes(StandardCharsets.US_ASCII);
            out.write(JSON_START);
            out.write(message);
            out.write(JSON_OFFSET);
            out.write(at);
            int written = JSON_START.length + message.length + JSON_OFFSET.length + at.length;
            if (wasCut) {
                out.write(JSON_TRUNCATED);
                written += JSON_TRUNCATED.length;
            }
            if (timestamp) {
                byte[] now = stamp();
                out.write(JSON_TIMESTAMP);
                out.write(now);
                out.write('"');
                written += JSON_TIMESTAMP.length + now.length + 1;
            }
            out.write(origin.jsonFields());
            return written + origin.jsonFields().length;
        }

        private byte[] stamp() {
            long now = System.currentTimeMillis();
            if (now != stampMillis) {
                stampMillis = now;
                stamp = RFC_3339.format(Instant.ofEpochMilli(now)).getBytes(StandardCharsets.US_ASCII);
            }
            return stamp;
        }

        /** RFC 8259 string escaping; the decoder has already turned invalid UTF-8 into U+FFFD. */
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

        /** Stdout accepted everything so far: only now do the shipped counters move. */
        void flush() throws StdoutFailed {
            try {
                out.flush();
            } catch (IOException e) {
                throw new StdoutFailed(e);
            }
            metrics.shipped(lines, bytes, cut);
        }

        /**
         * Tells the health check that the loop is inside a write to stdout: blocked there (nobody
         * reads the pipe, the node's agent is slow) it is lagging, not stalled, and must not be
         * restarted for it. Sits under the buffer, so it runs once per 64 KiB, not per line.
         */
        private static final class Watched extends FilterOutputStream {
            private final Metrics metrics;

            Watched(OutputStream out, Metrics metrics) {
                super(out);
                this.metrics = metrics;
            }

            @Override
            public void write(byte[] b, int off, int len) throws IOException {
                metrics.writing(true);
                try {
                    out.write(b, off, len);
                } finally {
                    metrics.writing(false);
                }
            }

            @Override
            public void flush() throws IOException {
                metrics.writing(true);
                try {
                    out.flush();
                } finally {
                    metrics.writing(false);
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
        static final String HEADER = "logship-positions v1";

        record Entry(FileKey key, boolean compressed, Checkpoint checkpoint, long lastSeenMillis, Path path) {
            Fingerprint fingerprint() { return checkpoint.fingerprint(); }

            long offset() { return checkpoint.offset(); }
        }

        /**
         * The columns of a row, in file order: writing and reading both go through this one table.
         * KIND is "file" for a live entry and "gone" for a retired one.
         */
        enum Column {
            KIND, DEVICE, INODE, OFFSET, FINGERPRINT_LENGTH, FINGERPRINT_CRC, MARKER_LENGTH, MARKER_CRC,
            LAST_SEEN_MILLIS, SKIPPING_LONG_LINE, COMPRESSED, PATH;

            static final int COUNT = values().length;
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

        /** Drops entries of files gone since before the cutoff; true if any went. */
        boolean forgetOlderThan(long cutoffMillis) {
            boolean live = entries.values().removeIf(e -> e.lastSeenMillis() < cutoffMillis);
            return retired.removeIf(e -> e.lastSeenMillis() < cutoffMillis) || live;
        }

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
                if (!HEADER.equals(reader.readLine())) throw new IOException("not a " + HEADER + " file");
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
                    String[] fields = row.split(" ", Column.COUNT);
                    String kind = fields[0];
                    if (fields.length != Column.COUNT || !(kind.equals("file") || kind.equals("gone"))) {
                        throw new IOException("bad row: " + row);
                    }
                    Entry entry = entryOf(fields);
                    if (kind.equals("file")) live.put(entry.key(), entry); else gone.add(entry);
                }
            }
            throw new IOException("no end line: the file was cut short");
        }

        private static Entry entryOf(String[] fields) {
            java.util.function.Function<Column, String> field = column -> fields[column.ordinal()];
            java.util.function.ToLongFunction<Column> number = column -> Long.parseLong(field.apply(column));
            Checkpoint checkpoint = new Checkpoint(
                    new Fingerprint((int) number.applyAsLong(Column.FINGERPRINT_LENGTH), number.applyAsLong(Column.FINGERPRINT_CRC)),
                    number.applyAsLong(Column.OFFSET), field.apply(Column.SKIPPING_LONG_LINE).equals("1"),
                    new Marker((int) number.applyAsLong(Column.MARKER_LENGTH), number.applyAsLong(Column.MARKER_CRC)));
            return new Entry(new FileKey(number.applyAsLong(Column.DEVICE), number.applyAsLong(Column.INODE)),
                    field.apply(Column.COMPRESSED).equals("1"), checkpoint, number.applyAsLong(Column.LAST_SEEN_MILLIS),
                    Path.of(unescape(field.apply(Column.PATH))));
        }

        private static String rowOf(String kind, Entry e) {
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
            fields[Column.PATH.ordinal()] = escape(e.path().toString());
            return String.join(" ", fields);
        }

        /**
         * Temp file, fsync, rename, fsync the directory: at every instant the path holds either the
         * old complete file or the new complete file, so a crash never leaves a torn positions file.
         */
        void save() throws IOException {
            if (file == null) return;
            StringBuilder text = new StringBuilder(HEADER).append('\n');
            for (Entry e : entries.values()) text.append(rowOf("file", e)).append('\n');
            for (Entry e : retired) text.append(rowOf("gone", e)).append('\n');
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

        private static String escape(String path) {
            return path.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D");
        }

        private static String unescape(String text) {
            return text.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%");
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
    static final class Watcher implements AutoCloseable {
        /** A file opened the moment it appeared, before the loop got to it. */
        record Pinned(ScannedFile file, FileChannel channel) {}

        static final int MAX_PINNED = 64;
        private final WatchService service;
        private final Scanner scanner;
        private final Set<String> changed = ConcurrentHashMap.newKeySet();
        private final AtomicBoolean needsRescan = new AtomicBoolean();
        private final Queue<Pinned> pinned = new ConcurrentLinkedQueue<>();

        Watcher(Scanner scanner, Wakeup wakeup) throws IOException {
            this.scanner = scanner;
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
                            String name = event.context().toString();
                            if (event.kind() == StandardWatchEventKinds.ENTRY_CREATE) pin(name);
                            if (event.kind() != StandardWatchEventKinds.ENTRY_MODIFY) needsRescan.set(true);
                            changed.add(name);
                        }
                    }
                    if (!key.reset()) {
                        Log.warn("the log directory can no longer be watched; falling back to polling");
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
        private void pin(String name) {
            // Bounded: while stdout is blocked the loop takes none, and descriptors are finite. Past
            // the bound, files are left to the rescan.
            if (!scanner.matches(name) || name.endsWith(".gz") || pinned.size() >= MAX_PINNED) return;
            ScannedFile file = scanner.inspect(scanner.resolve(name));
            if (file == null) return;
            try {
                FileChannel channel = Descriptors.openIfStill(file.path(), file.key());
                if (channel != null) pinned.add(new Pinned(file, channel)); // else replaced: left to the rescan
            } catch (IOException e) {
                // gone or unreadable: the rescan decides what to say about it
            }
        }

        List<Pinned> takePinned() {
            List<Pinned> taken = new ArrayList<>();
            for (Pinned p; (p = pinned.poll()) != null; ) taken.add(p);
            return taken;
        }

        /** Names that changed since the last call. */
        Set<String> takeChanged() {
            Set<String> names = new HashSet<>();
            for (Iterator<String> it = changed.iterator(); it.hasNext(); ) {
                names.add(it.next());
                it.remove();
            }
            return names;
        }

        boolean takeNeedsRescan() { return needsRescan.getAndSet(false); }

        @Override
        public void close() throws IOException {
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
                    sun.misc.Signal.handle(new sun.misc.Signal(name), signal -> request("SIG" + name));
                } catch (IllegalArgumentException e) {
                    Log.debug("cannot handle SIG" + name + ": " + e.getMessage());
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
