//! `rfunc`: the offline companion of the module. Keep function libraries in git and ship them as payloads that
//! `FUNCTION RESTORE` / `RFUNC.RESTORE` accept, look inside backups, convert them between server versions.
//!
//! Exit codes: 0 success, 1 invalid payload or library, 2 usage error, 3 I/O error. `-` is stdin / stdout.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use rfunc::inspect::{inspect, offline_accepts, pack, Report};
use rfunc_core::library::parse_header;
use rfunc_core::payload;

const USAGE: &str = "usage:
  rfunc inspect <payload|->                         what a payload holds (version, checksum, libraries, functions)
  rfunc verify <payload|->                          exit 0 if RFUNC.RESTORE ... FLUSH would accept it, else 1
  rfunc pack <lib.lua|->... [--version N] [--no-compress] [-o out|-]
                                                    library sources -> payload (default version 11: Valkey 7.2+)
  rfunc unpack <payload|-> <dir>                    payload -> <dir>/<library>.lua, one file per library
  rfunc convert <payload|-> --version N [--no-compress] [-o out|-]
                                                    re-stamp a payload for another server version
versions: 10 = Redis 7.0, 11 = Valkey 7.2 / 8.0 / 8.1 and Redis 7.2, 12 = Redis 7.4, 80 = Valkey 9.x";

enum Fail {
    Usage(String),
    Invalid(String),
    Io(String),
}

fn read_input(path: &str) -> Result<Vec<u8>, Fail> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Fail::Io(format!("stdin: {e}")))?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| Fail::Io(format!("{path}: {e}")))
    }
}

fn write_output(path: &str, data: &[u8]) -> Result<(), Fail> {
    if path == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(data)
            .and_then(|_| out.flush())
            .map_err(|e| Fail::Io(format!("stdout: {e}")))
    } else {
        std::fs::write(path, data).map_err(|e| Fail::Io(format!("{path}: {e}")))
    }
}

fn parse_version(v: Option<&String>) -> Result<u16, Fail> {
    let v = v.ok_or_else(|| Fail::Usage("--version needs a value".into()))?;
    match v.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Fail::Usage(format!(
            "bad version {v:?}: an RDB version between 1 and 65535"
        ))),
    }
}

fn print_report(r: &Report) {
    println!("size: {} bytes", r.size);
    match r.version {
        Some(v) => println!("version: {v}"),
        None => println!("version: none (shorter than a footer)"),
    }
    println!(
        "checksum: {}",
        if r.checksum_ok { "ok" } else { "mismatch" }
    );
    println!("restore: {}", r.restore_error.as_deref().unwrap_or("OK"));
    println!("libraries: {}", r.libraries.len());
    for lib in &r.libraries {
        println!(
            "  library {} (engine LUA, {} bytes of code)",
            lib.name.as_deref().unwrap_or("<no valid header>"),
            lib.code.len()
        );
        if let Some(e) = &lib.error {
            println!("    error: {e}");
        }
        for f in &lib.functions {
            let flags = if f.flags.is_empty() {
                "-".to_string()
            } else {
                f.flags.join(",")
            };
            match &f.description {
                Some(d) => println!(
                    "    function {} flags={flags} description={:?}",
                    f.name,
                    String::from_utf8_lossy(d)
                ),
                None => println!("    function {} flags={flags}", f.name),
            }
        }
    }
}

fn run(args: &[String]) -> Result<(), Fail> {
    let cmd = args
        .first()
        .ok_or_else(|| Fail::Usage("no command given".into()))?;
    let rest = &args[1..];
    match cmd.as_str() {
        "inspect" | "verify" => {
            let [file] = rest else {
                return Err(Fail::Usage(format!("{cmd} takes one payload")));
            };
            let data = read_input(file)?;
            let report =
                inspect(std::ptr::null_mut(), &data, &offline_accepts).map_err(Fail::Io)?;
            if cmd == "inspect" {
                print_report(&report);
            }
            match report.restore_error {
                None => {
                    if cmd == "verify" {
                        println!("ok: {} libraries", report.libraries.len());
                    }
                    Ok(())
                }
                Some(e) => Err(Fail::Invalid(e)),
            }
        }
        "pack" => {
            let mut sources = Vec::new();
            let mut version = 11u16;
            let mut compress = true;
            let mut out = "-".to_string();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--version" => version = parse_version(it.next())?,
                    "--no-compress" => compress = false,
                    "-o" => {
                        out = it
                            .next()
                            .ok_or_else(|| Fail::Usage("-o needs a path".into()))?
                            .clone()
                    }
                    _ => sources.push(a.clone()),
                }
            }
            if sources.is_empty() {
                return Err(Fail::Usage("pack needs at least one library source".into()));
            }
            let codes = sources
                .iter()
                .map(|s| read_input(s))
                .collect::<Result<Vec<_>, _>>()?;
            let p = pack(&codes, version, compress).map_err(Fail::Invalid)?;
            write_output(&out, &p)
        }
        "unpack" => {
            let [file, dir] = rest else {
                return Err(Fail::Usage("unpack takes a payload and a directory".into()));
            };
            let data = read_input(file)?;
            let decoded = payload::decode_with(&data, offline_accepts)
                .map_err(|e| Fail::Invalid(format!("ERR {e}")))?;
            std::fs::create_dir_all(dir).map_err(|e| Fail::Io(format!("{dir}: {e}")))?;
            for code in &decoded.libraries {
                let name = parse_header(code)
                    .map_err(|e| Fail::Invalid(format!("ERR {e}")))?
                    .name;
                let path = Path::new(dir).join(format!("{name}.lua"));
                std::fs::write(&path, code)
                    .map_err(|e| Fail::Io(format!("{}: {e}", path.display())))?;
                println!("{}", path.display());
            }
            Ok(())
        }
        "convert" => {
            let mut file = None;
            let mut version = None;
            let mut compress = true;
            let mut out = "-".to_string();
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--version" => version = Some(parse_version(it.next())?),
                    "--no-compress" => compress = false,
                    "-o" => {
                        out = it
                            .next()
                            .ok_or_else(|| Fail::Usage("-o needs a path".into()))?
                            .clone()
                    }
                    _ if file.is_none() => file = Some(a.clone()),
                    _ => return Err(Fail::Usage(format!("unexpected argument {a:?}"))),
                }
            }
            let file = file.ok_or_else(|| Fail::Usage("convert needs a payload".into()))?;
            let version = version.ok_or_else(|| Fail::Usage("convert needs --version N".into()))?;
            let data = read_input(&file)?;
            let decoded = payload::decode_with(&data, offline_accepts)
                .map_err(|e| Fail::Invalid(format!("ERR {e}")))?;
            write_output(
                &out,
                &payload::encode(&decoded.libraries, version, compress),
            )
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Fail::Usage(format!("unknown command {other:?}"))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Invalid(msg)) => {
            eprintln!("rfunc: {msg}");
            ExitCode::from(1)
        }
        Err(Fail::Usage(msg)) => {
            eprintln!("rfunc: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Io(msg)) => {
            eprintln!("rfunc: {msg}");
            ExitCode::from(3)
        }
    }
}
