//! Builds the patched Lua 5.1.5 in `lua-5.1.5/` as a static library.
//!
//! Flags mirror what mlua's vendored build (lua-src 551.0.2) uses for Lua 5.1,
//! except that `LUA_USE_LINUX` is replaced by `LUA_USE_POSIX`: `LUA_USE_LINUX`
//! also turns on `LUA_USE_DLOPEN` (needs `-ldl`, lets `require` load C
//! libraries) and `LUA_USE_READLINE` (only for the stand-alone interpreter).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest_dir.join("lua-5.1.5");
    let target = env::var("TARGET").unwrap();
    println!("cargo:rerun-if-changed=lua-5.1.5");
    println!("cargo:rerun-if-changed=build.rs");

    let mut files: Vec<PathBuf> = fs::read_dir(&src)
        .expect("read lua-5.1.5")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            // stand-alone interpreter / compiler, in case someone adds them
            !matches!(name.as_ref(), "lua.c" | "luac.c" | "print.c")
        })
        .collect();
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let mut build = cc::Build::new();
    if target.contains("windows") {
        build.define("LUA_USE_WINDOWS", None);
    } else {
        build.define("LUA_USE_POSIX", None);
    }
    // As lua-src: API checks (assert) in debug builds of the build script.
    if cfg!(debug_assertions) {
        build.define("LUA_USE_APICHECK", None);
    }
    build
        .include(&src)
        .files(&files)
        .warnings(false)
        .flag_if_supported("-fno-common")
        // The server's own build: -O2. Position-independent code for the module, but nothing in it may be
        // interposed (hidden visibility, no semantic interposition), so calls within Lua stay direct and can be
        // inlined as in the server's static build.
        .opt_level(2)
        .flag_if_supported("-fvisibility=hidden")
        .flag_if_supported("-fno-semantic-interposition")
        .compile("lua5.1-rfunc");

    // `cc` prints rustc-link-lib=static=lua5.1-rfunc and the search path.
    println!("cargo:include={}", src.display());
}
