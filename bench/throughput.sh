#!/usr/bin/env bash
# Throughput against the tools a user would pick instead: LogShip raw and JSON (--once), `tail -n+1`
# and `cat`, each shipping the same 1 GiB nginx-style access log into `cat > /dev/null`,
# interleaved for ROUNDS rounds (other work on the machine then disturbs all of them alike), with
# medians, the two ratios and LogShip's peak RSS (/usr/bin/time: apt-get install time).
#   bench/throughput.sh [ROUNDS]        (default 5; FILE_MIB=1024; JAVA_HOME picks the JDK)
# LogShip runs twice per round and format: with JVM defaults, and with the image's JVM flags
# (the Dockerfile's ENTRYPOINT, minus its AOT cache, which only the image's JDK 25 has built).
# Two floors are measured alongside: `dd bs=8k` (a byte copier writing 8 KiB at a time, as
# `tail -n+1` does; into a pipe read by `cat` this is as fast as this machine goes) and JavaCopy (a
# JVM started to sendfile(2) the file into the pipe without looking at a byte: no JVM program can
# beat it). The log is generated once, in /tmp (not in the repository), and kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
file_mib=${FILE_MIB:-1024}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
data=/tmp/logship-bench-$file_mib
log=$data/logs/access.log
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ! -s $log ]]; then
  echo "generating $log ($file_mib MiB of nginx-style lines, once)"
  mkdir -p "$data/logs"
  # Varied lines (addresses, paths, statuses, sizes, agents), whole lines only.
  awk -v bytes=$((file_mib * 1024 * 1024)) 'BEGIN {
    srand(12); split("GET GET GET GET POST PUT HEAD", m, " ")
    split("/ /index.html /api/v1/items /api/v1/items/42 /static/app.js /static/style.css /login /search?q=logs", p, " ")
    split("200 200 200 200 200 304 301 404 500", s, " ")
    split("curl/8.5.0|Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0|kube-probe/1.31|Go-http-client/1.1", a, "|")
    for (n = 0; n < bytes; ) {
      line = sprintf("10.%d.%d.%d - - [25/Nov/2026:14:%02d:%02d +0000] \"%s %s HTTP/1.1\" %s %d \"-\" \"%s\"",
        int(rand() * 256), int(rand() * 256), int(rand() * 256), int(rand() * 60), int(rand() * 60),
        m[int(rand() * 7) + 1], p[int(rand() * 8) + 1], s[int(rand() * 9) + 1], int(rand() * 50000), a[int(rand() * 4) + 1])
      if (n + length(line) + 1 > bytes) break
      print line; n += length(line) + 1
    }
  }' >"$log.tmp"
  mv "$log.tmp" "$log"
fi
bytes=$(stat -c %s "$log")
lines=$(wc -l <"$log")

./jbang export fatjar --force -O "$work/logship.jar" LogShip.java >/dev/null 2>&1
"${java%java}javac" -d "$work" bench/JavaCopy.java
# The image's JVM flags (its ENTRYPOINT, minus java, the jar and the AOT cache).
image_flags=$(bench/image-flags.sh)
export POD_NAME=nginx-7d4b9c-x2x9q POD_NAMESPACE=shop NODE_NAME=node-a CONTAINER_NAME=nginx

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "JDK: $("$java" -version 2>&1 | head -1)"
echo "file: $log, $bytes bytes, $lines lines; $rounds rounds, interleaved"
echo "image flags: $(echo $image_flags)"

# One run: the pipeline's wall time in seconds, and the producer's peak RSS in KiB, on one line.
run() {
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f %M -o "$work/rss" "$@" | cat >/dev/null
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $(cat "$work/rss")"
}
# LogShip with the JVM flags given first (a word list: none, or the image's), then its own options.
logship() {
  local flags=$1
  shift
  # shellcheck disable=SC2086
  echo "$java" $flags -jar "$work/logship.jar" -d "$data/logs" --once -q "$@"
}

# What is measured must be right first: raw output is the file byte for byte, JSON one object a line.
[[ $($(logship "") | md5sum) == $(md5sum <"$log") ]] || { echo "raw output differs from the file" >&2; exit 1; }
[[ $("$java" -cp "$work" JavaCopy "$log" | md5sum) == $(md5sum <"$log") ]] || { echo "JavaCopy differs from the file" >&2; exit 1; }
[[ $($(logship "" --format json) | wc -l) == "$lines" ]] || { echo "JSON output is not one line per line" >&2; exit 1; }

names=(cat tail dd8k javacopy raw json raw-image json-image)
declare -A times rss
for round in $(seq 1 "$rounds"); do
  for name in "${names[@]}"; do
    case $name in
      cat) result=$(run cat "$log") ;;
      tail) result=$(run tail -n+1 "$log") ;;
      dd8k) result=$(run dd if="$log" bs=8k status=none) ;;
      javacopy) result=$(run "$java" -cp "$work" JavaCopy "$log") ;;
      raw) result=$(run $(logship "")) ;;
      json) result=$(run $(logship "" --format json)) ;;
      raw-image) result=$(run $(logship "$image_flags")) ;;
      json-image) result=$(run $(logship "$image_flags" --format json)) ;;
    esac
    times[$name]+="${result% *} "
    rss[$name]+="${result#* } "
  done
  echo "round $round: $(for n in "${names[@]}"; do printf '%s %s s  ' "$n" "$(echo "${times[$n]}" | awk '{print $NF}')"; done)"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
largest() { tr ' ' '\n' | grep . | sort -g | tail -1; }
declare -A med
for n in "${names[@]}"; do med[$n]=$(echo "${times[$n]}" | median); done
echo
printf '%-34s %8s %10s %10s %10s %9s\n' "" "median" "MB/s" "vs tail" "vs cat|cat" "peak RSS"
row() {
  local label=$1 n=$2
  local mbps vs_tail vs_cat peak
  mbps=$(echo "scale=0; $bytes / ${med[$n]} / 1000000" | bc)
  vs_tail=$(echo "scale=2; ${med[tail]} / ${med[$n]}" | bc)
  vs_cat=$(echo "scale=2; ${med[cat]} / ${med[$n]}" | bc)
  peak=$(( $(echo "${rss[$n]}" | largest) / 1024 ))
  printf '%-34s %7.2fs %10s %9sx %9sx %6s MiB\n' "$label" "${med[$n]}" "$mbps" "$vs_tail" "$vs_cat" "$peak"
}
row "cat file | cat" cat
row "tail -n+1 file" tail
row "dd bs=8k (the pipe's floor)" dd8k
row "JavaCopy (the JVM's floor)" javacopy
row "LogShip raw, JVM defaults" raw
row "LogShip json, JVM defaults" json
row "LogShip raw, image flags" raw-image
row "LogShip json, image flags" json-image
