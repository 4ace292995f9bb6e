//! `cjson` in function code: the built-in (FUNCTION LOAD / FCALL) and rfunc (RFUNC.LOAD / RFUNC.FCALL) must
//! give byte-identical replies: encoded text, decoded values, configuration getters/setters and every error
//! text (with Lua's position prefix and the C function's name), on the same server.
//!
//! Values are compared through a dump written in Lua (`D`): type-tagged, numbers with 17 significant digits,
//! strings `%q`-quoted, tables in `pairs` order (so key order is compared too). `P(f, ...)` runs `f` under
//! pcall and dumps every result, so errors come back as data; functions raising directly are compared as
//! error replies.

mod common;

use common::resp::parse;
use common::twin::normalize;
use common::{Server, Twin};

/// Helpers every test library starts with (all on line 2, so case line numbers are stable).
const PRELUDE: &str = "local D; D = function(v) local t = type(v) if t == 'table' then local p = {} for k, x in pairs(v) do p[#p + 1] = D(k) .. '=' .. D(x) end return '{' .. table.concat(p, ',') .. '}' elseif t == 'string' then return string.format('%q', v) elseif t == 'number' then return 'n' .. string.format('%.17g', v) elseif v == cjson.null then return 'NULL' elseif t == 'userdata' or t == 'function' or t == 'thread' then return t else return tostring(v) end end \
local function pack(...) return {n = select('#', ...), ...} end \
local function P(f, ...) local r = pack(pcall(f, ...)) local o = {} for i = 1, r.n do o[i] = D(r[i]) end return table.concat(o, ' ') end \
local function DA(...) local r = pack(...) local o = {} for i = 1, r.n do o[i] = D(r[i]) end return table.concat(o, ' ') end";

/// A library `name` with one function `<prefix><i>` per body (each body on its own lines).
fn library(name: &str, prefix: &str, bodies: &[&str]) -> String {
    let mut code = format!("#!lua name={name}\n{}\n", PRELUDE.replace('\n', " "));
    for (i, body) in bodies.iter().enumerate() {
        code.push_str(&format!(
            "server.register_function('{prefix}{i}', function(keys, args)\n{body}\nend)\n"
        ));
    }
    code
}

/// Loads `bodies` as one library on both sides and compares the reply of each function.
fn run_cases(name: &str, bodies: &[&str]) {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.load(&library(name, name, bodies));
    for i in 0..bodies.len() {
        t.check(&["FCALL", &format!("{name}{i}"), "0"]);
    }
    t.assert_clean();
}

/// Compares one FCALL with binary arguments.
fn check_bytes(t: &mut Twin, args: &[&[u8]]) {
    let (a, b) = t.both(args);
    if normalize(&a) != normalize(&b) {
        t.failures.push(format!(
            "{:?}\n    built-in: {:?}\n    rfunc:    {:?}",
            args.iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b)
        ));
    }
}

// ----------------------------------------------------------------------------------------------------------
// The table itself.

const TABLE: &[&str] = &[
    "local t = {} for k in pairs(cjson) do t[#t + 1] = k end return t",
    "local t = {} for k in pairs(cjson.new()) do t[#t + 1] = k end return t",
    "local t = {} for k, v in pairs(cjson) do t[#t + 1] = k .. ':' .. type(v) end table.sort(t) return t",
    "return {cjson._NAME, cjson._VERSION, type(cjson.null), tostring(cjson.null)}",
    "return {type(cjson.decode_array_with_array_mt), type(cjson.array_mt), type(cjson.empty_array), type(cjson.safe)}",
    "return getmetatable(cjson)",
    "return tostring(cjson.null == cjson.new().null)",
    "return tostring(rawequal(cjson.encode, cjson.new().encode))",
    "return tostring(cjson.new() == cjson)",
    "local c = cjson.new() c.x = 1 return c.x",
    "cjson.x = 1",
    "cjson.encode = nil",
    "return P(function() cjson.null = 1 end)",
    "local c = cjson.new() return {c._NAME, c._VERSION, DA(c.encode_sparse_array()), DA(c.encode_max_depth()), DA(c.decode_max_depth()), DA(c.encode_number_precision()), DA(c.encode_keep_buffer()), DA(c.encode_invalid_numbers()), DA(c.decode_invalid_numbers())}",
    "local c = cjson.new(1, 2, 3) return DA(c.encode_number_precision())",
    "local c = cjson.new().new().new() return c.encode({1})",
    "return DA(cjson.new.new)",
    "return DA(cjson.encode_sparse_array(), cjson.encode_max_depth(), cjson.decode_max_depth(), cjson.encode_number_precision(), cjson.encode_keep_buffer(), cjson.encode_invalid_numbers(), cjson.decode_invalid_numbers())",
];

#[test]
fn the_cjson_table_matches_the_builtin() {
    run_cases("tab", TABLE);
}

// ----------------------------------------------------------------------------------------------------------
// Encoding.

const ENCODE: &[&str] = &[
    "return cjson.encode({1, 2.5, 0.1, 1/3, 1e20, 123456789012345678, -0.0, 3.14159265358979})",
    "return cjson.encode({})",
    "return cjson.encode(nil)",
    "return cjson.encode(true)",
    "return cjson.encode(false)",
    "return cjson.encode('str')",
    "return cjson.encode('')",
    "return cjson.encode(0)",
    "return cjson.encode(-1)",
    "return cjson.encode({1e308, -1e308, 5e-324, 2.2250738585072014e-308, 2^53, 2^63, 2^64, -2^63})",
    "return cjson.encode({0.1 + 0.2, 100, 1e15, 1e14, 1e16, 123456789012345, 12345678901234, 99999999999999, 999999999999999})",
    "return cjson.encode({1e-5, 1e-4, 0.0001234, 1.5e-7, 12345.6789, -0.5, 1e21, 1e100, 7, 7.0})",
    "return cjson.encode(-0.0)",
    "return cjson.encode(1/0)",
    "return cjson.encode(-1/0)",
    "return cjson.encode(0/0)",
    "return cjson.encode({a = 0/0})",
    "return cjson.encode({[0/0 == 0/0 and 1 or 2] = 1/0})",
    "return cjson.encode({1, 2, a = 3})",
    "return cjson.encode({[1] = 1, [2] = 2, [4] = 4})",
    "return cjson.encode({[10] = 'x'})",
    "return cjson.encode({[11] = 'x'})",
    "return cjson.encode({[11] = 'x', [1] = 1, [2] = 2, [3] = 3, [4] = 4, [5] = 5})",
    "return cjson.encode({[11] = 'x', [1] = 1, [2] = 2, [3] = 3, [4] = 4, [5] = 5, [6] = 6})",
    "return cjson.encode({nil, 2})",
    "return cjson.encode({nil, nil, 3})",
    "return cjson.encode({cjson.null, 1})",
    "return cjson.encode(cjson.null)",
    "return cjson.encode({[1.5] = 1})",
    "return cjson.encode({[-1] = 1})",
    "return cjson.encode({[0] = 1})",
    "return cjson.encode({[0] = 1, [1] = 2})",
    "return cjson.encode({[1] = 1, [1.5] = 2})",
    "return cjson.encode({[2^31] = 1})",
    "return cjson.encode({[2^31 - 1] = 1})",
    "return cjson.encode({[1] = 1, [2^31] = 2})",
    "return cjson.encode({[2^31] = 2, [1] = 1})",
    "return cjson.encode({[2^40] = 1, [2] = 2, [3] = 3})",
    "return cjson.encode({[2^53] = 1})",
    "return cjson.encode({[1/0] = 1})",
    "return cjson.encode({[-1/0] = 1})",
    "return cjson.encode({[1e20] = 1, [0.1] = 2, [-0.5] = 3})",
    "return cjson.encode({[true] = 1})",
    "return cjson.encode({[false] = 1})",
    "return cjson.encode({[{}] = 1})",
    "return cjson.encode({[cjson.encode] = 1})",
    "return cjson.encode({[cjson.null] = 1})",
    "return cjson.encode({[coroutine.create(function() end)] = 1})",
    "return cjson.encode(cjson.encode)",
    "return cjson.encode({f = cjson.decode})",
    "return cjson.encode({1, 2, cjson.new})",
    "return cjson.encode(coroutine.create(function() end))",
    "return cjson.encode('a\"b\\\\c/d\\n\\r\\t\\1\\127\\128\\255')",
    "local t = {} for i = 0, 255 do t[#t + 1] = string.char(i) end return cjson.encode(table.concat(t))",
    "return cjson.encode('a\\0b')",
    "return cjson.encode({['a\"b/c'] = 'x\\0y', ['\\1'] = '\\127'})",
    "return cjson.encode({'\\b\\f', '\\226\\130\\172', '\\240\\159\\152\\128'})",
    "return cjson.encode({z = 1, y = 2, x = 3, a = 4, b = 5})",
    "local t = {} for i = 1, 60 do t['k' .. i] = i end return cjson.encode(t)",
    "local t = {} for i = 1, 60 do t[i * 1.5] = i end return cjson.encode(t)",
    "return cjson.encode({1, 2, 3, x = 1, [10] = 5})",
    "return cjson.encode({a = {b = {c = {1, 2, {d = true}}}}, e = {}, f = {{}, {{}}}})",
    "local t = {} t[1] = t return cjson.encode(t)",
    "local t = {} t.a = t return cjson.encode(t)",
    "local t = {} t.a = {b = {t}} return cjson.encode(t)",
    "local t = {} for i = 1, 1000 do t[i] = i end return cjson.encode(t)",
    "local t = {} for i = 1, 1000 do t[i] = {i, tostring(i)} end return #cjson.encode(t)",
    "return cjson.encode({true, false, 'x', 1, {}, cjson.null})",
    "return cjson.encode(setmetatable({}, {__index = function() return 1 end}))",
    "return cjson.encode(setmetatable({1, 2}, {__len = function() return 5 end}))",
    "return cjson.encode(setmetatable({a = 1}, {__pairs = function() return next, {b = 2}, nil end}))",
    "return cjson.encode('12')",
    "return cjson.encode(12)",
    "return cjson.encode({'1', 1})",
    "return cjson.encode({['1'] = 1, [1] = 2})",
    "return #cjson.encode(string.rep('\\1', 1000000))",
    "return #cjson.encode(string.rep('a', 10000000))",
    "return cjson.encode(string.rep('\\255\\0\"', 5))",
];

#[test]
fn encode_matches_the_builtin() {
    run_cases("enc", ENCODE);
}

/// Bodies that call the encoder through pcall / other names, and wrong argument counts.
const NAMING: &[&str] = &[
    "return cjson.encode()",
    "return cjson.encode(1, 2)",
    "return cjson.encode(nil, nil)",
    "return cjson.decode()",
    "return cjson.decode('1', '2')",
    "return cjson.decode(nil)",
    "return cjson.decode({})",
    "return cjson.decode(true)",
    "return cjson.decode(cjson.null)",
    "return P(cjson.encode)",
    "return P(cjson.encode, 1, 2)",
    "return P(cjson.decode)",
    "return P(cjson.decode, {})",
    "return P(cjson.encode, 1/0)",
    "return P(cjson.decode, '[')",
    "local e = cjson.encode return e()",
    "local e = cjson.encode return e(1/0)",
    "local t = {f = cjson.decode} return t.f()",
    "return cjson['encode']()",
    "return cjson:encode()",
    "return cjson:encode(1)",
    "return cjson:decode(1)",
    "return cjson:encode_max_depth(1)",
    "return cjson:encode_sparse_array(1, 2, 3)",
    "return P(function() return cjson.encode() end)",
    "return P(function() return cjson.encode({[{}] = 1}) end)",
    "return P(function() return cjson.decode('{1}') end)",
    "return P(cjson.encode_max_depth, 0)",
    "return P(cjson.encode_number_precision, 1, 2)",
    "return cjson.encode_number_precision(1, 2)",
    "return cjson.encode_sparse_array(1, 2, 3, 4)",
    "return cjson.encode_keep_buffer(true, true)",
    "return cjson.decode_invalid_numbers(true, true)",
    "return cjson.encode_invalid_numbers(true, true)",
    "return cjson.decode_max_depth(1, 1)",
    "return select('#', cjson.encode_sparse_array())",
    "return coroutine.wrap(function() return cjson.encode(1/0) end)()",
    "return {coroutine.resume(coroutine.create(function() return cjson.decode('x') end))}",
    "return {xpcall(function() return cjson.encode(1, 2) end, function(m) return 'H:' .. m end)}",
];

#[test]
fn errors_name_the_function_like_the_builtin() {
    run_cases("nam", NAMING);
}

// ----------------------------------------------------------------------------------------------------------
// Configuration.

const CONFIG: &[&str] = &[
    "local c = cjson.new() local o = {} for p = 1, 14 do c.encode_number_precision(p) o[p] = c.encode({1/3, 123456.789, 1e20, 0.1, -2.5, 2^53, 100, 1e-7}) end return o",
    "local c = cjson.new() return DA(c.encode_number_precision(3), c.encode(1/3), cjson.encode(1/3))",
    "local c = cjson.new() return P(c.encode_number_precision, 0)",
    "local c = cjson.new() return P(c.encode_number_precision, 15)",
    "local c = cjson.new() return DA(pcall(c.encode_number_precision, 'x'), c.encode_number_precision())",
    "local c = cjson.new() return P(c.encode_number_precision, {})",
    "local c = cjson.new() return P(c.encode_number_precision, true)",
    "local c = cjson.new() return P(c.encode_number_precision, '7')",
    "local c = cjson.new() return P(c.encode_number_precision, ' 7 ')",
    "local c = cjson.new() return P(c.encode_number_precision, '0x5')",
    "local c = cjson.new() return P(c.encode_number_precision, 7.9)",
    "local c = cjson.new() return P(c.encode_number_precision, -0.5)",
    "local c = cjson.new() return P(c.encode_number_precision, 2^32 + 5)",
    "local c = cjson.new() return P(c.encode_number_precision, nil)",
    "local c = cjson.new() return P(c.encode_number_precision, 0/0)",
    "local c = cjson.new() return P(c.encode_number_precision, 1/0)",
    "local c = cjson.new() return DA(c.encode_number_precision(1), c.encode({1/3, 15, 0.05, 99}))",
    "local c = cjson.new() return P(c.encode_max_depth, 0)",
    "local c = cjson.new() return P(c.encode_max_depth, -1)",
    "local c = cjson.new() return P(c.encode_max_depth, 2^31)",
    "local c = cjson.new() return P(c.encode_max_depth, 2^31 - 1)",
    "local c = cjson.new() return P(c.encode_max_depth, 2^32 + 5)",
    "local c = cjson.new() return P(c.encode_max_depth, 2^63)",
    "local c = cjson.new() return P(c.encode_max_depth, '10')",
    "local c = cjson.new() return P(c.encode_max_depth, 1.5)",
    "local c = cjson.new() c.encode_max_depth(2) return DA(pcall(c.encode, {{{1}}}), pcall(c.encode, {{1}}), pcall(c.encode, {a = {b = 1}}), pcall(c.encode, {a = {b = {}}}))",
    "local c = cjson.new() c.encode_max_depth(1) return DA(pcall(c.encode, {}), pcall(c.encode, {{}}), pcall(c.encode, 1))",
    "local c = cjson.new() return P(c.decode_max_depth, 0)",
    "local c = cjson.new() return P(c.decode_max_depth, 'x')",
    "local c = cjson.new() return P(c.decode_max_depth, 2^31 + 7)",
    "local c = cjson.new() c.decode_max_depth(2) return DA(pcall(c.decode, '[[[1]]]'), pcall(c.decode, '[[1]]'), pcall(c.decode, '{\"a\":{\"b\":{}}}'), pcall(c.decode, '  [ [ {} ] ]'))",
    "local c = cjson.new() c.decode_max_depth(1) return DA(pcall(c.decode, '[]'), pcall(c.decode, '[[]]'), pcall(c.decode, '{\"a\":[]}'), pcall(c.decode, '1'))",
    "local c = cjson.new() return DA(c.encode_sparse_array(true), c.encode({[1] = 1, [20] = 2}))",
    "local c = cjson.new() return DA(c.encode_sparse_array(false, 0), c.encode({[30] = 1}))",
    "local c = cjson.new() return DA(c.encode_sparse_array(false, 1), pcall(c.encode, {[1] = 1, [3] = 3}), pcall(c.encode, {[1] = 1, [11] = 3}), pcall(c.encode, {[1] = 1, [2] = 2, [12] = 3}))",
    "local c = cjson.new() return DA(c.encode_sparse_array(false, 3, 0), pcall(c.encode, {[1] = 1, [3] = 3}), pcall(c.encode, {[1] = 1, [4] = 4}), pcall(c.encode, {[2] = 1}))",
    "local c = cjson.new() return DA(c.encode_sparse_array(nil, nil, 100), pcall(c.encode, {[100] = 1}), pcall(c.encode, {[101] = 1}))",
    "local c = cjson.new() return DA(c.encode_sparse_array(false, 2^31 - 1, 0), pcall(c.encode, {1, 2}), pcall(c.encode, {1, 2, 3}), pcall(c.encode, {1}))",
    "local c = cjson.new() return DA(c.encode_sparse_array('on'), c.encode_sparse_array('off'), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, 'x'), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, true, -1), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, true, 5, 'a'), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, true, 5, -3), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, 1), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, {}), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, 'null'), c.encode_sparse_array())",
    "local c = cjson.new() return DA(pcall(c.encode_sparse_array, false, 1.5, 2^32 + 3), c.encode_sparse_array())",
    "local c = cjson.new() return DA(c.encode_keep_buffer(false), c.encode({1, 'a'}), c.encode_keep_buffer(), c.encode_keep_buffer('on'), c.encode({2}), c.encode_keep_buffer(true), c.encode({3}))",
    "local c = cjson.new() c.encode_keep_buffer(false) return DA(pcall(c.encode, {f = c.new}), c.encode({x = 1}))",
    "local c = cjson.new() return DA(pcall(c.encode_keep_buffer, 1), pcall(c.encode_keep_buffer, 'null'), pcall(c.encode_keep_buffer, {}), c.encode_keep_buffer())",
    "local c = cjson.new() return DA(c.encode_invalid_numbers(true), c.encode({1/0, -1/0, 0/0, 1}), c.encode({[1/0] = 1}), c.encode({[-1/0] = 1}))",
    "local c = cjson.new() return DA(c.encode_invalid_numbers('null'), c.encode({1/0, -1/0, 0/0, 1}), c.encode({[1/0] = 1}), c.encode_invalid_numbers())",
    "local c = cjson.new() return DA(c.encode_invalid_numbers('on'), c.encode_invalid_numbers('off'), pcall(c.encode, 1/0), c.encode_invalid_numbers(false))",
    "local c = cjson.new() return DA(pcall(c.encode_invalid_numbers, 'x'), pcall(c.encode_invalid_numbers, 1), pcall(c.encode_invalid_numbers, 2), pcall(c.encode_invalid_numbers, {}), c.encode_invalid_numbers())",
    "local c = cjson.new() return DA(c.encode_invalid_numbers('null'), c.encode_invalid_numbers(true), c.encode_invalid_numbers('null'), c.encode_invalid_numbers(false))",
    "local c = cjson.new() return DA(c.decode_invalid_numbers(false), pcall(c.decode, 'nan'), pcall(c.decode, '0x10'), c.decode_invalid_numbers('on'), pcall(c.decode, '0x10'))",
    "local c = cjson.new() return DA(pcall(c.decode_invalid_numbers, 'null'), pcall(c.decode_invalid_numbers, 'x'), pcall(c.decode_invalid_numbers, 0), c.decode_invalid_numbers())",
    "local c = cjson.new() return DA(c.encode_invalid_numbers('o\\0n'))",
    "local c = cjson.new() return DA(pcall(c.encode_invalid_numbers, 'on\\0x'))",
];

#[test]
fn config_functions_match_the_builtin() {
    run_cases("cfg", CONFIG);
}

/// The configuration of the global `cjson` is shared by every call and library until FLUSH.
#[test]
fn global_config_persists_until_flush() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    let setter = "#!lua name=gset\nserver.register_function('gset', function(keys, args)\nreturn cjson.encode_number_precision(tonumber(args[1]))\nend)\n\
                  server.register_function('gsparse', function(keys, args)\nreturn {cjson.encode_sparse_array(true, 3, 4)}\nend)";
    let getter = "#!lua name=gget\nserver.register_function('gget', function(keys, args)\nreturn cjson.encode({1/3, [20] = 1})\nend)\n\
                  server.register_function('gnum', function(keys, args)\nreturn cjson.encode(1/3)\nend)";
    t.load(setter);
    t.load(getter);
    t.check(&["FCALL", "gnum", "0"]);
    t.check(&["FCALL", "gget", "0"]);
    t.check(&["FCALL", "gset", "0", "4"]);
    t.check(&["FCALL", "gnum", "0"]);
    t.check(&["FCALL", "gsparse", "0"]);
    t.check(&["FCALL", "gget", "0"]);
    // Still in effect after replacing the library.
    t.load(getter);
    t.check(&["FCALL", "gget", "0"]);
    t.check(&["FCALL", "gnum", "0"]);
    // FLUSH recreates the Lua state: defaults again. 8.0 hosts predate that (CVE-2024-46981 fix): their
    // built-in keeps the VM, and its cjson configuration, across FUNCTION FLUSH; rfunc always recreates it.
    if server.version() < (8, 1, 0) {
        t.assert_clean();
        return;
    }
    t.flush();
    t.load(getter);
    t.check(&["FCALL", "gnum", "0"]);
    t.check(&["FCALL", "gget", "0"]);
    t.assert_clean();
}

// ----------------------------------------------------------------------------------------------------------
// Nesting limits.

const NESTING: &[&str] = &[
    "local o = {} for _, n in ipairs({997, 998, 999, 1000, 1001, 1002}) do local t = {} for i = 2, n do t = {t} end local ok, r = pcall(cjson.encode, t) o[#o + 1] = tostring(ok) .. ':' .. (ok and #r or r) end return o",
    "local o = {} for _, n in ipairs({998, 999, 1000, 1001}) do local t = {} for i = 2, n do t = {a = t} end local ok, r = pcall(cjson.encode, t) o[#o + 1] = tostring(ok) .. ':' .. (ok and #r or r) end return o",
    "local t = {} for i = 1, 1000 do t = {t} end return cjson.encode(t)",
    "local o = {} for _, n in ipairs({999, 1000, 1001, 1002}) do local ok, r = pcall(cjson.decode, string.rep('[', n) .. string.rep(']', n)) o[#o + 1] = tostring(ok) .. ':' .. (ok and type(r) or r) end return o",
    "local o = {} for _, n in ipairs({999, 1000, 1001}) do local ok, r = pcall(cjson.decode, string.rep('{\"a\":', n) .. '1' .. string.rep('}', n)) o[#o + 1] = tostring(ok) .. ':' .. (ok and type(r) or r) end return o",
    "return cjson.decode(string.rep('[', 1001) .. string.rep(']', 1001))",
    "return cjson.decode(string.rep('[', 5000))",
    "return cjson.decode(string.rep('  [', 1200))",
    // Raised limits: the Lua stack limit (LUAI_MAXCSTACK) stops both at the same depth.
    "local c = cjson.new() c.encode_max_depth(100000) local t = {} for i = 1, 20000 do t = {t} end return c.encode(t)",
    "local c = cjson.new() c.encode_max_depth(100000) local t = {} for i = 1, 20000 do t = {a = t} end return c.encode(t)",
    "local c = cjson.new() c.encode_max_depth(100000) local t = {} for i = 1, 20000 do t = {1, {x = t}} end return c.encode(t)",
    "local c = cjson.new() c.encode_max_depth(100000) local t = {} for i = 1, 3990 do t = {a = t} end return #c.encode(t)",
    "local c = cjson.new() c.encode_max_depth(100000) local t = {} t[1] = t return c.encode(t)",
    "local c = cjson.new() c.decode_max_depth(100000) return c.decode(string.rep('[', 20000) .. string.rep(']', 20000))",
    "local c = cjson.new() c.decode_max_depth(100000) return c.decode(string.rep('{\"a\":', 20000))",
    "local c = cjson.new() c.decode_max_depth(100000) return c.decode(string.rep('[{\"a\":', 20000))",
    "local c = cjson.new() c.decode_max_depth(100000) local ok, r = pcall(c.decode, string.rep('[', 7990) .. string.rep(']', 7990)) return {tostring(ok), type(r) == 'string' and r or 'table'}",
    "local c = cjson.new() c.decode_max_depth(100000) local ok, r = pcall(c.decode, string.rep('{\"a\":', 3995) .. '1' .. string.rep('}', 3995)) return {tostring(ok), type(r) == 'string' and r or 'table'}",
    "local c = cjson.new() c.encode_max_depth(100000) local t = {} for i = 1, 7990 do t = {t} end local ok, r = pcall(c.encode, t) return {tostring(ok), ok and #r or r}",
];

#[test]
fn nesting_limits_match_the_builtin() {
    run_cases("nest", NESTING);
}

// ----------------------------------------------------------------------------------------------------------
// Decoding: inputs passed as arguments (binary-safe).

const DECODE_INPUTS: &[&[u8]] = &[
    b"",
    b" ",
    b"\t\r\n",
    b"{bad}",
    b"[1] x",
    b"[1,2",
    b"\"\\x\"",
    b"\"\\ud800\"",
    b"\"\\udc00\"",
    b"\"\\ud800\\u0041\"",
    b"\"\\ud800\\udc00\"",
    b"\"\\udbff\\udfff\"",
    b"\"\\u00e9\\u20ac\\ud83d\\ude00\"",
    b"\"\\u0000\"",
    b"\"\\u\"",
    b"\"\\u12\"",
    b"\"\\u12G4\"",
    b"\"\\u00zz\"",
    b"\"\\ud800\\u\"",
    b"\"\\ud800\\\"",
    b"\"\\ud800\\udc0\"",
    b"\"\\ud800x\"",
    b"\"\\ud800\\ud800\"",
    b"\"\\uD83D\\uDE00\"",
    b"\"\\u007f\\u0080\\u07ff\\u0800\\uffff\"",
    b"\"abc",
    b"\"a\\",
    b"\"a\\\"",
    b"true",
    b"false",
    b"null",
    b"tru",
    b"nul",
    b"fals",
    b"truex",
    b"nullnull",
    b"True",
    b"NULL",
    b"nan",
    b"NaN",
    b"NAN",
    b"-nan",
    b"nan(123)",
    b"nanx",
    b"inf",
    b"-inf",
    b"+inf",
    b"Infinity",
    b"-Infinity",
    b"infinity",
    b"INF",
    b"info",
    b"infinit",
    b"i",
    b"I",
    b"n",
    b"N",
    b"t",
    b"f",
    b"+1",
    b"+",
    b"-",
    b"--1",
    b"-+1",
    b"+-1",
    b"0x10",
    b"0X1F",
    b"-0x10",
    b"0x",
    b"0xg",
    b"0x1p4",
    b"0x.8",
    b"01",
    b"-01",
    b"00",
    b"007",
    b"0",
    b"-0",
    b"1e2",
    b"0.1",
    b"1E-2",
    b"1e",
    b"1e+",
    b"1e-",
    b".5",
    b"-.5",
    b"1.",
    b"1.e5",
    b"1.5e308",
    b"1e309",
    b"-1e309",
    b"1e-400",
    b"4.9e-324",
    b"123456789012345678901",
    b"9007199254740993",
    b"1_000",
    b"1,2",
    b"1 2",
    b"- 1",
    b"12abc",
    b"1.2.3",
    b"0.0000001",
    b"[1,]",
    b"[,1]",
    b"[,]",
    b"[",
    b"]",
    b"{",
    b"}",
    b"{\"a\":1,}",
    b"{\"a\" 1}",
    b"{\"a\":}",
    b"{1:2}",
    b"{\"a\":1 \"b\":2}",
    b"{\"a\"",
    b"{\"a\":",
    b"{\"a\":1",
    b"{,}",
    b"{:}",
    b"[1 2]",
    b"[1:2]",
    b"{\"a\",1}",
    b"[1}",
    b"{\"a\":1]",
    b"{\"a\":[1,{\"b\":null}],\"c\":\"d\"}",
    b"[[[]]]",
    b"{}",
    b"[]",
    b"[null,null]",
    b"[null]",
    b"{\"a\":null}",
    b"{\"a\":1,\"a\":2}",
    b"{\"\":1}",
    b"\"\\u0041\\u00410\"",
    b" \t\r\n[1]\n",
    b"\x0c[1]",
    b"\x0b1",
    b"[1]\0garbage",
    b"\0",
    b"a\0",
    b"\0a",
    b"\"\0\"",
    b"\"ab\0c\"",
    b"1\0",
    b"[1]\0",
    b" \0",
    b"\"\x01\x1f\x7f\"",
    b"\"\xff\xfe\"",
    b"\xef\xbb\xbf[1]",
    b"\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
    b"\"\\'\"",
    b"\"\\a\"",
    b"\"\\0\"",
    b"\"\\U0041\"",
    b"[true,false,null,1,-1.5,\"s\",[],{}]",
    b"{\"k1\":1,\"k2\":2,\"k3\":3,\"z\":1,\"y\":2,\"x\":3,\"a\":4,\"b\":5}",
    b"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]",
    b"{\"1\":1,\"2\":2}",
    b"[\"\xc3\xa9\"]",
    b"  {  \"a\"  :  [  1  ,  2  ]  }  ",
    b"[-0.0, 0e0, 0E+1, -1E-1]",
    b"[1e2]x",
    b"\"x\"\"y\"",
    b"[]]",
    b"{}}",
    b"//",
    b"/* c */ 1",
    b"'a'",
    b"[01]",
    b"[-]",
    b"[0x]",
    b"{\"a\":nan}",
    b"[Infinity,-Infinity,NaN]",
    b"[1,2,3",
    b"\"\\uDFFF\"",
    b"\"\\uDBFF\"",
    b"\"\\uD800\\uDBFF\"",
    b"\"\\uD800\\uE000\"",
];

#[test]
fn decode_matches_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    let bodies = [
        "return P(cjson.decode, args[1])",
        "return D(cjson.decode(args[1]))",
        "local c = cjson.new() c.decode_invalid_numbers(false) return P(c.decode, args[1])",
        "local ok, v = pcall(cjson.decode, args[1]) if not ok then return 'E' end return P(cjson.encode, v)",
        "local c = cjson.new() c.decode_max_depth(1) return P(c.decode, args[1])",
    ];
    t.load(&library("dec", "dec", &bodies));
    for input in DECODE_INPUTS {
        for i in 0..bodies.len() {
            let f = format!("dec{i}");
            check_bytes(&mut t, &[b"FCALL", f.as_bytes(), b"0", input]);
        }
    }
    t.assert_clean();
}

const DECODE_MISC: &[&str] = &[
    "return D(cjson.decode(123))",
    "return D(cjson.decode(1.5))",
    "return D(cjson.decode(-0.0))",
    "return tostring(cjson.decode('123456789012345678901'))",
    "return {tostring(cjson.decode('1e2')), tostring(cjson.decode('-0')), tostring(cjson.decode('0.1')), tostring(cjson.decode('1E-2'))}",
    "return tostring(cjson.decode('null') == cjson.null)",
    "return type(cjson.decode('{}'))",
    "return cjson.encode(cjson.decode('[]'))",
    "return cjson.encode(cjson.decode('{\"a\":[],\"b\":{}}'))",
    "local t = {} for i = 1, 1000 do t[i] = '\"k' .. i .. '\":' .. i end local v = cjson.decode('{' .. table.concat(t, ',') .. '}') return cjson.encode(v)",
    "local t = {} for i = 1, 1000 do t[i] = i end return D(cjson.decode('[' .. table.concat(t, ',') .. ']'))",
    "return #cjson.decode('\"' .. string.rep('x', 10000000) .. '\"')",
    "return #cjson.decode('\"' .. string.rep('\\\\u00e9', 100000) .. '\"')",
    "local s = cjson.decode('\"' .. string.rep('\\\\n', 1000) .. '\"') return {#s, s:byte(1), s:byte(1000)}",
    "return DA(pcall(cjson.decode, string.rep(' ', 100000) .. '1'))",
    "return DA(pcall(cjson.decode, string.rep('1', 400)))",
    "return DA(pcall(cjson.decode, '0.' .. string.rep('0', 400) .. '1'))",
    "return DA(pcall(cjson.decode, '\"' .. string.rep('a', 100) .. '\\\\x\"'))",
    "return DA(pcall(cjson.decode, string.rep('[1,', 100) .. 'x'))",
    "local v = cjson.decode('{\"a\":{\"b\":[1,2,{\"c\":\"d\"}]}}') return {v.a.b[3].c, #v.a.b}",
];

#[test]
fn decode_misc_matches_the_builtin() {
    run_cases("dmisc", DECODE_MISC);
}

// ----------------------------------------------------------------------------------------------------------
// Random differential runs.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// JSON-ish text: mostly valid structure, with random corruption.
fn random_json(r: &mut Rng, depth: usize, out: &mut Vec<u8>) {
    const ATOMS: &[&[u8]] = &[
        b"0",
        b"1",
        b"-1",
        b"1.5",
        b"-0",
        b"1e5",
        b"1E-3",
        b"0x1F",
        b"01",
        b"+2",
        b"nan",
        b"-inf",
        b"Infinity",
        b"true",
        b"false",
        b"null",
        b"\"\"",
        b"\"a\"",
        b"\"\\u00e9\"",
        b"\"\\ud83d\\ude00\"",
        b"\"\\ud800\"",
        b"\"\\n\\t\\/\"",
        b"\"\\x\"",
        b"\"\xc3\xa9\xff\"",
        b"\"\x01\"",
        b"123456789012345678",
        b"1e400",
        b"tru",
        b"\"\\u12\"",
        b"-",
        b".5",
        b"\"unterminated",
    ];
    const NOISE: &[&[u8]] = &[
        b" ", b"\n", b"\t", b",", b":", b"]", b"}", b"[", b"{", b"\\", b"\"", b"\0", b"x", b"\r",
    ];
    if r.below(40) == 0 {
        out.extend_from_slice(r.pick(NOISE));
    }
    if depth > 6 || r.below(3) == 0 {
        out.extend_from_slice(r.pick(ATOMS));
        return;
    }
    if r.below(2) == 0 {
        out.push(b'[');
        let n = r.below(5);
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            if r.below(4) == 0 {
                out.push(b' ');
            }
            random_json(r, depth + 1, out);
        }
        if r.below(30) != 0 {
            out.push(b']');
        }
    } else {
        out.push(b'{');
        let n = r.below(5);
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            const KEYS: &[&[u8]] = &[
                b"\"a\"",
                b"\"b\"",
                b"\"k\\u0041\"",
                b"\"\"",
                b"\"z\"",
                b"\"y\"",
                b"1",
                b"\"x\"",
                b"\"1\"",
            ];
            out.extend_from_slice(r.pick(KEYS));
            if r.below(30) != 0 {
                out.push(b':');
            }
            random_json(r, depth + 1, out);
        }
        if r.below(30) != 0 {
            out.push(b'}');
        }
    }
}

#[test]
fn random_decode_matches_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    let body = "local o = {} for i = 1, #args do local ok, v = pcall(cjson.decode, args[i]) local s = tostring(ok) .. ' ' .. D(v) if ok then s = s .. ' ' .. P(cjson.encode, v) end o[i] = s end return o";
    t.load(&library("rdec", "rdec", &[body]));
    let mut r = Rng(0x9E3779B97F4A7C15);
    for _batch in 0..60 {
        let inputs: Vec<Vec<u8>> = (0..50)
            .map(|_| {
                let mut v = Vec::new();
                random_json(&mut r, 0, &mut v);
                // Occasionally cut the text short.
                if r.below(8) == 0 && !v.is_empty() {
                    let cut = r.below(v.len());
                    v.truncate(cut);
                }
                v
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"FCALL", b"rdec0", b"0"];
        args.extend(inputs.iter().map(|v| v.as_slice()));
        check_bytes(&mut t, &args);
    }
    t.assert_clean();
}

/// Random Lua values (as Lua source) encoded by both.
fn random_lua(r: &mut Rng, depth: usize, out: &mut String) {
    const ATOMS: &[&str] = &[
        "1",
        "-1",
        "0",
        "-0.0",
        "1.5",
        "1/3",
        "1e20",
        "2^53",
        "1/0",
        "-1/0",
        "0/0",
        "'s'",
        "''",
        "'a\\0b'",
        "'\\1\\127\\255'",
        "'/\"\\\\'",
        "true",
        "false",
        "nil",
        "cjson.null",
        "123456789012345678",
        "0.1",
        "1e-300",
        "cjson.encode",
    ];
    if depth > 5 || r.below(3) == 0 {
        out.push_str(r.pick(ATOMS));
        return;
    }
    out.push('{');
    let n = r.below(6);
    for _ in 0..n {
        match r.below(6) {
            0 => {
                out.push_str(&format!("[{}] = ", 1 + r.below(25)));
            }
            1 => {
                const KEYS: &[&str] = &["a", "b", "c", "zz", "y", "x1"];
                out.push_str(r.pick(KEYS));
                out.push_str(" = ");
            }
            2 => {
                // No table keys: they hash by address, so `pairs` order differs between two Lua states.
                const KEYS: &[&str] = &[
                    "[0]", "[-1]", "[1.5]", "[true]", "['1']", "[1e15]", "[false]",
                ];
                out.push_str(r.pick(KEYS));
                out.push_str(" = ");
            }
            _ => {}
        }
        random_lua(r, depth + 1, out);
        out.push_str(", ");
    }
    out.push('}');
}

#[test]
fn random_encode_matches_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    let body = "local o = {} local c = cjson.new() c.encode_sparse_array(false, 2, 3) local c2 = cjson.new() c2.encode_invalid_numbers('null') c2.encode_number_precision(5) for i = 1, #args do local f = loadstring('return ' .. args[i]) local v = f() o[#o + 1] = P(cjson.encode, v) o[#o + 1] = P(c.encode, v) o[#o + 1] = P(c2.encode, v) end return o";
    t.load(&library("renc", "renc", &[body]));
    let mut r = Rng(0xD1B54A32D192ED03);
    for _batch in 0..60 {
        let inputs: Vec<String> = (0..50)
            .map(|_| {
                let mut s = String::new();
                random_lua(&mut r, 0, &mut s);
                s
            })
            .collect();
        let mut args: Vec<&[u8]> = vec![b"FCALL", b"renc0", b"0"];
        args.extend(inputs.iter().map(|s| s.as_bytes()));
        let (a, b) = t.both(&args);
        if a != b {
            // Report the first differing input.
            let (va, vb) = (parse(&a).unwrap().unwrap().0, parse(&b).unwrap().unwrap().0);
            let (ea, eb) = (va.as_array(), vb.as_array());
            let i = (0..ea.len().min(eb.len()))
                .find(|&i| ea[i] != eb[i])
                .unwrap_or(0);
            t.failures.push(format!(
                "input {:?}\n    built-in: {:?}\n    rfunc:    {:?}",
                inputs[i / 3],
                ea.get(i),
                eb.get(i)
            ));
        }
    }
    t.assert_clean();
}

// ----------------------------------------------------------------------------------------------------------
// rfunc only: cjson's buffers are Lua memory, so `rfunc.max-memory` bounds them too.

#[test]
fn cjson_buffers_count_toward_the_memory_cap() {
    use common::Value;
    let Some(b) = Server::owned("cjson_memory_cap") else {
        return;
    };
    let server = b.start();
    let mut c = server.conn();
    // Sized so that only the buffers' share tips the state over the cap: under 8 MB, 1 MB of control
    // characters encode to 6 MB (7 MB with the input, 9+ MB with the encode buffer); under 5 MB, a 2 MB
    // string decodes into a 2 MB result (4 MB with the input, 6 MB with the scratch buffer).
    let code = "#!lua name=cjcap\n\
        server.register_function('enc', function(keys, args) local s = string.rep('\\1', 1024 * 1024) collectgarbage('collect') local ok, e = pcall(cjson.encode, s) return {tostring(ok), ok and #e or e} end)\n\
        server.register_function('dec', function(keys, args) local s = args[1] collectgarbage('collect') local ok, e = pcall(cjson.decode, s) return {tostring(ok), ok and #e or e} end)\n\
        server.register_function('small', function(keys, args) return cjson.encode({1, 'a', {b = cjson.decode('[true]')}}) end)\n\
        server.register_function('gc', function(keys, args) collectgarbage('collect') return collectgarbage('count') < 4096 end)";
    assert_eq!(c.cmd(&["RFUNC.LOAD", code]), Value::Bulk(b"cjcap".to_vec()));
    let doc = format!("\"{}\"", "x".repeat(2 * 1024 * 1024));
    let ok = |n: i64| Value::Array(vec![Value::Bulk(b"true".to_vec()), Value::Int(n)]);
    let oom = Value::Array(vec![
        Value::Bulk(b"false".to_vec()),
        Value::Bulk(b"not enough memory".to_vec()),
    ]);
    let small = Value::Bulk(b"[1,\"a\",{\"b\":[true]}]".to_vec());
    assert_eq!(c.cmd(&["RFUNC.FCALL", "enc", "0"]), ok(6 * 1024 * 1024 + 2));
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "dec", "0", &doc]),
        ok(2 * 1024 * 1024)
    );
    // The garbage of the calls above must not count against the cap.
    assert_eq!(c.cmd(&["RFUNC.FCALL", "gc", "0"]), Value::Int(1));
    for (f, cap) in [("enc", "8mb"), ("dec", "5mb")] {
        assert_eq!(
            c.cmd(&["CONFIG", "SET", "rfunc.max-memory", cap]),
            Value::Simple("OK".into())
        );
        assert_eq!(c.cmd(&["RFUNC.FCALL", f, "0", &doc]), oom, "{f}");
        // The engine (and cjson's configuration objects) stay usable.
        assert_eq!(c.cmd(&["RFUNC.FCALL", "small", "0"]), small);
    }
    c.cmd(&["CONFIG", "SET", "rfunc.max-memory", "0"]);
    assert_eq!(c.cmd(&["RFUNC.FCALL", "enc", "0"]), ok(6 * 1024 * 1024 + 2));
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "dec", "0", &doc]),
        ok(2 * 1024 * 1024)
    );
}
