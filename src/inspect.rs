//! Looking inside a FUNCTION DUMP payload without touching any registry: the footer, and per library its name,
//! functions (with flags and descriptions) and code size. Libraries are compiled in a scratch Lua engine, so what
//! is reported is what a RESTORE would register. Shared by `RFUNC.INSPECT` and the offline `rfunc` tool, so the
//! two always agree.

use rfunc_core::payload::{self, Entries, FooterError, PayloadError};

use crate::engine::LuaEngine;
use crate::registry::{compile, compile_payload};
use crate::rm::Ctx;

pub struct FunctionInfo {
    pub name: String,
    pub description: Option<Vec<u8>>,
    pub flags: Vec<&'static str>,
}

pub struct LibraryInfo {
    /// The name from the header, if the header parses.
    pub name: Option<String>,
    pub code: Vec<u8>,
    pub functions: Vec<FunctionInfo>,
    /// Why the library would not load (header or compile error, the server's text).
    pub error: Option<String>,
}

pub struct Report {
    pub size: usize,
    /// The footer's RDB version (None when the payload is shorter than a footer).
    pub version: Option<u16>,
    pub checksum_ok: bool,
    /// The payload's libraries in order (parsed even when the checksum is wrong, up to the first bad entry).
    pub libraries: Vec<LibraryInfo>,
    /// What `RFUNC.RESTORE ... FLUSH` of this payload would answer: None for OK, else the error text.
    pub restore_error: Option<String>,
}

/// Inspects a payload. `ctx` may be null (offline): it is only used for `server.log` in library bodies.
/// `accept` is the footer-version rule RESTORE would apply.
pub fn inspect(ctx: Ctx, data: &[u8], accept: &dyn Fn(u16) -> bool) -> Result<Report, String> {
    let mut engine = LuaEngine::new()?;
    let (version, checksum_ok) = match payload::verify_footer(data) {
        Ok((v, _)) => (Some(v), true),
        Err(PayloadError::VersionOrChecksum(FooterError::TooShort { .. })) => (None, false),
        Err(_) => (
            Some(u16::from_le_bytes([
                data[data.len() - 10],
                data[data.len() - 9],
            ])),
            false,
        ),
    };
    let mut libraries = Vec::new();
    let mut entry_error = None;
    if version.is_some() {
        for entry in Entries::new_unverified(data) {
            match entry {
                Ok(code) => libraries.push(library_info(&mut engine, ctx, code.into_owned())),
                Err(e) => {
                    entry_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    let restore_error = restore_verdict(&mut engine, ctx, data, entry_error, accept);
    Ok(Report {
        size: data.len(),
        version,
        checksum_ok,
        libraries,
        restore_error,
    })
}

fn library_info(engine: &mut LuaEngine, ctx: Ctx, code: Vec<u8>) -> LibraryInfo {
    let header = match rfunc_core::library::parse_header(&code) {
        Ok(h) => h,
        Err(e) => {
            return LibraryInfo {
                name: None,
                error: Some(String::from_utf8_lossy(&e.message()).into_owned()),
                code,
                functions: vec![],
            }
        }
    };
    match compile(engine, ctx, &code, &header.name, header.body_offset, true) {
        Ok(lib) => {
            let functions = lib
                .functions
                .iter()
                .map(|f| FunctionInfo {
                    name: f.name.clone(),
                    description: f.description.clone(),
                    flags: f.flags.names().collect(),
                })
                .collect();
            engine.release(&lib.functions);
            LibraryInfo {
                name: Some(header.name),
                code,
                functions,
                error: None,
            }
        }
        Err(e) => LibraryInfo {
            name: Some(header.name),
            code,
            functions: vec![],
            error: Some(String::from_utf8_lossy(&e).into_owned()),
        },
    }
}

/// The answer RESTORE FLUSH would give, checked the way RESTORE checks (every version a server writes).
fn restore_verdict(
    engine: &mut LuaEngine,
    ctx: Ctx,
    data: &[u8],
    entry_error: Option<String>,
    accept: &dyn Fn(u16) -> bool,
) -> Option<String> {
    if let Err(e) = payload::verify_footer_with(data, accept) {
        return Some(format!("ERR {e}"));
    }
    let codes: Vec<Vec<u8>> = Entries::new_unverified(data)
        .map_while(Result::ok)
        .map(|c| c.into_owned())
        .collect();
    match compile_payload(
        engine,
        ctx,
        codes,
        entry_error.map(String::into_bytes),
        true,
    ) {
        Ok(libs) => {
            for l in &libs {
                engine.release(&l.functions);
            }
            None
        }
        Err(e) => Some(format!("ERR {}", String::from_utf8_lossy(&e))),
    }
}

/// Compiles library sources and builds a payload from them (the `rfunc pack` tool). Errors name the library.
pub fn pack(codes: &[Vec<u8>], version: u16, compress: bool) -> Result<Vec<u8>, String> {
    let mut engine = LuaEngine::new()?;
    match compile_payload(
        &mut engine,
        std::ptr::null_mut(),
        codes.to_vec(),
        None,
        true,
    ) {
        Ok(libs) => {
            for l in &libs {
                engine.release(&l.functions);
            }
            Ok(payload::encode(codes, version, compress))
        }
        Err(e) => Err(String::from_utf8_lossy(&e).into_owned()),
    }
}

/// The version rule of the offline tool: every version a real server writes for this format, and 1..=11.
pub fn offline_accepts(v: u16) -> bool {
    payload::WRITTEN_VERSIONS.contains(&v) || (1..=11).contains(&v)
}
