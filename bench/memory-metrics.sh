#!/usr/bin/env bash
# Peak RSS with metrics on: the exported fat jar, the Dockerfile's own JVM flags, --http-port set,
# shipping SIZE_MIB of nginx-style lines at full speed to a pipe while /metrics, /healthz and
# /readyz are scraped every 100 ms (so the Prometheus client and the HTTP server are loaded and busy).
#   bench/memory-metrics.sh [SIZE_MIB] [FORMAT]     (defaults 1024 and json; needs curl and python3)
# The image's JVM is Temurin 25; set JAVA_HOME to a Temurin 25 JDK to measure like-for-like.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
format=${2:-json}
work=$(mktemp -d)
scraper=
trap '[[ -n $scraper ]] && kill "$scraper" 2>/dev/null; rm -rf "$work"' EXIT
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')

./jbang export fatjar --force -O "$work/logship.jar" LogShip.java >/dev/null 2>&1
# The ENTRYPOINT's JSON array, minus "java" and "-jar <jar>": the flags the image runs with.
flags=$(tr -d '\n\\' <Dockerfile | sed -E 's/.*ENTRYPOINT *\[([^]]*)\].*/\1/' | tr ',' '\n' |
        tr -d ' "' | grep -v -e '^java$' -e '^-jar$' -e 'logship.jar$')
echo "flags: $(echo $flags)"

mkdir "$work/logs"
line='10.0.0.1 - - [25/Nov/2026:14:37:26 +0000] "GET /some/path?q=1 HTTP/1.1" 200 612 "-" "curl/8.5.0"'
yes "$line" | head -c "$((size_mib * 1024 * 1024))" >"$work/logs/access.log" || true  # yes dies of SIGPIPE
# Many files too, so the per-file series exist: 300 small ones beside the big one.
for i in $(seq 1 300); do echo "$line" >"$work/logs/app-$i.log"; done

(
  while true; do
    for path in metrics healthz readyz; do curl -s -o /dev/null "http://127.0.0.1:$port/$path" || true; done
    sleep 0.1
  done
) &
scraper=$!

start=$(date +%s.%N)
# The shipper follows (not --once), so the server is up the whole time; once every line is out it
# gets SIGTERM, drains and exits. Peak RSS is the kernel's high-water mark (VmHWM) just before that.
# shellcheck disable=SC2086
"$java" $flags -jar "$work/logship.jar" -d "$work/logs" --format "$format" --http-port "$port" -q \
  > >(wc -l >"$work/lines.txt") &
shipper=$!
expected=$(( $(wc -l <"$work/logs/access.log") + 300 ))
# The text format writes counters as doubles (1.0E7): compare numerically.
shipped() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^logship_lines_shipped_total / {printf "%d", $2}'; }
until [[ $(shipped) == "$expected" ]]; do sleep 0.2; done
end=$(date +%s.%N)
peak=$(awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$shipper/status")
kill -TERM "$shipper"
wait "$shipper"
echo "shipped ${size_mib} MiB ($format) in $(echo "$end - $start" | bc) s, every line confirmed by /metrics"
echo "peak RSS with metrics on: ${peak} MiB"
