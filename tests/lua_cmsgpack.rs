//! `cmsgpack` (lua-cmsgpack 0.4.0, Redis fork) against the built-in, byte for byte: the same Lua snippets run
//! through `FCALL` and `RFUNC.FCALL` on one server (lua.md §6, §9 CVE-2018-11218).
//!
//! Most cases are snippets compiled at call time by a small library (`loadstring`), with helpers `hex` (bytes as
//! hex) and `show` (every returned value, with its count, nils and table contents in `pairs` order). Binary
//! results are therefore readable, and every error text (with its position) is compared too.

mod common;

use common::snippets::{check_snippets, twin_with_runner};
use common::{Server, Twin};

/// Values whose encodings are compared: every integer-format boundary, floats, strings at every length
/// boundary, tables (arrays, maps, holes, nesting).
const VALUES: &[&str] = &[
    // positive ints
    "0", "1", "127", "128", "255", "256", "65535", "65536", "4294967295", "4294967296", "2^53", "2^53 + 2",
    "2^62", "2^63 - 1024", "2^63", "2^64", "2^64 + 2^12", "1e19", "1e300",
    // negative ints
    "-1", "-31", "-32", "-33", "-127", "-128", "-129", "-32767", "-32768", "-32769", "-2147483647",
    "-2147483648", "-2147483649", "-2^53", "-2^63", "-2^63 - 2048", "-2^64", "-1e300",
    // floats
    "1.5", "-1.5", "0.1", "-0.1", "0.5", "0.25", "123.25", "1/3", "1e-45", "2^-149", "2^-150", "1e-320",
    "3.4028234663852886e38", "3.4028235677973366e38", "-3.4028234663852886e38", "2^127", "2^128", "-2^128",
    "1/0", "-1/0", "0/0", "-(0/0)", "-0.0", "0.0", "2^52 + 0.5", "2^31 + 0.5", "-2^31 - 0.5",
    // strings
    "''", "'a'", "'\\0'", "'\\0\\1\\255'", "string.rep('x', 31)", "string.rep('x', 32)", "string.rep('x', 255)",
    "string.rep('x', 256)", "string.rep('x', 65535)", "string.rep('x', 65536)", "string.rep('\\255', 100000)",
    // other types
    "true", "false", "nil", "type", "coroutine.create(function() end)",
    // tables
    "{}", "{1, 2, 3}", "{a = 1}", "{1, 2, nil, 4}", "{[1] = 1, [3] = 3}", "{1, 2, a = 3}", "{[0] = 1}",
    "{[-1] = 1}", "{[1.5] = 1}", "{[1] = 1, [1.5] = 2}", "{[2^31] = 1}", "{[2^31 - 1] = 1}", "{[2] = 2}",
    "{[1] = true, [2] = false}", "{nil, nil, 3}", "{1, nil}", "{{}, {{}}, {{{}}}}", "{[{}] = 1}",
    "{[{1, 2}] = {3, 4}}", "{[true] = false}", "{z = 1, y = 2, x = 3, a = 4, b = 5}",
    "{a = {b = {c = {d = 'e'}}}}", "{'a', 'b', {c = 'd', e = {1, 2}}}", "{[1] = 1, [2] = 2, [3] = 3, n = 3}",
    "{1, 2, 3, [5] = 5}", "{[1e300] = 1}", "{[-0.0] = 1}", "{[1/0] = 1}", "{[-1/0] = 1}",
    "{[string.rep('k', 40)] = string.rep('v', 40)}", "{f = type}", "{type, string.len}",
    "(function() local t = {} for i = 1, 15 do t[i] = i end return t end)()",
    "(function() local t = {} for i = 1, 16 do t[i] = i end return t end)()",
    "(function() local t = {} for i = 1, 65535 do t[i] = i % 3 end return t end)()",
    "(function() local t = {} for i = 1, 65536 do t[i] = i % 3 end return t end)()",
    "(function() local t = {} for i = 1, 15 do t['k' .. i] = i end return t end)()",
    "(function() local t = {} for i = 1, 16 do t['k' .. i] = i end return t end)()",
    "(function() local t = {} for i = 1, 65535 do t['k' .. i] = 1 end return t end)()",
    "(function() local t = {} for i = 1, 65536 do t['k' .. i] = 1 end return t end)()",
    "(function() local t = {} for i = 1, 100 do t[i * 2] = i end return t end)()",
    "(function() local t = {} for i = 100, 1, -1 do t[i] = i end return t end)()",
    "(function() local t = {1, 2, 3} t[2] = nil return t end)()",
    "(function() local t = {1, 2, 3} t[3] = nil return t end)()",
    "(function() local t = {} t[1] = 1 t[2] = 2 t[4] = 4 t[3] = 3 return t end)()",
    "setmetatable({}, {__index = function() return 1 end})",
    "setmetatable({1, 2}, {__index = function() return 1 end, __len = function() return 5 end})",
    // nesting: the 17th level packs as nil
    "(function() local t = {} local c = t for i = 1, 14 do c[1] = {} c = c[1] end return t end)()",
    "(function() local t = {} local c = t for i = 1, 15 do c[1] = {} c = c[1] end return t end)()",
    "(function() local t = {} local c = t for i = 1, 16 do c[1] = {} c = c[1] end return t end)()",
    "(function() local t = {} local c = t for i = 1, 17 do c[1] = {} c = c[1] end return t end)()",
    "(function() local t = {} local c = t for i = 1, 40 do c.k = {1} c = c.k end return t end)()",
    "(function() local t = {} local c = t for i = 1, 16 do c[{}] = {} c = c[next(c)] end return t end)()",
    "(function() local t = {} t[1] = t return t end)()",
    "(function() local t = {} t.a = t return t end)()",
    "(function() local t = {} t[t] = t return t end)()",
    "(function() local a, b = {}, {} a[1] = b b[1] = a return a end)()",
];

#[test]
fn cmsgpack_table_and_fields_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let snippets: Vec<String> = [
        "local t = {} for k, v in pairs(cmsgpack) do t[#t + 1] = k .. '=' .. type(v) end return table.concat(t, ' ')",
        "return show(cmsgpack._NAME, cmsgpack._VERSION, cmsgpack._COPYRIGHT, cmsgpack._DESCRIPTION)",
        "return show(getmetatable(cmsgpack), cmsgpack_safe)",
        "return show(pcall(function() cmsgpack.pack = 1 end))",
        "return show(pcall(function() cmsgpack.x = 1 end))",
        "return show(pcall(rawset, cmsgpack, 'x', 1))",
        "return tostring(cmsgpack.pack == cmsgpack.unpack)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn cmsgpack_pack_encodings_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    for v in VALUES {
        snippets.push(format!("return hex(cmsgpack.pack({v}))"));
    }
    // Several arguments, nils among them.
    for args in [
        "1, 'a', {}",
        "nil",
        "nil, nil",
        "1, nil, 2",
        "{1}, {a = 1}, 'x', true, false, 1.5, -1",
        "unpack((function() local t = {} for i = 1, 300 do t[i] = i end return t end)())",
    ] {
        snippets.push(format!("return hex(cmsgpack.pack({args}))"));
    }
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn cmsgpack_round_trips_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    for v in VALUES {
        snippets.push(format!("return show(cmsgpack.unpack(cmsgpack.pack({v})))"));
    }
    snippets.push("return show(cmsgpack.unpack(cmsgpack.pack(1, nil, 'x', {2}, nil)))".into());
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

/// Inputs for `unpack`: every format (including those the library rejects), truncated inputs, odd maps.
const INPUTS: &[&str] = &[
    "''",
    "'\\0'",
    "'\\127'",
    "'\\128'",
    "'\\143'",
    "'\\144'",
    "'\\159'",
    "'\\160'",
    "'\\191' .. string.rep('y', 31)",
    "'\\191' .. string.rep('y', 30)",
    "'\\192'",
    "'\\193'",
    "'\\194'",
    "'\\195'",
    "'\\196\\1a'",
    "'\\197\\0\\1a'",
    "'\\198\\0\\0\\0\\1a'",
    "'\\199\\1\\1a'",
    "'\\200\\0\\1\\1a'",
    "'\\201\\0\\0\\0\\1\\1a'",
    "'\\202\\63\\192\\0\\0'",
    "'\\202\\127\\128\\0\\0'",
    "'\\202\\255\\128\\0\\0'",
    "'\\202\\127\\192\\0\\0'",
    "'\\202\\127\\128\\0\\1'",
    "'\\202\\0\\0\\0\\1'",
    "'\\202\\63\\192\\0'",
    "'\\203\\63\\185\\153\\153\\153\\153\\153\\154'",
    "'\\203\\127\\248\\0\\0\\0\\0\\0\\1'",
    "'\\203\\255\\248\\0\\0\\0\\0\\0\\0'",
    "'\\203\\0\\0\\0\\0\\0\\0\\0\\1'",
    "'\\203\\63\\185'",
    "'\\204\\128'",
    "'\\204\\255'",
    "'\\204'",
    "'\\205\\1\\0'",
    "'\\205\\255\\255'",
    "'\\205\\1'",
    "'\\206\\0\\1\\0\\0'",
    "'\\206\\255\\255\\255\\255'",
    "'\\206\\0\\1\\0'",
    "'\\207\\0\\0\\0\\1\\0\\0\\0\\0'",
    "'\\207\\255\\255\\255\\255\\255\\255\\255\\255'",
    "'\\207\\128\\0\\0\\0\\0\\0\\0\\0'",
    "'\\207\\127\\255\\255\\255\\255\\255\\255\\255'",
    "'\\207\\0\\32\\0\\0\\0\\0\\0\\1'",
    "'\\207\\0\\0\\0\\0\\0\\0\\0'",
    "'\\208\\128'",
    "'\\208\\127'",
    "'\\208\\255'",
    "'\\208'",
    "'\\209\\128\\0'",
    "'\\209\\255\\127'",
    "'\\209\\0\\128'",
    "'\\209\\128'",
    "'\\210\\128\\0\\0\\0'",
    "'\\210\\255\\255\\127\\255'",
    "'\\210\\127\\255\\255\\255'",
    "'\\210\\0\\0\\0'",
    "'\\211\\128\\0\\0\\0\\0\\0\\0\\0'",
    "'\\211\\255\\255\\255\\255\\255\\255\\255\\255'",
    "'\\211\\127\\255\\255\\255\\255\\255\\255\\255'",
    "'\\211\\0\\32\\0\\0\\0\\0\\0\\1'",
    "'\\211\\0'",
    "'\\212\\1\\1'",
    "'\\213\\1\\1\\1'",
    "'\\214\\1\\1\\1\\1\\1'",
    "'\\215\\1' .. string.rep('\\1', 8)",
    "'\\216\\1' .. string.rep('\\1', 16)",
    "'\\217\\3abc'",
    "'\\217\\0'",
    "'\\217\\5ab'",
    "'\\217'",
    "'\\218\\0\\3abc'",
    "'\\218\\1\\0' .. string.rep('z', 256)",
    "'\\218\\1\\0' .. string.rep('z', 255)",
    "'\\218\\0'",
    "'\\219\\0\\0\\0\\3abc'",
    "'\\219\\0\\0\\0\\4abc'",
    "'\\219\\255\\255\\255\\255'",
    "'\\219\\255\\255\\255\\255abc'",
    "'\\219\\0\\0'",
    "'\\220\\0\\2\\1\\2'",
    "'\\220\\0\\0'",
    "'\\220\\0\\3\\1\\2'",
    "'\\220\\255\\255'",
    "'\\220\\0'",
    "'\\221\\0\\0\\0\\2\\1\\2'",
    "'\\221\\255\\255\\255\\255\\1'",
    "'\\221\\0\\0\\0'",
    "'\\222\\0\\1\\1\\2'",
    "'\\222\\0\\1\\1'",
    "'\\222\\255\\255'",
    "'\\223\\0\\0\\0\\1\\1\\2'",
    "'\\223\\255\\255\\255\\255'",
    "'\\223\\0\\0'",
    "'\\224'",
    "'\\255'",
    "'\\147\\1\\2\\3'",
    "'\\147\\1\\192\\3'",
    "'\\147\\192\\192\\192'",
    "'\\147\\1\\2'",
    "'\\147\\1\\193\\3'",
    "'\\145\\147\\1\\2'",
    "'\\130\\161a\\1\\161b\\2'",
    "'\\130\\161a\\1\\161a\\2'",
    "'\\129\\192\\1'",
    "'\\129\\192\\192'",
    "'\\129\\1\\192'",
    "'\\129\\203\\127\\248\\0\\0\\0\\0\\0\\1\\1'",
    "'\\129\\202\\127\\192\\0\\0\\1'",
    "'\\129\\202\\127\\128\\0\\0\\1'",
    "'\\129\\145\\1\\2'",
    "'\\129\\129\\1\\2\\3'",
    "'\\129\\1'",
    "'\\129'",
    "'\\130\\1\\2\\192\\3'",
    "'\\129\\1\\2\\193'",
    "'\\1\\2\\3'",
    "'\\1\\193'",
    "'\\1\\204'",
    "'\\192\\192\\1'",
    "cmsgpack.pack({1, {2, {3, {a = {b = 'c'}}}}}, 'x', -1.5)",
];

#[test]
fn cmsgpack_unpack_matches_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    for s in INPUTS {
        snippets.push(format!("return show(cmsgpack.unpack({s}))"));
        snippets.push(format!("return show(pcall(cmsgpack.unpack, {s}))"));
        snippets.push(format!("return show(cmsgpack.unpack_one({s}))"));
        snippets.push(format!("return show(pcall(cmsgpack.unpack_limit, {s}, 2))"));
    }
    // Argument errors and conversions.
    for s in [
        "cmsgpack.unpack()",
        "cmsgpack.unpack(nil)",
        "cmsgpack.unpack({})",
        "cmsgpack.unpack(12)",
        "cmsgpack.unpack(-1)",
        "cmsgpack.unpack(1.5)",
        "cmsgpack.unpack('\\1', 'extra', 'args')",
        "cmsgpack.unpack_one()",
        "cmsgpack.unpack_one(nil)",
        "cmsgpack.unpack_one(nil, 'x')",
        "cmsgpack.unpack_one(7)",
        "cmsgpack.unpack_one('\\1', 'x')",
        "cmsgpack.unpack_one('\\1', {})",
        "cmsgpack.unpack_one('\\1', nil)",
        "cmsgpack.unpack_one('\\1\\2', '1')",
        "cmsgpack.unpack_one('\\1\\2', 1.9)",
        "cmsgpack.unpack_one('\\1\\2', -0.5)",
        "cmsgpack.unpack_one('\\1\\2', 0, 'extra')",
        "cmsgpack.unpack_limit()",
        "cmsgpack.unpack_limit('\\1')",
        "cmsgpack.unpack_limit('\\1', nil)",
        "cmsgpack.unpack_limit('\\1', 'x')",
        "cmsgpack.unpack_limit('\\1', 1, 'x')",
        "cmsgpack.unpack_limit(nil, 1)",
        "cmsgpack.unpack_limit('\\1\\2', '1', '1')",
        "cmsgpack.unpack_limit('\\1\\2', 2.9)",
    ] {
        snippets.push(format!("return show({s})"));
        snippets.push(format!("return show(pcall(function() return {s} end))"));
    }
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn cmsgpack_offsets_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    let stream = "cmsgpack.pack(1, 'two', {3}, nil, 5.5)";
    for off in [
        "0",
        "1",
        "2",
        "5",
        "6",
        "7",
        "8",
        "9",
        "10",
        "11",
        "12",
        "13",
        "14",
        "-1",
        "-2",
        "2^31",
        "2^32",
        "2^32 + 1",
        "2^40",
        "-2^31",
        "-2^32 - 3",
        "1/0",
        "0/0",
    ] {
        snippets.push(format!("return show(cmsgpack.unpack_one({stream}, {off}))"));
        snippets.push(format!(
            "return show(pcall(cmsgpack.unpack_one, {stream}, {off}))"
        ));
        for lim in ["0", "1", "2", "3", "10", "-1", "2^31", "2^32", "2^32 + 1"] {
            snippets.push(format!(
                "return show(pcall(cmsgpack.unpack_limit, {stream}, {lim}, {off}))"
            ));
        }
    }
    for lim in ["0", "1", "2", "5", "6", "-1", "-3"] {
        snippets.push(format!(
            "return show(pcall(cmsgpack.unpack_limit, {stream}, {lim}))"
        ));
        snippets.push(format!(
            "return show(pcall(cmsgpack.unpack_limit, '', {lim}))"
        ));
    }
    for s in ["''", "'\\1'", "'\\204'"] {
        for off in ["0", "1", "2", "3"] {
            snippets.push(format!(
                "return show(pcall(cmsgpack.unpack_one, {s}, {off}))"
            ));
        }
    }
    // Walking a stream with the returned offsets.
    snippets.push(format!(
        "local s, off, out = {stream}, 0, {{}} while off ~= -1 do local v off, v = cmsgpack.unpack_one(s, off) out[#out + 1] = show(off, v) end return table.concat(out, ' | ')"
    ));
    snippets.push(format!(
        "local s, off, out = {stream}, 0, {{}} while off ~= -1 do local r = {{cmsgpack.unpack_limit(s, 2, off)}} off = r[1] out[#out + 1] = show(unpack(r)) end return table.concat(out, ' | ')"
    ));
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

/// Deep inputs and many values: the stack checks fail at the same point (CVE-2018-11218 hardening), and no input
/// crashes either engine.
#[test]
fn cmsgpack_limits_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    let probe = |expr: &str| {
        format!("local ok, r = pcall(function() return select('#', {expr}) end) return show(ok, r)")
    };
    // Nested arrays use two stack slots per level, nested maps (as keys) one.
    for depth in [
        100, 1000, 3980, 3990, 3995, 3996, 3997, 3998, 3999, 4000, 4001, 4005, 5000, 100000,
    ] {
        snippets.push(probe(&format!(
            "cmsgpack.unpack(string.rep('\\145', {depth}) .. '\\1')"
        )));
        snippets.push(probe(&format!(
            "cmsgpack.unpack(string.rep('\\145', {depth}) .. '\\1', 1)"
        )));
        snippets.push(probe(&format!(
            "cmsgpack.unpack_one(string.rep('\\145', {depth}) .. '\\1')"
        )));
    }
    for depth in [
        100, 7980, 7990, 7993, 7994, 7995, 7996, 7997, 7998, 7999, 8000, 8001, 9000, 200000,
    ] {
        snippets.push(probe(&format!(
            "cmsgpack.unpack(string.rep('\\129', {depth}) .. '\\1' .. string.rep('\\2', {depth}))"
        )));
        snippets.push(probe(&format!(
            "cmsgpack.unpack(string.rep('\\129', {depth}))"
        )));
    }
    // Many top-level values.
    for n in [100, 7990, 7996, 7997, 7998, 7999, 8000, 8001, 20000] {
        snippets.push(probe(&format!("cmsgpack.unpack(string.rep('\\1', {n}))")));
        snippets.push(probe(&format!(
            "cmsgpack.unpack_limit(string.rep('\\1', {n}), {n})"
        )));
        snippets.push(probe(&format!(
            "cmsgpack.unpack_limit(string.rep('\\1', {n}), {n} - 1, 1)"
        )));
    }
    // Huge declared lengths with no data.
    for s in [
        "'\\221\\255\\255\\255\\255'",
        "'\\223\\255\\255\\255\\255'",
        "'\\219\\255\\255\\255\\255'",
        "string.rep('\\221\\255\\255\\255\\255', 1000)",
    ] {
        snippets.push(probe(&format!("cmsgpack.unpack({s})")));
    }
    // Many arguments to pack.
    let many = |n: usize, v: &str| {
        format!(
            "local t = {{}} for i = 1, {n} do t[i] = {v} end local ok, r = pcall(function() return cmsgpack.pack(unpack(t)) end) return show(ok, ok and #r or r)"
        )
    };
    for n in [1000, 3990, 3995, 3996, 3997, 3998, 3999, 4000, 4001, 7000] {
        snippets.push(many(n, "1"));
        snippets.push(many(n, "{1, {2, {a = {3}}}}"));
        snippets.push(many(n, "(function() local x = {} x[1] = x return x end)()"));
    }
    // Packing deep structures at high argument counts runs into the stack checks of the table coders.
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

fn lib(i: usize, body: &str) -> String {
    format!("#!lua name=m{i}\nserver.register_function('m{i}', function(keys, args)\n{body}\nend)")
}

/// Errors raised straight from function code: the messages carry `user_function:3:` and the C function's name.
#[test]
fn cmsgpack_errors_in_function_code_match_the_builtin() {
    let server = Server::shared();
    let bodies = [
        "return cmsgpack.pack()",
        "return cmsgpack.unpack('\\193')",
        "return cmsgpack.unpack('\\204')",
        "return cmsgpack.unpack('\\129\\192\\1')",
        "return cmsgpack.unpack('\\129\\203\\127\\248\\0\\0\\0\\0\\0\\1\\1')",
        "return cmsgpack.unpack_one('\\1', 5)",
        "return cmsgpack.unpack_limit('\\1', -1)",
        "return cmsgpack.unpack_limit('\\1', 'x')",
        "return cmsgpack.unpack()",
        "return cmsgpack.unpack(string.rep('\\145', 5000))",
        "local p = cmsgpack.pack return p()",
        "return cmsgpack:pack()",
        "return cmsgpack:unpack()",
        "return {pcall(cmsgpack.pack)}",
        "return {pcall(cmsgpack.unpack, '\\193')}",
        "return {pcall(cmsgpack.unpack_limit, '\\1')}",
        "return cmsgpack.unpack(cmsgpack.pack({1, 2, {a = 'b'}}, 'x'))",
        "return {cmsgpack.unpack(cmsgpack.pack({1, 2, {a = 'b'}}, 'x'))}",
        "return cmsgpack.pack({1, 2, 3})",
    ];
    let mut t = Twin::new(server.conn());
    for (i, body) in bodies.iter().enumerate() {
        t.load(&lib(i, body));
    }
    for (i, _) in bodies.iter().enumerate() {
        t.check(&["FCALL", &format!("m{i}"), "0"]);
    }
    t.assert_clean();
}
