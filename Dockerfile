# LogShip sidecar image:  docker build -t logship:0.1.0 .
#
# Temurin 25.0.3+9 in both stages: a maintained, TCK-tested OpenJDK build (the
# old openjdk:*-jre-slim images are deprecated), an LTS release, and the same
# JVM build the repo's image-contract test replays the ENTRYPOINT with. Ubuntu
# Noble (glibc) rather than Alpine (musl) for the same reason: it is the libc
# that replay runs on. Pinned by full version tag; bump both stages together.

# --- Stage 1: just the dependency header of LogShip.java --------------------
# COPY --from below compares file contents, so editing the body of
# LogShip.java leaves deps-header.txt unchanged and the dependency layer cached.
FROM eclipse-temurin:25.0.3_9-jdk-noble AS header
WORKDIR /src
COPY LogShip.java ./
RUN grep -E '^//(DEPS|REPOS|JAVA)[[:space:]]' LogShip.java > deps-header.txt || true

# --- Stage 2: build the fat jar with the repo's pinned JBang ----------------
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
RUN ./jbang export fatjar --force -O /out/logship.jar LogShip.java

# --- Stage 3: runtime -------------------------------------------------------
FROM eclipse-temurin:25.0.3_9-jre-noble
LABEL org.opencontainers.image.title="logship" \
      org.opencontainers.image.description="Ships every line of matching log files to stdout" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /out/logship.jar /app/logship.jar
# Numeric, so the kubelet can check runAsNonRoot without an /etc/passwd entry.
USER 10001:10001
# A UTF-8 locale of our own, whatever the base sets: under a C/POSIX locale the JVM cannot name
# non-ASCII files at all (and ignores -Dsun.jnu.encoding).
ENV LOG_DIRECTORY=/var/log/app \
    LOG_FILE_PATTERN='.+\.log' \
    LOG_SCAN_INTERVAL=10s \
    LANG=C.UTF-8
# Exec form: the JVM is PID 1 and gets SIGTERM itself, then drains and exits 0.
# The JVM flags live here because //JAVA_OPTIONS do not survive `export fatjar`.
# Chosen by measurement on this JVM build (README, "Memory"): shipping 1 GiB at
# full speed peaks at ~53 MiB RSS, of which ~22 MiB is clean, file-backed
# libjvm/CDS pages, against the pod's 64 MiB limit.
#  - SerialGC and a small heap: one GC thread, no per-region overhead; LogShip
#    keeps one 64 KiB chunk and one line (LOG_MAX_LINE_BYTES) on the heap.
#  - Caps on stacks, metaspace, code cache and direct buffers bound the rest.
#  - C1 only (TieredStopAtLevel=1): ~6 MiB less RSS than C2 for ~30% less
#    throughput, still several hundred MiB/s.
#  - No hsperfdata file (the root filesystem is read-only in the pod); exit on
#    OOM so the kubelet restarts the sidecar, which resumes from its positions;
#    CDS on (-Xshare:auto): ~50 ms faster start for ~3 MiB of shared pages.
ENTRYPOINT ["java", \
    "-XX:+UseSerialGC", "-Xms8m", "-Xmx32m", \
    "-Xss256k", "-XX:MaxMetaspaceSize=32m", "-XX:ReservedCodeCacheSize=16m", "-XX:MaxDirectMemorySize=8m", \
    "-XX:TieredStopAtLevel=1", \
    "-XX:-UsePerfData", "-XX:+ExitOnOutOfMemoryError", "-Xshare:auto", \
    "-jar", "/app/logship.jar"]
