#!/usr/bin/env bash
# scripts/setup.sh: installs every Debian package flamed needs to build, test and run.
#
# Idempotent: asks dpkg-query which packages are missing and runs apt-get (update + install)
# only when something is. Works as root or through sudo; never prompts.
#
#   ./scripts/setup.sh           build, test and operations packages (what CI needs)
#   ./scripts/setup.sh --bench   also python3-torch, python3-numpy and hyperfine, for the
#                                reference benchmarks in bench/ (CI never needs them)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config # toolchain
  clang clang-format               # fuzzing build and the format check
  libclang-rt-14-dev               # libFuzzer and sanitizer runtimes for clang
  libopenblas-dev zlib1g-dev       # model/ (GEMM), common/ (CRC-32, checkpoints)
  libcmocka-dev                    # tests
  librdkafka-dev libuv1-dev        # stream/, daemon/ loop
  librocksdb-dev                   # state/
  libsystemd-dev                   # sd_notify
  libcjson-dev libinih-dev         # events and API JSON, config files
  libhttp-parser-dev               # HTTP/1.1 parsing
  kcat wrk                         # operations and load tests
  chromium                         # the status page's test, in a real headless browser
  systemd                          # systemd-analyze verify of the unit
  python3                          # docs/SETTINGS.md from the config table
)
BENCH_PACKAGES=(python3-torch python3-numpy hyperfine)

usage() {
  sed -n '2,9s/^# \{0,1\}//p' "$0"
}

want=("${PACKAGES[@]}")
for arg in "$@"; do
  case "$arg" in
    --bench) want+=("${BENCH_PACKAGES[@]}") ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "setup.sh: unknown argument '$arg' (try --help)" >&2
      exit 2
      ;;
  esac
done

# A package counts as present only when dpkg says it is fully installed ("ii").
missing=()
for pkg in "${want[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: all ${#want[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
  # Without a terminal (CI) sudo must not wait for a password that will never come.
  [[ -t 0 ]] || SUDO+=(-n)
else
  echo "setup.sh: missing packages: ${missing[*]}" >&2
  echo "setup.sh: need root or sudo to install them; run as root, install sudo, or install" >&2
  echo "          them yourself: apt-get install ${missing[*]}" >&2
  exit 1
fi

echo "setup.sh: installing ${missing[*]}"
# env: sudo resets the environment, so DEBIAN_FRONTEND is passed on the command line.
# Lock::Timeout waits for another apt/dpkg (e.g. unattended-upgrades) instead of failing;
# Use-Pty=0 keeps dpkg's progress bar out of logs.
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300
  -o Dpkg::Use-Pty=0)
"${APT[@]}" update
"${APT[@]}" install -y --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
