#!/usr/bin/env bash
# Peak RSS with metrics on: the exported fat jar run with the Dockerfile's own JVM flags and
# --http-port, following a directory with one 1 GiB nginx-style log and 300 small ones and shipping
# it at full speed to a pipe, while /metrics (gzip, as Prometheus asks for it), /healthz and /readyz
# are fetched every SCRAPE_EVERY seconds until /metrics says every line was shipped.
#   bench/memory-metrics.sh [SIZE_MIB] [FORMAT]   (defaults 1024 and json; SCRAPE_EVERY defaults to 1)
# Needs curl and python3. The image's JVM is Temurin 25: set JAVA_HOME to one to measure like-for-like.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
format=${2:-json}
every=${SCRAPE_EVERY:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')

./jbang export fatjar --force -O "$work/logship.jar" LogShip.java >/dev/null 2>&1
# The image's JVM flags (its ENTRYPOINT, minus java, the jar and the AOT cache).
flags=$(bench/image-flags.sh)
echo "flags: $(echo $flags)"

mkdir "$work/logs"
line='10.0.0.1 - - [25/Nov/2026:14:37:26 +0000] "GET /some/path?q=1 HTTP/1.1" 200 612 "-" "curl/8.5.0"'
# Whole lines only: a following shipper holds back an unfinished last line.
yes "$line" | head -n "$((size_mib * 1024 * 1024 / (${#line} + 1)))" >"$work/logs/access.log" || true
for i in $(seq 1 300); do echo "$line" >"$work/logs/app-$i.log"; done  # 300 labelled series
expected=$(( $(wc -l <"$work/logs/access.log") + 300 ))

# The text format writes counters as doubles (1.0E7): compare numerically.
shipped() {
  curl -s --compressed "http://127.0.0.1:$port/metrics" | awk '/^logship_lines_shipped_total / {printf "%d", $2}'
}

start=$(date +%s.%N)
# Following (not --once), so the server is up the whole time; once every line is out it gets
# SIGTERM, drains and exits. The peak is the kernel's high-water mark (VmHWM) just before that.
# shellcheck disable=SC2086
"$java" $flags -jar "$work/logship.jar" -d "$work/logs" --format "$format" --http-port "$port" -q \
  > >(cat >/dev/null) &
shipper=$!
until [[ $(shipped) == "$expected" ]]; do
  curl -s -o /dev/null "http://127.0.0.1:$port/healthz" || true
  curl -s -o /dev/null "http://127.0.0.1:$port/readyz" || true
  sleep "$every"
done
end=$(date +%s.%N)
peak=$(awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$shipper/status")
kill -TERM "$shipper"
wait "$shipper"
echo "shipped ${size_mib} MiB ($format, $expected lines) in $(echo "$end - $start" | bc) s, scraped every ${every} s"
echo "peak RSS with metrics on: ${peak} MiB"
