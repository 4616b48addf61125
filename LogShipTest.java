///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+
//DEPS org.junit.jupiter:junit-jupiter:5.14.1
//DEPS org.junit.platform:junit-platform-launcher:1.14.1
//SOURCES LogShip.java

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;

/**
 * LogShip's suite, grouped by the README's promises. Run it with {@code ./jbang LogShipTest.java};
 * pass words to run only the groups or tests whose names contain them.
 */
public class LogShipTest {

    // ---------------------------------------------------------------------------------------------
    // The runner: JUnit's launcher, a line per test, and a closing "N passed, N failed, N skipped".
    // ---------------------------------------------------------------------------------------------

    public static void main(String[] args) {
        LauncherDiscoveryRequest request = LauncherDiscoveryRequestBuilder.request()
                .selectors(selectClass(LogShipTest.class)).build();
        Launcher launcher = LauncherFactory.create();
        SummaryGeneratingListener summary = new SummaryGeneratingListener();
        List<String> only = Arrays.asList(args);
        TestExecutionListener progress = new TestExecutionListener() {
            @Override
            public void executionFinished(TestIdentifier id, TestExecutionResult result) {
                if (id.isTest()) {
                    String mark = switch (result.getStatus()) {
                        case SUCCESSFUL -> "ok  ";
                        case FAILED -> "FAIL";
                        case ABORTED -> "skip";
                    };
                    String why = result.getThrowable().map(t -> "  (" + firstLine(t.getMessage()) + ")").orElse("");
                    System.out.println(mark + " " + displayName(id) + (result.getStatus() == TestExecutionResult.Status.SUCCESSFUL ? "" : why));
                }
            }

            @Override
            public void executionSkipped(TestIdentifier id, String reason) {
                if (id.isTest()) System.out.println("skip " + displayName(id) + "  (" + reason + ")");
            }
        };
        if (!only.isEmpty()) {
            request = LauncherDiscoveryRequestBuilder.request().selectors(selectClass(LogShipTest.class))
                    .filters((org.junit.platform.launcher.PostDiscoveryFilter) descriptor -> {
                        String id = descriptor.getUniqueId().toString();
                        String type = descriptor.getUniqueId().getLastSegment().getType();
                        boolean grouping = type.equals("engine") || type.endsWith("class");
                        boolean match = grouping || only.stream().anyMatch(id::contains);
                        return match ? org.junit.platform.engine.FilterResult.included("selected")
                                : org.junit.platform.engine.FilterResult.excluded("not selected");
                    }).build();
        }
        launcher.execute(request, summary, progress);
        TestExecutionSummary result = summary.getSummary();
        if (!result.getFailures().isEmpty()) {
            StringWriter details = new StringWriter();
            result.printFailuresTo(new PrintWriter(details), 25);
            System.out.println(details);
        }
        long failed = result.getTestsFailedCount();
        long skipped = result.getTestsSkippedCount() + result.getTestsAbortedCount();
        System.out.println(result.getTestsSucceededCount() + " passed, " + failed + " failed, " + skipped + " skipped");
        System.exit(failed == 0 && result.getTestsFoundCount() > 0 ? 0 : 1);
    }

    private static String displayName(TestIdentifier id) {
        String[] parts = id.getUniqueId().split("/");
        String group = parts.length > 2 ? parts[parts.length - 2].replaceAll(".*:", "").replace("]", "") : "";
        return group + " > " + id.getDisplayName();
    }

    private static String firstLine(String s) {
        return s == null ? "" : s.lines().findFirst().orElse("");
    }

    // ---------------------------------------------------------------------------------------------
    // Shared fixtures: waiting, a log directory, the in-process shipper, the real process.
    // ---------------------------------------------------------------------------------------------

    /** Generous, because CI is a loaded 2-core machine; tests wait for conditions, never for time. */
    static final Duration PATIENCE = Duration.ofSeconds(60);

    static void await(String what, BooleanSupplier condition) {
        await(what, PATIENCE, condition, () -> "");
    }

    static void await(String what, Duration patience, BooleanSupplier condition, Supplier<String> state) {
        long deadline = System.nanoTime() + patience.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() - deadline > 0) fail("timed out waiting for " + what + state.get());
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
        }
    }

    static void append(Path file, String text) {
        try {
            Files.writeString(file, text, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND,
                    StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static void append(Path file, byte[] bytes) {
        try {
            Files.write(file, bytes, StandardOpenOption.CREATE, StandardOpenOption.APPEND, StandardOpenOption.WRITE);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static String numbered(String prefix, int from, int to) {
        return IntStream.range(from, to).mapToObj(i -> prefix + i + "\n").collect(Collectors.joining());
    }

    static List<String> numberedLines(String prefix, int from, int to) {
        return IntStream.range(from, to).mapToObj(i -> prefix + i).collect(Collectors.toList());
    }

    /** Parses options and environment exactly as the program does. */
    static LogShip.Settings settings(Map<String, String> env, String... args) throws LogShip.ConfigError {
        LogShip app = new LogShip();
        LogShip.commandLine(app, env).parseArgs(args);
        return app.settings();
    }

    /** The shipper in-process, with stdout captured, driven one poll at a time by the test. */
    static final class InProcess {
        final ByteArrayOutputStream stdout = new ByteArrayOutputStream();
        final LogShip.Shipper shipper;

        InProcess(Path dir, String... args) throws Exception {
            List<String> all = new ArrayList<>(List.of("-d", dir.toString(), "-q"));
            all.addAll(List.of(args));
            LogShip.Settings s = settings(Map.of(), all.toArray(String[]::new));
            LogShip.Log.level = s.level();
            shipper = new LogShip.Shipper(s, new LogShip.Sink(stdout), new LogShip.Shutdown(s.drainTimeout()),
                    LogShip.Positions.open(s.stateFile()));
        }

        InProcess start() {
            shipper.discoverAtStartup();
            return this;
        }

        String poll() throws IOException {
            int before = stdout.size();
            shipper.pollEverything();
            return stdout.toString(StandardCharsets.UTF_8).substring(before);
        }

        String all() { return stdout.toString(StandardCharsets.UTF_8); }
    }

    /** The real program as a separate JVM: env vars, signals, exit codes, stdout and stderr. */
    static final class Shipped implements AutoCloseable {
        final Process process;
        private final ByteArrayOutputStream stdout = new ByteArrayOutputStream();
        private final ByteArrayOutputStream stderr = new ByteArrayOutputStream();

        private final List<Thread> pumps = new ArrayList<>();

        private Shipped(Process process, boolean readStdout) {
            this.process = process;
            if (readStdout) pumps.add(pump(process.getInputStream(), stdout));
            pumps.add(pump(process.getErrorStream(), stderr));
        }

        /** Runs LogShip's main with this JVM's class path: the same code, as its own process. */
        static Shipped start(Map<String, String> env, String... args) {
            return start(env, true, args);
        }

        static Shipped start(Map<String, String> env, boolean readStdout, String... args) {
            return start(List.of(), List.of(), env, readStdout, args);
        }

        /**
         * With {@code prefix} (e.g. setpriv or a shell that lowers ulimit) before java and
         * {@code jvmOptions} after it.
         */
        static Shipped start(List<String> prefix, List<String> jvmOptions, Map<String, String> env, boolean readStdout,
                             String... args) {
            return start(prefix, jvmOptions, System.getProperty("java.class.path"), env, readStdout, args);
        }

        static Shipped start(List<String> prefix, List<String> jvmOptions, String classPath, Map<String, String> env,
                             boolean readStdout, String... args) {
            List<String> command = new ArrayList<>(prefix);
            command.add(javaBinary());
            command.addAll(jvmOptions);
            command.addAll(List.of("-cp", classPath, "LogShip"));
            command.addAll(List.of(args));
            return launch(command, env, readStdout);
        }

        static Shipped launch(List<String> command, Map<String, String> env, boolean readStdout) {
            ProcessBuilder builder = new ProcessBuilder(command);
            builder.environment().keySet().removeIf(k -> k.startsWith("LOG_"));
            builder.environment().putAll(env);
            try {
                return new Shipped(builder.start(), readStdout);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        static String javaBinary() {
            return Path.of(System.getProperty("java.home"), "bin", "java").toString();
        }

        private static Thread pump(InputStream from, ByteArrayOutputStream to) {
            Thread t = new Thread(() -> {
                byte[] buffer = new byte[8192];
                try {
                    for (int n; (n = from.read(buffer)) > 0; ) {
                        synchronized (to) {
                            to.write(buffer, 0, n);
                        }
                    }
                } catch (IOException e) {
                    // the process ended
                }
            });
            t.setDaemon(true);
            t.start();
            return t;
        }

        String stdout() {
            synchronized (stdout) {
                return stdout.toString(StandardCharsets.UTF_8);
            }
        }

        byte[] stdoutBytes() {
            synchronized (stdout) {
                return stdout.toByteArray();
            }
        }

        String stderr() {
            synchronized (stderr) {
                return stderr.toString(StandardCharsets.UTF_8);
            }
        }

        List<String> lines() {
            String out = stdout();
            int end = out.lastIndexOf('\n');
            return end < 0 ? List.of() : List.of(out.substring(0, end).split("\n", -1));
        }

        Shipped awaitReady() {
            await("the shipper to be ready", PATIENCE, () -> stderr().contains("ready:") || !process.isAlive(),
                    () -> "; stderr:\n" + stderr());
            assertTrue(process.isAlive(), () -> "the shipper died: " + stderr());
            return this;
        }

        Shipped awaitLineCount(int n) {
            await(n + " lines on stdout", PATIENCE, () -> lines().size() >= n,
                    () -> "; got " + lines().size() + "; stderr:\n" + tail(stderr()));
            return this;
        }

        Shipped awaitStderr(String text) {
            await("stderr to say '" + text + "'", PATIENCE, () -> stderr().contains(text), () -> "; stderr:\n" + stderr());
            return this;
        }

        int awaitExit() {
            try {
                if (!process.waitFor(PATIENCE.toSeconds(), java.util.concurrent.TimeUnit.SECONDS)) {
                    fail("the process did not exit; stderr:\n" + stderr());
                }
                for (Thread pump : pumps) pump.join(PATIENCE.toMillis()); // the last bytes, up to EOF
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
            return process.exitValue();
        }

        /** SIGTERM, then the exit code. (Not Process.destroy(): it also closes our end of the pipes.) */
        int terminate() {
            signal("TERM");
            return awaitExit();
        }

        void signal(String name) {
            try {
                new ProcessBuilder("kill", "-" + name, Long.toString(process.pid())).inheritIO().start().waitFor();
            } catch (IOException | InterruptedException e) {
                throw new AssertionError(e);
            }
        }

        @Override
        public void close() {
            process.destroyForcibly();
        }
    }

    /** Compares shipped lines with what must come out, reporting the first difference, not a 2 MB dump. */
    static void assertLines(List<String> expected, List<String> actual) {
        if (expected.equals(actual)) return;
        int i = 0;
        while (i < expected.size() && i < actual.size() && expected.get(i).equals(actual.get(i))) i++;
        fail("expected " + expected.size() + " lines, got " + actual.size() + "; first difference at line " + i
                + ": expected " + (i < expected.size() ? "'" + abbreviate(expected.get(i)) + "'" : "nothing")
                + " but got " + (i < actual.size() ? "'" + abbreviate(actual.get(i)) + "'" : "nothing"));
    }

    static String abbreviate(String s) {
        return s.length() <= 80 ? s : s.substring(0, 80) + "...(" + s.length() + " chars)";
    }

    static String tail(String text) {
        return text.length() < 4000 ? text : "..." + text.substring(text.length() - 4000);
    }

    static void assertNoStackTrace(String stderr) {
        assertFalse(Pattern.compile("^\\s+at |Exception|\\.java:\\d+", Pattern.MULTILINE).matcher(stderr).find(),
                () -> "stack trace on stderr:\n" + stderr);
    }

    // ---------------------------------------------------------------------------------------------
    // Contract: configuration
    // ---------------------------------------------------------------------------------------------

    @Nested
    class Configuration {
        @TempDir
        Path dir;

        @Test
        void defaultsApplyWhenOnlyTheDirectoryIsGiven() throws Exception {
            LogShip.Settings s = settings(Map.of("LOG_DIRECTORY", dir.toString()));
            assertEquals(dir, s.directory());
            assertEquals(".+\\.log", s.pattern().pattern());
            assertEquals(Duration.ofSeconds(10), s.interval());
            assertEquals(LogShip.StartAt.HEAD, s.startAt());
            assertEquals(1048576, s.maxLineBytes());
            assertEquals(Duration.ofSeconds(5), s.drainTimeout());
            assertEquals(null, s.stateFile());
            assertFalse(s.once());
            assertEquals(LogShip.Level.INFO, s.level());
        }

        @Test
        void everyEnvironmentVariableSetsItsOption() throws Exception {
            Map<String, String> env = Map.of("LOG_DIRECTORY", dir.toString(), "LOG_FILE_PATTERN", "app-.*\\.txt",
                    "LOG_SCAN_INTERVAL", "2m", "LOG_START_AT", "tail", "LOG_MAX_LINE_BYTES", "4096",
                    "LOG_DRAIN_TIMEOUT", "30s", "LOG_STATE_FILE", dir.resolve("state/pos").toString(),
                    "LOG_LEVEL", "error", "LOG_ROTATE_WAIT", "1s", "LOG_FORGET_AFTER", "1h");
            LogShip.Settings s = settings(env);
            assertEquals("app-.*\\.txt", s.pattern().pattern());
            assertEquals(Duration.ofMinutes(2), s.interval());
            assertEquals(LogShip.StartAt.TAIL, s.startAt());
            assertEquals(4096, s.maxLineBytes());
            assertEquals(Duration.ofSeconds(30), s.drainTimeout());
            assertEquals(dir.resolve("state/pos"), s.stateFile());
            assertEquals(LogShip.Level.ERROR, s.level());
            assertEquals(Duration.ofSeconds(1), s.rotateWait());
            assertEquals(Duration.ofHours(1), s.forgetAfter());
        }

        @Test
        void anOptionWinsOverItsEnvironmentVariable() throws Exception {
            Path other = dir.resolve("other");
            LogShip.Settings s = settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "2m"),
                    "--directory", other.toString(), "-i", "3s");
            assertEquals(other, s.directory());
            assertEquals(Duration.ofSeconds(3), s.interval());
        }

        @Test
        void theDirectoryIsCreatedWithItsParents() throws Exception {
            Path deep = dir.resolve("a/b/c");
            settings(Map.of("LOG_DIRECTORY", deep.toString()));
            assertTrue(Files.isDirectory(deep));
        }

        @Test
        void aMissingDirectorySettingNamesLogDirectory() {
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class, () -> settings(Map.of()));
            assertTrue(e.getMessage().contains("LOG_DIRECTORY"), e.getMessage());
        }

        @Test
        void aFileWhereTheDirectoryShouldBeIsRejected() throws Exception {
            Path file = Files.writeString(dir.resolve("plain"), "x");
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", file.toString())));
            assertTrue(e.getMessage().contains("LOG_DIRECTORY") && e.getMessage().contains("not a directory"));
            LogShip.ConfigError below = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", file.resolve("sub").toString())));
            assertTrue(below.getMessage().contains("cannot be created"), below.getMessage());
        }

        @Test
        void thePatternMustMatchTheWholeFileName() throws Exception {
            Pattern p = settings(Map.of("LOG_DIRECTORY", dir.toString())).pattern();
            assertTrue(p.matcher("app.log").matches());
            assertFalse(p.matcher("app.log.1").matches());
            assertFalse(p.matcher("app.log.1.gz").matches());
            assertFalse(p.matcher(".log").matches());
        }

        @Test
        void anInvalidRegexNamesTheSettingAndTheError() {
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_FILE_PATTERN", "*.log")));
            assertTrue(e.getMessage().startsWith("LOG_FILE_PATTERN"), e.getMessage());
            assertTrue(e.getMessage().contains("Dangling meta character"), e.getMessage());
        }

        @ParameterizedTest
        @CsvSource({"10,10000", "0.5,500", "500ms,500", "10s,10000", "2m,120000", "PT10S,10000", "1h,3600000",
                "1.5s,1500", "' 7 ',7000"})
        void intervalsAcceptSecondsUnitsAndIso8601(String text, long millis) throws Exception {
            assertEquals(Duration.ofMillis(millis),
                    settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", text)).interval());
        }

        @ParameterizedTest
        @ValueSource(strings = {"0", "-1", "0s", "PT0S", "PT-5S", "abc", "10x", "1,5", "s", "10 seconds"})
        void badIntervalsNameTheSetting(String text) {
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", text)));
            assertTrue(e.getMessage().startsWith("LOG_SCAN_INTERVAL (--interval)"), e.getMessage());
        }

        @Test
        void badDrainTimeoutNamesTheSetting() {
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString()), "--drain-timeout", "never"));
            assertTrue(e.getMessage().startsWith("LOG_DRAIN_TIMEOUT"), e.getMessage());
        }

        @Test
        void startAtIsHeadOrTail() throws Exception {
            assertEquals(LogShip.StartAt.TAIL, settings(Map.of("LOG_DIRECTORY", dir.toString()), "--start-at", "TAIL").startAt());
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_START_AT", "middle")));
            assertTrue(e.getMessage().startsWith("LOG_START_AT"), e.getMessage());
        }

        @ParameterizedTest
        @ValueSource(strings = {"0", "-5", "1k", "abc", "99999999999"})
        void badLineLimitsNameTheSetting(String text) {
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_MAX_LINE_BYTES", text)));
            assertTrue(e.getMessage().startsWith("LOG_MAX_LINE_BYTES"), e.getMessage());
        }

        @Test
        void verboseAndQuietOverrideTheLogLevel() throws Exception {
            Map<String, String> env = Map.of("LOG_DIRECTORY", dir.toString(), "LOG_LEVEL", "error");
            assertEquals(LogShip.Level.DEBUG, settings(env, "-v").level());
            assertEquals(LogShip.Level.WARN, settings(env, "--quiet").level());
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_LEVEL", "loud")));
            assertTrue(e.getMessage().startsWith("LOG_LEVEL"), e.getMessage());
        }

        @Test
        void aStateFileThatCannotBeWrittenNamesTheSetting() throws Exception {
            Path blocker = Files.writeString(dir.resolve("blocker"), "x");
            LogShip.ConfigError e = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString()), "--state", blocker.resolve("pos").toString()));
            assertTrue(e.getMessage().startsWith("LOG_STATE_FILE"), e.getMessage());
            LogShip.ConfigError isDir = assertThrows(LogShip.ConfigError.class,
                    () -> settings(Map.of("LOG_DIRECTORY", dir.toString()), "--state", dir.toString()));
            assertTrue(isDir.getMessage().contains("is a directory"), isDir.getMessage());
        }

        @Test
        void helpListsEveryEnvironmentVariable() {
            StringWriter help = new StringWriter();
            LogShip.commandLine(new LogShip(), Map.of()).setOut(new PrintWriter(help)).execute("--help");
            for (String env : List.of("LOG_DIRECTORY", "LOG_FILE_PATTERN", "LOG_SCAN_INTERVAL", "LOG_START_AT",
                    "LOG_MAX_LINE_BYTES", "LOG_DRAIN_TIMEOUT", "LOG_STATE_FILE", "LOG_LEVEL")) {
                assertTrue(help.toString().contains(env), env + " missing from --help");
            }
        }

        @Test
        void anUnknownOptionIsAUsageError() {
            StringWriter err = new StringWriter();
            int code = LogShip.commandLine(new LogShip(), Map.of("LOG_DIRECTORY", dir.toString()))
                    .setErr(new PrintWriter(err)).execute("--colour=blue");
            assertEquals(2, code);
            assertTrue(err.toString().contains("Unknown option: '--colour=blue'"), err.toString());
            assertTrue(err.toString().contains("Usage: logship"), err.toString());
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Contract: the process, as a user or Kubernetes runs it
    // ---------------------------------------------------------------------------------------------

    @Nested
    class ProcessContract {
        @TempDir
        Path dir;

        @ParameterizedTest
        @CsvSource(delimiter = '|', value = {
            "LOG_FILE_PATTERN=([a-z]|LOG_FILE_PATTERN",
            "LOG_SCAN_INTERVAL=0|LOG_SCAN_INTERVAL",
            "LOG_SCAN_INTERVAL=soon|LOG_SCAN_INTERVAL",
            "LOG_START_AT=end|LOG_START_AT",
            "LOG_MAX_LINE_BYTES=-1|LOG_MAX_LINE_BYTES",
            "LOG_DRAIN_TIMEOUT=-5s|LOG_DRAIN_TIMEOUT"})
        void badSettingsExitTwoWithOneSentenceNamingThem(String assignment, String setting) {
            String[] kv = assignment.split("=", 2);
            Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), kv[0], kv[1]));
            assertEquals(2, run.awaitExit());
            String err = run.stderr().strip();
            assertEquals(1, err.lines().count(), err);
            assertTrue(err.startsWith("logship: " + setting), err);
            assertNoStackTrace(err);
            assertEquals("", run.stdout());
        }

        @Test
        void aMissingDirectoryExitsTwoNamingLogDirectory() {
            Shipped run = Shipped.start(Map.of());
            assertEquals(2, run.awaitExit());
            assertTrue(run.stderr().contains("LOG_DIRECTORY"), run.stderr());
            assertNoStackTrace(run.stderr());
        }

        @Test
        void anUnknownOptionExitsTwoWithUsage() {
            Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString()), "--frobnicate");
            assertEquals(2, run.awaitExit());
            assertTrue(run.stderr().contains("Unknown option: '--frobnicate'") && run.stderr().contains("Usage:"));
            assertNoStackTrace(run.stderr());
        }

        @Test
        void theDirectoryIsCreatedAndWatched() {
            Path created = dir.resolve("not/yet");
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", created.toString())).awaitReady()) {
                assertTrue(Files.isDirectory(created));
                append(created.resolve("late.log"), "hello\n");
                run.awaitLineCount(1);
                assertEquals(List.of("hello"), run.lines());
            }
        }

        @Test
        void everyLineIsShippedExactlyOnceWhileAWriterAppends() throws Exception {
            Path a = dir.resolve("a.log");
            Path b = dir.resolve("b.log");
            append(a, numbered("a", 0, 100));
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "1"))) {
                run.awaitReady();
                // Torn writes on purpose: half a line now, the rest later, as real writers do.
                for (int i = 100; i < 3000; i++) {
                    String line = "a" + i + "\n";
                    append(a, line.substring(0, 2));
                    append(b, "b" + i + "\n");
                    append(a, line.substring(2));
                    if (i % 500 == 0) Thread.sleep(20);
                }
                run.awaitLineCount(3000 + 2900);
                assertEquals(0, run.terminate());
                List<String> lines = run.lines();
                assertLines(numberedLines("a", 0, 3000), lines.stream().filter(l -> l.startsWith("a")).toList());
                assertLines(numberedLines("b", 100, 3000), lines.stream().filter(l -> l.startsWith("b")).toList());
                assertEquals(5900, lines.size());
            }
        }

        @Test
        void stdoutCarriesShippedLinesOnly() {
            append(dir.resolve("x.log"), "only this\n");
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_LEVEL", "debug"))) {
                run.awaitReady().awaitLineCount(1);
                assertEquals(0, run.terminate());
                assertEquals("only this\n", run.stdout());
                assertTrue(run.stderr().contains("logship: debug:"), "diagnostics belong on stderr");
            }
        }

        @Test
        void sigtermDrainsWhatTheFilesHoldAndExitsZero() {
            Path file = dir.resolve("busy.log");
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "1h"))) {
                run.awaitReady();
                append(file, numbered("line", 0, 200_000));
                assertEquals(0, run.terminate());
                assertLines(numberedLines("line", 0, 200_000), run.lines());
                assertTrue(run.stderr().contains("drained"), run.stderr());
            }
        }

        @Test
        void sigintAlsoDrainsAndExitsZero() {
            append(dir.resolve("x.log"), "one\n");
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString()))) {
                run.awaitReady().awaitLineCount(1);
                run.signal("INT");
                assertEquals(0, run.awaitExit());
            }
        }

        @Test
        void theDrainTimeoutBoundsShutdownEvenWhenStdoutIsStuck() {
            append(dir.resolve("big.log"), numbered("line", 0, 100_000));
            // Nobody reads this process's stdout: its writes block once the pipe is full.
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_DRAIN_TIMEOUT", "1s"), false)) {
                run.awaitReady();
                assertEquals(1, run.terminate(), run::stderr);
                assertTrue(run.stderr().contains("did not finish in time") || run.stderr().contains("timed out"),
                        run.stderr());
            }
        }

        @Test
        void aSecondSignalCutsTheDrainShort() {
            append(dir.resolve("big.log"), numbered("line", 0, 100_000));
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_DRAIN_TIMEOUT", "10m"), false)) {
                run.awaitReady();
                run.signal("TERM");
                run.awaitStderr("draining");
                run.signal("TERM");
                assertEquals(1, run.awaitExit());
                assertTrue(run.stderr().contains("cutting the drain short"), run.stderr());
            }
        }

        @Test
        void onceShipsWhatIsThereIncludingATrailingPartialLineAndExits() {
            append(dir.resolve("a.log"), "one\ntwo\nthree-without-newline");
            append(dir.resolve("skip.txt"), "not matching\n");
            Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString()), "--once");
            assertEquals(0, run.awaitExit());
            assertEquals("one\ntwo\nthree-without-newline\n", run.stdout());
        }

        @Test
        void versionIsPrintedWithoutAManifest() {
            Shipped run = Shipped.start(Map.of(), "--version");
            assertEquals(0, run.awaitExit());
            assertTrue(run.stdout().startsWith("logship " + LogShip.VERSION), run.stdout());
        }

        @Test
        void theReadmeRunCommandWorksThroughTheJbangLauncher() {
            Path launcher = Path.of("jbang").toAbsolutePath();
            org.junit.jupiter.api.Assumptions.assumeTrue(Files.isExecutable(launcher),
                    "run from the repository root, where ./jbang lives");
            append(dir.resolve("a.log"), "via jbang\n");
            Shipped run = Shipped.launch(List.of(launcher.toString(), "LogShip.java", "-d", dir.toString(), "--once"),
                    Map.of(), true);
            assertEquals(0, run.awaitExit(), run::stderr);
            assertEquals("via jbang\n", run.stdout());
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Rotation: rename + create, copytruncate, truncation, deletion
    // ---------------------------------------------------------------------------------------------

    @Nested
    class Rotation {
        @TempDir
        Path dir;

        @Test
        void renamedFileIsDrainedBeforeTheNewOneIsRead() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, numbered("old", 0, 10));
            InProcess shipper = new InProcess(dir).start();
            shipper.poll();
            append(log, numbered("old", 10, 20));
            Files.move(log, dir.resolve("app.log.1"));
            append(dir.resolve("app.log.1"), numbered("old", 20, 30)); // the writer still holds the old file
            append(log, numbered("new", 0, 10));
            shipper.poll();
            assertLines(concat(numberedLines("old", 0, 30), numberedLines("new", 0, 10)), shipper.all().lines().toList());
            assertEquals("", shipper.poll());
        }

        @Test
        void aDeletedFileIsDrainedAndARecreatedNameIsANewFile() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, "first life 1\n");
            InProcess shipper = new InProcess(dir).start();
            shipper.poll();
            append(log, "first life 2\n");
            try (var stillOpen = Files.newOutputStream(log, StandardOpenOption.APPEND)) {
                Files.delete(log);
                stillOpen.write("first life 3\n".getBytes(StandardCharsets.UTF_8));
            }
            append(log, "second life 1\n");
            shipper.poll();
            assertEquals("first life 1\nfirst life 2\nfirst life 3\nsecond life 1\n", shipper.all());
        }

        @Test
        void aRenamedFileIsClosedOnlyAfterItHasBeenQuiet() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, "a\n");
            InProcess shipper = new InProcess(dir, "--rotate-wait", "200ms").start();
            shipper.poll();
            Path rotated = dir.resolve("app.log.1");
            Files.move(log, rotated);
            // Keep writing to the renamed file for longer than --rotate-wait: a timer alone would close it.
            long until = System.nanoTime() + Duration.ofMillis(600).toNanos();
            int n = 0;
            while (System.nanoTime() < until) {
                append(rotated, "late" + n++ + "\n");
                shipper.poll();
                Thread.sleep(20);
            }
            shipper.poll();
            assertLines(concat(List.of("a"), numberedLines("late", 0, n)), shipper.all().lines().toList());
            await("the quiet renamed file to be closed", () -> {
                try {
                    shipper.poll();
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
                return shipper.shipper.tailCount() == 0;
            });
        }

        @Test
        void copytruncateRestartsAtTheTopWithoutDuplicates() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, numbered("before", 0, 100));
            InProcess shipper = new InProcess(dir).start();
            shipper.poll();
            Files.copy(log, dir.resolve("app.log.1"));
            try (var channel = java.nio.channels.FileChannel.open(log, StandardOpenOption.WRITE)) {
                channel.truncate(0);
            }
            append(log, numbered("after", 0, 5));
            shipper.poll();
            assertLines(concat(numberedLines("before", 0, 100), numberedLines("after", 0, 5)),
                    shipper.all().lines().toList());
        }

        @Test
        void aTruncationHiddenByRegrowthIsStillNoticed() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, numbered("before", 0, 10));
            InProcess shipper = new InProcess(dir).start();
            shipper.poll();
            long shippedOffset = Files.size(log);
            try (var channel = java.nio.channels.FileChannel.open(log, StandardOpenOption.WRITE)) {
                channel.truncate(0);
            }
            // Grows past the old offset before the shipper looks again: only the marker can tell.
            append(log, numbered("regrown-", 0, 40));
            assertTrue(Files.size(log) > shippedOffset);
            shipper.poll();
            assertLines(concat(numberedLines("before", 0, 10), numberedLines("regrown-", 0, 40)),
                    shipper.all().lines().toList());
        }

        @Test
        void highRateRenameRotationLosesAndDuplicatesNothing() throws Exception {
            // 10k lines/s, a rename rotation every second plus bursts of rotations 50 ms apart, and
            // a scan interval (10s) longer than the whole run: events and open handles do the work.
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "10s"))) {
                run.awaitReady();
                RotatingWriter writer = new RotatingWriter(dir.resolve("app.log"));
                long written = writer.run(Duration.ofSeconds(5), 10_000, Duration.ofSeconds(1), 3);
                run.awaitLineCount((int) written);
                assertEquals(0, run.terminate());
                writer.assertShippedExactlyOnce(run.lines());
            }
        }
    }

    static <T> List<T> concat(List<T> a, List<T> b) {
        List<T> all = new ArrayList<>(a);
        all.addAll(b);
        return all;
    }

    /**
     * Writes numbered lines ("g<generation> <n>") at a steady rate and rotates like a real app with
     * logrotate: rename the live file (overwriting the previous .1), keep writing a few lines to the
     * old handle as nginx does until it reopens, then create a new file.
     */
    static final class RotatingWriter {
        private final Path live;
        private final Map<Integer, Integer> linesPerGeneration = new HashMap<>();

        RotatingWriter(Path live) { this.live = live; }

        long run(Duration length, int linesPerSecond, Duration rotateEvery, int burst) throws Exception {
            long start = System.nanoTime();
            long nextRotation = start + rotateEvery.toNanos();
            int generation = 0;
            long total = 0;
            var out = Files.newOutputStream(live, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
            int n = 0;
            while (System.nanoTime() - start < length.toNanos()) {
                long due = (System.nanoTime() - start) * linesPerSecond / 1_000_000_000L;
                StringBuilder batch = new StringBuilder();
                for (; total < due; total++) batch.append('g').append(generation).append(' ').append(n++).append('\n');
                out.write(batch.toString().getBytes(StandardCharsets.UTF_8));
                out.flush();
                if (System.nanoTime() - nextRotation >= 0) {
                    for (int b = 0; b < burst; b++) {
                        Files.move(live, live.resolveSibling(live.getFileName() + ".1"),
                                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                        for (int late = 0; late < 5; late++, total++) {
                            out.write(("g" + generation + " " + n++ + "\n").getBytes(StandardCharsets.UTF_8));
                        }
                        out.close();
                        linesPerGeneration.put(generation, n);
                        generation++;
                        n = 0;
                        out = Files.newOutputStream(live, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
                        if (b + 1 < burst) {
                            for (int i = 0; i < 20; i++, total++) {
                                out.write(("g" + generation + " " + n++ + "\n").getBytes(StandardCharsets.UTF_8));
                            }
                            out.flush();
                            Thread.sleep(50);
                        }
                    }
                    nextRotation += rotateEvery.toNanos();
                }
                Thread.sleep(5);
            }
            out.close();
            linesPerGeneration.put(generation, n);
            return total;
        }

        void assertShippedExactlyOnce(List<String> shipped) {
            Map<Integer, List<Integer>> seen = new HashMap<>();
            for (String line : shipped) {
                String[] parts = line.split(" ");
                seen.computeIfAbsent(Integer.parseInt(parts[0].substring(1)), g -> new ArrayList<>())
                        .add(Integer.parseInt(parts[1]));
            }
            assertEquals(linesPerGeneration.keySet(), seen.keySet(), "generations shipped");
            linesPerGeneration.forEach((g, count) -> {
                List<Integer> expected = IntStream.range(0, count).boxed().toList();
                assertEquals(expected, seen.get(g), "generation " + g + " must be complete, in order, once");
            });
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Hostile input: odd entries, odd bytes, odd names, unreadable and vanishing files
    // ---------------------------------------------------------------------------------------------

    @Nested
    class HostileInput {
        @TempDir
        Path dir;

        @Test
        void fifosSocketsAndDirectoriesAreSkippedWithoutBlocking() throws Exception {
            assertEquals(0, new ProcessBuilder("mkfifo", dir.resolve("pipe.log").toString()).start().waitFor());
            Files.createDirectory(dir.resolve("folder.log"));
            try (var socket = java.nio.channels.ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
                socket.bind(java.net.UnixDomainSocketAddress.of(dir.resolve("sock.log")));
                append(dir.resolve("ok.log"), "ok 1\n");
                try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "200ms",
                        "LOG_LEVEL", "debug"))) {
                    run.awaitReady().awaitLineCount(1);
                    append(dir.resolve("ok.log"), "ok 2\n");
                    run.awaitLineCount(2);
                    run.awaitStderr("skipping pipe.log").awaitStderr("skipping folder.log").awaitStderr("skipping sock.log");
                    await("three more rescans", () -> count(run.stderr(), "debug: skipping pipe.log") >= 3);
                    append(dir.resolve("ok.log"), "ok 3\n");
                    run.awaitLineCount(3);
                    assertEquals(0, run.terminate());
                    assertEquals("ok 1\nok 2\nok 3\n", run.stdout());
                    assertEquals(1, count(run.stderr(), "warn: skipping pipe.log"), "warned once, not at every scan");
                }
            }
        }

        @Test
        void symlinksAreFollowedOnlyToRegularFilesInsideTheDirectory() throws Exception {
            Path outside = Files.createTempDirectory("logship-secret");
            try {
                Path secret = Files.writeString(outside.resolve("token"), "TOP-SECRET\n");
                Files.createSymbolicLink(dir.resolve("leak.log"), secret);
                Path inside = Files.writeString(dir.resolve("real.txt"), "inside\n");
                Files.createSymbolicLink(dir.resolve("inside.log"), inside);
                Files.createSymbolicLink(dir.resolve("dangling.log"), dir.resolve("nowhere"));
                try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "200ms",
                        "LOG_LEVEL", "debug"))) {
                    run.awaitReady().awaitLineCount(1);
                    run.awaitStderr("leak.log: it is a symlink to " + secret);
                    await("three more rescans", () -> count(run.stderr(), "debug: skipping leak.log") >= 3);
                    assertEquals(0, run.terminate());
                    assertEquals("inside\n", run.stdout());
                    assertFalse(run.stdout().contains("SECRET"));
                    assertEquals(1, count(run.stderr(), "warn: skipping leak.log"), "one warning, not one per scan");
                    assertEquals(1, count(run.stderr(), "warn: skipping dangling.log"), run.stderr());
                }
            } finally {
                deleteTree(outside);
            }
        }

        @Test
        void longLinesAreCutAtTheLimitAndTheRestDropped() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, "short\n" + "x".repeat(25) + "\nafter\n" + "y".repeat(10) + "\n");
            InProcess shipper = new InProcess(dir, "--max-line-bytes", "10").start();
            assertEquals("short\n" + "x".repeat(10) + "\nafter\n" + "y".repeat(10) + "\n", shipper.poll());
            // A long line still being written: cut once, its rest dropped as it arrives.
            append(log, "z".repeat(15));
            assertEquals("z".repeat(10) + "\n", shipper.poll());
            append(log, "z".repeat(15) + "\nnext\n");
            assertEquals("next\n", shipper.poll());
        }

        @Test
        void aFiftyMegabyteLineKeepsMemoryBounded() throws Exception {
            Path log = dir.resolve("huge.log");
            byte[] chunk = "0123456789abcdef".repeat(64 * 1024).getBytes(StandardCharsets.US_ASCII); // 1 MiB
            for (int i = 0; i < 50; i++) append(log, chunk);
            append(log, "\nafter\n");
            // A 32 MiB heap cannot hold a 50 MB line: this only passes if reading streams.
            Shipped run = Shipped.start(List.of(), List.of("-Xmx32m"), Map.of("LOG_DIRECTORY", dir.toString()), true,
                    "--once");
            assertEquals(0, run.awaitExit(), run::stderr);
            List<String> lines = run.lines();
            assertEquals(2, lines.size());
            assertEquals(1048576, lines.get(0).length());
            assertEquals("after", lines.get(1));
            assertTrue(run.stderr().contains("was cut at that length"), run.stderr());
        }

        @Test
        void namesWithSpacesUnicodeAndShellMetacharactersWork() throws Exception {
            List<String> names = List.of("a b.log", "ünïcödé €.log", "$(rm -rf x);'\"`.log", "-n.log", "new\nline.log");
            for (String name : names) append(dir.resolve(name), "from " + name.replace("\n", "\\n") + "\n");
            InProcess shipper = new InProcess(dir).start();
            List<String> shipped = new ArrayList<>(shipper.poll().lines().toList());
            shipped.sort(null);
            List<String> expected = new ArrayList<>(names.stream().map(n -> "from " + n.replace("\n", "\\n")).toList());
            expected.sort(null);
            assertEquals(expected, shipped);
        }

        @Test
        void anUnreadableFileIsWarnedAboutOnceAndRetried() throws Exception {
            Path shared = sharedTempDir();
            try {
                append(shared.resolve("open.log"), "open\n");
                Path locked = shared.resolve("locked.log");
                append(locked, "was locked\n");
                Files.setPosixFilePermissions(locked, java.nio.file.attribute.PosixFilePermissions.fromString("---------"));
                try (Shipped run = AsUser.nobody(Map.of("LOG_DIRECTORY", shared.toString(), "LOG_SCAN_INTERVAL", "200ms",
                        "LOG_LEVEL", "debug"))) {
                    run.awaitReady().awaitLineCount(1);
                    await("three retries", () -> count(run.stderr(), "debug: cannot read locked.log") >= 3);
                    assertEquals(1, count(run.stderr(), "warn: cannot read locked.log"), "one warning, not one per scan");
                    Files.setPosixFilePermissions(locked, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
                    run.awaitLineCount(2);
                    assertEquals(0, run.terminate());
                    assertEquals(List.of("open", "was locked"), run.lines());
                }
            } finally {
                deleteTree(shared);
            }
        }

        @Test
        void filesVanishingMidReadDoNotDisturbTheOthers() throws Exception {
            Path steady = dir.resolve("steady.log");
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "50ms"))) {
                run.awaitReady();
                for (int i = 0; i < 300; i++) {
                    Path brief = dir.resolve("brief" + (i % 7) + ".log");
                    append(brief, "x".repeat(1000) + "\n");
                    append(steady, "steady" + i + "\n");
                    Files.deleteIfExists(brief);
                }
                await("all steady lines", PATIENCE, () -> run.lines().stream().filter(l -> l.startsWith("steady")).count() == 300,
                        run::stderr);
                assertEquals(0, run.terminate());
                assertLines(numberedLines("steady", 0, 300), run.lines().stream().filter(l -> l.startsWith("steady")).toList());
                assertNoStackTrace(run.stderr());
            }
        }
    }

    static int count(String text, String needle) {
        int n = 0;
        for (int i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length())) n++;
        return n;
    }

    static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return;
        try (var walk = Files.walk(root)) {
            for (Path p : walk.sorted(java.util.Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
        }
    }

    /** A temp directory other users can enter (JUnit's are private to the owner). */
    static Path sharedTempDir() throws IOException {
        Path dir = Files.createTempDirectory(Path.of("/tmp"), "logship-shared");
        Files.setPosixFilePermissions(dir, java.nio.file.attribute.PosixFilePermissions.fromString("rwxr-xr-x"));
        return dir;
    }

    /**
     * Runs the shipper as an unprivileged user, because root reads everything. As root that is
     * setpriv to nobody, with the class path copied where nobody can read it; as anybody else the
     * current user already is unprivileged.
     */
    static final class AsUser {
        private static String readableClassPath;

        static Shipped nobody(Map<String, String> env, String... args) throws IOException {
            if (!isRoot()) return Shipped.start(env, args);
            return Shipped.start(List.of("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
                    List.of(), readableClassPath(), env, true, args);
        }

        static boolean isRoot() {
            try {
                return "0".equals(new String(new ProcessBuilder("id", "-u").start().getInputStream().readAllBytes()).trim());
            } catch (IOException e) {
                return false;
            }
        }

        static synchronized String readableClassPath() throws IOException {
            if (readableClassPath == null) {
                Path copy = sharedTempDir();
                List<String> entries = new ArrayList<>();
                int i = 0;
                for (String entry : System.getProperty("java.class.path").split(java.io.File.pathSeparator)) {
                    Path target = copy.resolve(i++ + "-" + Path.of(entry).getFileName());
                    Files.copy(Path.of(entry), target);
                    Files.setPosixFilePermissions(target, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
                    entries.add(target.toString());
                }
                readableClassPath = String.join(java.io.File.pathSeparator, entries);
            }
            return readableClassPath;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Many files: descriptor limits, fairness, latency
    // ---------------------------------------------------------------------------------------------

    @Nested
    class ManyFiles {
        @TempDir
        Path dir;

        @Test
        void threeThousandFilesShipUnderAFiveHundredDescriptorLimit() throws Exception {
            int files = 3000;
            for (int f = 0; f < files; f++) append(dir.resolve("f" + f + ".log"), "f" + f + " a\nf" + f + " b\n");
            try (Shipped run = Shipped.start(List.of("prlimit", "--nofile=512:512", "--"), List.of(),
                    Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "1s"), true)) {
                run.awaitReady().awaitLineCount(2 * files);
                for (int f = 0; f < files; f++) append(dir.resolve("f" + f + ".log"), "f" + f + " c\n");
                run.awaitLineCount(3 * files);
                assertEquals(0, run.terminate(), run::stderr);
                List<String> lines = run.lines();
                assertEquals(3 * files, lines.size());
                assertEquals(3 * files, new java.util.HashSet<>(lines).size(), "no line twice");
                assertFalse(run.stderr().contains("Too many open files"), run.stderr());
            }
        }

        @Test
        void oneBusyFileDoesNotStarveTheOthers() throws Exception {
            append(dir.resolve("busy.log"), numbered("busy", 0, 2_000_000)); // about 20 MB
            append(dir.resolve("quiet.log"), "quiet\n");
            InProcess shipper = new InProcess(dir).start();
            List<String> out = shipper.poll().lines().toList();
            int quietAt = out.indexOf("quiet");
            assertTrue(quietAt >= 0 && quietAt < 200_000,
                    "the quiet file waited behind " + quietAt + " lines of the busy one");
            assertEquals(2_000_001, out.size());
        }

        @Test
        void changesArriveThroughNotificationNotTheScanInterval() {
            try (Shipped run = Shipped.start(Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", "1h"))) {
                run.awaitReady();
                append(dir.resolve("new.log"), "created\n");
                run.awaitLineCount(1);
                append(dir.resolve("new.log"), "appended\n");
                run.awaitLineCount(2);
                // With an hour between scans, only the watcher could have delivered these.
                assertEquals(List.of("created", "appended"), run.lines());
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Contract: following files (in-process, one poll at a time)
    // ---------------------------------------------------------------------------------------------

    @Nested
    class Following {
        @TempDir
        Path dir;

        @Test
        void appendedLinesAreShippedOnceAndOnlyOnce() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, "1\n2\n");
            InProcess shipper = new InProcess(dir).start();
            assertEquals("1\n2\n", shipper.poll());
            assertEquals("", shipper.poll());
            append(log, "3\n");
            assertEquals("3\n", shipper.poll());
            assertEquals("", shipper.poll());
            assertEquals("1\n2\n3\n", shipper.all());
        }

        @Test
        void aPartialLineIsHeldUntilItsNewlineArrives() throws Exception {
            Path log = dir.resolve("app.log");
            append(log, "whole\nhal");
            InProcess shipper = new InProcess(dir).start();
            assertEquals("whole\n", shipper.poll());
            append(log, "f and");
            assertEquals("", shipper.poll());
            append(log, " done\nnext");
            assertEquals("half and done\n", shipper.poll());
        }

        @Test
        void newFilesAreReadFromTheirStart() throws Exception {
            InProcess shipper = new InProcess(dir, "--start-at", "tail").start();
            assertEquals("", shipper.poll());
            append(dir.resolve("new.log"), "first\nsecond\n");
            assertEquals("first\nsecond\n", shipper.poll());
        }

        @Test
        void startAtTailSkipsWhatExistedAtStartup() throws Exception {
            Path log = dir.resolve("old.log");
            append(log, "old 1\nold 2\nunfinished ");
            InProcess shipper = new InProcess(dir, "--start-at", "tail").start();
            assertEquals("", shipper.poll());
            append(log, "line\nnew\n");
            assertEquals("unfinished line\nnew\n", shipper.poll());
        }

        @Test
        void filesNotMatchingThePatternAreIgnored() throws Exception {
            append(dir.resolve("app.log.1"), "rotated\n");
            append(dir.resolve("notes.txt"), "notes\n");
            append(dir.resolve("app.log"), "yes\n");
            InProcess shipper = new InProcess(dir).start();
            assertEquals("yes\n", shipper.poll());
        }

        @Test
        void repeatedScansNeverShipALineTwice() throws Exception {
            for (int f = 0; f < 5; f++) append(dir.resolve("f" + f + ".log"), numbered("f" + f + "-", 0, 50));
            InProcess shipper = new InProcess(dir).start();
            shipper.poll();
            for (int i = 0; i < 10; i++) assertEquals("", shipper.poll());
            assertEquals(250, shipper.all().lines().count());
        }

        @Test
        void bytesPassThroughUntouched() throws Exception {
            byte[] raw = {'a', '\r', 0, (byte) 0xff, (byte) 0xfe, 'z', '\t', '\n', (byte) 0xc3, (byte) 0x28, '\n'};
            append(dir.resolve("bin.log"), raw);
            InProcess shipper = new InProcess(dir).start();
            shipper.poll();
            assertTrue(Arrays.equals(raw, shipper.stdout.toByteArray()));
        }
    }
}
