# LogShip sidecar image:  docker build -t logship:0.1.0 .
#
# Built with Temurin 25.0.3+9 (a maintained, TCK-tested OpenJDK build, an LTS
# release, and the JDK the repo's image-contract test replays the build with),
# run on a jlink runtime of just the modules LogShip needs, on distroless: glibc
# and nothing else it uses, no shell, no package manager. Everything the image
# adds lives under /opt/logship.

# The JDK modules LogShip needs: jlink builds exactly these, and the build stops
# when `jdeps` finds the jar needs a different set (see the check below).
# jdk.httpserver serves /metrics and the probes (java.logging comes with the
# Prometheus client); jdk.unsupported also holds sun.misc.Signal, which LogShip
# reaches by reflection, where jdeps cannot see it: keep it listed.
ARG MODULES=java.base,java.logging,jdk.httpserver,jdk.unsupported

# --- Stage 1: just the dependency header of LogShip.java --------------------
# COPY --from below compares file contents, so editing the body of
# LogShip.java leaves deps-header.txt unchanged and the dependency layer cached.
FROM eclipse-temurin:25.0.3_9-jdk-noble AS header
WORKDIR /src
COPY LogShip.java ./
RUN grep -E '^//(DEPS|REPOS|JAVA)[[:space:]]' LogShip.java > deps-header.txt || true

# --- Stage 2: the Java runtime ------------------------------------------------
# Its own stage, before any source: it depends only on the JDK and the module
# list, so its layer stays cached (and identical) across code changes.
#  - zip-6 compression: 44 MB instead of 58 MB on disk; the classes LogShip
#    uses come from the AOT cache below, so start time does not pay for it.
#  - No --generate-cds-archive: the AOT cache is itself the CDS archive the
#    JVM maps, and a default one would add 28 MB (two flavours) never used.
FROM eclipse-temurin:25.0.3_9-jdk-noble AS jre
ARG MODULES
RUN jlink --add-modules "$MODULES" --strip-debug --no-header-files --no-man-pages --compress=zip-6 \
        --output /opt/logship/java

# --- Stage 3: the fat jar with the repo's pinned JBang, and its AOT cache ----
FROM eclipse-temurin:25.0.3_9-jdk-noble AS build
WORKDIR /build
# The launcher downloads and SHA-256-checks JBang itself (one cached layer).
COPY jbang jbang-catalog.json ./
RUN ./jbang version
# Resolve //DEPS before the source arrives: a stub with the same header.
COPY --from=header /src/deps-header.txt ./
RUN { cat deps-header.txt; echo 'class Deps {}'; } > Deps.java \
 && ./jbang info classpath --deps-only Deps.java > /dev/null
COPY LogShip.java ./
RUN ./jbang export fatjar --force -O /opt/logship/app/logship.jar LogShip.java
# A module the code starts using (jdk.httpserver for metrics, say) must reach
# the runtime: without this check the image would build and then fail at run
# time with NoClassDefFoundError.
ARG MODULES
RUN needed=$(jdeps --print-module-deps --ignore-missing-deps --multi-release 25 /opt/logship/app/logship.jar) \
 && if [ "$needed" != "$MODULES" ]; then \
      echo "jdeps: the jar needs $needed but the Dockerfile's MODULES is $MODULES: update MODULES" >&2; exit 1; \
    fi
# The AOT cache (JEP 483/514): one training run records the classes LogShip
# loads and links, and writes a cache the JVM maps at start instead of loading,
# verifying and linking them again. A short follow run like the pod's (JSON,
# metrics on a free port): ship a file, become ready, take a live line, stop on
# SIGTERM (exit 0 or no image).
# The JVM rejects a cache made by another runtime, jar (path, size or mtime) or
# incompatible flags, so this runs the runtime the image ships, the jar at its
# image path, and the ENTRYPOINT's flags word for word (the replay test checks
# they match). COPY --from keeps the jar's mtime; a build that rewrites file
# times (SOURCE_DATE_EPOCH with rewrite-timestamp) makes the cache stale: the
# JVM then says so on stderr and starts without it.
COPY --from=jre /opt/logship/java /opt/logship/java
RUN logs=$(mktemp -d) && err=$(mktemp) \
 && yes '10.0.0.1 - - [25/Nov/2026:14:37:26 +0000] "GET /index.html HTTP/1.1" 200 612 "-" "curl/8.5.0"' \
      | head -n 20000 > "$logs/access.log" \
 && echo '2026/11/25 14:37:26 [notice] 1#1: start worker processes' > "$logs/error.log" \
 && { /opt/logship/java/bin/java \
        -XX:+UseSerialGC -Xms8m -Xmx32m \
        -Xss256k -XX:MaxMetaspaceSize=32m -XX:ReservedCodeCacheSize=16m -XX:MaxDirectMemorySize=8m \
        -XX:TieredStopAtLevel=1 \
        -XX:CompileCommand=quiet -XX:CompileCommand=exclude,jdk.internal.classfile.impl.StackMapGenerator::processBlock \
        -XX:-UsePerfData -XX:+ExitOnOutOfMemoryError \
        -XX:+DisplayVMOutputToStderr -Xlog:disable -Xlog:all=warning:stderr \
        -XX:AOTCacheOutput=/opt/logship/app/logship.aot \
        -jar /opt/logship/app/logship.jar -d "$logs" --format json --http-port 0 > /dev/null 2> "$err" & } \
 && until grep -q 'ready:' "$err"; do kill -0 $! 2>/dev/null || { cat "$err" >&2; exit 1; }; sleep 0.1; done \
 && echo '10.0.0.2 - - [25/Nov/2026:14:37:27 +0000] "GET /live HTTP/1.1" 200 7 "-" "curl/8.5.0"' >> "$logs/access.log" \
 && sleep 1 && kill -TERM $! && wait $! \
 && test -s /opt/logship/app/logship.aot \
 && rm -rf "$logs" "$err"

# --- Stage 4: what runs -------------------------------------------------------
# distroless/base: glibc (all the jlink runtime links against besides itself;
# zlib is bundled in the runtime), CA certificates and tzdata; no shell, no
# package manager. Its publisher gives only moving tags, and no registry can be
# reached from where this file was written, so no digest could be looked up:
# pin one (FROM gcr.io/distroless/base-debian13@sha256:...) when you can.
FROM gcr.io/distroless/base-debian13
LABEL org.opencontainers.image.title="logship" \
      org.opencontainers.image.description="Ships every line of matching log files to stdout" \
      org.opencontainers.image.version="0.1.0"
COPY --from=jre /opt/logship/java /opt/logship/java
COPY --from=build /opt/logship/app /opt/logship/app
# Numeric, so the kubelet can check runAsNonRoot without an /etc/passwd entry;
# the manifest's uid, not distroless's own nonroot (65532).
USER 10001:10001
# A UTF-8 locale of our own, whatever the base sets: under a C/POSIX locale the JVM cannot name
# non-ASCII files at all (and ignores -Dsun.jnu.encoding).
ENV LOG_DIRECTORY=/var/log/app \
    LOG_FILE_PATTERN='.+\.log' \
    LOG_SCAN_INTERVAL=10s \
    LOG_HTTP_PORT=9464 \
    LANG=C.UTF-8
# /metrics, /healthz and /readyz (the manifest's probes and Prometheus scrape it).
EXPOSE 9464
# Exec form: the JVM is PID 1 and gets SIGTERM itself, then drains and exits 0.
# The JVM flags live here because //JAVA_OPTIONS do not survive `export fatjar`;
# the training run above repeats them word for word. Chosen by measurement on
# this JVM build (README, "Memory"):
#  - SerialGC and a small heap: one GC thread, no per-region overhead; LogShip
#    keeps one 64 KiB chunk and one line (LOG_MAX_LINE_BYTES) on the heap.
#  - Caps on stacks, metaspace, code cache and direct buffers bound the rest.
#  - C1 only (TieredStopAtLevel=1): ~6 MiB less RSS than C2 for ~30% less
#    throughput, still several hundred MiB/s.
#  - One JDK method never compiled: C1 compiling the class-file API's
#    StackMapGenerator.processBlock (hot only while lambdas and proxies are
#    generated at start) takes a 6.6 MiB arena that glibc then keeps: ~5 MiB of
#    the peak, for no measurable start time (README, "Memory").
#  - No hsperfdata file (the root filesystem is read-only in the pod); exit on
#    OOM so the kubelet restarts the sidecar, which resumes from its positions.
#  - stdout carries shipped lines only, even when the JVM speaks: VM output
#    (the OOM exit's message included) goes to stderr, and so does unified
#    logging. -Xlog:disable first: without it the default stdout output stays
#    and a stale AOT cache's [warning][aot] lines are shipped as log lines.
#  - The AOT cache made above.
ENTRYPOINT ["/opt/logship/java/bin/java", \
    "-XX:+UseSerialGC", "-Xms8m", "-Xmx32m", \
    "-Xss256k", "-XX:MaxMetaspaceSize=32m", "-XX:ReservedCodeCacheSize=16m", "-XX:MaxDirectMemorySize=8m", \
    "-XX:TieredStopAtLevel=1", \
    "-XX:CompileCommand=quiet", "-XX:CompileCommand=exclude,jdk.internal.classfile.impl.StackMapGenerator::processBlock", \
    "-XX:-UsePerfData", "-XX:+ExitOnOutOfMemoryError", \
    "-XX:+DisplayVMOutputToStderr", "-Xlog:disable", "-Xlog:all=warning:stderr", \
    "-XX:AOTCache=/opt/logship/app/logship.aot", \
    "-jar", "/opt/logship/app/logship.jar"]
