#!/usr/bin/env bash
# Peak RSS and throughput of the exported fat jar, run with the Dockerfile's own JVM flags,
# shipping SIZE_MIB of nginx-style lines at full speed to a pipe.
#   bench/memory.sh [SIZE_MIB]     (default 1024; needs /usr/bin/time: apt-get install time)
# The image's JVM is Temurin 25; set JAVA_HOME to a Temurin 25 JDK to measure like-for-like.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
java=${JAVA_HOME:+$JAVA_HOME/bin/}java

./jbang export fatjar --force -O "$work/logship.jar" LogShip.java >/dev/null 2>&1
# The image's JVM flags (its ENTRYPOINT, minus java, the jar and the AOT cache).
flags=$(bench/image-flags.sh)
echo "flags: $(echo $flags)"

mkdir "$work/logs"
line='10.0.0.1 - - [25/Nov/2026:14:37:26 +0000] "GET /some/path?q=1 HTTP/1.1" 200 612 "-" "curl/8.5.0"'
yes "$line" | head -c "$((size_mib * 1024 * 1024))" >"$work/logs/access.log" || true  # yes dies of SIGPIPE

start=$(date +%s.%N)
# shellcheck disable=SC2086
/usr/bin/time -v "$java" $flags -jar "$work/logship.jar" -d "$work/logs" --once -q \
  2>"$work/time.txt" | cat >/dev/null
end=$(date +%s.%N)
rss_kib=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$work/time.txt")
echo "shipped ${size_mib} MiB in $(echo "$end - $start" | bc) s: $(echo "scale=0; $size_mib / ($end - $start)" | bc) MiB/s"
echo "peak RSS: $((rss_kib / 1024)) MiB"
