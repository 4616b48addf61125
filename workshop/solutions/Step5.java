///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7

// Workshop step 5: a graceful stop. On SIGTERM or Ctrl-C a shutdown hook ships what is left, bounded in time.
// Run it:   LOG_DIRECTORY=/tmp/logs LOG_SCAN_INTERVAL=2 ./jbang workshop/solutions/Step5.java
// Check it: ./jbang workshop/Check.java 5 workshop/solutions/Step5.java

import java.io.IOException;
import java.io.InputStream;
import java.nio.channels.Channels;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

@Command(name = "sidecar", mixinStandardHelpOptions = true,
        description = "Prints the log files of a directory to stdout (workshop step 5: each line once, drained on stop).")
public class Step5 implements Callable<Integer> {

    // ${env:NAME} makes picocli read the environment variable when the option is not given.
    @Option(names = {"-d", "--directory"}, required = true, defaultValue = "${env:LOG_DIRECTORY}",
            description = "Directory with the log files, created if missing (env: LOG_DIRECTORY).")
    Path directory;

    // picocli turns the text into a Pattern itself, and reports a bad regex as a usage error.
    @Option(names = {"-p", "--pattern"}, defaultValue = "${env:LOG_FILE_PATTERN:-.+\\.log}",
            description = "Regex the whole file name must match (env: LOG_FILE_PATTERN, default: ${DEFAULT-VALUE}).")
    Pattern pattern;

    @Option(names = {"-i", "--interval"}, defaultValue = "${env:LOG_SCAN_INTERVAL:-10}",
            converter = DurationConverter.class,
            description = "Scan interval: 10 (seconds), 10s, 500ms, 2m, 1h (env: LOG_SCAN_INTERVAL, default: ${DEFAULT-VALUE}).")
    Duration interval;

    @Option(names = "--drain-timeout", defaultValue = "${env:LOG_DRAIN_TIMEOUT:-5s}", converter = DurationConverter.class,
            description = "How long a stop may spend shipping what is left (env: LOG_DRAIN_TIMEOUT, default: ${DEFAULT-VALUE}).")
    Duration drainTimeout;

    /** How far each file has been printed, in bytes. Only the ticker thread touches it. */
    final Map<Path, Long> offsets = new HashMap<>();

    public static void main(String[] args) {
        System.exit(new CommandLine(new Step5()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        Files.createDirectories(directory); // like mkdir -p: no error when it exists
        // Diagnostics go to stderr: stdout is for the log lines we ship.
        System.err.println("watching " + directory + " for " + pattern + " every " + interval);
        // Go's time.Tick: one thread that runs scan() now, then again `interval` after each scan ends.
        ScheduledExecutorService ticker = Executors.newSingleThreadScheduledExecutor();
        ticker.scheduleWithFixedDelay(this::scan, 0, interval.toMillis(), TimeUnit.MILLISECONDS);
        // Go's signal.Notify: the JVM runs this thread on SIGTERM (kubectl delete), SIGINT (Ctrl-C) or System.exit.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> drain(ticker)));
        ticker.awaitTermination(Long.MAX_VALUE, TimeUnit.DAYS); // keep main() from calling System.exit
        return 0;
    }

    /**
     * The bonus: ship what the files hold now, but never hold up the stop for longer than
     * --drain-timeout (Kubernetes kills the container anyway when its grace period ends).
     */
    void drain(ScheduledExecutorService ticker) {
        System.err.println("stopping: shipping what is left (at most " + drainTimeout + ")");
        ticker.execute(this::scan); // one last scan, on the ticker's thread: after the tick that may be running
        ticker.shutdown();          // and then no more ticks
        try {
            if (!ticker.awaitTermination(drainTimeout.toMillis(), TimeUnit.MILLISECONDS)) {
                System.err.println("drain cut short after " + drainTimeout + ": some lines were not shipped");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        // When this hook returns, the JVM exits, even if the ticker thread is still stuck writing.
    }

    /** Go's ioutil.ReadDir + IsDir + MatchString, in Java; then ship what each file gained. */
    void scan() {
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
            for (Path file : entries) {
                // matches() wants the WHOLE name to match; Go's MatchString (like find()) is happy
                // with any part of it, so .+\.log would also print app.log.1.
                if (Files.isRegularFile(file) && pattern.matcher(file.getFileName().toString()).matches()) {
                    ship(file);
                }
            }
        } catch (IOException e) {
            // Catch it here: an exception that escapes a scheduled task silently cancels the ticker.
            System.err.println("scan failed: " + e);
        }
    }

    /** Prints the whole lines appended to {@code file} since the last call, and moves its offset past them. */
    void ship(Path file) throws IOException {
        long offset = offsets.getOrDefault(file, 0L); // a file we have not seen starts at 0
        byte[] appended;
        try (SeekableByteChannel channel = Files.newByteChannel(file)) {
            channel.position(offset);
            InputStream in = Channels.newInputStream(channel);
            appended = in.readAllBytes();
        }
        // Whole lines only: a line without its '\n' may still be being written; it waits for the next tick.
        int end = lastIndexOf(appended, (byte) '\n') + 1;
        if (end == 0) return;
        System.out.write(appended, 0, end);
        System.out.flush();
        offsets.put(file, offset + end); // only after the lines were written
    }

    static int lastIndexOf(byte[] bytes, byte b) {
        for (int i = bytes.length - 1; i >= 0; i--) if (bytes[i] == b) return i;
        return -1;
    }

    /** "10" means seconds, as in the Go original; a unit may follow: 500ms, 10s, 2m, 1h. */
    static final class DurationConverter implements ITypeConverter<Duration> {
        private static final Pattern FORMAT = Pattern.compile("(\\d+)(ms|s|m|h)?");

        @Override
        public Duration convert(String text) {
            Matcher m = FORMAT.matcher(text.trim());
            if (!m.matches()) {
                throw new TypeConversionException("'" + text + "' is not a duration: try 10, 10s, 500ms, 2m or 1h");
            }
            long n = Long.parseLong(m.group(1));
            String unit = m.group(2) == null ? "s" : m.group(2);
            Duration d = switch (unit) {
                case "ms" -> Duration.ofMillis(n);
                case "m" -> Duration.ofMinutes(n);
                case "h" -> Duration.ofHours(n);
                default -> Duration.ofSeconds(n);
            };
            if (d.isZero()) throw new TypeConversionException("the interval must be longer than zero");
            return d;
        }
    }
}
