//! `pairs()` order over the globals and the library tables, built-in vs rfunc (lua.md §0–§1, reference-engine
//! §3 "State construction"). Lua's iteration order depends on the exact sequence of insertions (keys set to
//! nil stay behind as dead nodes), on table sizes at creation and on the string hash, so it only matches if rfunc
//! builds its state exactly the way the server does. Every list below is the UNSORTED `pairs` order.
//!
//! Only call-time tables and the load-time `server` table are reachable from function code: a library body sees
//! just `server`/`redis` (no `pairs`, no `_G`), but a closure can keep the load-time `server` as an upvalue and
//! iterate it at call time, so that table is compared too.
//!
//! valkey-8.0.1's built-in still exposes `getfenv`, `setfenv` and `newproxy`, which rfunc removes on purpose
//! (SPEC rule 2). rfunc keeps their keys as dead nodes, so every other global keeps the built-in's position:
//! on 8.0 the `_G` lists are compared with those three names filtered out.

mod common;

use common::{Server, Twin};

/// Tables read from the real globals at call time.
const TABLES: &[&str] = &[
    "_G",
    "server",
    "redis",
    "string",
    "table",
    "math",
    "os",
    "coroutine",
    "cjson",
    "cmsgpack",
    "bit",
    "struct",
];

/// Returns the `pairs` key order of a table, selected by `args[1]`; `args[2] == 'filtered'` drops the three
/// 8.0-only builtins rfunc never exposes.
const LIB: &str = r#"#!lua name=globals_order
local load_server = server
local load_redis = redis
local function keys(t, filtered)
  local out = {}
  for k in pairs(t) do
    local s = tostring(k)
    if not (filtered and (s == 'getfenv' or s == 'setfenv' or s == 'newproxy')) then
      out[#out + 1] = s
    end
  end
  return table.concat(out, ' ')
end
local function pick(name)
  if name == 'string_meta' then return getmetatable('') end
  if name == 'globals_meta' then return getmetatable(_G) end
  if name == 'load_server' then return load_server end
  if name == 'load_redis' then return load_redis end
  if name == 'load_server_meta' then return getmetatable(load_server) end
  if name == 'cjson_new' then return cjson.new() end
  return _G[name]
end
server.register_function('order', function(_, args)
  return keys(pick(args[1]), args[2] == 'filtered')
end)
server.register_function('order_next', function(_, args)
  -- The same walk with `next` directly, and `load_server == load_redis` (one table under two names).
  local t, out, k = pick(args[1]), {}, nil
  local filtered = args[2] == 'filtered'
  repeat
    k = next(t, k)
    local s = tostring(k)
    if k ~= nil and not (filtered and (s == 'getfenv' or s == 'setfenv' or s == 'newproxy')) then
      out[#out + 1] = s
    end
  until k == nil
  return {table.concat(out, ' '), tostring(rawequal(load_server, load_redis))}
end)
server.register_function('order_json', function(_, args)
  -- The order a serialiser walking the table would see: cjson of the key list, cmsgpack of a key -> position
  -- map (a new table filled in pairs order, so its own layout depends on that order too).
  local t, list, pos = pick(args[1]), {}, {}
  for k in pairs(t) do
    list[#list + 1] = tostring(k)
    pos[tostring(k)] = #list
  end
  return {cjson.encode(list), cmsgpack.pack(pos)}
end)
"#;

fn names() -> Vec<&'static str> {
    let mut v = TABLES.to_vec();
    v.extend([
        "string_meta",
        "globals_meta",
        "load_server",
        "load_redis",
        "load_server_meta",
        "cjson_new",
    ]);
    v
}

fn check_all(t: &mut Twin, exact_globals: bool) {
    for name in names() {
        let filtered = !exact_globals && name == "_G";
        let mode = if filtered { "filtered" } else { "all" };
        t.check(&["FCALL", "order", "0", name, mode]);
        t.check(&["FCALL", "order_next", "0", name, mode]);
        if !filtered {
            t.check(&["FCALL", "order_json", "0", name]);
        }
    }
}

#[test]
fn pairs_order_matches_builtin() {
    let server = Server::shared();
    let version = server.version();
    // 8.0 has getfenv/setfenv/newproxy in its globals; rfunc removes them (SPEC rule 2).
    let exact_globals = version >= (8, 1, 0);
    if !exact_globals {
        eprintln!(
            "NOTE: valkey {}.{}.{} exposes getfenv/setfenv/newproxy, which rfunc removes (SPEC rule 2): _G is \
             compared without those three names",
            version.0, version.1, version.2
        );
    }
    let mut t = Twin::new(server.conn());
    t.load(LIB);
    check_all(&mut t, exact_globals);
    // A fresh state (FUNCTION FLUSH re-creates the VM) is built the same way.
    t.flush();
    t.load(LIB);
    check_all(&mut t, exact_globals);
    // RESP3 replies too (same tables, other encoding of the reply).
    let mut t3 = Twin::new(server.conn3());
    check_all(&mut t3, exact_globals);
    t.assert_clean();
    t3.assert_clean();
}

/// On 8.0 the filtered `_G` list must be exactly the built-in's list minus the three removed names.
#[test]
fn globals_without_removed_builtins() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.load(LIB);
    let rfunc = t.cmd(&["RFUNC.FCALL", "order", "0", "_G", "all"]).as_str();
    for removed in [
        "getfenv", "setfenv", "newproxy", "print", "dofile", "loadfile", "debug",
    ] {
        assert!(
            !rfunc.split(' ').any(|k| k == removed),
            "rfunc's globals contain {removed}: {rfunc}"
        );
    }
    t.check(&["FCALL", "order", "0", "_G", "filtered"]);
    t.assert_clean();
}
