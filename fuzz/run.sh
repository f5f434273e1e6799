#!/usr/bin/env bash
# Fuzzes each target for a bounded time: `make fuzz` (FUZZ_SECONDS, default 60
# each). Usage: run.sh <fuzz build dir> <seconds> [target...]
# New inputs go to <build dir>/work/<target>/corpus (the committed corpus is
# read, never written); a crash, leak or timeout is saved under
# <build dir>/work/<target>/ as crash-*, leak-*, timeout-* and fails the run.
# The fuzzer runs in a forked child and goes on after a finding, so that one
# known defect does not end the run; FUZZ_FLAGS replaces those flags (e.g. "" to
# stop at the first finding).
set -uo pipefail
build=$(cd "$1" && pwd)
seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(chat_frame sse config http_server upstream_response onebot listen_duration admin_api)

declare -A max_len=([chat_frame]=16384 [sse]=8192 [config]=131072 [http_server]=32768 [upstream_response]=32768 [onebot]=16384 [listen_duration]=1024 [admin_api]=32768)
declare -A dict=([chat_frame]=dict.json [sse]=dict.sse [config]=dict.toml [http_server]=dict.http [upstream_response]=dict.http [onebot]=dict.json [listen_duration]=dict.listen [admin_api]=dict.admin)

export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# Reports with function names and lines, from clang's own symbolizer.
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x /usr/lib/llvm-19/bin/llvm-symbolizer ]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-19/bin/llvm-symbolizer
fi
status=0
summary=()
for target in "${targets[@]}"; do
  work=$build/work/$target
  mkdir -p "$work/corpus"
  log=$work/fuzz.log
  started=$work/.started  # this run's findings are the artifacts newer than this
  touch "$started"
  echo "fuzzing $target for ${seconds}s (log: $log)"
  # shellcheck disable=SC2086
  "$build/fuzz_$target" "$work/corpus" "$here/corpus/$target" \
    -max_total_time="$seconds" -max_len="${max_len[$target]:-4096}" \
    -dict="$here/${dict[$target]}" -timeout=30 -rss_limit_mb=4096 \
    -artifact_prefix="$work/" ${FUZZ_FLAGS--fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1} >"$log" 2>&1
  code=$?
  runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
  found=$(find "$work" -maxdepth 1 -type f -newer "$started" \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  line="$target: ${runs:-0} executions, ${cov:-cov: ?}, exit $code, $found finding(s)"
  summary+=("$line")
  if [ "$code" -ne 0 ] || [ "$found" -ne 0 ]; then
    status=1
    grep -E 'ERROR: |SUMMARY: |Test unit written|runtime error|uncaught|==[0-9]+==' "$log" | head -20
  fi
done
printf '%s\n' "${summary[@]}"
[ $status -eq 0 ] || echo "findings are under $build/work/<target>/: replay one with $build/fuzz_<target> <file>, then keep it under fuzz/regressions/<target>/"
exit $status
