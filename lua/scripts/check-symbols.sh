#!/usr/bin/env bash
# Builds examples/symcheck.rs (a cdylib linked like librfunc.so: mlua over
# rfunc-lua-sys) and checks that no Lua symbol is exported from it or left
# undefined in it: either would let the dynamic linker bind it to
# valkey-server's own Lua (the server exports its symbols with -rdynamic).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
profile="${1:-debug}"
flag=""; [ "$profile" = release ] && flag="--release"
cargo build $flag --example symcheck >&2
so="$target/$profile/examples/libsymcheck.so"
pat='(^|[^A-Za-z_])(lua|luaL|luaopen|luaI|luaV|luaD|luaH|luaS|luaG|luaC|luaM|luaX|luaY|luaK|luaF|luaT|luaO|luaU|luaZ|luaE|luaP|luaA|rfunc_lua)_'
echo "== exported (nm -D --defined-only) =="; nm -D --defined-only "$so"
echo "== undefined (nm -D --undefined-only) =="; nm -D --undefined-only "$so"
bad=0
if nm -D --defined-only "$so" | grep -E "$pat"; then echo "FAIL: Lua symbols exported" >&2; bad=1; fi
if nm -D --undefined-only "$so" | grep -E "$pat"; then echo "FAIL: Lua symbols undefined" >&2; bad=1; fi
# The Lua code is in the object (local symbols), with no PLT/GOT relocation
# against a Lua name.
n=$(nm "$so" | grep -cE ' [tT] lua_pushnil$' || true)
[ "$n" -ge 1 ] || { echo "FAIL: lua_pushnil not linked in" >&2; bad=1; }
if readelf -rW "$so" | grep -E "$pat"; then echo "FAIL: dynamic relocations against Lua symbols" >&2; bad=1; fi
[ $bad = 0 ] && echo "OK: no Lua symbol exported, imported or relocated dynamically ($so)"
exit $bad
