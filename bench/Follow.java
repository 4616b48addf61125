///usr/bin/env jbang "$0" "$@" ; exit $?
//JAVA 17+

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Following a fast writer: does LogShip keep up with an application appending at RATE MB/s, and at
 * what CPU cost? LogShip runs as a separate process from its fat jar, following a directory in
 * which one file grows by whole nginx-style lines every 10 ms; this program reads LogShip's stdout,
 * samples the lag (bytes written to the file minus bytes that came out of stdout) and LogShip's CPU
 * time every second, then stops writing and waits for the lag to reach 0.
 *
 *   ./jbang export fatjar --force -O /tmp/logship.jar LogShip.java
 *   ./jbang bench/Follow.java /tmp/logship.jar [RATE_MB_S=50] [SECONDS=30] [JVM flags for LogShip...]
 *
 * "Kept up with" means the lag stays bounded (it does not grow with time) and is drained within a
 * second or so of the writer stopping; "at under one core" means LogShip's CPU time over the
 * writing window divided by that window is below 100 %.
 */
public class Follow {
    public static void main(String[] args) throws Exception {
        Path jar = Path.of(args[0]);
        double rateMBs = args.length > 1 ? Double.parseDouble(args[1]) : 50;
        int seconds = args.length > 2 ? Integer.parseInt(args[2]) : 30;
        List<String> jvmFlags = args.length > 3 ? List.of(args).subList(3, args.length) : List.of();

        Path dir = Files.createTempDirectory("logship-follow");
        Path log = dir.resolve("access.log");
        String first = "first line\n";
        Files.writeString(log, first);

        List<String> command = new ArrayList<>();
        command.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        command.addAll(jvmFlags);
        command.addAll(List.of("-jar", jar.toString(), "-d", dir.toString(), "-q"));
        Process shipper = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        AtomicLong received = new AtomicLong();
        Thread reader = new Thread(() -> count(shipper.getInputStream(), received), "stdout-reader");
        reader.setDaemon(true);
        reader.start();
        long written = first.length();
        await(() -> received.get() >= first.length(), 60_000, "LogShip never shipped the first line");

        // 10 ms worth of whole lines, written as one append: an nginx under load writes like this.
        ByteBuffer block = linesOf((int) (rateMBs * 1_000_000 / 100));
        System.out.printf("writing %.0f MB/s (%d bytes every 10 ms) for %d s; LogShip flags: %s%n",
                rateMBs, block.capacity(), seconds, jvmFlags.isEmpty() ? "JVM defaults" : String.join(" ", jvmFlags));
        long maxLag = 0;
        long startNanos = System.nanoTime();
        long startTicks = cpuTicks(shipper.pid());
        try (FileChannel out = FileChannel.open(log, StandardOpenOption.APPEND)) {
            long tick = 0;
            for (long next = startNanos; next - startNanos < seconds * 1_000_000_000L; next += 10_000_000L) {
                long wait = next - System.nanoTime();
                if (wait > 0) Thread.sleep(wait / 1_000_000, (int) (wait % 1_000_000));
                out.write(block.rewind());
                written += block.capacity();
                long lag = written - received.get();
                maxLag = Math.max(maxLag, lag);
                if (++tick % 100 == 0) {
                    System.out.printf("  %3d s: lag %,d bytes, LogShip CPU so far %.0f %% of a core%n", tick / 100,
                            lag, 100.0 * (cpuTicks(shipper.pid()) - startTicks) / 100 / ((System.nanoTime() - startNanos) / 1e9));
                }
            }
        }
        long writingNanos = System.nanoTime() - startNanos;
        long writingTicks = cpuTicks(shipper.pid()) - startTicks;
        long stopNanos = System.nanoTime();
        long total = written;
        await(() -> received.get() >= total, 120_000, "LogShip did not catch up within 2 minutes");
        long drainMillis = (System.nanoTime() - stopNanos) / 1_000_000;

        double writtenMB = (total - first.length()) / 1e6;
        System.out.printf("wrote %.0f MB in %.1f s (%.1f MB/s); max lag %,d bytes (%.2f s of writing); drained %d ms after the writer stopped%n",
                writtenMB, writingNanos / 1e9, writtenMB / (writingNanos / 1e9), maxLag, maxLag / (rateMBs * 1e6), drainMillis);
        System.out.printf("LogShip CPU while writing: %.2f s over %.1f s = %.0f %% of one core%n",
                writingTicks / 100.0, writingNanos / 1e9, 100.0 * writingTicks / 100 / (writingNanos / 1e9));
        shipper.destroy();
        shipper.waitFor();
        Files.delete(log);
        Files.delete(dir);
    }

    /** Whole nginx-style lines, about {@code bytes} of them. */
    static ByteBuffer linesOf(int bytes) {
        StringBuilder lines = new StringBuilder(bytes + 200);
        for (int i = 0; lines.length() < bytes; i++) {
            lines.append("10.0.").append(i % 256).append('.').append(i % 97)
                    .append(" - - [25/Nov/2026:14:37:26 +0000] \"GET /api/v1/items/").append(i)
                    .append(" HTTP/1.1\" 200 612 \"-\" \"Mozilla/5.0 (X11; Linux x86_64; rv:128.0)\"\n");
        }
        return ByteBuffer.wrap(lines.toString().getBytes(StandardCharsets.US_ASCII));
    }

    static void count(InputStream in, AtomicLong received) {
        byte[] buffer = new byte[1 << 20];
        try {
            for (int n; (n = in.read(buffer)) >= 0; ) received.addAndGet(n);
        } catch (IOException e) {
            // LogShip stopped
        }
    }

    static void await(java.util.function.BooleanSupplier condition, long millis, String failure) throws Exception {
        long deadline = System.currentTimeMillis() + millis;
        while (!condition.getAsBoolean()) {
            if (System.currentTimeMillis() > deadline) throw new IllegalStateException(failure);
            Thread.sleep(1);
        }
    }

    /** utime + stime of a process and its threads, in clock ticks, from /proc. */
    static long cpuTicks(long pid) throws Exception {
        String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return Long.parseLong(f[11]) + Long.parseLong(f[12]);
    }
}
