#!/usr/bin/env bash
# Replays one fuzz target's committed inputs, each once: its seed corpus
# (fuzz/corpus/<target>/) and the inputs of findings (fuzz/regressions/<target>/).
# Usage: replay.sh <fuzzer binary> <target>
#
# An input listed in fuzz/regressions/known.txt is a finding whose fix has not
# landed yet: it is run too, and reported, but does not fail the replay. Once it
# passes, the replay says so: delete its line and it guards from then on.
set -uo pipefail
binary=$1
target=$2
here=$(cd "$(dirname "$0")" && pwd)
known_list=$here/regressions/known.txt

declare -A known=()
if [ -f "$known_list" ]; then
  while read -r path reason; do
    case "$path" in ''|'#'*) continue ;; esac
    known[$path]=$reason
  done < "$known_list"
fi

guarded=()
open=()
while IFS= read -r -d '' file; do
  relative=${file#"$here/regressions/"}
  if [ "$relative" != "$file" ] && [ -n "${known[$relative]+set}" ]; then
    open+=("$file")
  else
    guarded+=("$file")
  fi
done < <(find "$here/corpus/$target" "$here/regressions/$target" -type f -print0 2>/dev/null | sort -z)

if [ ${#guarded[@]} -eq 0 ]; then
  echo "no inputs for $target under $here/corpus/$target" >&2
  exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# Reports with function names and lines, from clang's own symbolizer.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-19/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-19/bin/llvm-symbolizer
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT

start=$(date +%s%N)
if ! "$binary" -timeout=30 -rss_limit_mb=4096 "${guarded[@]}" >"$log" 2>&1; then
  cat "$log"
  echo "$target: an input failed (above); make it a regression test before fixing" >&2
  exit 1
fi
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
echo "$target: ${#guarded[@]} inputs replayed in ${elapsed} ms, all passed"

for file in "${open[@]}"; do
  relative=${file#"$here/regressions/"}
  if "$binary" -timeout=30 -rss_limit_mb=4096 "$file" >"$log" 2>&1; then
    echo "$target: known finding $relative now passes: delete its line in fuzz/regressions/known.txt"
  else
    echo "$target: known finding still open: $relative (${known[$relative]})"
  fi
done
exit 0
