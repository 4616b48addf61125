#!/usr/bin/env bash
# The image's runtime against the one it replaced: size on disk, time from exec to "ready",
# peak RSS shipping at full speed and idle RSS following 300 files.
#   bench/image.sh [ROUNDS] [SIZE_MIB]     (defaults 20 and 1024; needs /usr/bin/time and ldd)
# The new runtime is built by the Dockerfile's own build steps (every build-stage RUN that writes
# into /opt/logship, word for word, with /opt/logship moved into a temp dir), as the Packaging
# test replays them. No Docker engine is needed or used.
#   JDK25: the build stage's Temurin 25 JDK (default /usr/lib/jvm/temurin-25-jdk-amd64)
#   JDK17: the JDK 17 to compare with (default: the `java` on the PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
size_mib=${2:-1024}
jdk25=${JDK25:-/usr/lib/jvm/temurin-25-jdk-amd64}
java17=${JDK17:+$JDK17/bin/}java
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
home=/opt/logship

# The 0.1.0 image's ENTRYPOINT flags (Temurin 25 JRE, `java ... -jar /app/logship.jar`).
old_flags=(-XX:+UseSerialGC -Xms8m -Xmx32m -Xss256k -XX:MaxMetaspaceSize=32m -XX:ReservedCodeCacheSize=16m
  -XX:MaxDirectMemorySize=8m -XX:TieredStopAtLevel=1 -XX:-UsePerfData -XX:+ExitOnOutOfMemoryError -Xshare:auto)

# --- build: the Dockerfile's steps ------------------------------------------------------------
# Logical lines (continuations joined, comments dropped), then the global ARG defaults and the
# RUNs that write into $home, in order.
logical=$(awk '/^[[:space:]]*#/ {next} /\\$/ {sub(/\\$/, ""); buf = buf $0 " "; next} {print buf $0; buf = ""}' Dockerfile)
while IFS= read -r arg; do export "${arg#ARG }"; done < <(sed -n '/^FROM/q; /^ARG .*=/p' <<<"$logical")
echo "building the image's $home with the Dockerfile's own steps on $jdk25 ..."
while IFS= read -r run; do
  (PATH="$jdk25/bin:$PATH" JAVA_HOME=$jdk25 sh -c "${run#RUN }" >"$work/step.log" 2>&1) ||
    { cat "$work/step.log" >&2; echo "failed: $run" >&2; exit 1; }
done < <(grep "^RUN .*$home" <<<"$logical" | sed "s|$home|$work$home|g")
entrypoint=$(sed -n 's/^ENTRYPOINT *\[\(.*\)\] *$/\1/p' <<<"$logical" | grep -o '"[^"]*"' | tr -d '"' | sed "s|$home|$work$home|g")
mapfile -t image <<<"$entrypoint"        # java, flags..., -jar, jar
new_java=${image[0]}
new_flags=("${image[@]:1:${#image[@]}-3}")
jar=${image[-1]}
noaot_flags=()
for f in "${new_flags[@]}"; do [[ $f == -XX:AOTCache=* ]] || noaot_flags+=("$f"); done

# JDK 17 cannot run the jar built by JDK 25: the same source, exported by JDK 17.
./jbang export fatjar --force -O "$work/jar17/logship.jar" LogShip.java >/dev/null 2>&1

# The Temurin 25 JRE the 0.1.0 image ran on is not installed here: its equivalent is jlinked from
# the JDK (the boot and platform modules plus jdk.jdwp.agent, as the JDK build's legacy JRE image
# is), unstripped and uncompressed, with the JDK's default CDS archives. It is used for its size;
# runs of "Temurin 25" use the JDK directory itself (same libjvm, same default CDS archive).
cat >"$work/M.java" <<'EOF'
public class M { public static void main(String[] a) {
    ClassLoader app = ClassLoader.getSystemClassLoader();
    System.out.println(String.join(",", ModuleLayer.boot().modules().stream()
        .filter(m -> m.getClassLoader() != app || m.getName().equals("jdk.jdwp.agent"))
        .map(Module::getName).sorted().toList()));
} }
EOF
jre_modules=$("$jdk25/bin/java" --add-modules ALL-SYSTEM "$work/M.java" 2>/dev/null)
"$jdk25/bin/jlink" --add-modules "$jre_modules" --no-header-files --no-man-pages --output "$work/jre25"
cp "$jdk25"/lib/server/classes*.jsa "$work/jre25/lib/server/"
"$jdk25/bin/jlink" --add-modules "$jre_modules" --strip-debug --no-header-files --no-man-pages --output "$work/jre25s"
cp "$jdk25"/lib/server/classes*.jsa "$work/jre25s/lib/server/"

# --- size -------------------------------------------------------------------------------------
mb() { du -sb "$@" | awk '{s += $1} END {printf "%.1f MB", s / 1e6}'; }
echo
echo "== size on disk (du -sb, MB = 10^6 bytes)"
echo "new: runtime $(mb "$work$home/java"), jar $(mb "$jar"), AOT cache $(mb "$work$home/app/logship.aot"): $(mb "$work$home")"
echo "old: Temurin 25 JRE equivalent ($(tr ',' '\n' <<<"$jre_modules" | wc -l) modules) $(mb "$work/jre25")," \
  "$(mb "$work/jre25s") with --strip-debug; + jar $(mb "$jar")"

# --- time from exec to "ready" ----------------------------------------------------------------
mkdir "$work/pod"
echo '10.0.0.1 - - [25/Nov/2026:14:37:26 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"' >"$work/pod/access.log"
echo '2026/11/25 14:37:26 [notice] 1#1: start worker processes' >"$work/pod/error.log"
# Milliseconds from just before the fork to the moment "ready:" is read from its stderr; then SIGTERM.
ready_ms() {
  local fifo=$work/fifo t0 t1 pid line
  mkfifo "$fifo"
  t0=$(date +%s%N)
  "$@" -d "$work/pod" 2>"$fifo" >/dev/null &
  pid=$!
  exec 3<"$fifo"
  t1=0
  while IFS= read -r -u 3 line; do [[ $line == *ready:* ]] && { t1=$(date +%s%N); break; }; done
  kill -TERM "$pid"
  cat <&3 >/dev/null
  exec 3<&-
  wait "$pid" || true
  rm -f "$fifo"
  ((t1 > 0)) || { echo "no ready line from: $*" >&2; exit 1; }
  echo $(((t1 - t0) / 1000000))
}
declare -A ms
configs=(jdk17 temurin25 jlink jlink+aot)
run_config() {
  case $1 in
    jdk17) ready_ms "$java17" "${old_flags[@]}" -jar "$work/jar17/logship.jar" ;;
    temurin25) ready_ms "$jdk25/bin/java" "${old_flags[@]}" -jar "$jar" ;;
    jlink) ready_ms "$new_java" "${noaot_flags[@]}" -jar "$jar" ;;
    jlink+aot) ready_ms "$new_java" "${new_flags[@]}" -jar "$jar" ;;
  esac
}
for c in "${configs[@]}"; do run_config "$c" >/dev/null; done # warm the page cache
for ((r = 0; r < rounds; r++)); do
  for c in "${configs[@]}"; do ms[$c]+="$(run_config "$c") "; done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
echo
echo "== exec to \"ready\", median of $rounds interleaved runs (ms), a 2-file directory like the pod's"
base=$(median "${ms[temurin25]}")
for c in "${configs[@]}"; do
  m=$(median "${ms[$c]}")
  echo "$c: $m ms ($(awk -v m="$m" -v b="$base" 'BEGIN {printf "%+.0f%%", (m - b) * 100 / b}') vs temurin25)   runs: ${ms[$c]}"
done

# --- memory -----------------------------------------------------------------------------------
mkdir "$work/big"
line='10.0.0.1 - - [25/Nov/2026:14:37:26 +0000] "GET /some/path?q=1 HTTP/1.1" 200 612 "-" "curl/8.5.0"'
yes "$line" | head -c "$((size_mib * 1024 * 1024))" >"$work/big/access.log" || true # yes dies of SIGPIPE
peak() {
  /usr/bin/time -v "$@" -d "$work/big" --once -q 2>"$work/time.txt" | cat >/dev/null
  awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); printf "%.1f MiB", $2 / 1024}' "$work/time.txt"
}
mkdir "$work/many"
for i in $(seq 1 300); do echo "$line" >"$work/many/app-$i.log"; done
idle() {
  : >"$work/idle.out"
  "$@" -d "$work/many" >"$work/idle.out" 2>/dev/null &
  local pid=$! n
  for n in $(seq 600); do (($(wc -l <"$work/idle.out") >= 300)) && break; sleep 0.1; done
  sleep 10
  awk '/VmRSS|VmHWM/ {printf "%s %.1f MiB  ", $1, $2 / 1024}' "/proc/$pid/status"
  kill -TERM "$pid"
  wait "$pid" || true
}
echo
echo "== memory, each runtime with its image's flags"
echo "old (Temurin 25, 0.1.0 flags): peak shipping $size_mib MiB: $(peak "$jdk25/bin/java" "${old_flags[@]}" -jar "$jar")"
echo "new (jlink + AOT cache):       peak shipping $size_mib MiB: $(peak "$new_java" "${new_flags[@]}" -jar "$jar")"
echo "old (Temurin 25, 0.1.0 flags): following 300 idle files: $(idle "$jdk25/bin/java" "${old_flags[@]}" -jar "$jar")"
echo "new (jlink + AOT cache):       following 300 idle files: $(idle "$new_java" "${new_flags[@]}" -jar "$jar")"
