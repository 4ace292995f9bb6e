//! Built-in vs rfunc on the same server: identical replies (RESP2 and RESP3) for loads, calls, conversions,
//! errors and management commands. Only command names in error texts and the function name in error suffixes
//! are normalised (see `common::twin`).

mod common;

use common::{Server, Twin, Value};

/// One library per function body: `#!lua name=t<i>` with `server.register_function('f<i>', function(keys, args)`
/// on line 2 and the body on line 3 (the convention of the spec's tables).
fn lib(i: usize, body: &str) -> String {
    format!("#!lua name=t{i}\nserver.register_function('f{i}', function(keys, args)\n{body}\nend)")
}

fn both_protocols(server: &Server) -> Vec<Twin> {
    vec![Twin::new(server.conn()), Twin::new(server.conn3())]
}

const CONVERSIONS: &[&str] = &[
    "return 'abc'",
    "return ''",
    "return 42",
    "return 3.99",
    "return -3.99",
    "return 0.5",
    "return 1e300",
    "return -1e300",
    "return 0/0",
    "return 1/0",
    "return true",
    "return false",
    "return nil",
    "",
    "return {}",
    "return {1, 2, 3}",
    "return {1, 2, nil, 4}",
    "return {1, 'two', {3, {4, 'five'}}}",
    "return {1, 2, a = 3}",
    "return {err = 'MYERR custom'}",
    "return {err = 'x'}",
    "return {err = ''}",
    "return {err = 'line1\\r\\nline2'}",
    "return {err = 123}",
    "return {ok = 'FINE'}",
    "return {ok = 'a\\nb'}",
    "return {err = 'E1 x', ok = 'fine'}",
    "return {double = 1.5}",
    "return {double = 3}",
    "return {double = 0/0}",
    "return {double = 1/0}",
    "return {double = -1/0}",
    "return {double = 1e300}",
    "return {double = -0.0}",
    "return {double = '1.5'}",
    "return {big_number = '123456789012345678901234567890'}",
    "return {big_number = 123}",
    "return {verbatim_string = {format = 'txt', string = 'hello'}}",
    "return {verbatim_string = {format = 'markdown', string = 'x'}}",
    "return {verbatim_string = {format = 'ab', string = 'x'}}",
    "return {verbatim_string = {format = '', string = 'x'}}",
    "return {verbatim_string = {format = 'txt'}}",
    "return {map = {a = 1}}",
    "return {map = {a = 1}, 1, 2}",
    "return {set = {a = true}}",
    "return {true, false}",
    "return {1, {err = 'NESTED err'}, 3}",
    "return {{ok = 'OK'}, {double = 2.5}}",
    "return keys",
    "return args",
    "return #keys + #args",
    "return server.error_reply('my msg')",
    "return server.error_reply('-MYERR msg')",
    "return server.error_reply('')",
    "return server.error_reply(123)",
    "return server.status_reply('FINE')",
    "return server.status_reply({})",
    "return server.pcall('nosuchcmd')",
    "return redis.pcall('set', 'a')",
    "return server.sha1hex('')",
    "return server.sha1hex('abc')",
    "return server.sha1hex(123)",
    "return redis == server",
    "return type(server.call)",
    "return server.REDIS_VERSION",
    "return server.REDIS_VERSION_NUM",
    "return server.VALKEY_VERSION",
    "return server.VALKEY_VERSION_NUM",
    "return server.SERVER_NAME",
    "return {server.REPL_NONE, server.REPL_AOF, server.REPL_SLAVE, server.REPL_REPLICA, server.REPL_ALL}",
    "return {server.LOG_DEBUG, server.LOG_VERBOSE, server.LOG_NOTICE, server.LOG_WARNING}",
    "return _VERSION",
    "return tostring(1/3)",
    "return string.format('%5.2f|%d|%s', 3.14159, 42, 'x')",
    "return table.concat({'a', 'b', 'c'}, ',')",
    "return math.floor(2.5)",
    "return select('#', 1, 2, 3)",
    "return {pcall(error, {err = 'X y'})}",
    "return {pcall(error, 'boom')}",
    "local ok, e = pcall(error, {a = 1}) return type(e)",
    "local ok, e = pcall(server.call, 'nosuchcmd') return {tostring(ok), e}",
    "return {xpcall(function() error({err = 'xp'}) end, function(m) return type(m) .. m.err end)}",
    "return tostring(os.clock() >= 0)",
    "return type(loadstring)",
    "return loadstring('return 1+1')()",
    "return {loadstring(string.dump(function() return 1 end))}",
    "return {pcall(loadstring('x = 5'))}",
    "return {unpack({1, 2, 3})}",
    "return {pcall(unpack, {}, 1, 2^31-1)}",
    "return {pcall(unpack, {}, -2^31, 2^31-2)}",
    "local t = {} setmetatable(t, {__index = function() return 7 end}) return t.x",
    "return rawget(_G, 'zz')",
    "return getmetatable('').__index == string",
    "return getmetatable(string)",
    "local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end) local _, x = coroutine.resume(co, 1) local _, y = coroutine.resume(co, 10) return {x, y, coroutine.status(co)}",
    "return #string.rep('x', 1000)",
    "local t = {} for k in pairs({z=1,y=2,x=3,a=4,b=5}) do t[#t+1] = k end return t",
    "local t = {} for k in pairs(string) do t[#t+1] = k end table.sort(t) return t",
    "local t = {} for k in pairs(math) do t[#t+1] = k end table.sort(t) return t",
    "local t = {} for k in pairs(table) do t[#t+1] = k end table.sort(t) return t",
    "local t = {} for k in pairs(os) do t[#t+1] = k end table.sort(t) return t",
    "local t = {} for k in pairs(coroutine) do t[#t+1] = k end table.sort(t) return t",
    "local t = {} for k in pairs(server) do t[#t+1] = k end table.sort(t) return t",
    "math.randomseed(42) return {tostring(math.random()), math.random(100), math.random(1, 1000)}",
    "return {pcall(math.random, 1, 2, 3)}",
    "return {pcall(math.random, 0)}",
    "return {pcall(math.random, 5, 1)}",
];

/// Bodies where an 8.0 built-in crashes or runs the older, weaker sandbox; rfunc gives the 8.1+ behaviour on
/// every host (SPEC rule 2), checked by `hardened_behaviour_on_every_host`.
const NOT_ON_8_0: &[&str] = &[
    "error({})",
    "error({foo = 1})",
    "error(setmetatable({}, {__tostring = function() return 'ts' end}))",
    "return {pcall(unpack, {}, -2^31, 2^31-2)}",
    "getmetatable('').__index = {}",
    "return getfenv",
    "return newproxy",
    // CVE-2025-46818: 8.0 lets function code change the string metatable and the string library.
    "rawset(getmetatable(''), '__index', {})",
    "getmetatable('').__index.upper = function() return 'pwned' end",
    "local s = getmetatable('').__index s.rep = nil",
];

fn skip_on_host(server: &Server, body: &str) -> bool {
    server.version() < (8, 1, 0) && NOT_ON_8_0.contains(&body)
}

#[test]
fn return_value_conversions_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    for (i, body) in CONVERSIONS.iter().enumerate() {
        t.load(&lib(i, body));
    }
    for mut twin in both_protocols(&server) {
        for (i, body) in CONVERSIONS.iter().enumerate() {
            if skip_on_host(&server, body) {
                continue;
            }
            twin.check(&["FCALL", &format!("f{i}"), "2", "k1", "k2", "a1", "a2", "a3"]);
        }
        twin.assert_clean();
    }
}

const ERRORS: &[&str] = &[
    "error('my msg')",
    "error('my msg', 0)",
    "error('MYERR msg', 0)",
    "error({err = 'X msg'})",
    "error({err = 'lowercase msg'})",
    "error(server.error_reply('MYERR x'))",
    "error(123)",
    "error(nil)",
    "error(true)",
    "error({})",
    "error({foo = 1})",
    "error(setmetatable({}, {__tostring = function() return 'ts' end}))",
    "error({err = 1})",
    "local function g() error('deep') end g()",
    "local x = nil return x.y",
    "return 1 + nil",
    "server.call('nosuchcmd')",
    "server.call('SET', 'a')",
    "server.call()",
    "server.call({})",
    "server.call('set', nil)",
    "server.call('set', 'k', true)",
    "server.call('set', 'k', 'v') return server.call('incr', 'k')",
    "server.call('set', 'k', 'v') return server.call('lpush', 'k', 'x')",
    "server.call('FCALL', 'w', 0)",
    "server.call('EVAL', 'return 1', 0)",
    "server.call('function', 'list')",
    "server.call('multi')",
    "server.call('config', 'get', 'maxmemory')",
    "x = 1",
    "_G.x = 1",
    "string.x = 1",
    "string.format = 1",
    "server.call = 1",
    "cjson = nil",
    "getmetatable('').__index = {}",
    "setmetatable(_G, {})",
    "setmetatable(string, {})",
    "rawset(_G, 'x', 1)",
    "rawset(string, 'x', 1)",
    "table.insert(string, 1)",
    "return y",
    "return _G.y",
    "print('x')",
    "return getfenv",
    "return newproxy",
    "return debug",
    "return KEYS",
    "return ARGV",
    "return require",
    "return dofile",
    "return loadfile",
    "return module",
    "return package",
    "return io",
    "server.replicate_commands()",
    "server.register_function('x', function() end)",
    "local function r(n) return 1 + r(n + 1) end return r(1)",
    "return server.sha1hex()",
    "return server.sha1hex(1, 2)",
    "server.log()",
    "server.log('x', 'y')",
    "server.log(5, 'y')",
    "server.setresp()",
    "server.setresp(4)",
    "server.set_repl()",
    "server.set_repl(9)",
    "server.acl_check_cmd()",
    "server.acl_check_cmd('nosuchcmd')",
    "server.acl_check_cmd({})",
];

#[test]
fn errors_raised_in_functions_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    for (i, body) in ERRORS.iter().enumerate() {
        t.load(&lib(i, body));
    }
    for mut twin in both_protocols(&server) {
        twin.reset = vec![b"FLUSHALL".to_vec()];
        for (i, body) in ERRORS.iter().enumerate() {
            if skip_on_host(&server, body) {
                continue;
            }
            twin.check(&["FCALL", &format!("f{i}"), "0"]);
        }
        twin.assert_clean();
    }
}

#[test]
fn rfunc_keeps_the_function_name_in_error_suffixes() {
    let server = Server::shared();
    let mut c = server.conn();
    let code = "#!lua name=named\nserver.register_function('myfn', function()\nerror('x')\nend)";
    assert_eq!(c.cmd(&["RFUNC.LOAD", code]), Value::Bulk(b"named".to_vec()));
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "myfn", "0"]),
        Value::Error("ERR user_function:3: x script: myfn, on @user_function:3.".into())
    );
}

const CALLS: &[&str] = &[
    "return server.call('set', keys[1], args[1])",
    "return server.call('get', keys[1])",
    "return server.call('get', 'nosuchkey')",
    "return server.call('ping')",
    "return server.call('incrby', 'ctr', 5)",
    "return server.call('set', 'n', 3.5)",
    "server.call('set', 'n', 1e20) return server.call('get', 'n')",
    "server.call('set', 'n', 0.1) return server.call('get', 'n')",
    "server.call('set', 'n', 2^63) return server.call('get', 'n')",
    "server.call('set', 'n', 1e-7) return server.call('get', 'n')",
    "server.call('set', 'n', 1/3) return server.call('get', 'n')",
    "server.call('set', 'n', -0.0) return server.call('get', 'n')",
    "server.call('set', 'n', 1e16) return server.call('get', 'n')",
    "server.call('set', 'n', 1/0) return server.call('get', 'n')",
    "server.call('del', 'h') server.call('hset', 'h', 'a', '1', 'b', '2') return server.call('hgetall', 'h')",
    "server.setresp(3) server.call('del', 'h') server.call('hset', 'h', 'a', '1') return server.call('hgetall', 'h')",
    "server.setresp(3) server.call('del', 's') server.call('sadd', 's', 'm') return server.call('smembers', 's')",
    "server.call('del', 'z') server.call('zadd', 'z', '1.5', 'm') return server.call('zscore', 'z', 'm')",
    "server.setresp(3) server.call('del', 'z') server.call('zadd', 'z', '1.5', 'm') return server.call('zscore', 'z', 'm')",
    "server.setresp(3) server.call('del', 'z') server.call('zadd', 'z', '1.5', 'm') return server.call('zrange', 'z', 0, -1, 'withscores')",
    "server.setresp(3) return server.call('get', 'nosuchkey')",
    "server.setresp(3) return {server.call('get', 'nosuchkey') == nil}",
    "return {server.call('get', 'nosuchkey') == false}",
    "server.setresp(3) return {true, false}",
    "return {true, false}",
    "server.call('del', 'l') return server.call('blpop', 'l', 1)",
    "server.setresp(3) server.call('del', 'l') return server.call('blpop', 'l', 1)",
    "return server.call('type', 'ctr')",
    "return {server.call('set', 'x', 'y')}",
    "return server.call('set', 'x', 'y').ok",
    "return server.pcall('incr', 'x')",
    "local r = server.pcall('incr', 'x') return {type(r), r.err, tostring(r.ignore_error_stats_update)}",
    "return server.call('select', 1)",
    "server.call('select', 1) server.call('set', 'indb1', 'v') return server.call('get', 'indb1')",
    "return server.call('get', 'indb1')",
    "return server.acl_check_cmd('set', 'a', 'b')",
    "return server.acl_check_cmd('get')",
    "server.log(server.LOG_WARNING, 'a', {}, 5, nil, 'b') return 1",
    "server.set_repl(server.REPL_ALL) return 1",
    "return server.call('exists', unpack(keys))",
    "local t = {} for i = 1, 100 do t[i] = i end return t",
    "return server.call('echo', string.rep('x', 100000)):len()",
    // KEYS / ARGV entries go to the server as the caller's own strings: what a command stores or changes must
    // not show through them, nor through a string that reuses a collected entry's memory.
    "server.call('set', keys[1], args[1]) server.call('append', keys[1], '!') server.call('set', 'k2', args[1]) \
     return {server.call('get', keys[1]), server.call('get', 'k2'), args[1], server.call('strlen', args[1])}",
    "server.call('set', keys[1], args[1], 'EX', 100) server.call('set', 'k2', args[1]) server.call('expire', 'k2', 50) \
     server.call('setrange', 'k2', 1, 'XY') return {server.call('get', keys[1]), server.call('get', 'k2'), \
     server.call('ttl', keys[1]), server.call('ttl', 'k2')}",
    "server.call('del', keys[1]) server.call('rpush', keys[1], args[1], keys[1], args[1]) \
     server.call('hset', 'h2', args[1], keys[1], keys[1], args[1]) \
     return {server.call('lrange', keys[1], 0, -1), server.call('hgetall', 'h2')}",
    "server.call('set', args[1], '41') server.call('incr', args[1]) server.call('set', keys[1], args[1]) \
     return {server.call('get', args[1]), server.call('get', keys[1])}",
    "keys[1] = nil args[1] = nil collectgarbage() collectgarbage() local t = {} \
     for i = 1, 500 do t[i] = 'k' .. i end server.call('set', 'key', 'other') \
     return {server.call('get', 'ke' .. 'y'), server.call('get', t[1]), server.call('echo', 'va' .. 'l')}",
];

#[test]
fn commands_called_from_functions_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    for (i, body) in CALLS.iter().enumerate() {
        t.load(&lib(i, body));
    }
    for mut twin in both_protocols(&server) {
        twin.reset = vec![b"FLUSHALL".to_vec()];
        for (i, _) in CALLS.iter().enumerate() {
            twin.check(&["FCALL", &format!("f{i}"), "1", "key", "val"]);
        }
        twin.assert_clean();
    }
}

/// Library code → the reply of FUNCTION LOAD (errors included).
const LOADS: &[&str] = &[
    "return 1",
    " #!lua name=x\nreturn 1",
    "#!lua",
    "#!lua name=x",
    "#!lua name=a6 \"unbalanced\nreturn 1",
    "#!LUA name=bad\0foramat\nreturn 1",
    "#!lua name=ok2 \0 junk\nserver.register_function('t2', function() return 1 end)",
    "#!lua\nreturn 1",
    "#!\nreturn 1",
    "#!   \nreturn 1",
    "#!lua name=\nreturn 1",
    "#!lua name=a-b\nreturn 1",
    "#!lua name=é\nreturn 1",
    "#!lua name=a name=b\nreturn 1",
    "#!lua name=a foo=bar\nreturn 1",
    "#!lua x name=a\nreturn 1",
    "#!  lua   name=a2  \nreturn 1",
    "#!js name=a\nreturn 1",
    "#! name=x\nreturn 1",
    "#!lua \"name=a3\"\nserver.register_function('g3', function() return 3 end)",
    "#!lua name=\"a4\"\nserver.register_function('g4', function() return 4 end)",
    "#!lua\tname=a5\r\nserver.register_function('g5', function() return 5 end)",
    "#!LUA name=a7\nserver.register_function('g7', function() return 7 end)",
    "#!lua NAME=a8\nserver.register_function('g8', function() return 8 end)",
    "#!lua name=e1\n",
    "#!lua name=e2\nlocal x = 1",
    "#!lua name=e3\nlocal x = = 1",
    "#!lua name=e4\nreturn 1 + nil",
    "#!lua name=e5\nerror('boom')",
    "#!lua name=e6\nx = 1",
    "#!lua name=e7\nserver.x = 1",
    "#!lua name=e8\nserver.register_function = nil",
    "#!lua name=e9\nlocal x = nil; x.y = 1",
    "#!lua name=e10\nserver.call('ping')",
    "#!lua name=e11\nserver.setresp(3)",
    "#!lua name=e12\nreturn pairs",
    "#!lua name=e13\nreturn string",
    "#!lua name=e14\nserver.register_function()",
    "#!lua name=e15\nserver.register_function('a', function() end, 3)",
    "#!lua name=e16\nserver.register_function('a')",
    "#!lua name=e17\nserver.register_function({}, function() end)",
    "#!lua name=e18\nserver.register_function('a', 'b')",
    "#!lua name=e19\nserver.register_function{}",
    "#!lua name=e20\nserver.register_function{function_name='a'}",
    "#!lua name=e21\nserver.register_function{callback=function() end}",
    "#!lua name=e22\nserver.register_function{function_name='a', callback=function() end, foo=1}",
    "#!lua name=e23\nserver.register_function{function_name='a', callback=function() end, [1]=1}",
    "#!lua name=e24\nserver.register_function{function_name={}, callback=function() end}",
    "#!lua name=e25\nserver.register_function{function_name='a', callback='x'}",
    "#!lua name=e26\nserver.register_function{function_name='a', callback=function() end, description={}}",
    "#!lua name=e27\nserver.register_function{function_name='a', callback=function() end, flags='no-writes'}",
    "#!lua name=e28\nserver.register_function{function_name='a', callback=function() end, flags={'no-script'}}",
    "#!lua name=e29\nserver.register_function{function_name='a', callback=function() end, flags={1}}",
    "#!lua name=e30\nserver.register_function('a-b', function() end)",
    "#!lua name=e31\nserver.register_function('', function() end)",
    "#!lua name=e32\nserver.register_function('dup', function() end) server.register_function('dup', function() end)",
    "#!lua name=e33\nserver.register_function(1, function() return 1 end)",
    "#!lua name=e34\nserver.register_function{FUNCTION_NAME='h34', CallBack=function() end, Flags={'NO-WRITES', 'allow-oom', 'no-writes'}, DESCRIPTION=1}",
    "#!lua name=e35\nserver.register_function{function_name='h35', callback=function() end, description=''}",
    "#!lua name=e36\nserver.register_function{function_name='h36', callback=function() end, flags={no_writes=true}}",
    "#!lua name=e37\nlocal function g() return 1 end server.register_function('h37', g) return 5",
    "#!lua name=e38\nserver.register_function('h38', function() end) server.register_function('h38b', function() end)",
    "#!lua name=e39\nserver.register_function('a-b', function() end) local x = 1 + nil",
    "#!lua name=e41\nreturn server.REDIS_VERSION .. server.VALKEY_VERSION .. server.SERVER_NAME",
    "#!lua name=e42\nreturn redis.register_function == server.register_function",
    "#!lua name=e43\nserver.register_function{function_name='h43', callback=function() end, flags={'no-writes','allow-oom','allow-stale','no-cluster','allow-cross-slot-keys'}}",
    "#!lua name=e44\nfor i = 1, 3 do server.register_function('h44_' .. i, function() return i end) end",
];

#[test]
fn library_loading_matches_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    for code in LOADS {
        t.check(&["FUNCTION", "LOAD", code]);
    }
    t.assert_clean();
    // Everything that loaded is listed the same way.
    for mut twin in both_protocols(&server) {
        for lib in [
            "a3", "a4", "a5", "a7", "a8", "e33", "e34", "e35", "e36", "e37", "e38", "e43", "e44",
        ] {
            twin.same_str(&["FUNCTION", "LIST", "LIBRARYNAME", lib, "WITHCODE"]);
            twin.same_str(&["FUNCTION", "LIST", "LIBRARYNAME", lib]);
        }
    }
    for f in ["g3", "G4", "g5", "g7", "g8", "1", "h34", "h37", "h44_2"] {
        t.same_str(&["FCALL", f, "0"]);
    }
}

#[test]
fn load_conflicts_and_replace_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    let a = "#!lua name=A\nserver.register_function('fa', function() return 'A1' end)";
    let a2 = "#!lua name=A\nserver.register_function('FA', function() return 'A2' end)";
    let a_bad =
        "#!lua name=A\nserver.register_function('fa', function() return 'A3' end) error('x')";
    let b = "#!lua name=B\nserver.register_function('fb', function() return 'B' end)";
    let b_steals = "#!lua name=C\nserver.register_function('FB', function() return 'C' end)";
    for args in [
        vec!["FUNCTION", "LOAD", a],
        vec!["FUNCTION", "LOAD", a],
        vec!["FUNCTION", "LOAD", b],
        vec!["FUNCTION", "LOAD", b_steals],
        vec!["FUNCTION", "LOAD", "REPLACE", b_steals],
        vec!["FUNCTION", "LOAD", "REPLACE", a_bad],
        vec!["FCALL", "fa", "0"],
        vec!["FUNCTION", "LOAD", "REPLACE", a2],
        vec!["FCALL", "fa", "0"],
        vec!["FCALL", "Fa", "0"],
        vec!["FUNCTION", "LOAD", "FOO", a],
        vec!["FUNCTION", "LOAD", "REPLACE", "replace", a],
        vec!["FUNCTION", "LOAD", "REPLACE"],
        vec!["FUNCTION", "LOAD"],
        vec!["FUNCTION", "DELETE", "A"],
        vec!["FUNCTION", "DELETE", "A"],
        vec!["FUNCTION", "DELETE", "b"],
        vec!["FUNCTION", "DELETE"],
        vec!["FUNCTION", "DELETE", "a", "b"],
        vec!["FCALL", "fa", "0"],
    ] {
        t.same_str(&args);
    }
}

/// KEYS / ARGV entries reach the server as the caller's own strings where that changes nothing: what a
/// command stores from them has the encoding a fresh copy would get (integers, short and long strings).
#[test]
fn values_stored_from_keys_and_args_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.load(
        "#!lua name=st\nserver.register_function('st', function(k, a)\n\
         local out = {}\n\
         for i, v in ipairs(a) do\n\
           server.call('set', k[1], v) server.call('set', v, k[1]) server.call('rpush', 'l', v)\n\
           out[#out + 1] = {server.call('object', 'encoding', k[1]), server.call('get', k[1]),\n\
             server.call('object', 'encoding', v), server.call('get', v),\n\
             server.call('object', 'refcount', k[1]), server.call('object', 'refcount', v)}\n\
         end\n\
         out[#out + 1] = server.call('lrange', 'l', 0, -1)\n\
         return out\nend)",
    );
    let long = "x".repeat(45);
    let longer = "y".repeat(200);
    let values = [
        "123",
        "-7",
        "0",
        "007",
        "12345678901234567890123",
        "abc",
        "-",
        "",
        &long,
        &longer,
        "4.5",
    ];
    for key in ["k", "99", &long] {
        let mut args = vec!["FCALL", "st", "1", key];
        args.extend(values.iter().copied());
        t.reset = vec![b"FLUSHALL".to_vec()];
        t.check(&args);
    }
    t.assert_clean();
}

/// A caller on the inline protocol has its arguments in the raw encoding; what a function stores from them is
/// still stored like a fresh copy, as the built-in does.
#[test]
fn values_stored_from_inline_protocol_arguments_match_the_builtin() {
    use std::io::{Read, Write};
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.load(
        "#!lua name=inl\nserver.register_function('inl', function(k, a)\n\
         server.call('set', k[1], a[1]) server.call('set', a[1], k[1])\n\
         return {server.call('object', 'encoding', k[1]), server.call('object', 'encoding', a[1]),\n\
           server.call('get', k[1]), server.call('get', a[1])}\nend)",
    );
    let inline = |cmd: &str| -> Vec<u8> {
        let mut s =
            std::net::TcpStream::connect((server.host.as_str(), server.port)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The reply is an array of four short bulk strings: read until the fourth one ends.
        while out.iter().filter(|&&b| b == b'\n').count() < 9 {
            let n = s.read(&mut buf).expect("read");
            assert!(
                n > 0,
                "connection closed after {:?}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        out
    };
    for (key, value) in [
        ("ik", "hello"),
        ("ik2", "123"),
        ("ik3", "abcdefghijklmnopqrstuvwxyzabcdefghij"),
    ] {
        let builtin = inline(&format!("FCALL inl 1 {key} {value}"));
        let ours = inline(&format!("RFUNC.FCALL inl 1 {key} {value}"));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&builtin),
            "{key} {value}"
        );
    }
}

/// The sharing the two tests above prove invisible does happen where it is allowed (8.1+, embedded strings):
/// a layout the module does not recognise would silently turn it off.
#[test]
fn keys_and_args_go_to_calls_by_reference_from_8_1() {
    // Its own server: the count is server-wide, and only test builds of the module report it.
    let Some(b) = Server::owned("keys_and_args_by_reference") else {
        return;
    };
    let server = b.start();
    let mut c = server.conn();
    c.cmd(&[
        "RFUNC.LOAD",
        "REPLACE",
        "#!lua name=byref\nserver.register_function('byref', function(k, a) \
         server.call('set', k[1], a[1]) return server.call('get', k[1]) end)",
    ]);
    let shared = |c: &mut common::Conn| -> i64 {
        common::info_field(c, "rfunc", "rfunc_test_args_by_reference")
            .parse()
            .expect("test builds report rfunc_test_args_by_reference")
    };
    let before = shared(&mut c);
    // key twice (SET, GET), value once; "12" is integer-like: shared only where calls hold their arguments (9.1).
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "byref", "1", "byref:k", "hello"]),
        Value::Bulk(b"hello".to_vec())
    );
    let after_text = shared(&mut c);
    assert_eq!(
        c.cmd(&["RFUNC.FCALL", "byref", "1", "byref:k", "12"]),
        Value::Bulk(b"12".to_vec())
    );
    let after_int = shared(&mut c);
    let v = server.version();
    let expected = if (v.0, v.1) >= (8, 1) {
        (3, if (v.0, v.1) >= (9, 1) { 3 } else { 2 })
    } else {
        (0, 0)
    };
    assert_eq!(
        (after_text - before, after_int - after_text),
        expected,
        "server {v:?}"
    );
}

#[test]
fn fcall_argument_checks_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.load("#!lua name=w\nserver.register_function('w', function(k, a) return {#k, #a} end)");
    t.load("#!lua name=r\nserver.register_function{function_name='r', callback=function(k, a) return {k, a} end, flags={'no-writes'}}");
    t.load("#!lua name=rw\nserver.register_function{function_name='rowrite', callback=function() return server.call('set', 'x', 1) end, flags={'no-writes'}}");
    for args in [
        vec!["FCALL"],
        vec!["FCALL", "w"],
        vec!["FCALL", "nosuch", "0"],
        vec!["FCALL", "nosuch", "x"],
        vec!["FCALL", "w", "x"],
        vec!["FCALL", "w", "1.0"],
        vec!["FCALL", "w", "99999999999999999999"],
        vec!["FCALL", "w", "3", "a", "b"],
        vec!["FCALL", "w", "-1"],
        vec!["FCALL", "w", "0"],
        vec!["FCALL", "w", "2", "a", "b", "c"],
        vec!["FCALL", "W", "0", "a"],
        vec!["FCALL", "w", "01"],
        vec!["FCALL", "w", "+1", "a"],
        vec!["FCALL_RO", "w", "0"],
        vec!["FCALL_RO", "w", "x"],
        vec!["FCALL_RO", "r", "1", "k", "a"],
        vec!["FCALL", "r", "1", "k", "a"],
        vec!["FCALL", "rowrite", "0"],
        vec!["FCALL_RO", "rowrite", "0"],
    ] {
        t.same_str(&args);
    }
}

#[test]
fn management_commands_match_the_builtin() {
    let server = Server::shared();
    for mut t in both_protocols(&server) {
        t.flush();
        for args in [
            vec!["FUNCTION", "LIST"],
            vec!["FUNCTION", "STATS"],
            vec!["FUNCTION", "KILL"],
            vec!["FUNCTION", "DUMP"],
            vec!["FUNCTION", "STATS", "x"],
            vec!["FUNCTION", "KILL", "x"],
            vec!["FUNCTION", "DUMP", "x"],
            vec!["FUNCTION", "FLUSH", "x"],
            vec!["FUNCTION", "FLUSH", "sync", "x"],
            vec!["FUNCTION", "LIST", "foo"],
            vec!["FUNCTION", "LIST", "LIBRARYNAME"],
            vec!["FUNCTION", "LIST", "WITHCODE", "WITHCODE"],
            vec!["FUNCTION", "LIST", "LIBRARYNAME", "a", "LIBRARYNAME", "b"],
        ] {
            t.same_str(&args);
        }
        t.load("#!lua name=mylib\nserver.register_function{function_name='f1', callback=function() return 1 end, description='desc one', flags={'allow-stale', 'no-writes'}}\nserver.register_function('f2', function() return 2 end)");
        t.load("#!lua name=other\nserver.register_function('o1', function() return 1 end)");
        for args in [
            vec!["FUNCTION", "STATS"],
            vec!["FUNCTION", "LIST", "LIBRARYNAME", "MY*"],
            vec!["FUNCTION", "LIST", "LIBRARYNAME", "my?ib", "WITHCODE"],
            vec!["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "oth[a-f]r"],
            vec!["FUNCTION", "LIST", "LIBRARYNAME", ""],
            vec!["FUNCTION", "LIST", "LIBRARYNAME", "WITHCODE"],
            vec!["FUNCTION", "LIST", "LIBRARYNAME", "nomatch"],
            vec!["FUNCTION", "FLUSH", "async"],
            vec!["FUNCTION", "LIST"],
            vec!["FUNCTION", "STATS"],
            vec!["FUNCTION", "FLUSH"],
        ] {
            t.same_str(&args);
        }
    }
}

#[test]
fn dump_of_one_library_is_byte_identical_and_cross_restorable() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.flush();
    let code =
        std::fs::read_to_string(common::repo_root().join("core/tests/vectors/code--mylib.lua"))
            .unwrap();
    t.load(&code);
    let dump = t.same_str(&["FUNCTION", "DUMP"]);
    // DUMP follows rdbcompression (rfunc keeps each library's entry per setting).
    t.cmd(&["CONFIG", "SET", "rdbcompression", "no"]);
    let raw = t.same_str(&["FUNCTION", "DUMP"]);
    assert!(raw.len() > dump.len(), "uncompressed dump is not longer");
    t.cmd(&["CONFIG", "SET", "rdbcompression", "yes"]);
    assert_eq!(t.same_str(&["FUNCTION", "DUMP"]), dump);
    let Value::Bulk(payload) = common::resp::parse(&dump).unwrap().unwrap().0 else {
        panic!("dump is a bulk")
    };
    // FUNCTION RESTORE takes RFUNC.DUMP's payload, and the other way round.
    let mut c = server.conn();
    c.cmd(&["FUNCTION", "FLUSH"]);
    c.cmd(&["RFUNC.FLUSH"]);
    assert_eq!(
        c.call(&[b"FUNCTION", b"RESTORE", &payload]),
        Value::Simple("OK".into())
    );
    assert_eq!(
        c.call(&[b"RFUNC.RESTORE", &payload]),
        Value::Simple("OK".into())
    );
    t.same_str(&["FUNCTION", "LIST", "WITHCODE"]);
    // Empty registry: just the footer.
    t.flush();
    t.same_str(&["FUNCTION", "DUMP"]);
}

#[test]
fn restore_policies_and_payload_errors_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.flush();
    let lib1 = "#!lua name=lib1\nserver.register_function('f1', function() return 1 end)";
    let lib1b = "#!lua name=lib1\nserver.register_function('f1b', function() return 11 end)";
    let lib2 = "#!lua name=lib2\nserver.register_function('f2', function() return 2 end)";
    let lib3 = "#!lua name=lib3\nserver.register_function('f1', function() return 3 end)";
    let payload_of = |codes: &[&str]| -> Vec<u8> {
        let mut c = server.conn();
        c.cmd(&["FUNCTION", "FLUSH"]);
        for code in codes {
            c.cmd(&["FUNCTION", "LOAD", code]);
        }
        let p = c.cmd(&["FUNCTION", "DUMP"]).as_bytes().to_vec();
        c.cmd(&["FUNCTION", "FLUSH"]);
        p
    };
    let p1 = payload_of(&[lib1]);
    let p1b = payload_of(&[lib1b]);
    let p12 = payload_of(&[lib1, lib2]);
    let p3 = payload_of(&[lib3]);
    let mut bad_crc = p1.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let restore = |t: &mut Twin, p: &[u8], policy: Option<&str>| {
        let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"RESTORE", p];
        if let Some(pol) = policy {
            args.push(pol.as_bytes());
        }
        t.same(&args);
        t.same_str(&["FUNCTION", "LIST", "WITHCODE"]);
    };
    restore(&mut t, &p1, None);
    restore(&mut t, &p1, None);
    restore(&mut t, &p1, Some("append"));
    restore(&mut t, &p1b, Some("REPLACE"));
    restore(&mut t, &p12, Some("replace"));
    restore(&mut t, &p3, Some("REPLACE"));
    restore(&mut t, &p3, Some("FLUSH"));
    restore(&mut t, &p12, Some("bogus"));
    restore(&mut t, &bad_crc, None);
    restore(&mut t, b"", None);
    restore(&mut t, b"garbage", None);
    restore(&mut t, &p1[..5], None);
    // A library that does not compile, followed by a malformed entry: the compile error is reported first.
    let bad = "#!lua name=bad\nlocal x = = 1";
    let mut p = vec![0xF5, bad.len() as u8];
    p.extend_from_slice(bad.as_bytes());
    p.push(0x00);
    p.extend_from_slice(&p1[p1.len() - 10..p1.len() - 8]);
    p.extend_from_slice(&[0; 8]);
    let crc = common::crc64_jones(&p[..p.len() - 8]);
    let n = p.len();
    p[n - 8..].copy_from_slice(&crc.to_le_bytes());
    restore(&mut t, &p, None);
    for args in [
        vec!["FUNCTION", "RESTORE"],
        vec!["FUNCTION", "RESTORE", "a", "b", "c"],
    ] {
        t.same_str(&args);
    }
    t.same_str(&["FCALL", "f1", "0"]);
}

/// Not compared with the built-in: 9.1.2's own `server.log` during FUNCTION LOAD crashes the server (SPEC rule 2).
#[test]
fn logging_during_load_works() {
    let server = Server::shared();
    let mut c = server.conn();
    let code = "#!lua name=logload\nserver.log(server.LOG_WARNING, 'hello from load') server.register_function('h40', function() return 40 end)";
    assert_eq!(
        c.cmd(&["RFUNC.LOAD", code]),
        Value::Bulk(b"logload".to_vec())
    );
    assert_eq!(c.cmd(&["RFUNC.FCALL", "h40", "0"]), Value::Int(40));
    if !server.is_external() {
        assert!(
            server.log().contains("hello from load"),
            "log line missing:\n{}",
            server.log()
        );
    }
}

/// SPEC rule 2: two functions whose names differ only in case are refused (the built-in accepts them and
/// later crashes on DELETE / LOAD REPLACE).
#[test]
fn case_insensitive_duplicates_in_one_library_are_refused() {
    let server = Server::shared();
    let mut c = server.conn();
    let code = "#!lua name=dupcase\nserver.register_function('x', function() end) server.register_function('X', function() end)";
    let expected = if server.version() >= (8, 1, 0) {
        "ERR Function already exists in the library"
    } else {
        "ERR Error registering functions: ERR Function already exists in the library"
    };
    assert_eq!(c.cmd(&["RFUNC.LOAD", code]), Value::Error(expected.into()));
    assert_eq!(
        c.cmd(&["RFUNC.LIST", "LIBRARYNAME", "dupcase"]),
        Value::Array(vec![])
    );
}

/// The 8.1+ answers rfunc gives on every host, including 8.0 where the built-in crashes or is weaker.
#[test]
fn hardened_behaviour_on_every_host() {
    let server = Server::shared();
    let mut c = server.conn();
    let cases: &[(&str, Value)] = &[
        ("error({})", Value::Error("ERR unknown error script: h0, on @user_function:3.".into())),
        ("error({foo = 1})", Value::Error("ERR unknown error script: h1, on @user_function:3.".into())),
        (
            "error(setmetatable({}, {__tostring = function() return 'ts' end}))",
            Value::Error("ERR unknown error script: h2, on @user_function:3.".into()),
        ),
        (
            "return {pcall(unpack, {}, -2^31, 2^31-2)}",
            Value::Array(vec![Value::Nil, Value::Bulk(b"too many results to unpack".to_vec())]),
        ),
        (
            "getmetatable('').__index = {}",
            Value::Error("ERR user_function:3: Attempt to modify a readonly table script: h4, on @user_function:3.".into()),
        ),
        (
            "return getfenv",
            Value::Error(
                "ERR user_function:3: Script attempted to access nonexistent global variable 'getfenv' script: h5, on @user_function:3."
                    .into(),
            ),
        ),
        (
            "return newproxy",
            Value::Error(
                "ERR user_function:3: Script attempted to access nonexistent global variable 'newproxy' script: h6, on @user_function:3."
                    .into(),
            ),
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let code = format!("#!lua name=hard{i}\nserver.register_function('h{i}', function(keys, args)\n{body}\nend)");
        assert_eq!(
            c.cmd(&["RFUNC.LOAD", &code]),
            Value::Bulk(format!("hard{i}").into_bytes())
        );
        assert_eq!(
            &c.cmd(&["RFUNC.FCALL", &format!("h{i}"), "0"]),
            expected,
            "{body}"
        );
    }
}

/// SPEC rule 5: RFUNC.RESTORE takes every version a real server writes (10, 11, 12, 80) on every host.
#[test]
fn restore_accepts_every_written_payload_version() {
    let server = Server::shared();
    let mut c = server.conn();
    let vectors = common::repo_root().join("core/tests/vectors");
    for prefix in [
        "redis-7.0.15",
        "valkey-8.0.1-debian",
        "valkey-8.1.8",
        "valkey-9.1.2",
    ] {
        let p = std::fs::read(vectors.join(format!("{prefix}--three-libs.bin"))).unwrap();
        assert_eq!(
            c.call(&[b"RFUNC.RESTORE", &p, b"FLUSH"]),
            Value::Simple("OK".into()),
            "{prefix}"
        );
        assert_eq!(c.cmd(&["RFUNC.LIST"]).as_array().len(), 3, "{prefix}");
    }
    // Version 12 (Redis 7.4) with a valid CRC: no server of ours writes it, rfunc still reads it.
    let mut p = std::fs::read(vectors.join("valkey-9.1.2--tiny.bin")).unwrap();
    let n = p.len();
    p[n - 10] = 12;
    let crc = common::crc64_jones(&p[..n - 8]);
    p[n - 8..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        c.call(&[b"RFUNC.RESTORE", &p, b"FLUSH"]),
        Value::Simple("OK".into())
    );
    // Version 13 is not a version anyone writes for this format.
    p[n - 10] = 13;
    let crc = common::crc64_jones(&p[..n - 8]);
    p[n - 8..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        c.call(&[b"RFUNC.RESTORE", &p, b"FLUSH"]),
        Value::Error("ERR DUMP payload version or checksum are wrong".into())
    );
}

/// Function flags at call time under OOM (commands.md §4.2): the built-in's answers, same server.
#[test]
fn oom_and_function_flags_match_the_builtin() {
    let Some(b) = Server::owned("oom_flags") else {
        return;
    };
    let server = b.start();
    let mut t = Twin::new(server.conn());
    t.load("#!lua name=oomlib\nserver.register_function('w', function() return 1 end)\nserver.register_function{function_name='ro', callback=function(k) return server.call('get', k[1]) end, flags={'no-writes'}}\nserver.register_function{function_name='ao', callback=function(k) return server.call('set', k[1], 'x') end, flags={'allow-oom'}}\nserver.register_function('setter', function(k) return server.call('set', k[1], 'y') end)");
    t.cmd(&["SET", "big", &"x".repeat(100_000)]);
    assert_eq!(
        t.cmd(&["CONFIG", "SET", "maxmemory", "1"]),
        Value::Simple("OK".into())
    );
    for args in [
        vec!["FCALL", "w", "0"],
        vec!["FCALL", "w", "x"],
        vec!["FCALL", "w", "-1"],
        vec!["FCALL_RO", "w", "x"],
        vec!["FCALL", "ro", "1", "big"],
        vec!["FCALL_RO", "ro", "1", "big"],
        vec!["FCALL", "ao", "1", "k1"],
        vec!["FCALL", "setter", "1", "k2"],
        vec![
            "FUNCTION",
            "LOAD",
            "#!lua name=x2\nserver.register_function('x2', function() end)",
        ],
        vec!["FUNCTION", "DELETE", "nosuch"],
    ] {
        t.check(&args);
    }
    t.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    t.assert_clean();
}

/// A stale replica (primary unreachable, replica-serve-stale-data no): MASTERDOWN unless `allow-stale`, and
/// inside an allow-stale function every data command fails (commands.md §4.2).
#[test]
fn stale_replica_and_allow_stale_match_the_builtin() {
    let Some(b) = Server::owned("stale_replica") else {
        return;
    };
    let server = b.start();
    let mut t = Twin::new(server.conn());
    t.load("#!lua name=stalelib\nserver.register_function{function_name='plain', callback=function() return 1 end, flags={'no-writes'}}\nserver.register_function{function_name='stale', callback=function() return server.call('ping') end, flags={'no-writes', 'allow-stale'}}\nserver.register_function{function_name='stalepure', callback=function() return 7 end, flags={'no-writes', 'allow-stale'}}\nserver.register_function('writer', function() return 1 end)");
    // A primary that does not exist: the link stays down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    t.cmd(&["CONFIG", "SET", "replica-serve-stale-data", "no"]);
    t.cmd(&["REPLICAOF", "127.0.0.1", &dead.to_string()]);
    for args in [
        vec!["FCALL", "plain", "0"],
        vec!["FCALL", "stale", "0"],
        vec!["FCALL", "stalepure", "0"],
        vec!["FCALL_RO", "stalepure", "0"],
        vec!["FCALL", "writer", "0"],
        vec!["FCALL_RO", "writer", "0"],
    ] {
        t.check(&args);
    }
    t.cmd(&["REPLICAOF", "NO", "ONE"]);
    t.assert_clean();
}

/// Sandbox escape attempts (issue: "a battery of escape attempts"): each fails cleanly, exactly like the built-in,
/// and the server stays up.
const ESCAPES: &[&str] = &[
    "local mt = getmetatable(_G) local g = mt.__index g['redis'] = function() return 1 end",
    "local mt = getmetatable(_G) mt.__index = {}",
    "setmetatable(getmetatable(_G), {})",
    "rawset(getmetatable(''), '__index', {})",
    "getmetatable('').__index.upper = function() return 'pwned' end",
    "local s = getmetatable('').__index s.rep = nil",
    "return coroutine.wrap(function() x = 1 end)()",
    "local co = coroutine.create(function() string.len = nil end) return {coroutine.resume(co)}",
    "return {pcall(setfenv, 1, {})}",
    "return {pcall(loadstring, string.dump(function() return 1 end))}",
    "local parts = {string.dump(function() return 1 end)} local i = 0 return {load(function() i = i + 1 return parts[i] end)}",
    "return {pcall(load, string.dump(function() return 1 end))}",
    "local f = loadstring('return _G') return f() == _G",
    "local f = loadstring('x = 1') return {pcall(f)}",
    "return {pcall(rawset, _G, 'x', 1)}",
    "return {pcall(rawset, server, 'call', 1)}",
    "return {pcall(setmetatable, server, {})}",
    "return {pcall(table.insert, _G, 1)}",
    "return {pcall(table.sort, string)}",
    "return {pcall(next, _G, 'nope')}",
    "local t = setmetatable({}, {__index = _G}) t.x = 1 return t.x",
    "local t = setmetatable({}, {__newindex = _G}) t.y = 1",
    "return {pcall(function() local a = {} a[a] = a return cjson.encode(a) end)}",
    "return {pcall(string.rep, 'x', -1)}",
    "return #tostring(function() end) > 0",
    "return {pcall(collectgarbage, 'stop')}",
    "return type(gcinfo())",
    "local ok, e = pcall(error, setmetatable({}, {__tostring = function() return server.call('set', 'pwn', 1) end})) return type(e)",
];

#[test]
fn sandbox_escape_attempts_fail_like_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    for (i, body) in ESCAPES.iter().enumerate() {
        t.load(&lib(500 + i, body));
    }
    for mut twin in both_protocols(&server) {
        twin.reset = vec![b"FLUSHALL".to_vec()];
        for (i, body) in ESCAPES.iter().enumerate() {
            if skip_on_host(&server, body)
                || (server.version() < (8, 1, 0) && body.contains("setfenv"))
            {
                continue;
            }
            twin.check(&["FCALL", &format!("f{}", 500 + i), "0"]);
        }
        twin.assert_clean();
    }
    let mut c = server.conn();
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
}

/// A payload that names a library twice, or a function in two of its libraries (also in another case): the
/// built-in's verdict, and nothing restored.
#[test]
fn restore_payloads_with_duplicate_names_match_the_builtin() {
    let server = Server::shared();
    let mut t = Twin::new(server.conn());
    t.flush();
    // The version bytes of this server's payloads, from a real DUMP.
    let version = {
        let mut c = server.conn();
        c.cmd(&[
            "FUNCTION",
            "LOAD",
            "#!lua name=v\nserver.register_function('v', function() return 1 end)",
        ]);
        let p = c.cmd(&["FUNCTION", "DUMP"]).as_bytes().to_vec();
        c.cmd(&["FUNCTION", "FLUSH"]);
        p[p.len() - 10..p.len() - 8].to_vec()
    };
    let payload = |codes: &[&str]| -> Vec<u8> {
        let mut p = Vec::new();
        for code in codes {
            p.push(0xF5);
            let n = code.len();
            if n < 64 {
                p.push(n as u8);
            } else {
                p.extend_from_slice(&[0x40 | (n >> 8) as u8, (n & 0xff) as u8]);
            }
            p.extend_from_slice(code.as_bytes());
        }
        p.extend_from_slice(&version);
        let crc = common::crc64_jones(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        p
    };
    let lib = |name: &str, f: &str| {
        format!("#!lua name={name}\nserver.register_function('{f}', function() return 1 end)")
    };
    let cases: Vec<Vec<String>> = vec![
        vec![lib("a", "f1"), lib("a", "f2")],
        vec![lib("a", "f1"), lib("b", "f1")],
        vec![lib("a", "f1"), lib("b", "F1")],
        vec![
            lib("a", "f1"),
            lib("b", "f2"),
            lib("c", "f3"),
            lib("b", "f4"),
        ],
        vec![lib("a", "f1"), lib("b", "f2"), lib("c", "f3")],
    ];
    for codes in &cases {
        let codes: Vec<&str> = codes.iter().map(|s| s.as_str()).collect();
        let p = payload(&codes);
        for policy in [None, Some("REPLACE"), Some("FLUSH")] {
            let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"RESTORE", &p];
            if let Some(pol) = policy {
                args.push(pol.as_bytes());
            }
            t.same(&args);
            t.same_str(&["FUNCTION", "LIST", "WITHCODE"]);
        }
        t.flush();
    }
}
