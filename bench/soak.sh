#!/usr/bin/env bash
# The pod for a while: the manifest's own nginx.conf (per-minute access buckets) and the sidecar's
# own settings (LOG_FILE_PATTERN, LOG_REMOVE_AFTER, LOG_REMOVE_PATTERN, LOG_SCAN_INTERVAL, positions
# file), LogShip run as the image runs it (fat jar, the Dockerfile's JVM flags), under wrk for
# DURATION seconds. Every second it samples the log directory's disk use, plus the space of deleted
# files LogShip still holds open (freed only when it closes them after --rotate-wait). At the end:
# peak disk use, requests lost and duplicated (against a witness log nginx writes outside the
# directory), LogShip's CPU and peak RSS.
#   bench/soak.sh [DURATION_SECONDS]   (default 600; not run in CI)
# Needs nginx, wrk, python3 and root (nginx's user directive). JAVA_HOME picks the JVM (the image's
# is Temurin 25; its AOT cache is not built here, so the JVM starts without one).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
work=$(mktemp -d)
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
cleanup() {
  [[ -n ${load:-} ]] && kill "$load" 2>/dev/null || true
  [[ -n ${shipper:-} ]] && kill "$shipper" 2>/dev/null || true
  [[ -f $work/run/nginx.pid ]] && kill -QUIT "$(cat "$work/run/nginx.pid")" 2>/dev/null || true
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{logs,run,tmp,html,state}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

./jbang export fatjar --force -O "$work/logship.jar" LogShip.java >/dev/null 2>&1
# The image's JVM flags (its ENTRYPOINT, minus java, the jar and the AOT cache).
flags=$(bench/image-flags.sh)

# The manifest's nginx.conf and sidecar settings, adapted as the RealNginx test adapts them (paths,
# port, user, pid, a server with an existing root, a witness log), buckets left per minute.
python3 - "$work" "$port" <<'EOF'
import re, sys
work, port = sys.argv[1], sys.argv[2]
text = open("nginx-deployment.yaml").read()
conf = re.search(r"nginx\.conf: \|\n((?:    .*\n|\n)+)", text).group(1)
conf = "\n".join(l[4:] for l in conf.splitlines()) + "\n"
changes = {
    "/var/log/nginx": f"{work}/logs",
    "user  nginx;": "user root root;",
    "pid        /run/nginx.pid;": f"pid {work}/run/nginx.pid;",
    "include /etc/nginx/conf.d/*.conf;": f"""log_format witness '$request_uri';
    access_log {work}/witness.log witness;
    client_body_temp_path {work}/tmp/body; proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi; uwsgi_temp_path {work}/tmp/uwsgi; scgi_temp_path {work}/tmp/scgi;
    server {{ listen 127.0.0.1:{port}; root {work}/html; location / {{ return 200 "ok\\n"; }} }}""",
}
for old, new in changes.items():
    assert old in conf, f"the manifest's nginx.conf no longer has {old!r}"
    conf = conf.replace(old, new)
open(f"{work}/nginx.conf", "w").write(conf)
env = {}
for name in ["LOG_FILE_PATTERN", "LOG_REMOVE_AFTER", "LOG_REMOVE_PATTERN", "LOG_SCAN_INTERVAL"]:
    m = re.search(r"- name: " + name + r"\n\s+value: (.+)\n", text)
    env[name] = m.group(1).strip().strip("'\"")
with open(f"{work}/env", "w") as f:
    for k, v in env.items():
        f.write(f"export {k}='{v}'\n")
EOF
# shellcheck disable=SC1091
source "$work/env"
echo "settings: LOG_FILE_PATTERN=$LOG_FILE_PATTERN LOG_REMOVE_AFTER=$LOG_REMOVE_AFTER LOG_REMOVE_PATTERN=$LOG_REMOVE_PATTERN LOG_SCAN_INTERVAL=$LOG_SCAN_INTERVAL"

nginx -p "$work/" -c "$work/nginx.conf" -e "$work/logs/error.log" -g 'daemon off;' &
until [[ -f $work/run/nginx.pid ]] && (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.2; done

# shellcheck disable=SC2086
LOG_DIRECTORY=$work/logs LOG_STATE_FILE=$work/state/positions \
  "$java" $flags -jar "$work/logship.jar" >"$work/shipped.log" 2>"$work/logship.err" &
shipper=$!
until grep -q 'ready:' "$work/logship.err" 2>/dev/null; do kill -0 "$shipper"; sleep 0.2; done

cat >"$work/wrk.lua" <<'EOF'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/r/soak/" .. counter)
end
delay = function() return 1 end
EOF
wrk -t1 -c8 -d"${duration}s" --timeout 10s -s "$work/wrk.lua" "http://127.0.0.1:$port/" >"$work/wrk.out" &
load=$!

# Disk use as the emptyDir's quota sees it: files in the directory, and deleted ones still open.
peak_listed=0; peak_held=0; peak_files=0
while kill -0 "$load" 2>/dev/null; do
  listed=$(du -sb "$work/logs" | cut -f1)
  held=0
  for fd in /proc/"$shipper"/fd/*; do
    target=$(readlink "$fd" 2>/dev/null || true)
    [[ $target == "$work/logs/"*" (deleted)" ]] && held=$((held + $(stat -L -c %s "$fd" 2>/dev/null || echo 0)))
  done
  files=$(find "$work/logs" -name 'access-*' | wc -l)
  (( listed + held > peak_listed + peak_held )) && { peak_listed=$listed; peak_held=$held; }
  (( files > peak_files )) && peak_files=$files
  sleep 1
done
wait "$load" || true
kill -QUIT "$(cat "$work/run/nginx.pid")"; while [[ -f $work/run/nginx.pid ]]; do sleep 0.2; done

logged=$(wc -l <"$work/witness.log")
shipped_requests() { grep -o '"GET /r/soak/[0-9]* ' "$work/shipped.log" | cut -d' ' -f2; }
for _ in $(seq 1 120); do
  (( $(shipped_requests | wc -l) >= logged )) && break
  sleep 1
done
ticks=$(awk '{print $14 + $15}' "/proc/$shipper/stat")
hz=$(getconf CLK_TCK)
peak_rss=$(awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$shipper/status")
kill -TERM "$shipper"; wait "$shipper" || true

sort "$work/witness.log" >"$work/logged.sorted"
shipped_requests | sort >"$work/shipped.sorted"
lost=$(comm -23 "$work/logged.sorted" <(sort -u "$work/shipped.sorted") | wc -l)
duplicated=$(( $(wc -l <"$work/shipped.sorted") - $(sort -u "$work/shipped.sorted" | wc -l) ))
requests=$(grep -o '[0-9]* requests in' "$work/wrk.out" | cut -d' ' -f1)
line_bytes=$(( $(grep -c . "$work/shipped.log") > 0 ? $(wc -c <"$work/shipped.log") / $(wc -l <"$work/shipped.log") : 0 ))
echo "soak: ${duration} s at $((requests / duration)) requests/s (${requests} requests, lines of ~${line_bytes} bytes)"
echo "peak disk use: $((peak_listed + peak_held)) bytes ($peak_listed in the directory + $peak_held deleted but still open), at most $peak_files buckets"
echo "requests logged $logged, lost $lost, duplicated $duplicated"
echo "LogShip CPU: $(echo "scale=1; 100 * $ticks / $hz / $duration" | bc) % of a core on average; peak RSS ${peak_rss} MiB"
grep -i 'warn\|error' "$work/logship.err" | head -5 || true
