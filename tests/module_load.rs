//! The module loads into a real server and identifies itself.

mod common;

use common::{Server, Value};

#[test]
fn module_list_shows_rfunc_with_its_version() {
    let server = Server::shared();
    let mut c = server.conn();
    let list = c.cmd(&["MODULE", "LIST"]);
    let modules = list.as_array();
    let rfunc = modules
        .iter()
        .find_map(|m| {
            let fields = m.as_array();
            let name = fields.chunks(2).find(|kv| kv[0].as_str() == "name")?[1].as_str();
            (name == "rfunc").then(|| fields.to_vec())
        })
        .unwrap_or_else(|| panic!("rfunc not in MODULE LIST: {list:?}"));
    let ver = rfunc
        .chunks(2)
        .find(|kv| kv[0].as_str() == "ver")
        .expect("ver field")[1]
        .clone();
    let expected: Vec<i64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        ver,
        Value::Int(expected[0] * 10000 + expected[1] * 100 + expected[2])
    );
}

#[test]
fn missing_module_fails_loudly_with_the_servers_log_line() {
    let Some(builder) = Server::owned("missing_module_fails_loudly") else {
        return;
    };
    let bogus = std::env::temp_dir().join("rfunc-does-not-exist.so");
    let err = match builder
        .arg("loadmodule", bogus.to_str().unwrap())
        .try_start()
    {
        Ok(_) => panic!("server started with a missing module"),
        Err(e) => e,
    };
    assert!(err.contains("exited during start-up"), "{err}");
    assert!(
        err.contains("Module") && err.contains("failed to load"),
        "server log lacks the load failure: {err}"
    );
}
