///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * Append-to-stdout latency and idle CPU of LogShip, run as a separate process from its fat jar.
 *
 *   ./jbang export fatjar --force -O /tmp/logship.jar LogShip.java
 *   ./jbang bench/Latency.java /tmp/logship.jar [idleFiles]
 *
 * It appends 300 timestamped lines 20 ms apart to one of {@code idleFiles} files (default 300),
 * with LOG_SCAN_INTERVAL at its default (10 s), and reports the latency percentiles; then it
 * leaves every file idle for 30 s and reports the CPU time LogShip used meanwhile.
 */
public class Latency {
    public static void main(String[] args) throws Exception {
        Path jar = Path.of(args[0]);
        int idleFiles = args.length > 1 ? Integer.parseInt(args[1]) : 300;
        Path dir = Files.createTempDirectory("logship-latency");
        for (int i = 0; i < idleFiles; i++) Files.writeString(dir.resolve("idle" + i + ".log"), "old line\n");
        Path live = dir.resolve("idle0.log");

        ProcessBuilder builder = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-XX:+UseSerialGC", "-Xmx32m", "-jar", jar.toString(), "-d", dir.toString(), "-q");
        builder.redirectError(ProcessBuilder.Redirect.INHERIT);
        Process shipper = builder.start();
        BufferedReader out = new BufferedReader(new InputStreamReader(shipper.getInputStream(), StandardCharsets.UTF_8));
        for (int i = 0; i < idleFiles; i++) out.readLine(); // the startup scan ships the old lines

        List<Double> millis = new ArrayList<>();
        for (int i = 0; i < 300; i++) {
            Files.writeString(live, "t " + System.nanoTime() + "\n", StandardOpenOption.APPEND);
            String line = out.readLine();
            long now = System.nanoTime();
            millis.add((now - Long.parseLong(line.substring(2))) / 1e6);
            Thread.sleep(20);
        }
        Collections.sort(millis);
        System.out.printf("append -> stdout latency over %d lines, %d files watched: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms%n",
                millis.size(), idleFiles, millis.get(150), millis.get(270), millis.get(297), millis.get(299));

        long before = cpuTicks(shipper.pid());
        Thread.sleep(30_000);
        long after = cpuTicks(shipper.pid());
        double seconds = (after - before) / 100.0; // USER_HZ
        System.out.printf("idle for 30 s with %d files: %.2f s of CPU (%.2f%% of one core)%n", idleFiles, seconds,
                seconds / 30 * 100);
        shipper.destroy();
        shipper.waitFor();
        try (var files = Files.list(dir)) {
            for (Path p : files.toList()) Files.delete(p);
        }
        Files.delete(dir);
    }

    /** utime + stime of a process and its threads, in clock ticks, from /proc. */
    static long cpuTicks(long pid) throws Exception {
        String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(f[11]) + Long.parseLong(f[12]);
    }
}
