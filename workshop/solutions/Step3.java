///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7

// Workshop step 3: a ticker that scans the directory and prints every matching file, every tick.
// Run it:   LOG_DIRECTORY=/tmp/logs LOG_SCAN_INTERVAL=2 ./jbang workshop/solutions/Step3.java
// Check it: ./jbang workshop/Check.java 3 workshop/solutions/Step3.java
// What goes wrong? Leave it running and watch the same lines come back every tick (step 4 fixes it).

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
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
        description = "Prints the log files of a directory to stdout (workshop step 3: whole files, every tick).")
public class Step3 implements Callable<Integer> {

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

    public static void main(String[] args) {
        System.exit(new CommandLine(new Step3()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        Files.createDirectories(directory); // like mkdir -p: no error when it exists
        // Diagnostics go to stderr: stdout is for the log lines we ship.
        System.err.println("watching " + directory + " for " + pattern + " every " + interval);
        // Go's time.Tick: one thread that runs scan() now, then again `interval` after each scan ends.
        ScheduledExecutorService ticker = Executors.newSingleThreadScheduledExecutor();
        ticker.scheduleWithFixedDelay(this::scan, 0, interval.toMillis(), TimeUnit.MILLISECONDS);
        ticker.awaitTermination(Long.MAX_VALUE, TimeUnit.DAYS); // keep main() from calling System.exit
        return 0;
    }

    /** Go's ioutil.ReadDir + IsDir + MatchString + ReadFile, in Java. */
    void scan() {
        try (DirectoryStream<Path> entries = Files.newDirectoryStream(directory)) {
            for (Path file : entries) {
                // matches() wants the WHOLE name to match; Go's MatchString (like find()) is happy
                // with any part of it, so .+\.log would also print app.log.1.
                if (Files.isRegularFile(file) && pattern.matcher(file.getFileName().toString()).matches()) {
                    System.out.write(Files.readAllBytes(file)); // bytes as they are, any encoding
                    System.out.flush();
                }
            }
        } catch (IOException e) {
            // Catch it here: an exception that escapes a scheduled task silently cancels the ticker.
            System.err.println("scan failed: " + e);
        }
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
