#!/usr/bin/env bash
# Reliability suite (issue 5): sanitizers, fuzzing and static analysis. Run from anywhere:
#   tools/reliability.sh [asan] [tsan] [fuzz] [static]     (default: all four, in that order)
# Stages
#   asan   configure+build the whole suite with SPARSEBUDGET_SANITIZE="address;undefined" in
#          build-asan and run ctest there (no recover: the first report fails the test)
#   tsan   the same with thread in build-tsan (under `setarch -R` when available: GCC's TSan
#          aborts with "unexpected memory mapping" on kernels with high ASLR entropy)
#   fuzz   build the libFuzzer targets with clang-14 in build-fuzz and run each for
#          SPARSEBUDGET_FUZZ_SECONDS (default 100) from its committed seed corpus, with the
#          target's libFuzzer dictionary (tests/fuzz/<target>.dict) where one exists; any crash,
#          leak, timeout, OOM or sanitizer report fails the stage; executions are printed
#   static clang-tidy (the committed .clang-tidy) and cppcheck on src/ and include/; any finding
#          fails the stage
# Environment
#   SPARSEBUDGET_FUZZ_SECONDS   seconds per fuzz target (default 100: 6 targets, 2 at a time, about
#                               8 minutes of the CI budget with the build; docs/reliability.md)
#   SPARSEBUDGET_TEST_SHAPES    random shapes per ISA for the float64 reference tests under the
#                               sanitizers (default 150 under ASan, 30 under TSan; the normal
#                               build runs 1000)
#   SPARSEBUDGET_JOBS           parallel jobs (default 2)
#   SPARSEBUDGET_RELIABILITY_REPORT  if set, a file that receives the summary lines
# The sanitizer stages skip the packaging tests (consumer_*): they build consumers of the
# installed tree with CMake, which sanitizers add nothing to, and `make test` runs them anyway;
# and the tests labelled pure_python (the training scripts' pytest: no library code runs).
# TSan also skips the tests labelled single_threaded (one thread: no race to find).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${SPARSEBUDGET_JOBS:-2}
FUZZ_SECONDS=${SPARSEBUDGET_FUZZ_SECONDS:-100}
SHAPES=${SPARSEBUDGET_TEST_SHAPES:-}
REPORT=${SPARSEBUDGET_RELIABILITY_REPORT:-}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(asan tsan fuzz static)

failed=()
summary=()
note() { echo "reliability: $*"; summary+=("$*"); }
now() { date +%s; }

# setarch -R (no ASLR) for TSan when it works here; otherwise run plainly.
NOASLR=()
if setarch "$(uname -m)" -R true 2>/dev/null; then NOASLR=(setarch "$(uname -m)" -R); fi

configure_build() {  # dir, extra cmake args...
  local dir=$1
  shift
  mkdir -p "$dir"
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1" -DSPARSEBUDGET_BUILD_BENCH=OFF -DSPARSEBUDGET_BUILD_EXAMPLES=OFF \
    -DSPARSEBUDGET_BUILD_PYTHON=OFF "$@" >"$dir/reliability.configure.log" 2>&1 || { tail -n 30 "$dir/reliability.configure.log"; return 1; }
  "${RUNNER[@]}" cmake --build "$dir" -j "$JOBS" >"$dir/reliability.build.log" 2>&1 || { grep -E "error|Error" "$dir/reliability.build.log" | head -n 40; return 1; }
}

run_ctest() {  # dir [extra ctest args]
  local dir=$1 log="$1/reliability.ctest.log"
  shift
  "${RUNNER[@]}" ctest --test-dir "$dir" --output-on-failure -j "$JOBS" -E '^consumer_' --timeout 1500 "$@" >"$log" 2>&1
  local rc=$?
  grep -E "tests passed|tests failed|Total Test time" "$log"
  if [ $rc -ne 0 ]; then
    sed -n '/The following tests FAILED/,$p' "$log"
    # The first sanitizer report, if any, with some context.
    grep -n -m1 -A 25 -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: ThreadSanitizer" "$log" || true
  fi
  return $rc
}

stage_asan() {
  local t0
  t0=$(now)
  RUNNER=()
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  export SPARSEBUDGET_TEST_SHAPES=${SHAPES:-150}
  configure_build "$ROOT/build-asan" -DSPARSEBUDGET_SANITIZE="address;undefined" || return 1
  run_ctest "$ROOT/build-asan" -LE pure_python
  local rc=$?
  note "asan+ubsan: ctest $( [ $rc -eq 0 ] && echo passed || echo FAILED ) ($(($(now) - t0)) s, $SPARSEBUDGET_TEST_SHAPES shapes per ISA)"
  return $rc
}

stage_tsan() {
  local t0
  t0=$(now)
  RUNNER=("${NOASLR[@]}")
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
  export SPARSEBUDGET_TEST_SHAPES=${SHAPES:-30}
  configure_build "$ROOT/build-tsan" -DSPARSEBUDGET_SANITIZE=thread || return 1
  # Tests labelled single_threaded (whole calibrations on one thread) have nothing for TSan to
  # check and run 50-100x slower under it; the ASan stage runs them.
  run_ctest "$ROOT/build-tsan" -LE 'single_threaded|pure_python'
  local rc=$?
  note "tsan: ctest $( [ $rc -eq 0 ] && echo passed || echo FAILED ) ($(($(now) - t0)) s, $SPARSEBUDGET_TEST_SHAPES shapes per ISA)"
  return $rc
}

stage_fuzz() {
  local t0 dir="$ROOT/build-fuzz"
  t0=$(now)
  RUNNER=()
  mkdir -p "$dir"
  command -v clang++-14 >/dev/null || { echo "reliability: clang++-14 missing (apt-get install clang-14 libclang-rt-14-dev)"; return 1; }
  CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DSPARSEBUDGET_FUZZ=ON -DSPARSEBUDGET_SANITIZE="address;undefined" \
    -DSPARSEBUDGET_BUILD_TESTS=OFF -DSPARSEBUDGET_BUILD_BENCH=OFF -DSPARSEBUDGET_BUILD_EXAMPLES=OFF \
    -DSPARSEBUDGET_BUILD_TOOLS=OFF -DSPARSEBUDGET_BUILD_PYTHON=OFF >"$dir/reliability.configure.log" 2>&1 || { tail -n 30 "$dir/reliability.configure.log"; return 1; }
  cmake --build "$dir" -j "$JOBS" >"$dir/reliability.build.log" 2>&1 || { grep -E "error|Error" "$dir/reliability.build.log" | head -n 40; return 1; }
  local targets=(fuzz_predictor_json fuzz_trace_reader fuzz_shape_validation fuzz_npy fuzz_kernel_diff fuzz_op)
  local rc=0 pids=() t
  mkdir -p "$dir/artifacts"
  # Two targets at a time (one per core); each writes new units into its own work corpus, never
  # into the committed seeds (libFuzzer adds to the first directory only).
  # Fork mode with -ignore_*: a target keeps fuzzing for the whole time after a finding, so one
  # run reports every distinct crash (each saved under artifacts/) and a full execution count.
  run_one() {
    local t=$1
    mkdir -p "$dir/work/$t"
    rm -f "$dir/artifacts/$t-"*
    local dict=()
    [ -f "$ROOT/tests/fuzz/$t.dict" ] && dict=(-dict="$ROOT/tests/fuzz/$t.dict")
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$dir/tests/fuzz/$t" "${dict[@]}" -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
      -max_total_time="$FUZZ_SECONDS" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=8192 \
      -artifact_prefix="$dir/artifacts/$t-" "$dir/work/$t" "$ROOT/tests/fuzz/corpus/$t" >"$dir/$t.log" 2>&1
  }
  local i=0
  for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=($!)
    i=$((i + 1))
    if [ $((i % JOBS)) -eq 0 ]; then
      for p in "${pids[@]}"; do wait "$p" || true; done
      pids=()
    fi
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  for t in "${targets[@]}"; do
    local log="$dir/$t.log" last execs secs crashes
    last=$(grep -E '^#[0-9]+: cov:' "$log" | tail -n 1)
    execs=$(echo "$last" | grep -oE '^#[0-9]+' | tr -d '#')
    secs=$(echo "$last" | grep -oE 'time: [0-9]+s' | grep -oE '[0-9]+')
    crashes=$(ls "$dir/artifacts/$t-"* 2>/dev/null | wc -l)
    if [ -z "$execs" ] || [ "$crashes" -ne 0 ] || grep -qE "INFO: exiting: [1-9]|ERROR: libFuzzer: (fuzz target exited|-max_len)" "$log"; then
      rc=1
      note "fuzz $t: FAILED, ${crashes} crash/leak/timeout/oom inputs in ${execs:-?} executions (log $log, inputs $dir/artifacts/$t-*)"
      # Distinct findings: replay saved inputs (up to 10 of each kind) and keep each first report.
      local a
      for a in $(for k in crash leak oom timeout slow-unit; do ls "$dir/artifacts/$t-$k-"* 2>/dev/null | head -n 10; done); do
        ASAN_OPTIONS=detect_leaks=1 timeout 60 "$dir/tests/fuzz/$t" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=1024 "$a" 2>&1 |
          grep -m1 -E "runtime error:|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|FUZZ INVARIANT BROKEN"
      done | sed -E 's/0x[0-9a-f]+/0x?/g; s/[0-9]{6,}/N/g; s/==[0-9]+==/==/g; s/\* [0-9]+ /* k /' | sort | uniq -c | sort -rn | head -n 12
    else
      note "fuzz $t: ${execs} executions in ${secs:-$FUZZ_SECONDS} s, $(ls "$dir/work/$t" | wc -l) corpus units (+ $(ls "$ROOT/tests/fuzz/corpus/$t" | wc -l) seeds), no crash, leak or report"
    fi
  done
  note "fuzz: total $(($(now) - t0)) s"
  return $rc
}

stage_static() {
  local t0 dir="$ROOT/build-tidy" rc=0
  t0=$(now)
  mkdir -p "$dir"
  command -v clang-tidy-14 >/dev/null || command -v clang-tidy >/dev/null || { echo "reliability: clang-tidy missing"; return 1; }
  command -v cppcheck >/dev/null || { echo "reliability: cppcheck missing"; return 1; }
  local tidy
  tidy=$(command -v clang-tidy-14 || command -v clang-tidy)
  CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$dir" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    -DSPARSEBUDGET_BUILD_TESTS=OFF -DSPARSEBUDGET_BUILD_BENCH=OFF -DSPARSEBUDGET_BUILD_EXAMPLES=OFF \
    -DSPARSEBUDGET_BUILD_TOOLS=OFF -DSPARSEBUDGET_BUILD_PYTHON=OFF >"$dir/reliability.configure.log" 2>&1 || { tail -n 30 "$dir/reliability.configure.log"; return 1; }
  # Every library source (headers of include/ and src/ are checked through them).
  mapfile -t files < <(find "$ROOT/src" -name '*.cpp' | sort)
  printf '%s\n' "${files[@]}" | xargs -P "$JOBS" -n 4 "$tidy" -p "$dir" --quiet >"$dir/reliability.tidy.log" 2>&1
  local tidy_rc=$?
  local n_tidy
  n_tidy=$(grep -cE ': (warning|error): ' "$dir/reliability.tidy.log")
  if [ $tidy_rc -ne 0 ] || [ "$n_tidy" -ne 0 ]; then
    rc=1
    grep -E ': (warning|error): ' "$dir/reliability.tidy.log" | sort -u | head -n 40
  fi
  note "clang-tidy: ${#files[@]} files, $n_tidy findings"
  # cppcheck. Suppressed, with reasons:
  #  invalidPointerCast:src/attention/internal.hpp  At<T>() returns typed views of the caller's
  #      byte workspace (regions are 64-byte aligned); a char* -> float* cast is the point.
  #  passedByValue  views (OutputView, BlockSelection) are 24-byte value types passed by value
  #      on purpose (the API mirrors the C structs).
  #  uninitvar:src/kernels/kernels_impl.inc  dots[j][r] is written for every r < R by the two
  #      reduction loops of ScoreKeys; cppcheck does not follow the split loop.
  cppcheck --enable=warning,performance,portability --std=c++17 --language=c++ --error-exitcode=1 \
    --inline-suppr --suppress=missingIncludeSystem --suppress=invalidPointerCast:"$ROOT/src/attention/internal.hpp" \
    --suppress=passedByValue --suppress=uninitvar:"$ROOT/src/kernels/kernels_impl.inc" --quiet \
    -I "$ROOT/include" -I "$ROOT/src" -j "$JOBS" "$ROOT/src" "$ROOT/include" >"$dir/reliability.cppcheck.log" 2>&1
  local cc_rc=$?
  local n_cc
  n_cc=$(grep -cE '^[^ ].*: (error|warning|style|performance|portability): ' "$dir/reliability.cppcheck.log")
  if [ $cc_rc -ne 0 ] || [ "$n_cc" -ne 0 ]; then
    rc=1
    head -n 40 "$dir/reliability.cppcheck.log"
  fi
  note "cppcheck: $n_cc findings"
  note "static: $(($(now) - t0)) s"
  return $rc
}

T0=$(now)
for s in "${STAGES[@]}"; do
  echo "reliability: === $s ==="
  case $s in
    asan) stage_asan || failed+=(asan) ;;
    tsan) stage_tsan || failed+=(tsan) ;;
    fuzz) stage_fuzz || failed+=(fuzz) ;;
    static) stage_static || failed+=(static) ;;
    *) echo "reliability: unknown stage '$s' (asan tsan fuzz static)"; exit 2 ;;
  esac
done
echo "reliability: ---- summary ($(($(now) - T0)) s) ----"
printf 'reliability: %s\n' "${summary[@]}"
[ -n "$REPORT" ] && printf '%s\n' "${summary[@]}" >"$REPORT"
if [ ${#failed[@]} -ne 0 ]; then
  echo "reliability: FAILED stages: ${failed[*]}"
  exit 1
fi
echo "reliability: all stages passed"
