//! `bit` (LuaBitOp 1.0.2) and `struct` (0.2, Redis fork) against the built-in, byte for byte: the same Lua
//! snippets run through `FCALL` and `RFUNC.FCALL` on one server (lua.md §7, §9 CVE-2024-31449, CVE-2018-11219,
//! CVE-2015-8080, CVE-2020-14147, §10 function names in argument errors).
//!
//! Cases are snippets compiled at call time by a small library (`loadstring`) with helpers `hex` and `show` (see
//! tests/lua_cmsgpack.rs); a few run straight from function code to compare `user_function:3:` positions.

mod common;

use common::snippets::{check_snippets, twin_with_runner};
use common::{Server, Twin};

fn lib(i: usize, body: &str) -> String {
    format!("#!lua name=b{i}\nserver.register_function('b{i}', function(keys, args)\n{body}\nend)")
}

fn check_bodies(server: &Server, bodies: &[String]) {
    let mut t = Twin::new(server.conn());
    for (i, body) in bodies.iter().enumerate() {
        t.load(&lib(i, body));
    }
    for i in 0..bodies.len() {
        t.check(&["FCALL", &format!("b{i}"), "0"]);
    }
    t.assert_clean();
}

// ----------------------------------------------------------------------------------------------------------
// bit

/// Numbers (and numeric strings) around every rounding and wrapping boundary of the 32-bit normalisation.
const BIT_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "0.5",
    "-0.5",
    "1.5",
    "-1.5",
    "2.5",
    "-2.5",
    "3.4999999",
    "-0.0",
    "2^31",
    "2^31 - 1",
    "-2^31",
    "-2^31 - 1",
    "2^32",
    "2^32 - 1",
    "2^32 + 5",
    "-2^32",
    "2^52",
    "2^52 + 0.5",
    "2^51 + 0.5",
    "2^53",
    "2^53 + 2",
    "2^63",
    "2^64",
    "-2^64",
    "1e300",
    "-1e300",
    "1e-300",
    "1/0",
    "-1/0",
    "0/0",
    "0xffffffff",
    "0x7fffffff",
    "0x80000000",
    "0x12345678",
    "4294967295.5",
    "-4294967296.5",
    "'12'",
    "'0x10'",
    "' 7 '",
    "'1e3'",
    "'-2.5'",
    "struct.unpack('<d', '\\1\\0\\0\\0\\0\\0\\248\\127')",
    "struct.unpack('<d', '\\255\\255\\255\\255\\0\\0\\240\\255')",
];

#[test]
fn bit_table_matches_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let snippets: Vec<String> = [
        "local t = {} for k, v in pairs(bit) do t[#t + 1] = k .. '=' .. type(v) end return table.concat(t, ' ')",
        "return show(getmetatable(bit), bit._VERSION, bit._NAME)",
        "return show(pcall(function() bit.band = 1 end))",
        "return show(pcall(rawset, bit, 'x', 1))",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn bit_operations_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    // The spec's examples.
    for s in [
        "bit.tobit('12')",
        "bit.tobit(1.5)",
        "bit.tobit(-1.5)",
        "bit.tobit(2^53)",
        "bit.tobit(0xffffffff)",
        "bit.tobit(2^32 + 5)",
        "bit.tohex(255)",
        "bit.tohex(-1)",
        "bit.tohex(255, 2)",
        "bit.tohex(255, -4)",
        "bit.tohex(1, 100)",
        "bit.tohex(1, -2^31)",
        "bit.bnot(0)",
        "bit.band(0xff, 0x0f, 0x3)",
        "bit.bor(1, 2, 4)",
        "bit.bxor(5, 3)",
        "bit.lshift(1, 31)",
        "bit.lshift(1, 32)",
        "bit.rshift(-1, 28)",
        "bit.arshift(-256, 4)",
        "bit.rol(0x12345678, 8)",
        "bit.ror(0x12345678, 8)",
        "bit.bswap(0x12345678)",
    ] {
        snippets.push(format!("return show({s})"));
    }
    for v in BIT_VALUES {
        snippets.push(format!(
            "local v = {v} return show(bit.tobit(v), bit.bnot(v), bit.bswap(v), bit.tohex(v), bit.band(v), bit.bor(v), bit.bxor(v))"
        ));
        snippets.push(format!(
            "local v, out = {v}, {{}} for _, n in ipairs({{0, 1, 2, 4, 7, 8, 9, 100, -1, -4, -7, -8, -9, -100, 2^31 - 1, -2^31 + 1, 2^31, 2^32 - 1, 2^32 + 3, 1.5, '3', -0.0}}) do out[#out + 1] = bit.tohex(v, n) end return table.concat(out, ' ')"
        ));
        snippets.push(format!(
            "local v, out = {v}, {{}} for _, n in ipairs({{0, 1, 4, 8, 16, 31, 32, 33, 63, -1, -31, -32, 2^32 + 3, 1.5, 2.5, '4', 1e300, 0/0}}) do out[#out + 1] = show(bit.lshift(v, n), bit.rshift(v, n), bit.arshift(v, n), bit.rol(v, n), bit.ror(v, n)) end return table.concat(out, ' ')"
        ));
        snippets.push(format!(
            "local v, out = {v}, {{}} for _, w in ipairs({{0, -1, 1, 0x55555555, 0xaaaaaaaa, 2^31, 1.5, 2^32 + 7}}) do out[#out + 1] = show(bit.band(v, w), bit.bor(v, w), bit.bxor(v, w), bit.band(v, w, 0xff00ff), bit.bor(w, v, 1, 2, 4), bit.bxor(v, w, v)) end return table.concat(out, ' ')"
        ));
    }
    // Many arguments.
    snippets.push("local t = {} for i = 1, 5000 do t[i] = 2^(i % 32) end return show(bit.bor(unpack(t)), bit.band(unpack(t)), bit.bxor(unpack(t)))".into());
    // Errors: the bad argument is named with Lua's own text; band & co. check argument 1, then from the last one down.
    for s in [
        "bit.band()",
        "bit.band('x')",
        "bit.band(1, 'x')",
        "bit.band(1, 'x', 'y')",
        "bit.band(1, 2, nil)",
        "bit.band(nil, 'x')",
        "bit.bor({})",
        "bit.bxor(1, true)",
        "bit.tobit()",
        "bit.tobit(nil)",
        "bit.tobit('')",
        "bit.tobit('0x')",
        "bit.tobit('1e')",
        "bit.bnot(print)",
        "bit.bswap()",
        "bit.tohex()",
        "bit.tohex(nil)",
        "bit.tohex(1, nil)",
        "bit.tohex(1, 'x')",
        "bit.tohex('x', 'y')",
        "bit.lshift(1)",
        "bit.lshift('a', 1)",
        "bit.lshift(1, 'a')",
        "bit.rshift()",
        "bit.arshift(1, {})",
        "bit.rol(nil, nil)",
        "bit.ror(1)",
        "bit:band()",
        "bit:tohex()",
        "bit.tobit(0)",
        "bit.band(0, '0')",
    ] {
        snippets.push(format!("return show(pcall(function() return {s} end))"));
        snippets.push(format!("return show({s})"));
    }
    for f in [
        "band", "bor", "bxor", "tobit", "bnot", "bswap", "tohex", "lshift", "rshift", "arshift",
        "rol", "ror",
    ] {
        snippets.push(format!("return show(pcall(bit.{f}, 'x'))"));
        snippets.push(format!("return show(pcall(bit.{f}))"));
        snippets.push(format!("return show(pcall(bit.{f}, 1, 'x'))"));
    }
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn bit_errors_in_function_code_match_the_builtin() {
    let server = Server::shared();
    let bodies: Vec<String> = [
        "return bit.band('x')",
        "return bit.band(1, 2, {})",
        "return bit.tohex()",
        "return bit.lshift(1)",
        "local f = bit.bor return f(1, 'z')",
        "return bit:bnot()",
        "return {pcall(bit.band, 'x')}",
        "return bit.tohex(1, -2147483648)",
        "return bit.tohex(65535, -2^31)",
        "return bit.band(0xff, 0x0f, 0x3)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check_bodies(&server, &bodies);
}

// ----------------------------------------------------------------------------------------------------------
// struct

#[test]
fn struct_table_matches_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let snippets: Vec<String> = [
        "local t = {} for k, v in pairs(struct) do t[#t + 1] = k .. '=' .. type(v) end return table.concat(t, ' ')",
        "return show(getmetatable(struct), struct._VERSION)",
        "return show(pcall(function() struct.pack = 1 end))",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn struct_pack_matches_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    // The spec's examples, then more.
    for args in [
        "'>I2', 1",
        "'<i4', -2",
        "'l', 1",
        "'f', 1.5",
        "'d', 1.5",
        "'s', 'ab'",
        "'c3', 'abcdef'",
        "'c', 'ab'",
        "'!4 b i4', 1, 2",
        "'>b x i2', 1, 2",
        "'B', 256",
        "'>i3', -1",
        "'b', -1",
        "'B', -1",
        "'b', 127.9",
        "'b', -128.9",
        "'h', 65535",
        "'H', -1",
        "'<h', 258",
        "'>h', 258",
        "'i', 1",
        "'I', 2^32 - 1",
        "'i', 2^31",
        "'<T', 1",
        "'>T', 1",
        "'>L', 1",
        "'<l', -1",
        "'<d', -0.0",
        "'>d', 1/3",
        "'<f', 1/3",
        "'>f', 1e40",
        "'<f', -1e40",
        "'<f', 0/0",
        "'<d', 0/0",
        "'<d', 1/0",
        "'>f', 2^-149",
        "'>f', 2^-150",
        "'s', ''",
        "'s', 'a\\0b'",
        "'c0', 'hello'",
        "'c0', ''",
        "'c5', 'hello'",
        "'c2 c0 c1', 'ab', 'cde', 'f'",
        "'x'",
        "'xx b'",
        "''",
        "'   '",
        "'<>< i2', 1",
        "'b', '12'",
        "'s', 12",
        "'c2', 123",
        "'i4', '0x10'",
        "'!', 1",
        "'! b d', 1, 2",
        "'!2 b d', 1, 2",
        "'!4 b d', 1, 2",
        "'!8 b d', 1, 2",
        "'!16 b d', 1, 2",
        "'!1 b d', 1, 2",
        "'!8 b h b i b l b f b d b T', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13",
        "'!8 b i3 b i5 b i12 b i16', 1, 2, 3, 4, 5, 6, 7, 8",
        "'!8 b x h', 1, 2",
        "'!4 b c3 i4', 1, 'abc', 2",
        "'!4 b s i4', 1, 'abc', 2",
        "'!64 b d', 1, 2",
        "'!1073741824 b d i32', 1, 2, 3",
        "'b\\0b', 1, 2",
        "'i0', 5",
        "'I0 b', 5, 6",
        "'i1', 300",
        "'<i16', -1",
        "'>i16', -1",
        "'<I16', 2^64 - 2^11",
        "'<i9', -2",
        "'>i32', 12345678",
        "'<i12', -2^40",
        "'<I8', 2^64",
        "'<I8', 2^63",
        "'<I8', 2^63 + 2^11",
        "'<i8', -2^63",
        "'<i8', -2^63 - 2^11",
        "'<i8', 2^70",
        "'<i8', -2^70",
        "'<I4', 1/0",
        "'<I4', -1/0",
        "'<I4', 0/0",
        "'<i4', -(0/0)",
        "'<i4', 2.5",
        "'<i4', -2.5",
        "'<i4', 2^31 + 0.75",
        "'<b', 1e300",
        "'<c3 s', 'abcde', 'xyz'",
        "' b ', 1",
        "'c10', string.rep('q', 10)",
        "'c0', string.rep('r', 10000)",
        "'c0 b', string.rep('r', 10000), 5",
        "'s b', string.rep('r', 9000), 5",
        "'c8192', string.rep('z', 8192)",
    ] {
        snippets.push(format!("return hex(struct.pack({args}))"));
    }
    // Errors (note the C reports a short string with the argument number already advanced).
    for args in [
        "'z'",
        "'q'",
        "'b z', 1",
        "'?'",
        "'='",
        "'@'",
        "'\\255'",
        "'b'",
        "'b', nil",
        "'b', 'x'",
        "'b', {}",
        "'b b', 1",
        "'d'",
        "'f', 'x'",
        "'s'",
        "'s', nil",
        "'s', {}",
        "'c'",
        "'c3', 'ab'",
        "'c3 b', 'ab', 1",
        "'b c2', 1, 'x'",
        "'i33', 1",
        "'i32', 1",
        "'I99', 1",
        "'i2147483647', 1",
        "'i2147483648', 1",
        "'i99999999999999999999', 1",
        "'c99999999999999999999', 'a'",
        "'c2147483647', 'a'",
        "'c2147483648', 'a'",
        "'!3', 1",
        "'!0'",
        "'!6 b', 1",
        "'!2147483647'",
        "'!2147483648'",
        "'!99999999999'",
        "'!1073741824 i4', 1",
        "'! 3'",
        "'b!5', 1",
        "nil",
        "{}",
        "12",
        "'c0 c0', 'a'",
        "'b', '1x'",
    ] {
        snippets.push(format!("return show(pcall(struct.pack, {args}))"));
        snippets.push(format!(
            "return show(pcall(function() return struct.pack({args}) end))"
        ));
    }
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn struct_unpack_and_size_match_the_builtin() {
    let server = Server::shared();
    let mut t = twin_with_runner(&server);
    let mut snippets: Vec<String> = Vec::new();
    for args in [
        "'>I2 i4', struct.pack('>I2 i4', 513, -7)",
        "'s', 'ab\\0cd'",
        "'c2', 'abcd', 2",
        "'b c0', '\\3abcdef'",
        "'<I8', string.rep('\\255', 8)",
        "'<i8', string.rep('\\255', 8)",
        "'b', '\\255'",
        "'B', '\\255'",
        "'h', '\\1\\128'",
        "'>h', '\\1\\128'",
        "'H', '\\255\\255'",
        "'<i3', '\\255\\255\\127'",
        "'<i3', '\\0\\0\\128'",
        "'>I3', '\\1\\2\\3'",
        "'<f', '\\0\\0\\192\\63'",
        "'>f', '\\63\\192\\0\\0'",
        "'<d', struct.pack('<d', 0.1)",
        "'>d', struct.pack('>d', -1/3)",
        "'<f', '\\0\\0\\192\\127'",
        "'<f', '\\1\\0\\128\\127'",
        "'<d', '\\1\\0\\0\\0\\0\\0\\248\\127'",
        "'x b', 'ab'",
        "'xx'",
        "''",
        "'', 'abc'",
        "'', 'abc', 3",
        "'', 'abc', 4",
        "'', 'abc', 5",
        "'b', 'abc', 3",
        "'b', 'abc', 4",
        "'s', 'abc'",
        "'s', '\\0'",
        "'s s', 'a\\0b\\0'",
        "'s', 'abc\\0', 5",
        "'c0', 'abc'",
        "'b c0', '\\0abc'",
        "'b c0', '\\4abc'",
        "'b c0', '\\255abc'",
        "'c1 c0', '3abcd'",
        "'c1 c0', 'xabcd'",
        "'s c0', '2\\0abc'",
        "'b x c0', '\\2\\0ab'",
        "'f c0', struct.pack('f c3', 2.5, 'abc')",
        "'d c0', struct.pack('d', -1) .. 'abc'",
        "'d c0', struct.pack('d', 0/0) .. 'abc'",
        "'d c0', struct.pack('d', 1e300) .. 'abc'",
        "'d c0', struct.pack('d', 2^64) .. 'abc'",
        "'I8 c0', string.rep('\\255', 8) .. 'abc'",
        "'!4 b i4', '\\1\\0\\0\\0\\2\\0\\0\\0'",
        "'!4 b i4', '\\1\\0\\0\\0\\2\\0\\0'",
        "'!8 b d', struct.pack('!8 b d', 1, 2)",
        "'!2 b i4', '\\1\\0\\2\\0\\0\\0'",
        "'!4 b i4', 'xx\\1\\0\\0\\0\\2\\0\\0\\0', 2",
        "'!4 b i4', 'xx\\1\\0\\0\\0\\2\\0\\0\\0', 3",
        "'!8 b i3 b i12 b i16', struct.pack('!8 b i3 b i12 b i16', 1, -2, 3, -4, 5, -6)",
        "'<i0', 'abc'",
        "'<I0 b', 'abc'",
        "'<i9', string.rep('\\255', 9)",
        "'<i9', string.rep('\\0', 8) .. '\\1'",
        "'>i9', '\\1' .. string.rep('\\0', 8)",
        "'<i12', string.rep('\\255', 4) .. '\\128' .. string.rep('\\0', 7)",
        "'<i12', '\\0\\0\\0\\128' .. string.rep('\\0', 8)",
        "'<i12', '\\255\\255\\255\\127' .. string.rep('\\0', 8)",
        "'<i16', string.rep('\\255', 16)",
        "'>i16', string.rep('\\255', 16)",
        "'<I16', string.rep('\\255', 16)",
        "'<i16', '\\0\\0\\0\\0\\0\\0\\0\\128' .. string.rep('\\0', 8)",
        "'<i32', string.rep('\\255', 32)",
        "'>i32', string.rep('\\1', 32)",
        "'<i5', '\\0\\0\\0\\0\\128'",
        "'<I5', '\\0\\0\\0\\0\\128'",
        "'<i7', '\\255\\255\\255\\255\\255\\255\\127'",
        "'>l', '\\128' .. string.rep('\\0', 7)",
        "'>T', '\\128' .. string.rep('\\0', 7)",
        "'b', 'a', 1.9",
        "'b', 'ab', '2'",
        "'b', 'a', 2^53",
        "'b', 'a', 2^64",
        "'b', 'a', -2^63",
        "'b', 'a', 0/0",
        "'s', 'a'",
        "' b ', 'a'",
        "'b\\0b', 'ab'",
        "'c1 c1 c1', 'abc'",
        "'c3', 'ab'",
        "'c0', 'ab'",
        "'d', 'abcdefg'",
    ] {
        snippets.push(format!("return show(pcall(struct.unpack, {args}))"));
    }
    // Errors and odd arguments.
    for args in [
        "'b', 'ab', 0",
        "'b', 'ab', -1",
        "'b', 'ab', -2^63",
        "'b', 'ab', 3",
        "'b', 'ab', 'x'",
        "'b', nil",
        "nil, 'a'",
        "'b'",
        "'b', {}",
        "'z', 'abc'",
        "'i33', 'a'",
        "'i99999999999', 'a'",
        "'!3', 'a'",
        "'c2', 'a'",
        "'c', ''",
        "'s', 'abc'",
        "'c0', 'abc'",
        "'x c0', 'abc'",
        "'c999999999', 'abc'",
        "'c2147483648', 'abc'",
        "'i4', 'abcd', 2^31",
        "'i4', 'abcd', 2^32",
        "'i4', 'abcd', 2^63",
        "'i4', 'abcd', -2^31",
        "'!4 i4', 'abcd', -1",
        "'!4 i4', 'abcd', -2",
        "'!8 i8', string.rep('a', 16), -6",
        "'<d', 'abc'",
        "'f', 'abc'",
        "12, 34",
        "'b', 1234",
        "'=b', 'a'",
    ] {
        snippets.push(format!("return show(pcall(struct.unpack, {args}))"));
        snippets.push(format!(
            "return show(pcall(function() return struct.unpack({args}) end))"
        ));
    }
    // Many results.
    for n in [100, 7990, 7996, 7997, 7998, 7999, 8000, 8001, 20000] {
        snippets.push(format!(
            "local ok, r = pcall(function() return select('#', struct.unpack(string.rep('b', {n}), string.rep('a', {n}))) end) return show(ok, r)"
        ));
    }
    // size
    for fmt in [
        "'i4 d b'",
        "'!8 b d'",
        "''",
        "'b'",
        "'x'",
        "'h'",
        "'l'",
        "'T'",
        "'f'",
        "'d'",
        "'i'",
        "'i3'",
        "'I16'",
        "'c'",
        "'c10'",
        "'c2147483647'",
        "'c2147483647 c2147483647'",
        "'!4 b c3 i4'",
        "'!16 b d'",
        "'<>! b'",
        "'z'",
        "'q5'",
        "'5'",
        "'Z b'",
        "'b5'",
        "'s'",
        "'c0'",
        "'b s'",
        "'c1 c0'",
        "'?'",
        "'='",
        "'\\255'",
        "'i33'",
        "'i99999999999'",
        "'!3'",
        "'!0 b'",
        "'b\\0s'",
        "12",
        "nil",
        "{}",
        "'!2 b i8 b h'",
    ] {
        snippets.push(format!("return show(pcall(struct.size, {fmt}))"));
        snippets.push(format!(
            "return show(pcall(function() return struct.size({fmt}) end))"
        ));
    }
    // Round trips.
    for (fmt, vals) in [
        (
            "'<b B h H i I l L T f d'",
            "-5, 250, -300, 65000, -70000, 4000000000, -2^40, 2^40, 12345, 0.5, -1/3",
        ),
        (
            "'>b B h H i I l L T f d'",
            "-5, 250, -300, 65000, -70000, 4000000000, -2^40, 2^40, 12345, 0.5, -1/3",
        ),
        (
            "'!8 b d b i2 b s c3 b'",
            "1, 2.25, 3, 4, 5, 'str', 'abc', 6",
        ),
        (
            "'<i1 i2 i3 i4 i5 i6 i7 i8'",
            "-1, -2, -3, -4, -5, -6, -7, -8",
        ),
        ("'>I1 I2 I3 I4 I5 I6 I7 I8'", "1, 2, 3, 4, 5, 6, 7, 8"),
    ] {
        snippets.push(format!(
            "return show(struct.unpack({fmt}, struct.pack({fmt}, {vals})))"
        ));
    }
    check_snippets(&mut t, &snippets);
    t.assert_clean();
}

#[test]
fn struct_errors_in_function_code_match_the_builtin() {
    let server = Server::shared();
    let bodies: Vec<String> = [
        "return struct.pack('z')",
        "return struct.pack('b', 'x')",
        "return struct.pack('i33', 1)",
        "return struct.pack('c99999999999999999999', 'a')",
        "return struct.pack('!3')",
        "return struct.unpack('i4', 'ab')",
        "return struct.unpack('s', 'ab')",
        "return struct.unpack('b', 'a', 0)",
        "return struct.unpack('i4', 'abcd', 2^31)",
        "return struct.unpack('c0', 'a')",
        "return struct.size('s')",
        "return struct.size('c0')",
        "return struct:size()",
        "return {pcall(struct.pack, 'z')}",
        "return struct.unpack('>I2 i4', struct.pack('>I2 i4', 513, -7))",
        "return {struct.unpack('>I2 i4', struct.pack('>I2 i4', 513, -7))}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check_bodies(&server, &bodies);
}
