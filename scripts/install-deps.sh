#!/usr/bin/env bash
# Installs what Tidecast needs on a fresh Debian/Ubuntu machine that has only
# the Rust toolchain. Idempotent: installs only what is missing.
#   install-deps.sh run    what `make run` needs
#   install-deps.sh test   plus the test peers (ffmpeg, srt-tools, chromium, stunnel,
#                          hls.js, schemathesis, moto)
#   install-deps.sh fuzz   plus cargo-fuzz
#   install-deps.sh bench  the peers bench/compare.sh measures against:
#                          nginx with libnginx-mod-rtmp (Debian), plus ffmpeg,
#                          and xiu (crates.io, built into bench/.peers: about
#                          25 minutes on 2 cores) only when BENCH_PEERS names it
set -euo pipefail
what="${1:-run}"

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "installing: ${missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# What building Tidecast needs: FFmpeg's libraries and headers (the
# transcoder links them through ffmpeg-next) and clang for their bindings.
BUILD_PKGS=(ca-certificates pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavfilter-dev
    libavdevice-dev libavutil-dev libswscale-dev libswresample-dev)

case "$what" in
    run)
        apt_install "${BUILD_PKGS[@]}"
        ;;
    test)
        apt_install "${BUILD_PKGS[@]}" ffmpeg srt-tools chromium stunnel4
        command -v npm >/dev/null || apt_install nodejs npm
        root="$(cd "$(dirname "$0")/.." && pwd)"
        if [ ! -d "$root/tests/browser/node_modules/playwright-core" ] || [ ! -d "$root/tests/browser/node_modules/dashjs" ]; then
            echo "installing browser test packages (hls.js, dash.js, playwright-core)"
            npm ci --prefix "$root/tests/browser" --no-audit --no-fund --silent
        fi
        # schemathesis (PyPI) checks the admin API against its OpenAPI document.
        if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
            apt_install python3 python3-venv
        fi
        venv="$root/tests/contract/.venv"
        if [ ! -x "$venv/bin/schemathesis" ]; then
            echo "installing schemathesis"
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/contract/requirements.txt"
        fi
        # moto (PyPI) is the S3-compatible server the recording upload test
        # runs on loopback.
        venv="$root/tests/s3/.venv"
        if [ ! -x "$venv/bin/moto_server" ]; then
            echo "installing moto (a local S3 server for the tests)"
            python3 -m venv "$venv"
            "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/s3/requirements.txt"
        fi
        ;;
    fuzz)
        if ! cargo fuzz --version >/dev/null 2>&1; then
            echo "installing cargo-fuzz"
            cargo install cargo-fuzz --locked --quiet
        fi
        ;;
    bench)
        # libopus-dev: xiu links Opus (audiopus_sys) for its WebRTC side.
        apt_install "${BUILD_PKGS[@]}" ffmpeg nginx libnginx-mod-rtmp python3 libopus-dev curl
        root="$(cd "$(dirname "$0")/.." && pwd)"
        # Pinned: the results in docs/benchmarks.md name this version.
        # Built only for a comparison that includes it (bench/compare.sh
        # passes the servers it compares in BENCH_PEERS).
        case " ${BENCH_PEERS:-} " in
            *" xiu "*) want_xiu=1 ;;
            *) want_xiu=0 ;;
        esac
        if [ "$want_xiu" = 1 ] && [ ! -x "$root/bench/.peers/bin/xiu" ]; then
            echo "building xiu 0.13.0 from crates.io (a few minutes)"
            cargo install xiu --version 0.13.0 --locked --quiet --root "$root/bench/.peers"
        fi
        ;;
    *)
        echo "usage: $0 run|test|fuzz|bench" >&2
        exit 2
        ;;
esac
