///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+

// The workshop's checker: runs your sidecar as a real process (environment variables, a temporary
// log directory, SIGTERM) against one step's contract, and prints PASS or FAIL per check with a hint.
//
//   ./jbang workshop/Check.java 3                            checks workshop/Sidecar.java
//   ./jbang workshop/Check.java 4 workshop/solutions/Step4.java
//
// Exit code 0 only if every check passed. Step 6 (the image and the manifest) is checked by
// workshop/CheckDeploy.java. The test suite calls compile() and run() in-process (LogShipTest > Workshop).

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.jar.JarFile;
import java.util.stream.Stream;

public class Check {

    /** How long to wait for something that should happen. Generous: a passing check never waits this long. */
    static final Duration PATIENCE = Duration.ofSeconds(30);

    static final Map<Integer, String> STEPS = Map.of(
            1, "set-up: the script compiles and runs",
            2, "configuration from LOG_DIRECTORY, LOG_FILE_PATTERN, LOG_SCAN_INTERVAL",
            3, "a ticker that scans the directory and prints matching files",
            4, "each line once: a byte offset per file, whole lines only",
            5, "a graceful stop: drain what is left on SIGTERM, within a bound");

    /** One check's outcome; {@code hint} says what to change when it failed. */
    public record Result(String check, boolean passed, String hint) {
        static Result pass(String check) { return new Result(check, true, ""); }

        static Result fail(String check, String hint) { return new Result(check, false, hint); }

        static Result of(String check, boolean passed, String hint) { return new Result(check, passed, passed ? "" : hint); }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || args.length > 2 || !args[0].matches("[1-6]")) {
            System.err.println("usage: ./jbang workshop/Check.java STEP [SCRIPT]   (STEP 1-5; SCRIPT defaults to workshop/Sidecar.java)");
            System.exit(2);
        }
        int step = Integer.parseInt(args[0]);
        if (step == 6) {
            System.err.println("Step 6 (Dockerfile and manifest) is checked offline by: ./jbang workshop/CheckDeploy.java");
            System.exit(2);
        }
        Path script = Path.of(args.length > 1 ? args[1] : "workshop/Sidecar.java");
        System.out.println("Step " + step + ": " + STEPS.get(step) + "  (" + script + ")");
        List<Result> results = run(step, script);
        for (Result r : results) {
            System.out.println((r.passed() ? "PASS  " : "FAIL  ") + r.check());
            if (!r.passed()) System.out.println("      " + r.hint().replace("\n", "\n      "));
        }
        long passed = results.stream().filter(Result::passed).count();
        System.out.println(passed + " of " + results.size() + " checks passed"
                + (passed == results.size() ? ": step " + step + " done." : "."));
        System.exit(passed == results.size() ? 0 : 1);
    }

    /** Compiles {@code script} and checks it against {@code step}. */
    public static List<Result> run(int step, Path script) throws Exception {
        Program program;
        try {
            program = compile(script);
        } catch (CompileError e) {
            return List.of(Result.fail("the script compiles", e.getMessage()));
        }
        List<Result> results = new ArrayList<>();
        if (step == 1) results.add(Result.pass("the script compiles"));
        results.addAll(run(step, program));
        return results;
    }

    /** Checks an already compiled program: compile once, check many steps. */
    public static List<Result> run(int step, Program program) throws Exception {
        return switch (step) {
            case 1 -> step1(program);
            case 2 -> step2(program);
            case 3 -> step3(program);
            case 4 -> step4(program);
            case 5 -> step5(program);
            default -> throw new IllegalArgumentException("no step " + step);
        };
    }

    // ---------------------------------------------------------------------------------------------
    // The steps' contracts. Each scenario runs in its own process and temp directory, in parallel.
    // ---------------------------------------------------------------------------------------------

    static List<Result> step1(Program p) throws Exception {
        try (Run run = p.start(Map.of(), null, "--help")) {
            boolean exited = run.awaitExit();
            return List.of(Result.of("`--help` prints picocli's usage and exits with 0",
                    exited && run.exitCode() == 0 && run.all().contains("Usage"),
                    "expected `Usage: ...` and exit code 0, got " + run.describe()
                            + "\nKeep mixinStandardHelpOptions = true and main() as the starter has it."));
        }
    }

    static List<Result> step2(Program p) throws Exception {
        return parallel(List.of(() -> {
            try (Scratch s = new Scratch(); Run run = p.start(Map.of(
                    "LOG_DIRECTORY", s.dir.resolve("new/logs").toString(),
                    "LOG_FILE_PATTERN", ".+\\.txt", "LOG_SCAN_INTERVAL", "2"), s.dir)) {
                Path dir = s.dir.resolve("new/logs");
                String line = run.awaitLineContaining(dir.toString());
                Run.await(() -> Files.isDirectory(dir) || !run.alive());
                List<Result> r = new ArrayList<>();
                r.add(Result.of("creates LOG_DIRECTORY (and its parents) when it is missing", Files.isDirectory(dir),
                        dir + " was not created. Use Files.createDirectories(directory) in call()."));
                if (line == null) {
                    r.add(Result.fail("prints its configuration", "no line of output names the directory " + dir
                            + ";\nprint `watching <directory> for <pattern> every <interval>` to System.err. Output was: "
                            + run.describe()));
                    return r;
                }
                r.add(Result.of("reads LOG_FILE_PATTERN", line.contains(".+\\.txt"),
                        "LOG_FILE_PATTERN was `.+\\.txt` but your configuration line says: " + line
                                + "\nAdd a Pattern option with defaultValue = \"${env:LOG_FILE_PATTERN:-.+\\\\.log}\"."));
                r.add(Result.of("reads LOG_SCAN_INTERVAL \"2\" as 2 seconds", line.contains("PT2S"),
                        "LOG_SCAN_INTERVAL was `2` (seconds), so the line should say PT2S (how a Duration prints), but it says: "
                                + line));
                return r;
            }
        }, () -> {
            try (Scratch s = new Scratch(); Run run = p.start(Map.of("LOG_DIRECTORY", s.dir.toString(),
                    "LOG_SCAN_INTERVAL", "500ms"), s.dir)) {
                String line = run.awaitLineContaining(s.dir.toString());
                String got = line == null ? "no configuration line; output: " + run.describe() : "the line says: " + line;
                return List.of(
                        Result.of("LOG_FILE_PATTERN defaults to .+\\.log", line != null && line.contains(".+\\.log"),
                                "without LOG_FILE_PATTERN the pattern must be .+\\.log; " + got),
                        Result.of("reads LOG_SCAN_INTERVAL \"500ms\"", line != null && line.contains("PT0.5S"),
                                "LOG_SCAN_INTERVAL was `500ms`, so the line should say PT0.5S; " + got
                                        + "\nWrite an ITypeConverter<Duration> that understands 10, 10s, 500ms, 2m, 1h."));
            }
        }, () -> List.of(refused(p, "LOG_DIRECTORY", null, "Put required = true on the directory option"),
                refused(p, "LOG_FILE_PATTERN", "(unclosed", "Make the pattern option a java.util.regex.Pattern (picocli compiles it)"),
                refused(p, "LOG_SCAN_INTERVAL", "soon", "Throw TypeConversionException from your Duration converter"))));
    }

    /** A setting that is missing or wrong must stop the program with an error, not a stack trace. */
    static Result refused(Program p, String variable, String value, String how) throws Exception {
        try (Scratch s = new Scratch()) {
            Map<String, String> env = new HashMap<>(Map.of("LOG_DIRECTORY", s.dir.toString()));
            if (value == null) env.remove(variable);
            else env.put(variable, value);
            try (Run run = p.start(env, s.dir)) {
                String what = value == null ? "a missing " + variable : variable + "=" + value;
                String check = what + " stops the program with an error (exit code not 0, no stack trace)";
                if (!run.awaitExit()) return Result.fail(check, "it was still running after " + PATIENCE.toSeconds()
                        + " s. " + how + ".");
                boolean trace = run.all().contains("\tat ") || run.all().contains("Exception in thread");
                return Result.of(check, run.exitCode() != 0 && !trace,
                        "got " + run.describe() + "\n" + how + ": picocli then prints one line and the usage, and exits with 2.");
            }
        }
    }

    static List<Result> step3(Program p) throws Exception {
        return parallel(List.of(() -> {
            try (Scratch s = new Scratch()) {
                s.write("a.log", "hello from a.log\n");
                try (Run run = p.start(s.env("1h"), s.dir)) {
                    boolean shown = run.awaitLines("hello from a.log", 1);
                    return List.of(Result.of("scans once at startup, before the first interval has passed", shown,
                            "with LOG_SCAN_INTERVAL=1h, a.log was not printed; " + stillOrExited(run)
                                    + (run.alive() ? "\nSchedule the first scan with an initial delay of 0." : "")));
                }
            }
        }, () -> {
            try (Scratch s = new Scratch()) {
                s.write("a.log", "hello from a.log\n");
                s.write("app.log.1", "rotated away\n");
                s.write("notes.txt", "not a log\n");
                Files.createDirectories(s.dir.resolve("old.log"));
                try (Run run = p.start(s.env("200ms"), s.dir)) {
                    List<Result> r = new ArrayList<>();
                    if (!run.awaitLines("hello from a.log", 1)) {
                        r.add(Result.fail("prints the contents of matching files", "a.log holds `hello from a.log`, "
                                + "which never appeared on stdout; " + stillOrExited(run)
                                + "\nIn scan(): list the directory, and print each matching regular file to System.out."));
                        return r;
                    }
                    r.add(Result.pass("prints the contents of matching files"));
                    s.write("later.log", "a file created later\n");
                    r.add(Result.of("finds files created after it started (scans every tick)",
                            run.awaitLines("a file created later", 1),
                            "later.log was created while running but never printed; " + stillOrExited(run)
                                    + (!run.alive() && run.exitCode() == 0 ? "" // stillOrExited said why: call() returned
                                    : "\nScan on every tick, and catch IOException inside scan(): an exception that"
                                    + " escapes a scheduled task silently stops the ticker.")));
                    r.add(Result.of("skips files whose WHOLE name does not match .+\\.log (app.log.1, notes.txt)",
                            run.count("rotated away") == 0 && run.count("not a log") == 0,
                            (run.count("rotated away") > 0 ? "app.log.1" : "notes.txt") + " was printed. "
                                    + "Use pattern.matcher(name).matches(), which needs the whole name to match;"
                                    + "\nfind() is Go's MatchString, happy with any part of the name."));
                    r.add(Result.of("skips a directory whose name matches, and keeps running", run.alive(),
                            run.alive() || run.exitCode() == 0 ? stillOrExited(run) // it ended by itself: call() returned
                                    : "it stopped: " + run.describe() + "\nCheck Files.isRegularFile(file) before reading it."));
                    return r;
                }
            }
        }));
    }

    static List<Result> step4(Program p) throws Exception {
        try (Scratch s = new Scratch()) {
            s.write("a.log", "hello\n");
            try (Run run = p.start(s.env("200ms"), s.dir)) {
                List<Result> r = new ArrayList<>();
                if (!run.awaitLines("hello", 1)) {
                    if (run.stdout().contains("hello")) // printed, but never as a whole line: the offset stopped short
                        return List.of(Result.fail("prints the lines of a.log, each with its newline", "`hello` was printed"
                                + " without its newline, and then nothing more: stdout is " + quoted(run.stdout()) + "."
                                + "\nCount the newline in: int end = lastNewline + 1 is the number of bytes to print."
                                + "\nSystem.out.write(bytes, 0, end), then offsets.put(file, offset + end). With end = lastNewline"
                                + "\nthe offset stays before the '\\n', so every later read starts at that '\\n' and gets no further."));
                    return List.of(Result.fail("prints the lines of a.log", "`hello` never appeared on stdout; "
                            + stillOrExited(run) + "\nFinish step 3 first."));
                }
                s.append("a.log", "world\n");
                boolean appended = run.awaitLines("world", 1);
                s.append("a.log", "again\n");
                appended &= run.awaitLines("again", 1);
                r.add(Result.of("prints lines appended to a file", appended,
                        "lines appended to a.log did not appear; " + stillOrExited(run)));
                r.add(Result.of("prints each line once, however many ticks pass",
                        run.count("hello") == 1 && run.count("world") == 1,
                        "`hello` was printed " + run.count("hello") + " times and `world` " + run.count("world")
                                + " times; a line must be printed once.\nKeep a byte offset per file (a Map<Path, Long>) and"
                                + " read only from there on."));
                // A line without its newline is still being written. Two ticks must pass with it in
                // a.log: "tick 2" in b.log is read by a tick that started after "tick 1" was printed.
                s.append("a.log", "par");
                s.append("b.log", "tick 1\n");
                boolean ticked = run.awaitLines("tick 1", 1);
                s.append("b.log", "tick 2\n");
                ticked &= run.awaitLines("tick 2", 1);
                boolean torn = run.stdout().contains("par");
                s.append("a.log", "tial\n");
                boolean completed = run.awaitLines("partial", 1);
                r.add(Result.of("holds back a line until its newline arrives, then prints it whole",
                        ticked && !torn && completed && run.count("partial") == 1 && run.count("tial") == 0,
                        !ticked ? "lines of a new file b.log did not appear; " + stillOrExited(run)
                                : torn ? "`par` was printed before its line was complete: print up to the last '\\n' only,"
                                        + " and move the offset just past it."
                                : "after `tial\\n` completed the line, `partial` was printed " + run.count("partial")
                                        + " times (and `tial` alone " + run.count("tial") + " times); expected once, whole."));
                r.add(Result.of("prints the lines of a file created later once", run.count("tick 1") == 1,
                        "`tick 1` (in b.log, created while running) was printed " + run.count("tick 1") + " times."));
                return r;
            }
        }
    }

    static List<Result> step5(Program p) throws Exception {
        return parallel(List.of(() -> {
            try (Scratch s = new Scratch()) {
                s.write("a.log", "first\n");
                try (Run run = p.start(s.env("1h"), s.dir)) {
                    if (!run.awaitLines("first", 1)) return List.of(Result.fail("drains on SIGTERM",
                            "`first` was never printed at startup; " + stillOrExited(run) + "\nFinish steps 3 and 4 first."));
                    // The next tick is an hour away: only a drain can ship these.
                    s.append("a.log", "last words\n");
                    s.write("late.log", "a late file\n");
                    run.signal("TERM");
                    boolean exited = run.awaitExit();
                    return List.of(
                            Result.of("stops on SIGTERM", exited, "it was still running " + PATIENCE.toSeconds()
                                    + " s after SIGTERM. A shutdown hook that waits forever keeps the JVM alive."),
                            Result.of("ships what the files gained since the last tick before it stops (the bonus)",
                                    run.count("last words") == 1 && run.count("a late file") == 1 && run.count("first") == 1,
                                    "after SIGTERM `last words` was printed " + run.count("last words") + " times and `a late file` "
                                            + run.count("a late file") + " times (expected once each).\nAdd a shutdown hook"
                                            + " (Runtime.getRuntime().addShutdownHook) that runs one last scan."));
                }
            }
        }, () -> {
            try (Scratch s = new Scratch()) {
                s.write("a.log", "first\n");
                Map<String, String> env = new HashMap<>(s.env("1h"));
                env.put("LOG_DRAIN_TIMEOUT", "1s");
                try (Run run = p.start(env, s.dir)) {
                    String check = "the drain is bounded by LOG_DRAIN_TIMEOUT, even when nobody reads stdout";
                    if (!run.awaitLines("first", 1)) return List.of(Result.fail(check, "`first` was never printed at startup; "
                            + stillOrExited(run)));
                    run.pauseStdout(); // like a log agent that has stalled: writes to stdout block once the pipe is full
                    s.append("a.log", "x".repeat(99) + "\n", 20_000); // ~2 MB, far more than a pipe holds
                    run.signal("TERM");
                    boolean exited = run.awaitExit();
                    return List.of(Result.of(check, exited, "with LOG_DRAIN_TIMEOUT=1s and stdout not being read, it was"
                            + " still running " + PATIENCE.toSeconds() + " s after SIGTERM.\nWait for the drain with a"
                            + " timeout (awaitTermination(timeout) or join(millis)) and then let the hook return."));
                }
            }
        }));
    }

    /** Output as a Java string literal would show it, so a missing or extra '\n' is visible. */
    static String quoted(String text) {
        if (text.length() > 200) text = text.substring(0, 200) + "...";
        return "\"" + text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r") + "\"";
    }

    static String stillOrExited(Run run) {
        if (run.alive()) {
            List<String> err = run.stderr().lines().toList();
            return "it is still running" + (err.size() <= 1 ? "." : ", and its stderr ends with:\n  "
                    + String.join("\n  ", err.subList(Math.max(1, err.size() - 3), err.size())));
        }
        return "it exited: " + run.describe() + (run.exitCode() == 0
                ? "\nA sidecar keeps running: call() must not return (wait on the ticker, e.g. awaitTermination)." : "");
    }

    static List<Result> parallel(List<Callable<List<Result>>> scenarios) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(scenarios.size());
        try {
            List<Future<List<Result>>> futures = new ArrayList<>();
            for (Callable<List<Result>> c : scenarios) futures.add(pool.submit(c));
            List<Result> all = new ArrayList<>();
            for (Future<List<Result>> f : futures) all.addAll(f.get());
            return all;
        } finally {
            pool.shutdownNow();
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Compiling once with the repo's ./jbang, running as a plain java process.
    // ---------------------------------------------------------------------------------------------

    public static final class CompileError extends Exception {
        CompileError(String message) { super(message); }
    }

    /** A compiled script: the java command that runs it without JBang in between (signals reach it directly). */
    public record Program(Path script, List<String> command) {
        Run start(Map<String, String> env, Path workDir, String... args) throws IOException {
            List<String> cmd = new ArrayList<>(command);
            cmd.addAll(List.of(args));
            ProcessBuilder b = new ProcessBuilder(cmd);
            b.environment().keySet().removeIf(k -> k.startsWith("LOG_")); // the learner's shell may export some
            b.environment().putAll(env);
            if (workDir != null) b.directory(workDir.toFile());
            return new Run(b.redirectInput(ProcessBuilder.Redirect.PIPE).start());
        }
    }

    /** Builds {@code script} with JBang (once; JBang caches the jar) and returns how to run it. */
    public static Program compile(Path script) throws IOException, InterruptedException, CompileError {
        Path abs = script.toAbsolutePath().normalize();
        if (!Files.isRegularFile(abs)) throw new CompileError("there is no file " + abs);
        String jbang = launcher(abs);
        Output build = exec(List.of(jbang, "build", abs.toString()));
        if (build.code != 0) throw new CompileError("`./jbang build " + script + "` failed:\n" + build.text.strip());
        Output cp = exec(List.of(jbang, "info", "classpath", abs.toString()));
        String classPath = cp.text.lines().filter(l -> l.endsWith(".jar") || l.contains(".jar:")).reduce((a, b) -> b)
                .orElseThrow(() -> new CompileError("`jbang info classpath` said: " + cp.text));
        String mainClass;
        try (JarFile jar = new JarFile(classPath.split(java.io.File.pathSeparator)[0])) {
            mainClass = jar.getManifest().getMainAttributes().getValue("Main-Class");
        }
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        return new Program(abs, List.of(java, "-cp", classPath, mainClass));
    }

    /**
     * The JBang that builds {@code script}: a repo's ./jbang next to (or above) it; else the one that
     * launched this checker (the repo's ./jbang exports itself as JBANG_LAUNCH_CMD), so a script kept
     * outside the repository still builds; else a jbang on the PATH.
     */
    static String launcher(Path script) throws CompileError {
        List<Path> candidates = new ArrayList<>();
        for (Path dir = script.getParent(); dir != null; dir = dir.getParent()) candidates.add(dir.resolve("jbang"));
        String launchedBy = System.getenv("JBANG_LAUNCH_CMD");
        if (launchedBy != null && !launchedBy.isBlank()) candidates.add(Path.of(launchedBy));
        for (String dir : System.getenv().getOrDefault("PATH", "").split(java.io.File.pathSeparator))
            if (!dir.isEmpty()) candidates.add(Path.of(dir, "jbang"));
        return candidates.stream().filter(c -> Files.isRegularFile(c) && Files.isExecutable(c)).findFirst()
                .map(Path::toString)
                .orElseThrow(() -> new CompileError("found no JBang to build " + script + " with: run the checker"
                        + " from the repository root as `./jbang workshop/Check.java STEP SCRIPT`."));
    }

    record Output(int code, String text) {}

    static Output exec(List<String> command) throws IOException, InterruptedException, CompileError {
        Process p;
        try {
            p = new ProcessBuilder(command).redirectErrorStream(true).start();
        } catch (IOException e) {
            throw new CompileError("could not run " + command.get(0) + ": " + e.getMessage());
        }
        p.getOutputStream().close();
        String text = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        return new Output(p.waitFor(), text);
    }

    /** One run of the learner's program: its output as it arrives, signals, and the exit code. */
    static final class Run implements AutoCloseable {
        final Process process;
        private final ByteArrayOutputStream out = new ByteArrayOutputStream();
        private final ByteArrayOutputStream err = new ByteArrayOutputStream();
        private final List<Thread> pumps = new ArrayList<>();
        private volatile boolean paused;

        Run(Process process) throws IOException {
            this.process = process;
            process.getOutputStream().close();
            pumps.add(pump(process.getInputStream(), out, true));
            pumps.add(pump(process.getErrorStream(), err, false));
        }

        private Thread pump(InputStream from, ByteArrayOutputStream to, boolean pausable) {
            Thread t = new Thread(() -> {
                byte[] buffer = new byte[8192];
                try {
                    for (int n; (n = from.read(buffer)) > 0; ) {
                        synchronized (to) {
                            to.write(buffer, 0, n);
                        }
                        while (pausable && paused) Thread.sleep(10);
                    }
                } catch (IOException | InterruptedException e) {
                    // the process ended
                }
            });
            t.setDaemon(true);
            t.start();
            return t;
        }

        void pauseStdout() { paused = true; }

        String stdout() {
            synchronized (out) {
                return out.toString(StandardCharsets.UTF_8);
            }
        }

        String stderr() {
            synchronized (err) {
                return err.toString(StandardCharsets.UTF_8);
            }
        }

        String all() { return stdout() + stderr(); }

        /** How many complete lines of stdout are exactly {@code line}. */
        int count(String line) {
            String text = stdout();
            int end = text.lastIndexOf('\n');
            return end < 0 ? 0 : (int) text.substring(0, end).lines().filter(line::equals).count();
        }

        boolean alive() { return process.isAlive(); }

        /** Waits until stdout has {@code n} lines equal to {@code line}; false if it exits or time runs out first. */
        boolean awaitLines(String line, int n) {
            return await(() -> count(line) >= n || !alive()) && count(line) >= n;
        }

        /** The first output line (stdout or stderr) containing {@code text}, or null. */
        String awaitLineContaining(String text) {
            await(() -> all().contains(text) || !alive());
            awaitPumps(); // if it exited, everything it wrote
            return all().lines().filter(l -> l.contains(text)).findFirst().orElse(null);
        }

        boolean awaitExit() {
            try {
                if (!process.waitFor(PATIENCE.toMillis(), TimeUnit.MILLISECONDS)) return false;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
            awaitPumps();
            return true;
        }

        private void awaitPumps() {
            if (alive()) return;
            paused = false; // it has exited: reading on can no longer unblock it
            for (Thread t : pumps) {
                try {
                    t.join(PATIENCE.toMillis());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }

        int exitCode() { return process.exitValue(); }

        /** Like `kill -TERM pid`. (Process.destroy() would also close our end of its pipes.) */
        void signal(String name) throws IOException, InterruptedException {
            new ProcessBuilder("kill", "-" + name, Long.toString(process.pid())).inheritIO().start().waitFor();
        }

        String describe() {
            String output = all().strip();
            if (output.length() > 600) output = output.substring(0, 300) + "\n...\n" + output.substring(output.length() - 300);
            return (alive() ? "still running" : "exit code " + exitCode()) + (output.isEmpty() ? ", no output"
                    : ", output:\n  " + output.replace("\n", "\n  "));
        }

        static boolean await(BooleanSupplier condition) {
            long deadline = System.nanoTime() + PATIENCE.toNanos();
            while (!condition.getAsBoolean()) {
                if (System.nanoTime() - deadline > 0) return false;
                try {
                    Thread.sleep(20);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
            return true;
        }

        @Override
        public void close() {
            process.destroyForcibly();
            try {
                process.waitFor(PATIENCE.toMillis(), TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** A temporary log directory, deleted afterwards. */
    static final class Scratch implements AutoCloseable {
        final Path dir;

        Scratch() throws IOException { dir = Files.createTempDirectory("workshop-check"); }

        Map<String, String> env(String interval) {
            return Map.of("LOG_DIRECTORY", dir.toString(), "LOG_SCAN_INTERVAL", interval);
        }

        void write(String name, String text) throws IOException {
            Files.writeString(dir.resolve(name), text);
        }

        void append(String name, String text) throws IOException {
            append(name, text, 1);
        }

        void append(String name, String line, int times) throws IOException {
            Files.writeString(dir.resolve(name), line.repeat(times), StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        }

        @Override
        public void close() throws IOException {
            try (Stream<Path> walk = Files.walk(dir)) {
                for (Path p : walk.sorted(Comparator.reverseOrder()).toList()) Files.deleteIfExists(p);
            }
        }
    }
}
