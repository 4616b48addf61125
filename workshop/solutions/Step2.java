///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS info.picocli:picocli:4.7.7

// Workshop step 2: configuration from LOG_DIRECTORY, LOG_FILE_PATTERN and LOG_SCAN_INTERVAL.
// Run it:   LOG_DIRECTORY=/tmp/logs ./jbang workshop/solutions/Step2.java
// Check it: ./jbang workshop/Check.java 2 workshop/solutions/Step2.java

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

@Command(name = "sidecar", mixinStandardHelpOptions = true,
        description = "Prints the log files of a directory to stdout (workshop step 2: configuration only).")
public class Step2 implements Callable<Integer> {

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
        System.exit(new CommandLine(new Step2()).execute(args));
    }

    @Override
    public Integer call() throws Exception {
        Files.createDirectories(directory); // like mkdir -p: no error when it exists
        // Diagnostics go to stderr: stdout is for the log lines we ship.
        System.err.println("watching " + directory + " for " + pattern + " every " + interval);
        // Step 3 starts the ticker here.
        return 0;
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
