#!/usr/bin/env bash
# scripts/dev.sh: the one entry point for building, demoing and testing flamed.
#
# Usage: ./scripts/dev.sh COMMAND [ARGS]
#
#   demo     install what is missing, build (Release) into build/, run the daemon demo: the
#            embedded broker, flamed and a generated clickstream until Ctrl-C
#            (scripts/demo.sh)
#   test     install, format check, ASan+UBSan build and all tests (build-asan/),
#            TSan build and the tests labelled tsan (build-tsan/), bounded fuzzing
#            when fuzz targets exist (build-fuzz/); exits non-zero on any failure
#   build    install what is missing and build (Release) into build/
#   bench    install (with --bench), build, run bench/run.sh ARGS if it exists
#   --help   this text
#
# Environment: CI=true (no colours, no prompts), NO_COLOR, FUZZ_SECONDS (default 30, per
# fuzz target), ASAN_OPTIONS / UBSAN_OPTIONS / TSAN_OPTIONS (sensible defaults when unset).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS=$(nproc 2>/dev/null || echo 2)
# Source dirs holding the project's C code: the format check covers exactly these.
SRC_DIRS=(common model daemon stream state config tools bench tests)

# ---- output -------------------------------------------------------------------------------
if [[ "${CI:-}" == "true" || -n "${NO_COLOR:-}" || ! -t 1 ]]; then
  BOLD="" RED="" GREEN="" YELLOW="" RESET=""
  export CMAKE_COLOR_DIAGNOSTICS=OFF
else
  BOLD=$'\e[1m' RED=$'\e[31m' GREEN=$'\e[32m' YELLOW=$'\e[33m' RESET=$'\e[0m'
fi
say() { printf '%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
ok() { printf '%s%s%s\n' "$GREEN" "$*" "$RESET"; }
warn() { printf '%s%s%s\n' "$YELLOW" "$*" "$RESET" >&2; }
die() {
  printf '%sdev.sh: %s%s\n' "$RED" "$*" "$RESET" >&2
  exit 1
}
usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

# ---- interruption -------------------------------------------------------------------------
# Long jobs run in the background with the script waiting on them, so that Ctrl-C (or a TERM
# sent to the script) is handled at once: the job gets TERM, is waited for, and the script
# exits 130. Files the tools write are written atomically, so nothing half-written remains.
CHILD=""
on_interrupt() {
  trap - INT TERM
  if [[ -n "$CHILD" ]] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null || true
    wait "$CHILD" 2>/dev/null || true
  fi
  echo
  warn "dev.sh: interrupted; stopped cleanly"
  exit 130
}
trap on_interrupt INT TERM
run_job() {
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=""
  ((rc == 0)) || warn "dev.sh: '$*' failed (exit $rc)"
  return "$rc"
}

# ---- building blocks ----------------------------------------------------------------------
setup() { "$ROOT/scripts/setup.sh" "$@"; }

# configure DIR CMAKE_ARGS...: (re)configures a build dir; cheap when nothing changed.
configure() {
  local dir=$1
  shift
  cmake -S "$ROOT" -B "$ROOT/$dir" "$@" || die "cmake configure of $dir failed"
}

build_release() {
  say "configure + build (Release) into build/"
  configure build -DCMAKE_BUILD_TYPE=Release
  cmake --build build -j"$JOBS"
}

# ---- commands -----------------------------------------------------------------------------
cmd_build() {
  setup
  build_release
  ok "built: build/flame"
}

cmd_demo() {
  setup
  build_release
  say "the flamed demo (scripts/demo.sh): Ctrl-C stops it"
  run_job "$ROOT/scripts/demo.sh" "$ROOT/build"
}

cmd_bench() {
  setup --bench
  build_release
  if [[ -x bench/run.sh ]]; then
    run_job bench/run.sh "$@"
  elif [[ -f bench/run.sh ]]; then
    run_job bash bench/run.sh "$@"
  else
    warn "dev.sh: bench/run.sh does not exist yet; nothing to benchmark"
  fi
}

# ---- test stages: each runs in its own subshell with errexit on; the result is recorded ----
TEST_PASSED=0 # ctest totals over every ctest run, for the closing line
TEST_FAILED=0

# Every tracked, or untracked but not ignored, *.c / *.h under SRC_DIRS, NUL-separated.
list_c_sources() {
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    local f
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard -- "${SRC_DIRS[@]}" |
      while IFS= read -r -d '' f; do
        # --cached also lists files deleted from the work tree: skip those.
        if [[ ("$f" == *.c || "$f" == *.h) && -f "$f" ]]; then printf '%s\0' "$f"; fi
      done
  else
    local d existing=()
    for d in "${SRC_DIRS[@]}"; do [[ -d "$d" ]] && existing+=("$d"); done
    ((${#existing[@]})) && find "${existing[@]}" -type f \( -name '*.c' -o -name '*.h' \) -print0
  fi
  return 0
}

stage_format() {
  command -v clang-format >/dev/null || die "clang-format not found (scripts/setup.sh installs it)"
  local files=()
  mapfile -d '' -t files < <(list_c_sources)
  if ((${#files[@]} == 0)); then
    warn "no C sources found to check"
    return 0
  fi
  say "clang-format check of ${#files[@]} files ($(clang-format --version))"
  clang-format --dry-run -Werror "${files[@]}" ||
    die "files not formatted: run  clang-format -i FILE  on the files named above"
  ok "format: ${#files[@]} files clean"
}

# run_ctest DIR ARGS...: ctest (prefixed by the command in CTEST_WRAP, if any) with its
# summary line; its counts go to DIR/ctest.counts for the closing line.
CTEST_WRAP=()
run_ctest() {
  local dir=$1
  shift
  local log="$ROOT/$dir/ctest.log" rc=0
  (cd "$ROOT/$dir" && "${CTEST_WRAP[@]}" ctest --output-on-failure --no-tests=error "$@") 2>&1 |
    tee "$log" || rc=$?
  local line
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1 || true)
  if [[ -n "$line" ]]; then
    local failed total
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
    echo "$((total - failed)) $failed" >"$ROOT/$dir/ctest.counts"
  fi
  # The failing tests' names and their first sanitizer or assertion lines, repeated in the
  # summary: CI keeps only the tail of a long log.
  if ((rc != 0)); then
    {
      sed -n '/^The following tests FAILED:/,$p' "$log" | sed -n '2,$p' | grep -E '^\s+[0-9]+ - ' || true
      grep -m 12 -B1 -E 'error: Failure|\[  ERROR   \]|WARNING: ThreadSanitizer|ERROR: AddressSanitizer|runtime error|\*\*\*Timeout' \
        "$log" || true
    } | sed "s|^|  $dir: |" >"$ROOT/$dir/ctest.failed"
  fi
  return "$rc"
}

stage_asan() {
  say "ASan+UBSan build (RelWithDebInfo, -Werror) into build-asan/"
  configure build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLAME_WERROR=ON \
    -DFLAME_SANITIZE=address
  cmake --build build-asan -j"$JOBS"
  say "ctest in build-asan/"
  run_ctest build-asan -j"$JOBS"
}

stage_tsan() {
  say "TSan build into build-tsan/"
  configure build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLAME_WERROR=ON \
    -DFLAME_SANITIZE=thread
  local n
  n=$(cd build-tsan && ctest -N -L tsan | sed -nE 's/^Total Tests: ([0-9]+).*/\1/p')
  if [[ "${n:-0}" -eq 0 ]]; then
    warn "tsan: SKIPPED: no test carries the label 'tsan' (set_tests_properties(... LABELS tsan))"
    return 0
  fi
  cmake --build build-tsan -j"$JOBS"
  say "ctest -L tsan in build-tsan/ ($n tests)"
  # OpenBLAS's own thread pool is not instrumented and would only produce noise. (This
  # stage runs in a subshell: the export ends with it.)
  export OPENBLAS_NUM_THREADS=1
  # TSan of this toolchain cannot map its shadow memory with high ASLR entropy (newer
  # kernels default to 32 bits); running without randomisation is the standard workaround.
  if [[ $(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0) -gt 28 ]] &&
    setarch "$(uname -m)" -R true 2>/dev/null; then
    CTEST_WRAP=(setarch "$(uname -m)" -R)
  fi
  run_ctest build-tsan -L tsan
}

# ---- fuzz hook ----------------------------------------------------------------------------
# Runs when clang is installed, CMakeLists.txt has the FLAME_FUZZ option and some CMake file
# defines a fuzz_* target: builds build-fuzz/ (clang, ASan+UBSan, FLAME_FUZZ=ON) and runs
# every built fuzz_* executable for FUZZ_SECONDS (default 30) each. Seeds are taken from
# tests/fuzz/corpus/<target>/ when that exists; the growing corpus stays in
# build-fuzz/corpus/<target>/, crash reproducers go to build-fuzz/artifacts/.
# With no fuzz targets it does nothing.
stage_fuzz() {
  if ! command -v clang >/dev/null; then
    warn "fuzz: SKIPPED: clang not installed"
    return 0
  fi
  if ! grep -q 'option(FLAME_FUZZ' CMakeLists.txt; then
    warn "fuzz: SKIPPED: CMakeLists.txt has no FLAME_FUZZ option"
    return 0
  fi
  # Cheap pre-check (any non-comment mention of fuzz_ in a CMake file) before configuring;
  # the configured build's target list is what decides.
  if ! find . \( -name CMakeLists.txt -o -name '*.cmake' \) -not -path './build*' -print0 |
    xargs -0 -r grep -Eq '^[^#]*fuzz_'; then
    warn "fuzz: SKIPPED: no fuzz_* targets defined yet"
    return 0
  fi
  say "fuzz build (clang, ASan+UBSan, FLAME_FUZZ=ON) into build-fuzz/"
  configure build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFLAME_SANITIZE=address -DFLAME_FUZZ=ON
  local targets=()
  # Exactly "... fuzz_name" lines (not fuzz_name.o / .i / .s object targets), once each.
  mapfile -t targets < <(cmake --build build-fuzz --target help |
    sed -nE 's/^\.\.\. (fuzz_[A-Za-z0-9_]+)( .*)?$/\1/p' | sort -u)
  if ((${#targets[@]} == 0)); then
    warn "fuzz: SKIPPED: FLAME_FUZZ=ON defines no fuzz_* targets"
    return 0
  fi
  cmake --build build-fuzz -j"$JOBS" --target "${targets[@]}"
  local secs=${FUZZ_SECONDS:-30} t exe
  mkdir -p build-fuzz/artifacts
  for t in "${targets[@]}"; do
    exe=$(find build-fuzz -type f -name "$t" -perm -u+x | head -n1)
    [[ -n "$exe" ]] || die "fuzz: target $t built but its executable was not found"
    local corpus=("build-fuzz/corpus/$t")
    mkdir -p "${corpus[0]}"
    [[ -d "tests/fuzz/corpus/$t" ]] && corpus+=("tests/fuzz/corpus/$t")
    say "fuzz $t for ${secs}s"
    "$exe" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="build-fuzz/artifacts/$t-" "${corpus[@]}"
  done
  ok "fuzz: ${#targets[@]} targets ran ${secs}s each without a crash"
}

cmd_test() {
  setup
  # Sanitizer settings for every test process; a caller's own settings win.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=0:print_stacktrace=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-print_suppressions=0}
  # tests/tsan.supp: the uninstrumented librdkafka and RocksDB (see the file)
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp}
  rm -f build-asan/ctest.counts build-tsan/ctest.counts build-asan/ctest.failed \
    build-tsan/ctest.failed

  local stage rc results=() failed=0
  for stage in format asan tsan fuzz; do
    # A subshell outside any condition with errexit on, so a stage stops at its first failing
    # command (inside `if` or `||` bash would silently ignore errexit) while the others still
    # run and report.
    set +e
    (
      set -e
      "stage_$stage"
    )
    rc=$?
    set -e
    if ((rc == 0)); then
      results+=("${GREEN}ok${RESET}      $stage")
    else
      results+=("${RED}FAILED${RESET}  $stage (exit $rc)")
      failed=1
    fi
  done

  local f p q ran=0
  for f in build-asan/ctest.counts build-tsan/ctest.counts; do
    if [[ -f "$f" ]]; then
      read -r p q <"$f"
      TEST_PASSED=$((TEST_PASSED + p))
      TEST_FAILED=$((TEST_FAILED + q))
      ran=1
    fi
  done
  echo
  say "summary"
  printf '  %s\n' "${results[@]}"
  # The totals of every ctest run above (ASan and TSan), when any ran.
  ((ran == 0)) || echo "tests: $TEST_PASSED passed, $TEST_FAILED failed"
  cat build-asan/ctest.failed build-tsan/ctest.failed 2>/dev/null || true
  ((failed == 0)) || die "test failed"
}

# ---- main ---------------------------------------------------------------------------------
cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
  demo) cmd_demo "$@" ;;
  test) cmd_test "$@" ;;
  build) cmd_build "$@" ;;
  bench) cmd_bench "$@" ;;
  -h | --help | help)
    usage
    ;;
  "")
    usage >&2
    exit 2
    ;;
  *)
    echo "dev.sh: unknown command '$cmd'" >&2
    usage >&2
    exit 2
    ;;
esac
