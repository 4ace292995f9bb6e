//! What rfunc knows about the server it is loaded into. SPEC rule 1: behave like the built-in of this server
//! version, so the version is read once at load time and the version-dependent behaviour hangs off it.

use std::sync::OnceLock;

use crate::rm::{self, reply, Ctx};

#[derive(Debug, Clone)]
pub struct Host {
    /// `valkey_version` (or `redis_version` when there is none), as (major, minor, patch).
    pub version: (u32, u32, u32),
    pub version_text: String,
    /// `redis_version` as the server reports it (Valkey reports its Redis compatibility version, 7.2.4).
    pub redis_version_text: String,
    pub server_name: String,
}

static HOST: OnceLock<Host> = OnceLock::new();

pub fn get() -> &'static Host {
    HOST.get_or_init(|| Host {
        version: (9, 1, 2),
        version_text: "9.1.2".into(),
        redis_version_text: "7.2.4".into(),
        server_name: "valkey".into(),
    })
}

fn parse_version(s: &str) -> (u32, u32, u32) {
    let mut it = s.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Reads the server's identity from `INFO server`. Called once from the module's init.
pub fn detect(ctx: Ctx) {
    let r = rm::call_simple(ctx, "INFO", &[b"server"]);
    let text = if r.0.is_null() {
        Vec::new()
    } else {
        reply::bytes(r.0).to_vec()
    };
    let text = String::from_utf8_lossy(&text);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
    };
    let redis = field("redis_version").unwrap_or_else(|| "7.2.4".into());
    let valkey = field("valkey_version");
    let version_text = valkey.clone().unwrap_or_else(|| redis.clone());
    let host = Host {
        version: parse_version(&version_text),
        version_text,
        redis_version_text: redis,
        server_name: field("server_name")
            .unwrap_or_else(|| if valkey.is_some() { "valkey" } else { "redis" }.into()),
    };
    let _ = HOST.set(host);
}

impl Host {
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
    /// 8.1 and later check function names and in-library duplicates after the library body ran, and report them
    /// unwrapped; 8.0 checks at `register_function` time and wraps them in "Error registering functions".
    pub fn late_name_checks(&self) -> bool {
        self.at_least(8, 1)
    }
    /// The RDB version the server writes in DUMP payloads.
    pub fn rdb_version(&self) -> u16 {
        self.payload_host().rdb_version()
    }
    /// "This Valkey command is not allowed from script" (9.x) vs "This Redis command ..." (8.x).
    pub fn product_name_in_errors(&self) -> &'static str {
        if self.at_least(9, 0) {
            "Valkey"
        } else {
            "Redis"
        }
    }
    /// The host as the payload codec knows it (for its RESTORE version rule).
    pub fn payload_host(&self) -> rfunc_core::payload::Host {
        use rfunc_core::payload::Host;
        if self.at_least(9, 0) {
            Host::Valkey9
        } else if self.at_least(8, 1) {
            Host::Valkey81
        } else {
            Host::Valkey80
        }
    }
    /// 9.1's engine holds its own reference to every argument object of a call (it owns the argv it hands the
    /// server), so what a command stores from an argument is stored as it came: SET of "123" from a function
    /// keeps a string (OBJECT ENCODING embstr). Before 9.1 the call's client alone held the arguments and the
    /// command re-encoded them (an integer).
    pub fn calls_hold_arguments(&self) -> bool {
        self.at_least(9, 1)
    }
    /// From 8.1 the server never keeps a short string argument object itself: a value it stores is copied into a
    /// new object that embeds its key (objectSetKeyAndExpire). 8.0 stores the argument object, so a caller's
    /// string handed to a call would show an extra reference (OBJECT REFCOUNT) while the function runs.
    pub fn stores_copies_of_arguments(&self) -> bool {
        self.at_least(8, 1)
    }
    pub fn killed_message(&self) -> &'static str {
        if self.at_least(8, 1) {
            "ERR Script killed by user with FUNCTION KILL."
        } else {
            "ERR Script killed by user with SCRIPT KILL..."
        }
    }
    /// The Lua string hash the built-in uses: MurmurHash3 from 8.1 on, the all-bytes stock hash before.
    pub fn murmur_string_hash(&self) -> bool {
        self.at_least(8, 1)
    }
    pub fn version_num(&self) -> i64 {
        ((self.version.0 as i64) << 16) | ((self.version.1 as i64) << 8) | self.version.2 as i64
    }
    pub fn redis_version_num(&self) -> i64 {
        let (a, b, c) = parse_version(&self.redis_version_text);
        ((a as i64) << 16) | ((b as i64) << 8) | c as i64
    }
}

/// Reads one config value with CONFIG GET (None if the server has no such config).
pub fn config_get(ctx: Ctx, name: &str) -> Option<Vec<u8>> {
    let r = rm::call_simple(ctx, "CONFIG", &[b"GET", name.as_bytes()]);
    if r.0.is_null() {
        return None;
    }
    let t = reply::kind(r.0);
    if t == reply::ARRAY && reply::len(r.0) >= 2 {
        return Some(reply::bytes(reply::array_elem(r.0, 1)).to_vec());
    }
    if t == reply::MAP && reply::len(r.0) >= 1 {
        return Some(reply::bytes(reply::map_elem(r.0, 0).1).to_vec());
    }
    None
}

pub fn config_is_yes(ctx: Ctx, name: &str) -> Option<bool> {
    config_get(ctx, name).map(|v| v.eq_ignore_ascii_case(b"yes"))
}
