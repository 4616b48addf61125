#!/usr/bin/env bash
# The JVM flags the image runs LogShip with, one per line: the Dockerfile's exec-form ENTRYPOINT
# split by its quoted words (a flag may hold a comma), minus java, "-jar <jar>" and the AOT cache
# (only the image's own JDK 25 build has one; bench/image.sh builds and measures it). The benches
# that replay the image's flags on a local JDK all read them here.
#   bench/image-flags.sh [DOCKERFILE]   (default: the repository's Dockerfile)
set -euo pipefail
dockerfile=${1:-"$(dirname "$0")/../Dockerfile"}
tr -d '\n\\' <"$dockerfile" | sed -E 's/.*ENTRYPOINT *\[([^]]*)\].*/\1/' | grep -o '"[^"]*"' | tr -d '"' |
  grep -v -e '^java$' -e 'bin/java$' -e '^-jar$' -e 'logship.jar$' -e '^-XX:AOTCache='
