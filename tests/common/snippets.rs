//! Snippet runner shared by the Lua library tests: `FCALL e 0 <lua>` compiles `<lua>` at call time (loadstring)
//! with `hex` (bytes as hex) and `show` (every returned value, with its count, nils and table contents in `pairs`
//! order) in scope, in the built-in and in rfunc, and compares the replies.

use super::twin::normalize;
use super::{Server, Twin};

/// The snippet runner: `FCALL e 0 <lua>` runs `<lua>` with `hex` and `show` in scope.
pub const RUNNER: &str = r##"#!lua name=snip
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
local function show1(v, depth, seen)
  local t = type(v)
  if t == 'string' then
    if string.find(v, '[^%w%p ]') or #v > 64 then return 'x"' .. hex(string.sub(v, 1, 200)) .. '"#' .. #v end
    return '"' .. v .. '"'
  elseif t == 'number' then
    return string.format('%.17g', v)
  elseif t == 'table' then
    if seen[v] then return '<cycle>' end
    if depth > 40 then return '<deep>' end
    seen[v] = true
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = show1(k, depth + 1, seen) .. '=' .. show1(x, depth + 1, seen)
      if #parts > 100 then parts[#parts + 1] = '...' break end
    end
    seen[v] = nil
    return '{' .. table.concat(parts, ',') .. '}'
  elseif t == 'boolean' then
    return tostring(v)
  end
  return t
end
local function show(...)
  local n = select('#', ...)
  local out = {}
  for i = 1, n do out[i] = show1((select(i, ...)), 0, {}) end
  return n .. ':' .. table.concat(out, ' ')
end
server.register_function('e', function(keys, args)
  local f, e = loadstring('local hex, show = ... ' .. args[1])
  if not f then return {err = 'SNIPPET ' .. e} end
  return f(hex, show)
end)
"##;

/// Runs every snippet through both engines and records differences.
pub fn check_snippets(t: &mut Twin, snippets: &[String]) {
    for s in snippets {
        let args: [&[u8]; 4] = [b"FCALL", b"e", b"0", s.as_bytes()];
        let (a, b) = t.both(&args);
        assert!(
            !a.starts_with(b"-SNIPPET"),
            "snippet does not compile: {s}\n{}",
            String::from_utf8_lossy(&a)
        );
        if norm(&a) != norm(&b) {
            t.failures.push(format!(
                "{s}\n    built-in: {:?}\n    rfunc:    {:?}",
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b)
            ));
        }
    }
}

/// `normalize`, plus the function name rfunc keeps in the suffix of errors raised in `loadstring` chunks.
pub fn norm(raw: &[u8]) -> Vec<u8> {
    let n = normalize(raw);
    let s = String::from_utf8_lossy(&n).replace(" script: e, on ", " script: on ");
    s.into_bytes()
}

pub fn twin_with_runner(server: &Server) -> Twin {
    let mut t = Twin::new(server.conn());
    t.load(RUNNER);
    t
}
