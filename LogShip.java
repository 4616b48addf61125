///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7

import java.io.BufferedOutputStream;
import java.io.EOFException;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.DirectoryStream;
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
import java.time.format.DateTimeParseException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;
import java.util.zip.CRC32C;
import java.util.zip.GZIPInputStream;
import java.util.zip.ZipException;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.OptionSpec;
import picocli.CommandLine.Option;

/**
 * LogShip: a log-shipping sidecar. It watches one directory and writes every line of every matching
 * file to stdout exactly once, in order per file, following appends, rotation and truncation.
 *
 * <p>The file reads top to bottom in the order data flows: configuration, discovery, identity,
 * reading, positions, output, lifecycle.
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

    // ---------------------------------------------------------------------------------------------
    // 1. Configuration. The env var of each option is its descriptionKey: EnvDefaults reads it.
    // ---------------------------------------------------------------------------------------------

    @Option(names = {"-d", "--directory"}, descriptionKey = "LOG_DIRECTORY", paramLabel = "DIR",
            description = "Directory to watch (not recursive); created with its parents if missing."
                    + " Required.%n  Env: LOG_DIRECTORY")
    String directory;

    @Option(names = {"-p", "--pattern"}, descriptionKey = "LOG_FILE_PATTERN", paramLabel = "REGEX",
            defaultValue = ".+\\.log",
            description = "Java regex that must match the whole file name (so .+\\.log never matches"
                    + " app.log.1).%n  Env: LOG_FILE_PATTERN   Default: .+\\.log")
    String pattern;

    @Option(names = {"-i", "--interval"}, descriptionKey = "LOG_SCAN_INTERVAL", paramLabel = "DURATION",
            defaultValue = "10",
            description = "How often the directory is rescanned and every file polled; the safety net"
                    + " under change notifications. 10, 0.5, 500ms, 10s, 2m or PT10S (bare numbers are"
                    + " seconds).%n  Env: LOG_SCAN_INTERVAL   Default: 10")
    String interval;

    @Option(names = "--start-at", descriptionKey = "LOG_START_AT", paramLabel = "head|tail",
            defaultValue = "head",
            description = "Where to start in files that already exist at startup and have no saved"
                    + " position. Files found later are always read from their start.%n"
                    + "  Env: LOG_START_AT   Default: head")
    String startAt;

    @Option(names = "--max-line-bytes", descriptionKey = "LOG_MAX_LINE_BYTES", paramLabel = "BYTES",
            defaultValue = "1048576",
            description = "Longer lines are cut at this length and the rest of the line is dropped,"
                    + " with a warning.%n  Env: LOG_MAX_LINE_BYTES   Default: 1048576")
    String maxLineBytes;

    @Option(names = "--drain-timeout", descriptionKey = "LOG_DRAIN_TIMEOUT", paramLabel = "DURATION",
            defaultValue = "5s",
            description = "Upper bound on shipping what is left after SIGTERM/SIGINT.%n"
                    + "  Env: LOG_DRAIN_TIMEOUT   Default: 5s")
    String drainTimeout;

    @Option(names = "--state", descriptionKey = "LOG_STATE_FILE", paramLabel = "FILE",
            description = "Positions file, so a restart resumes where the last run stopped. Unset:"
                    + " positions live in memory only.%n  Env: LOG_STATE_FILE")
    String stateFile;

    @Option(names = "--rotate-wait", descriptionKey = "LOG_ROTATE_WAIT", paramLabel = "DURATION",
            defaultValue = "5s",
            description = "A file renamed away or deleted is read to its end and closed once it has"
                    + " not grown for this long.%n  Env: LOG_ROTATE_WAIT   Default: 5s")
    String rotateWait;

    @Option(names = "--forget-after", descriptionKey = "LOG_FORGET_AFTER", paramLabel = "DURATION",
            defaultValue = "7d",
            description = "Positions of files gone for this long are forgotten.%n"
                    + "  Env: LOG_FORGET_AFTER   Default: 7d")
    String forgetAfter;

    @Option(names = "--format", descriptionKey = "LOG_FORMAT", paramLabel = "raw|json", defaultValue = "raw",
            description = "raw: each line exactly as the file holds it. json: one object per line,"
                    + " {\"file\":\"access.log\",\"line\":\"...\"}, so lines from several files can be told"
                    + " apart (invalid UTF-8 becomes U+FFFD).%n  Env: LOG_FORMAT   Default: raw")
    String format;

    @Option(names = "--once",
            description = "Ship what the matching files hold now, then exit 0. A last line without a"
                    + " newline is shipped as a line.")
    boolean once;

    @Option(names = "--log-level", descriptionKey = "LOG_LEVEL", paramLabel = "LEVEL", defaultValue = "info",
            description = "Diagnostics on stderr: debug, info, warn or error.%n"
                    + "  Env: LOG_LEVEL   Default: info")
    String logLevel;

    @Option(names = {"-v", "--verbose"}, description = "Same as --log-level debug.")
    boolean verbose;

    @Option(names = {"-q", "--quiet"}, description = "Same as --log-level warn.")
    boolean quiet;

    /** The checked, typed form of the options. Building it is where every user mistake is caught. */
    record Settings(Path directory, Pattern pattern, Duration interval, StartAt startAt, int maxLineBytes,
                    Duration drainTimeout, Path stateFile, Duration rotateWait, Duration forgetAfter,
                    Format format, boolean once, Level level) {}

    enum StartAt { HEAD, TAIL }

    enum Format { RAW, JSON }

    /** A user mistake: its message is the one sentence printed before exiting 2. */
    static final class ConfigError extends Exception {
        ConfigError(String message) { super(message); }
    }

    Settings settings() throws ConfigError {
        Level level = verbose ? Level.DEBUG : quiet ? Level.WARN : parseLevel(logLevel);
        return new Settings(logDirectory(directory), filePattern(pattern),
                positive("LOG_SCAN_INTERVAL (--interval)", interval),
                parseStartAt(startAt), lineLimit(maxLineBytes),
                positive("LOG_DRAIN_TIMEOUT (--drain-timeout)", drainTimeout),
                stateFilePath(stateFile),
                positive("LOG_ROTATE_WAIT (--rotate-wait)", rotateWait),
                positive("LOG_FORGET_AFTER (--forget-after)", forgetAfter),
                parseFormat(format), once, level);
    }

    static Format parseFormat(String value) throws ConfigError {
        try {
            return Format.valueOf(value.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new ConfigError("LOG_FORMAT (--format) must be raw or json, not '" + value + "'.");
        }
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

    static Duration positive(String setting, String value) throws ConfigError {
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

    static StartAt parseStartAt(String value) throws ConfigError {
        try {
            return StartAt.valueOf(value.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new ConfigError("LOG_START_AT (--start-at) must be head or tail, not '" + value + "'.");
        }
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

    static Level parseLevel(String value) throws ConfigError {
        try {
            return Level.valueOf(value.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new ConfigError("LOG_LEVEL (--log-level) must be debug, info, warn or error, not '" + value + "'.");
        }
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

    static String reason(Exception e) {
        if (e instanceof AccessDeniedException) return "permission denied";
        if (e instanceof java.nio.file.FileSystemException fse && fse.getReason() != null) return fse.getReason();
        if (e instanceof java.nio.file.FileAlreadyExistsException) return "a file is in the way";
        return e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
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

    static CommandLine commandLine(LogShip app, Map<String, String> env) {
        CommandLine cli = new CommandLine(app).setDefaultValueProvider(new EnvDefaults(env));
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            Log.error("stopped by an unexpected error: " + e);
            return 1;
        });
        return cli;
    }

    public static void main(String[] args) {
        System.exit(commandLine(new LogShip(), System.getenv()).execute(args));
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
        Sink sink = new Sink(new FileOutputStream(FileDescriptor.out), settings.format());
        Shutdown shutdown = new Shutdown(settings.drainTimeout());
        Shipper shipper = new Shipper(settings, sink, shutdown, Positions.open(settings.stateFile()));
        if (!settings.once()) shutdown.install();
        try {
            return shipper.run();
        } finally {
            shutdown.stopped();
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Diagnostics: stderr only, one line each.
    // ---------------------------------------------------------------------------------------------

    enum Level { DEBUG, INFO, WARN, ERROR }

    static final class Log {
        static volatile Level level = Level.INFO;
        private static final Set<String> warnedOnce = ConcurrentHashMap.newKeySet();

        static void debug(String msg) { emit(Level.DEBUG, msg); }
        static void info(String msg) { emit(Level.INFO, msg); }
        static void warn(String msg) { emit(Level.WARN, msg); }
        static void error(String msg) { emit(Level.ERROR, msg); }

        /** Warns the first time a key is seen, then only at debug, so a bad file cannot flood stderr. */
        static void warnOnce(String key, String msg) {
            if (warnedOnce.add(key)) warn(msg); else debug(msg);
        }

        static void forget(String key) { warnedOnce.remove(key); }

        private static void emit(Level at, String msg) {
            if (at.compareTo(level) >= 0) {
                System.err.println("logship: " + at.name().toLowerCase(Locale.ROOT) + ": " + msg);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 2. Discovery: which directory entries are files we may ship?
    // ---------------------------------------------------------------------------------------------

    /** A shippable file as discovery saw it: its name now, and which file it is. */
    record Found(Path path, FileKey key, long size) {}

    static final class Discovery {
        final Path directory;
        private final Path realDirectory;
        private final Pattern pattern;

        Discovery(Path directory, Pattern pattern) throws IOException {
            this.directory = directory;
            this.realDirectory = directory.toRealPath();
            this.pattern = pattern;
        }

        boolean matches(String name) { return pattern.matcher(name).matches(); }

        Path resolve(String name) { return directory.resolve(name); }

        /** Every matching, shippable entry. Entries that vanish while we look are simply not there. */
        List<Found> scan() {
            List<Found> found = new ArrayList<>();
            try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
                for (Path path : entries) {
                    if (!matches(path.getFileName().toString())) continue;
                    Found f = inspect(path);
                    if (f != null) found.add(f);
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
         */
        Found inspect(Path path) {
            String name = path.getFileName().toString();
            try {
                BasicFileAttributes attrs = Files.readAttributes(path, BasicFileAttributes.class,
                        LinkOption.NOFOLLOW_LINKS);
                if (attrs.isSymbolicLink()) {
                    Path target;
                    try {
                        target = path.toRealPath();
                    } catch (NoSuchFileException e) {
                        Log.warnOnce("dangling:" + name, "skipping " + name + ": the symlink points nowhere");
                        return null;
                    }
                    if (!realDirectory.equals(target.getParent())) {
                        Log.warnOnce("outside:" + name, "skipping " + name + ": it is a symlink to " + target
                                + ", which is outside the log directory");
                        return null;
                    }
                    attrs = Files.readAttributes(target, BasicFileAttributes.class);
                }
                if (!attrs.isRegularFile()) {
                    Log.warnOnce("irregular:" + name, "skipping " + name + ": it is "
                            + (attrs.isDirectory() ? "a directory" : "not a regular file (FIFO, socket or device)"));
                    return null;
                }
                return new Found(path, FileKey.of(path), attrs.size());
            } catch (NoSuchFileException e) {
                return null; // vanished between listing and looking: nothing to ship
            } catch (IOException e) {
                Log.warnOnce("inspect:" + name, "cannot inspect " + name + ": " + reason(e));
                return null;
            }
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

    // ---------------------------------------------------------------------------------------------
    // 3. Identity: is this the same file as before, whatever its name?
    // ---------------------------------------------------------------------------------------------

    /** Device and inode: stable across renames, but reused once a file is deleted. */
    record FileKey(long device, long inode) {
        static FileKey of(Path path) throws IOException {
            Map<String, Object> attrs = Files.readAttributes(path, "unix:dev,ino");
            return new FileKey(((Number) attrs.get("dev")).longValue(), ((Number) attrs.get("ino")).longValue());
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
            CRC32C crc = new CRC32C();
            crc.update(bytes, 0, length);
            return new Fingerprint(length, crc.getValue());
        }

        static Fingerprint read(FileChannel channel) throws IOException {
            byte[] head = new byte[SIZE];
            return of(head, readAt(channel, head, SIZE, 0));
        }

        /** Does a file whose first bytes are these start like the file this fingerprint was taken of? */
        boolean matchesStartOf(byte[] head, int available) {
            return length <= available && of(head, length).crc == crc;
        }

        boolean matches(FileChannel channel) throws IOException {
            if (length == 0) return true;
            byte[] head = new byte[length];
            return matchesStartOf(head, readAt(channel, head, length, 0));
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
            byte[] bytes = new byte[length];
            int got = readAt(channel, bytes, length, offset - length);
            return got < length ? NONE : new Marker(length, Fingerprint.of(bytes, length).crc());
        }

        boolean stillBefore(FileChannel channel, long offset) throws IOException {
            if (length == 0 || offset < length) return true;
            byte[] bytes = new byte[length];
            int got = readAt(channel, bytes, length, offset - length);
            return got == length && Fingerprint.of(bytes, length).crc == crc;
        }
    }

    /**
     * Opens a file by name and keeps the handle only if the name still leads to the expected file
     * afterwards: a rotation between looking and opening would otherwise hand over the next file
     * under that name. Null when it does not.
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

    static int readAt(FileChannel channel, byte[] into, int length, long position) throws IOException {
        ByteBuffer buffer = ByteBuffer.wrap(into, 0, length);
        while (buffer.hasRemaining()) {
            int n = channel.read(buffer, position + buffer.position());
            if (n < 0) break;
        }
        return buffer.position();
    }

    // ---------------------------------------------------------------------------------------------
    // 4. Reading: one Tail per file, and the LineReader that turns its bytes into whole lines.
    // ---------------------------------------------------------------------------------------------

    /** Everything known about one file being shipped. Only the Shipper's loop touches it. */
    static final class Tail {
        final FileKey key;
        final boolean compressed;
        Path path;
        Fingerprint fingerprint = Fingerprint.EMPTY;
        /** Every byte before this has been accepted by stdout. A line start unless skippingLongLine. */
        long offset;
        /** The offset is inside a line that was cut at --max-line-bytes; its rest is being dropped. */
        boolean skippingLongLine;
        Marker marker = Marker.NONE;
        /** Null while closed to save descriptors; reopened by path when the file changes. */
        FileChannel channel;
        /** Compressed files only: the decompressed stream, positioned at offset. */
        InputStream inflated;
        /** Compressed files only: the whole archive has been shipped. */
        boolean finished;
        /** Compressed files only: the size and time of the .gz when it was found complete. */
        long archiveSize;
        long archiveModifiedMicros;
        /** When its name stopped leading to it (renamed away or deleted); 0 while it still does. */
        long goneSinceNanos;
        long lastGrowthNanos = System.nanoTime();
        long cutLines;

        Tail(FileKey key, Path path, boolean compressed) {
            this.key = key;
            this.path = path;
            this.compressed = compressed;
        }

        /** Archives never change; one that did is another archive that got this inode. */
        boolean sameArchive(Found found) {
            return found.size() == archiveSize && modifiedMicros(found.path()) == archiveModifiedMicros;
        }

        boolean renamedAwayOrDeleted() { return goneSinceNanos != 0; }

        String name() { return path.getFileName().toString(); }

        void closeQuietly() {
            try {
                if (channel != null) channel.close();
                if (inflated != null) inflated.close();
            } catch (IOException e) {
                // closing a read-only handle: nothing we could do about it
            }
            channel = null;
            inflated = null;
        }

        /** Starts over at byte 0: the file was truncated or replaced under us. */
        void restartFromTop() {
            offset = 0;
            skippingLongLine = false;
            marker = Marker.NONE;
            fingerprint = Fingerprint.EMPTY;
        }
    }

    /** What one turn of reading achieved. */
    record Progress(long offset, boolean skippingLongLine, boolean turnUsedUp, long lines, long cut) {}

    /** Where a LineReader gets bytes from: positional reads for plain files, a stream for archives. */
    interface ByteSource {
        int read(byte[] into, long position) throws IOException;
    }

    /**
     * Splits bytes into lines and writes whole lines to the sink. A line longer than the limit is cut
     * at the limit and its rest dropped. A line still missing its newline at the end of the data is
     * not shipped: the offset stays at its start and it is read again once more bytes arrive. One
     * instance serves every file, so memory is one chunk plus one line, however many files there are.
     */
    static final class LineReader {
        static final int CHUNK = 64 * 1024;
        private final byte[] chunk = new byte[CHUNK];
        private byte[] line = new byte[8 * 1024];
        private final int maxLineBytes;

        LineReader(int maxLineBytes) { this.maxLineBytes = maxLineBytes; }

        /**
         * Reads from {@code start} until the data ends or {@code turnBytes} are used up; never stops
         * inside a line, so a long line always completes within one turn.
         */
        Progress read(ByteSource source, long start, boolean skipping, long turnBytes, boolean shipTrailingPartial,
                      Sink sink) throws IOException {
            long committed = start;
            long position = start;
            int lineLength = 0;
            long lines = 0;
            long cut = 0;
            boolean turnUsedUp = false;
            while (true) {
                if (position - start >= turnBytes && lineLength == 0) {
                    turnUsedUp = true;
                    break;
                }
                int n = source.read(chunk, position);
                if (n <= 0) break;
                long chunkStart = position;
                position += n;
                int i = 0;
                while (i < n) {
                    int newline = indexOfNewline(chunk, i, n);
                    int end = newline < 0 ? n : newline;
                    if (skipping) {
                        if (newline >= 0) {
                            skipping = false;
                            committed = chunkStart + newline + 1;
                        } else {
                            committed = chunkStart + n;
                        }
                    } else {
                        int room = maxLineBytes - lineLength;
                        int length = end - i;
                        lineLength = append(lineLength, chunk, i, Math.min(room, length));
                        if (length > room) {
                            sink.line(line, 0, lineLength);
                            lines++;
                            cut++;
                            lineLength = 0;
                            if (newline >= 0) {
                                committed = chunkStart + newline + 1;
                            } else {
                                skipping = true;
                                committed = chunkStart + n;
                            }
                        } else if (newline >= 0) {
                            sink.line(line, 0, lineLength);
                            lines++;
                            lineLength = 0;
                            committed = chunkStart + newline + 1;
                        }
                    }
                    i = newline < 0 ? n : newline + 1;
                }
            }
            if (lineLength > 0 && shipTrailingPartial) {
                sink.line(line, 0, lineLength);
                lines++;
                committed = position;
            }
            return new Progress(committed, skipping, turnUsedUp, lines, cut);
        }

        private int append(int lineLength, byte[] from, int offset, int length) {
            if (lineLength + length > line.length) {
                int grown = (int) Math.min(maxLineBytes, Math.max((long) line.length * 2, lineLength + length));
                line = java.util.Arrays.copyOf(line, grown);
            }
            System.arraycopy(from, offset, line, lineLength, length);
            return lineLength + length;
        }

        private static int indexOfNewline(byte[] bytes, int from, int to) {
            for (int i = from; i < to; i++) {
                if (bytes[i] == '\n') return i;
            }
            return -1;
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

    // ---------------------------------------------------------------------------------------------
    // 5. Positions: how far did we get, saved so a restart resumes there.
    // ---------------------------------------------------------------------------------------------

    /**
     * The offsets of files, by identity. Written only with offsets of bytes stdout has accepted.
     * Without a file (LOG_STATE_FILE unset) the same table lives in memory only, where it still
     * recognises rotated files after they are compressed.
     */
    static final class Positions {
        static final String HEADER = "logship-positions v1";

        record Entry(FileKey key, Fingerprint fingerprint, long offset, boolean skippingLongLine, Marker marker,
                     boolean compressed, long lastSeenMillis, Path path) {}

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
                    String[] f = row.split(" ", 12);
                    if (f.length != 12 || !(f[0].equals("file") || f[0].equals("gone"))) {
                        throw new IOException("bad row: " + row);
                    }
                    FileKey key = new FileKey(Long.parseLong(f[1]), Long.parseLong(f[2]));
                    Entry entry = new Entry(key,
                            new Fingerprint(Integer.parseInt(f[4]), Long.parseLong(f[5])),
                            Long.parseLong(f[3]), f[9].equals("1"),
                            new Marker(Integer.parseInt(f[6]), Long.parseLong(f[7])),
                            f[10].equals("1"), Long.parseLong(f[8]), Path.of(unescape(f[11])));
                    if (f[0].equals("file")) live.put(key, entry); else gone.add(entry);
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
            for (Entry e : entries.values()) appendRow(text, "file", e);
            for (Entry e : retired) appendRow(text, "gone", e);
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

        private static void appendRow(StringBuilder text, String kind, Entry e) {
            text.append(kind).append(' ').append(e.key().device()).append(' ').append(e.key().inode())
                    .append(' ').append(e.offset())
                    .append(' ').append(e.fingerprint().length()).append(' ').append(e.fingerprint().crc())
                    .append(' ').append(e.marker().length()).append(' ').append(e.marker().crc())
                    .append(' ').append(e.lastSeenMillis())
                    .append(' ').append(e.skippingLongLine() ? 1 : 0)
                    .append(' ').append(e.compressed() ? 1 : 0)
                    .append(' ').append(escape(e.path().toString())).append('\n');
        }

        private static String escape(String path) {
            return path.replace("%", "%25").replace("\n", "%0A").replace("\r", "%0D");
        }

        private static String unescape(String text) {
            return text.replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%");
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 6. Output: stdout, whole lines only.
    // ---------------------------------------------------------------------------------------------

    /**
     * Writes whole lines to stdout through one buffer. Offsets are committed only after flush()
     * returns, so a saved position never covers a line stdout has not accepted.
     */
    static final class Sink {
        private final OutputStream out;
        private final Format format;
        private byte[] jsonPrefix = new byte[0];
        long lines;

        Sink(OutputStream out, Format format) {
            this.out = new BufferedOutputStream(out, 64 * 1024);
            this.format = format;
        }

        /** The file the next lines come from (its last matching name), for formats that say so. */
        void from(String fileName) {
            if (format == Format.JSON) {
                jsonPrefix = ("{\"file\":\"" + jsonEscape(fileName) + "\",\"line\":\"").getBytes(StandardCharsets.UTF_8);
            }
        }

        void line(byte[] bytes, int offset, int length) throws StdoutFailed {
            try {
                if (format == Format.RAW) {
                    out.write(bytes, offset, length);
                    out.write('\n');
                } else {
                    out.write(jsonPrefix);
                    out.write(jsonEscape(new String(bytes, offset, length, StandardCharsets.UTF_8))
                            .getBytes(StandardCharsets.UTF_8));
                    out.write(JSON_END);
                }
            } catch (IOException e) {
                throw new StdoutFailed(e);
            }
            lines++;
        }

        private static final byte[] JSON_END = "\"}\n".getBytes(StandardCharsets.US_ASCII);

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
                        if (c < 0x20) escaped.append(String.format("\\u%04x", (int) c));
                        else escaped.append(c);
                    }
                }
            }
            return escaped.toString();
        }

        void flush() throws StdoutFailed {
            try {
                out.flush();
            } catch (IOException e) {
                throw new StdoutFailed(e);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // 7. Lifecycle: the watcher that wakes us early, the signals that stop us, and the loop itself.
    // ---------------------------------------------------------------------------------------------

    /** Lets other threads wake the shipping loop before its next tick. */
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
        private final WatchService service;
        private final Discovery discovery;
        private final Set<String> changed = ConcurrentHashMap.newKeySet();
        private final AtomicBoolean needsRescan = new AtomicBoolean();
        private final java.util.Queue<Pinned> pinned = new java.util.concurrent.ConcurrentLinkedQueue<>();
        private final Thread thread;

        /** A file opened the moment it appeared, before the loop got to it. */
        record Pinned(Found found, FileChannel channel) {}

        static final int MAX_PINNED = 64;

        Watcher(Discovery discovery, Wakeup wakeup) throws IOException {
            this.discovery = discovery;
            service = FileSystems.getDefault().newWatchService();
            discovery.directory.register(service, StandardWatchEventKinds.ENTRY_CREATE,
                    StandardWatchEventKinds.ENTRY_DELETE, StandardWatchEventKinds.ENTRY_MODIFY);
            thread = new Thread(() -> watch(wakeup), "logship-watcher");
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
            if (!discovery.matches(name) || name.endsWith(".gz") || pinned.size() >= MAX_PINNED) return;
            Found found = discovery.inspect(discovery.resolve(name));
            if (found == null) return;
            try {
                FileChannel channel = openIfStill(found.path(), found.key());
                if (channel != null) pinned.add(new Pinned(found, channel)); // else replaced: left to the rescan
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

    /**
     * SIGTERM/SIGINT handling. The first signal asks the loop to drain; a second one cuts the drain
     * short. Signal handlers first, a shutdown hook only as the fallback: a JVM that is already
     * running its shutdown hooks ignores further signals, and the second one must still be heard.
     */
    static final class Shutdown {
        static final Duration HALT_GRACE = Duration.ofSeconds(2);
        private final AtomicInteger signals = new AtomicInteger();
        private final java.util.concurrent.CountDownLatch stopped = new java.util.concurrent.CountDownLatch(1);
        private final Duration drainTimeout;
        private volatile Wakeup wakeup;

        Shutdown(Duration drainTimeout) { this.drainTimeout = drainTimeout; }

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

        void wakeOnRequest(Wakeup wakeup) { this.wakeup = wakeup; }

        void request(String why) {
            int n = signals.incrementAndGet();
            if (n == 1) {
                Log.info(why + ": stopping discovery and draining what the files hold");
                haltAfter(drainTimeout.plus(HALT_GRACE));
            } else {
                Log.warn(why + " again: cutting the drain short");
                haltAfter(HALT_GRACE);
            }
            Wakeup w = wakeup;
            if (w != null) w.signal();
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

    /**
     * The loop that ties it together, and the only owner of tails and offsets: discover, read every
     * file fairly, commit offsets after stdout accepted the lines, save positions, sleep until the
     * watcher, a signal or the next tick wakes it.
     */
    static final class Shipper {
        /** How many bytes a file may read before the others get a turn. */
        static final long TURN_BYTES = 1024 * 1024;
        static final long SAVE_EVERY_NANOS = TimeUnit.SECONDS.toNanos(1);

        private final Settings settings;
        private final Sink sink;
        private final Shutdown shutdown;
        private final Positions positions;
        private final Discovery discovery;
        private final LineReader reader;
        private final Wakeup wakeup = new Wakeup();
        private final Map<FileKey, Tail> tails = new LinkedHashMap<>();
        /** .gz files still being written or found corrupt, with the size at which we last looked. */
        private final Map<FileKey, Long> archivesOnHold = new HashMap<>();
        private final int maxOpenFiles;
        private int openFiles;
        private boolean positionsDirty;
        private long lastSaveNanos;

        Shipper(Settings settings, Sink sink, Shutdown shutdown, Positions positions) throws IOException {
            this.settings = settings;
            this.sink = sink;
            this.shutdown = shutdown;
            this.positions = positions;
            this.discovery = new Discovery(settings.directory(), settings.pattern());
            this.reader = new LineReader(settings.maxLineBytes());
            this.maxOpenFiles = openFileBudget();
            shutdown.wakeOnRequest(wakeup);
        }

        /**
         * Half the descriptor limit, leaving the rest to the JVM, stdout and the watcher. Read from
         * /proc rather than through the management beans, which cost a sidecar ~4 MiB of memory.
         */
        static int openFileBudget() {
            long limit;
            try (var lines = Files.lines(Path.of("/proc/self/limits"))) {
                limit = lines.filter(l -> l.startsWith("Max open files"))
                        .map(l -> l.substring("Max open files".length()).trim().split("\\s+")[0])
                        .filter(soft -> soft.matches("\\d+")).mapToLong(Long::parseLong).findFirst().orElse(1024);
            } catch (IOException | UncheckedIOException e) {
                limit = 1024; // not Linux: a conservative guess
            }
            return (int) Math.max(8, Math.min(4096, (limit - 64) / 2));
        }

        int run() {
            Log.info("logship " + VERSION + " shipping files in " + settings.directory() + " whose names match '"
                    + settings.pattern() + "'" + (settings.once() ? " once" : ", rescanning every "
                    + human(settings.interval())));
            if (!positions.persistent()) {
                Log.info("positions are kept in memory only: set LOG_STATE_FILE to resume after a restart");
            }
            try {
                if (settings.once()) {
                    discoverAtStartup();
                    readUntilCaughtUp(tails.values(), Long.MAX_VALUE, true);
                    savePositions();
                    return 0;
                }
                // Watch first, then scan: a file created in between is then seen by one or the other.
                try (Watcher watcher = startWatcher()) {
                    discoverAtStartup();
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
                tails.values().forEach(Tail::closeQuietly);
            }
        }

        private Watcher startWatcher() {
            try {
                return new Watcher(discovery, wakeup);
            } catch (IOException | UnsupportedOperationException e) {
                Log.warn("no change notification (" + e.getMessage() + "); polling every " + human(settings.interval()));
                return null;
            }
        }

        private void follow(Watcher watcher) throws IOException {
            long intervalNanos = settings.interval().toNanos();
            long nextTick = System.nanoTime() + intervalNanos;
            readUntilCaughtUp(tails.values(), Long.MAX_VALUE, false);
            while (!shutdown.requested()) {
                long now = System.nanoTime();
                long wait = nextTick - now;
                if (positionsDirty) wait = Math.min(wait, lastSaveNanos + SAVE_EVERY_NANOS - now);
                try {
                    wakeup.await(wait);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
                if (shutdown.requested()) return;
                if (System.nanoTime() - nextTick >= 0) {
                    nextTick = System.nanoTime() + intervalNanos;
                    pollEverything();
                } else {
                    readUntilCaughtUp(changedTails(watcher), Long.MAX_VALUE, false);
                    closeQuietRotatedFiles();
                }
                maybeSavePositions();
            }
        }

        void discoverAtStartup() { reconcile(discovery.scan(), true); }

        int tailCount() { return tails.size(); }

        /** The always-correct path: rescan the directory and look at every file, changed or not. */
        void pollEverything() throws IOException {
            reconcile(discovery.scan(), false);
            readUntilCaughtUp(new ArrayList<>(tails.values()), Long.MAX_VALUE, false);
            closeQuietRotatedFiles();
            if (positions.forgetOlderThan(forgetCutoff())) positionsDirty = true;
        }

        private long forgetCutoff() { return System.currentTimeMillis() - settings.forgetAfter().toMillis(); }

        /** The tails an event batch concerns, rescanning first when names came or went. */
        private Collection<Tail> changedTails(Watcher watcher) {
            if (watcher == null) return List.of();
            Set<FileKey> known = new HashSet<>(tails.keySet());
            for (Watcher.Pinned p : watcher.takePinned()) {
                if (tails.containsKey(p.found().key())) {
                    closeQuietly(p.channel());
                } else {
                    adopt(p.found(), p.channel(), false);
                }
            }
            Set<String> names = watcher.takeChanged();
            boolean rescan = watcher.takeNeedsRescan();
            Map<String, Tail> byName = new HashMap<>();
            for (Tail t : tails.values()) byName.put(t.name(), t);
            for (String name : names) {
                if (!byName.containsKey(name) && discovery.matches(name)) rescan = true;
            }
            if (rescan) reconcile(discovery.scan(), false);
            Set<Tail> due = new java.util.LinkedHashSet<>();
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
         * Brings the tails in line with what the directory holds: new files get a tail, renamed ones
         * keep theirs under the new name, and a tail whose name no longer leads to it keeps reading
         * its open handle, because the writer may still be appending to the renamed file.
         */
        void reconcile(List<Found> found, boolean startup) {
            if (found == null) return;
            Set<FileKey> present = new HashSet<>();
            for (Found f : found) {
                present.add(f.key());
                Tail tail = tails.get(f.key());
                if (tail != null && tail.compressed && !tail.sameArchive(f)) {
                    // Archives do not grow: another archive got this inode (replaced by logrotate).
                    closeTail(tail);
                    tails.remove(tail.key);
                    tail = null;
                }
                if (tail != null) {
                    if (!tail.path.equals(f.path())) Log.debug(tail.name() + " is now " + f.path().getFileName());
                    tail.path = f.path();
                    tail.goneSinceNanos = 0;
                } else {
                    adopt(f, null, startup);
                }
            }
            for (Iterator<Tail> it = tails.values().iterator(); it.hasNext(); ) {
                Tail tail = it.next();
                if (present.contains(tail.key) || tail.renamedAwayOrDeleted()) continue;
                tail.goneSinceNanos = System.nanoTime();
                if (tail.compressed) {
                    closeTail(tail);
                    it.remove();
                    continue;
                }
                Log.debug(tail.name() + " was renamed away or deleted; reading it to its end");
                if (tail.channel == null && !reopenElsewhere(tail)) {
                    remember(tail);
                    it.remove();
                }
            }
            archivesOnHold.keySet().retainAll(present);
        }

        /** A closed tail whose name moved on: find the file under its new name, if it still exists. */
        private boolean reopenElsewhere(Tail tail) {
            Path now = discovery.locate(tail.key);
            if (now == null) return false;
            tail.path = now;
            return open(tail) != null;
        }

        private void adopt(Found found, FileChannel pinned, boolean startup) {
            if (found.path().getFileName().toString().endsWith(".gz")) {
                adoptArchive(found);
                return;
            }
            Tail tail = new Tail(found.key(), found.path(), false);
            if (pinned != null) {
                tail.channel = pinned;
                openFiles++;
            }
            FileChannel channel = pinned != null ? pinned : open(tail);
            if (channel == null) return; // unreadable or gone: the next scan tries again
            try {
                Positions.Entry saved = positions.get(found.key());
                long size = channel.size();
                if (saved != null && !saved.compressed() && saved.fingerprint().matches(channel)) {
                    if (size >= saved.offset() && saved.marker().stillBefore(channel, saved.offset())) {
                        tail.offset = saved.offset();
                        tail.skippingLongLine = saved.skippingLongLine();
                        tail.marker = saved.marker();
                        Log.debug("resuming " + tail.name() + " at byte " + tail.offset);
                    } else {
                        Log.warn(tail.name() + " was truncated since its position was saved; reading it from the start");
                    }
                } else if (saved != null) {
                    Log.debug(tail.name() + " has the inode of " + saved.path().getFileName()
                            + " but other first bytes: a new file, read from the start");
                    positions.retire(found.key());
                } else if (startup && settings.startAt() == StartAt.TAIL) {
                    tail.offset = lastLineStart(channel, size);
                    tail.skippingLongLine = tail.offset == size && size > 0 && !endsWithNewline(channel, size);
                }
                tail.fingerprint = Fingerprint.read(channel);
                tails.put(tail.key, tail);
                Log.debug("following " + tail.name() + " from byte " + tail.offset);
                idle(tail); // thousands of files at startup must not hold thousands of descriptors
            } catch (IOException e) {
                Log.warnOnce("read:" + tail.name(), "cannot read " + tail.name() + ": " + reason(e) + "; will retry");
                closeTail(tail);
            }
        }

        /** With --start-at tail: the start of the last, unfinished line (or the end if all are whole). */
        private long lastLineStart(FileChannel channel, long size) throws IOException {
            byte[] chunk = new byte[LineReader.CHUNK];
            long end = size;
            long lowest = Math.max(0, size - settings.maxLineBytes() - 1L);
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

        /**
         * A .gz is shipped only once its stream is complete. If its decompressed start matches a file
         * we already shipped (it is that file, rotated and compressed), only what lies past that
         * file's offset is new.
         */
        private void adoptArchive(Found found) {
            Long heldAtSize = archivesOnHold.get(found.key());
            if (heldAtSize != null && heldAtSize == found.size()) return; // unchanged since we last looked
            ArchiveCheck check;
            try {
                check = ArchiveCheck.of(found.path());
            } catch (IOException e) {
                Log.warnOnce("read:" + found.path(), "cannot read " + found.path().getFileName() + ": " + reason(e));
                return;
            }
            String name = found.path().getFileName().toString();
            if (check instanceof ArchiveCheck.Incomplete) {
                Log.debug(name + " is not a complete gzip stream yet; waiting for its writer");
                archivesOnHold.put(found.key(), found.size());
                return;
            }
            if (check instanceof ArchiveCheck.Corrupt corrupt) {
                Log.warnOnce("corrupt:" + found.key() + ":" + found.size(), "skipping " + name
                        + ": not a valid gzip file (" + corrupt.why() + ")");
                archivesOnHold.put(found.key(), found.size());
                return;
            }
            ArchiveCheck.Complete complete = (ArchiveCheck.Complete) check;
            archivesOnHold.remove(found.key());
            Tail tail = new Tail(found.key(), found.path(), true);
            tail.archiveSize = found.size();
            tail.archiveModifiedMicros = modifiedMicros(found.path());
            tail.fingerprint = Fingerprint.of(complete.head(), complete.headLength());
            Positions.Entry saved = positions.get(found.key());
            // An empty fingerprint proves nothing: a replaced archive may have the old one's inode.
            if (saved != null && saved.compressed() && saved.fingerprint().length() > 0
                    && saved.fingerprint().matchesStartOf(complete.head(), complete.headLength())) {
                tail.offset = saved.offset();
            } else {
                if (saved != null) positions.retire(found.key()); // its inode went to this archive
                Tail original = liveOriginalOf(complete);
                if (original != null) {
                    Log.debug("holding " + name + " until " + original.name() + ", its uncompressed original, is done");
                    return;
                }
                Positions.Entry shipped = shippedOriginalOf(complete);
                if (shipped != null) {
                    tail.offset = Math.min(shipped.offset(), complete.length());
                    tail.skippingLongLine = shipped.skippingLongLine();
                    Log.info(name + " is " + shipped.path().getFileName() + " compressed; shipping only the "
                            + (complete.length() - tail.offset) + " bytes not shipped before");
                }
            }
            tail.finished = tail.offset >= complete.length();
            tails.put(tail.key, tail);
        }

        private Tail liveOriginalOf(ArchiveCheck.Complete archive) {
            for (Tail t : tails.values()) {
                if (t.compressed) continue;
                // Compare with what the open file holds now, not the tail's last fingerprint: the file
                // may have grown or been rewritten since, and its compressed copy already says so.
                Fingerprint now = t.fingerprint;
                if (t.channel != null) {
                    try {
                        now = Fingerprint.read(t.channel);
                    } catch (IOException e) {
                        continue;
                    }
                }
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

        /**
         * Reads the given tails round-robin, each for at most one turn at a time, until none has more
         * or the deadline passes: one busy file cannot starve the others.
         */
        boolean readUntilCaughtUp(Collection<Tail> due, long deadlineNanos, boolean shipTrailingPartials)
                throws IOException {
            ArrayDeque<Tail> queue = new ArrayDeque<>(due);
            while (!queue.isEmpty()) {
                if (deadlineNanos != Long.MAX_VALUE && System.nanoTime() - deadlineNanos >= 0) return false;
                if (shutdown.cutShort()) return false;
                Tail tail = queue.poll();
                if (!tails.containsKey(tail.key)) continue;
                if (readTurn(tail, shipTrailingPartials)) queue.add(tail);
            }
            return true;
        }

        /** One turn on one file. True when the turn ran out before the file did. */
        private boolean readTurn(Tail tail, boolean shipTrailingPartial) throws IOException {
            try {
                return tail.compressed ? readArchiveTurn(tail) : readPlainTurn(tail, shipTrailingPartial);
            } catch (StdoutFailed e) {
                throw e;
            } catch (IOException e) {
                Log.warnOnce("read:" + tail.name(), "cannot read " + tail.name() + ": " + reason(e) + "; will retry");
                closeTail(tail);
                return false;
            }
        }

        private boolean readPlainTurn(Tail tail, boolean shipTrailingPartial) throws IOException {
            FileChannel channel = tail.channel != null ? tail.channel : reopen(tail);
            if (channel == null) return false;
            long size = channel.size();
            // The marker is checked even when the size is unchanged: a file truncated and rewritten to
            // exactly its old length would otherwise pass for unchanged until it grew again.
            if (size < tail.offset || !tail.marker.stillBefore(channel, tail.offset)) {
                Log.warn(tail.name() + " was truncated; reading it again from the start");
                tail.restartFromTop();
            }
            if (size <= tail.offset) {
                idle(tail);
                return false;
            }
            long from = tail.offset;
            sink.from(tail.name());
            Progress progress = reader.read((into, position) -> channel.read(ByteBuffer.wrap(into), position),
                    from, tail.skippingLongLine, TURN_BYTES, shipTrailingPartial, sink);
            commit(tail, progress);
            tail.marker = Marker.before(channel, tail.offset);
            // Retake the fingerprint while reading the file's first KiB: it may have been rewritten at
            // offset 0 (nothing shipped, so no marker to notice), and a short one is widened.
            if (from < Fingerprint.SIZE || tail.fingerprint.length() < Fingerprint.SIZE) {
                tail.fingerprint = Fingerprint.read(channel);
            }
            if (!progress.turnUsedUp()) idle(tail);
            return progress.turnUsedUp();
        }

        private boolean readArchiveTurn(Tail tail) throws IOException {
            if (tail.finished) return false;
            if (tail.inflated == null) {
                tail.inflated = new GZIPInputStream(Files.newInputStream(tail.path), LineReader.CHUNK);
                tail.inflated.skipNBytes(tail.offset);
                openFiles++;
            }
            InputStream in = tail.inflated;
            sink.from(tail.name());
            Progress progress = reader.read((into, position) -> in.readNBytes(into, 0, into.length),
                    tail.offset, tail.skippingLongLine, TURN_BYTES, true, sink);
            commit(tail, progress);
            if (progress.turnUsedUp()) return true;
            tail.finished = true;
            closeTail(tail);
            Log.debug("shipped the archive " + tail.name());
            return false;
        }

        /** Stdout accepted the lines: only now may the offset move past them. */
        private void commit(Tail tail, Progress progress) throws IOException {
            sink.flush();
            if (progress.offset() > tail.offset) tail.lastGrowthNanos = System.nanoTime();
            tail.offset = progress.offset();
            tail.skippingLongLine = progress.skippingLongLine();
            if (progress.cut() > 0) {
                tail.cutLines += progress.cut();
                Log.warnOnce("cut:" + tail.key, tail.name() + ": a line longer than " + settings.maxLineBytes()
                        + " bytes was cut at that length and its rest dropped (" + tail.cutLines + " so far in this file)");
            }
            positionsDirty = true;
        }

        /** Caught up with a file: give its descriptor back if we hold too many. */
        private void idle(Tail tail) {
            if (openFiles > maxOpenFiles && !tail.renamedAwayOrDeleted()) closeTail(tail);
        }

        /** Opens a tail's file by its name, if that name still leads to the tail's file. */
        private FileChannel open(Tail tail) {
            try {
                FileChannel channel = openIfStill(tail.path, tail.key);
                if (channel == null) return null;
                tail.channel = channel;
                openFiles++;
                Log.forget("read:" + tail.name());
                return tail.channel;
            } catch (NoSuchFileException e) {
                return null;
            } catch (IOException e) {
                Log.warnOnce("read:" + tail.name(), "cannot read " + tail.name() + ": " + reason(e)
                        + "; will retry at each rescan");
                return null;
            }
        }

        /** Reopens a tail closed to save descriptors, but only if its name still leads to the same file. */
        private FileChannel reopen(Tail tail) throws IOException {
            if (open(tail) == null && !reopenElsewhere(tail)) return null;
            if (!tail.fingerprint.matches(tail.channel)) {
                // The inode was freed while we held no handle and a new file got it: a new file.
                Log.debug(tail.name() + " is a new file that reuses an old inode; reading it from the start");
                positions.retire(tail.key);
                tail.restartFromTop();
            }
            return tail.channel;
        }

        private static void closeQuietly(FileChannel channel) {
            try {
                channel.close();
            } catch (IOException e) {
                // a read-only handle: nothing to lose
            }
        }

        private void closeTail(Tail tail) {
            if (tail.channel != null || tail.inflated != null) openFiles--;
            tail.closeQuietly();
        }

        /** Renamed-away or deleted files are closed once they have been quiet for --rotate-wait. */
        private void closeQuietRotatedFiles() {
            long now = System.nanoTime();
            long quiet = settings.rotateWait().toNanos();
            for (Iterator<Tail> it = tails.values().iterator(); it.hasNext(); ) {
                Tail tail = it.next();
                if (tail.renamedAwayOrDeleted() && now - tail.goneSinceNanos >= quiet
                        && now - tail.lastGrowthNanos >= quiet) {
                    Log.debug("done with " + tail.name() + " (renamed away or deleted, and quiet)");
                    remember(tail);
                    closeTail(tail);
                    it.remove();
                }
            }
        }

        /** Keeps a finished tail's position: a restart or its compressed copy may still need it. */
        private void remember(Tail tail) {
            positions.put(entryOf(tail));
            positionsDirty = true;
        }

        private Positions.Entry entryOf(Tail tail) {
            return new Positions.Entry(tail.key, tail.fingerprint, tail.offset, tail.skippingLongLine, tail.marker,
                    tail.compressed, System.currentTimeMillis(), tail.path);
        }

        private void maybeSavePositions() {
            if (positionsDirty && System.nanoTime() - lastSaveNanos >= SAVE_EVERY_NANOS) savePositions();
        }

        void savePositions() {
            for (Tail tail : tails.values()) positions.put(entryOf(tail));
            positions.forgetOlderThan(forgetCutoff());
            try {
                positions.save();
                positionsDirty = false;
            } catch (IOException e) {
                Log.warnOnce("save", "cannot save positions: " + reason(e) + "; will retry");
            }
            lastSaveNanos = System.nanoTime();
        }

        /**
         * After a signal: no more discovery beyond one last look, ship what the files hold now, flush,
         * save. Bounded by --drain-timeout, and cut short by a second signal.
         */
        private int drain() throws IOException {
            long deadline = System.nanoTime() + settings.drainTimeout().toNanos();
            reconcile(discovery.scan(), false);
            boolean complete = readUntilCaughtUp(new ArrayList<>(tails.values()), deadline, false);
            savePositions();
            if (!complete) {
                Log.warn(shutdown.cutShort() ? "drain cut short by a second signal; unshipped lines remain in the files"
                        : "drain timed out after " + human(settings.drainTimeout()) + "; unshipped lines remain in the files");
                return 1;
            }
            Log.info("drained; shipped " + sink.lines + " line(s) in all");
            return 0;
        }
    }

    /** stdout is gone (the reader closed the pipe): nothing can be shipped any more. */
    static final class StdoutFailed extends IOException {
        StdoutFailed(IOException cause) { super(cause); }
    }

    static long modifiedMicros(Path path) {
        try {
            return Files.getLastModifiedTime(path).to(TimeUnit.MICROSECONDS);
        } catch (IOException e) {
            return -1;
        }
    }

    static String human(Duration d) {
        if (d.toMillis() % 1000 != 0) return d.toMillis() + "ms";
        return d.toSeconds() + "s";
    }
}
