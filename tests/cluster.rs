//! rfunc on a real local Valkey Cluster: 3 primaries + 3 replicas on loopback, created with the server's own
//! cluster commands. Key routing, the cluster rules inside functions (compared with the built-in on the same
//! node), and cluster-wide libraries (`rfunc.cluster-sync`).

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{info_field, wait_until, Conn, Server, Twin, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// Starts 3 primaries (slots split in three) and one replica each. `extra` goes to every node.
    fn start(extra: &[(&str, &str)]) -> Cluster {
        let mut nodes = Vec::new();
        let mut bus_ports = Vec::new();
        for _ in 0..6 {
            // The bus port is given explicitly: port + 10000 may not be free (or may not exist).
            let bus = free_port();
            bus_ports.push(bus);
            let mut b = Server::builder()
                .arg("cluster-enabled", "yes")
                .arg("cluster-config-file", "nodes.conf")
                .arg("cluster-node-timeout", "3000")
                .arg("cluster-port", &bus.to_string());
            for (k, v) in extra {
                b = b.arg(k, v);
            }
            nodes.push(b.start());
        }
        let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
        for (i, (a, b)) in ranges.iter().enumerate() {
            let mut c = nodes[i].conn();
            assert_eq!(
                c.cmd(&["CLUSTER", "ADDSLOTSRANGE", a, b]),
                Value::Simple("OK".into())
            );
        }
        let (first_port, first_bus) = (nodes[0].port.to_string(), bus_ports[0].to_string());
        for n in &nodes[1..] {
            let r = n
                .conn()
                .cmd(&["CLUSTER", "MEET", "127.0.0.1", &first_port, &first_bus]);
            assert_eq!(r, Value::Simple("OK".into()));
        }
        let ids: Vec<String> = nodes
            .iter()
            .map(|n| n.conn().cmd(&["CLUSTER", "MYID"]).as_str())
            .collect();
        // Every node must know every other before replicas can attach.
        for n in &nodes {
            let mut c = n.conn();
            wait_until("cluster meet", Duration::from_secs(30), || {
                c.cmd(&["CLUSTER", "NODES"]).as_str().lines().count() == 6
            });
        }
        for i in 0..3 {
            let mut c = nodes[i + 3].conn();
            wait_until("replicate", Duration::from_secs(30), || {
                c.cmd(&["CLUSTER", "REPLICATE", &ids[i]]) == Value::Simple("OK".into())
            });
        }
        for n in &nodes {
            let mut c = n.conn();
            wait_until("cluster_state:ok", Duration::from_secs(60), || {
                info_field(&mut c, "cluster", "cluster_state") == "ok"
                    || c.cmd(&["CLUSTER", "INFO"])
                        .as_str()
                        .contains("cluster_state:ok")
            });
        }
        for n in &nodes[3..6] {
            let mut c = n.conn();
            wait_until("replica link up", Duration::from_secs(60), || {
                info_field(&mut c, "replication", "master_link_status") == "up"
            });
        }
        Cluster { nodes }
    }

    /// The primary serving `slot`.
    fn primary_for(&self, slot: u16) -> usize {
        match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        }
    }
}

fn slot_of(key: &str) -> u16 {
    // CRC16/XMODEM, as the server: enough for the plain keys used here.
    let mut crc: u16 = 0;
    for &b in key.as_bytes() {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc & 16383
}

const LIB: &str = "#!lua name=clib
server.register_function('getk', function(k) return server.call('get', k[1]) end)
server.register_function('setk', function(k, a) return server.call('set', k[1], a[1]) end)
server.register_function('two', function(k) server.call('get', k[1]) return server.call('get', 'bar') end)
server.register_function('undeclared', function() server.call('get', 'foo') return server.call('get', 'bar') end)
server.register_function('msetk', function(k) return server.call('mset', k[1], 'a', 'bar', 'b') end)
server.register_function{function_name='cross', callback=function(k) server.call('get', k[1]) return server.call('get', 'foo{x}') end, flags={'allow-cross-slot-keys'}}
server.register_function{function_name='nocluster', callback=function() return 1 end, flags={'no-cluster'}}
server.register_function('nokeys', function() return 'here' end)
server.register_function('setenc', function(k, a) server.call('set', k[1], a[1]) return server.call('object', 'encoding', k[1]) end)";

#[test]
fn cluster_routing_and_function_rules_match_the_builtin() {
    if common::external_url().is_some() {
        eprintln!("SKIP cluster tests: they start their own cluster");
        return;
    }
    let cluster = Cluster::start(&[]);
    // Load everywhere (plain mode: the user loads on every primary, like the built-in).
    for n in &cluster.nodes[..3] {
        let mut t = Twin::new(n.conn());
        t.load(LIB);
    }
    // A node and keys it serves: find a key "k<i>" in the same slot range as 'foo{x}' (foo{x} hashes like x).
    let home = cluster.primary_for(slot_of("x"));
    let local_key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.primary_for(slot_of(k)) == home && slot_of(k) != slot_of("x"))
        .unwrap();
    let foreign_key = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.primary_for(slot_of(k)) != home)
        .unwrap();
    let mut t = Twin::new(cluster.nodes[home].conn());
    for args in [
        vec!["FCALL", "getk", "1", &local_key],
        vec!["FCALL", "getk", "1", &foreign_key],
        vec!["FCALL", "getk", "2", &local_key, &foreign_key],
        vec!["FCALL", "nosuch", "2", &local_key, &foreign_key],
        vec!["FCALL", "setk", "1", &local_key, "v"],
        vec!["FCALL", "two", "1", &local_key],
        vec!["FCALL", "undeclared", "0"],
        vec!["FCALL", "msetk", "1", &local_key],
        vec!["FCALL", "cross", "1", &local_key],
        vec!["FCALL", "nocluster", "0"],
        vec!["FCALL_RO", "nocluster", "0"],
        vec!["FCALL", "nokeys", "0"],
        // What a command stores from an argument keeps the built-in's encoding (int before 9.1, embstr on 9.1).
        vec!["FCALL", "setenc", "1", &local_key, "123"],
        vec!["FCALL", "setenc", "1", &local_key, "abc"],
    ] {
        t.check(&args);
    }
    t.assert_clean();
    // Key specs: the server redirects RFUNC.FCALL like FCALL.
    let mut c = cluster.nodes[home].conn();
    let moved = c.cmd(&["RFUNC.FCALL", "getk", "1", &foreign_key]);
    assert!(
        matches!(&moved, Value::Error(e) if e.starts_with("MOVED ")),
        "{moved:?}"
    );
    // A cluster-aware client follows the redirection: valkey-cli -c, sent to the wrong node.
    let owner = cluster.primary_for(slot_of(&foreign_key));
    cluster.nodes[owner]
        .conn()
        .cmd(&["SET", &foreign_key, "routed"]);
    let cli = common::repo_root().join(".cache/servers/8.1.8/valkey-cli");
    let out = std::process::Command::new(&cli)
        .args([
            "-c",
            "-p",
            &cluster.nodes[home].port.to_string(),
            "RFUNC.FCALL",
            "getk",
            "1",
            &foreign_key,
        ])
        .output()
        .expect("valkey-cli");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "routed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fingerprint(c: &mut Conn) -> String {
    info_field(c, "rfunc", "rfunc_registry_fingerprint")
}

fn libraries(c: &mut Conn) -> Vec<String> {
    let mut v: Vec<String> = c
        .cmd(&["RFUNC.LIST"])
        .as_array()
        .iter()
        .map(|l| l.as_array()[1].as_str())
        .collect();
    v.sort();
    v
}

/// Waits until every running node reports the same fingerprint; returns the libraries they hold.
fn wait_settled(cluster: &Cluster, running: &[usize]) -> Vec<String> {
    let mut result = Vec::new();
    wait_until("cluster-wide agreement", Duration::from_secs(60), || {
        let fps: Vec<String> = running
            .iter()
            .map(|&i| fingerprint(&mut cluster.nodes[i].conn()))
            .collect();
        result = libraries(&mut cluster.nodes[running[0]].conn());
        fps.windows(2).all(|w| w[0] == w[1])
    });
    result
}

/// Waits until every running node reports the same fingerprint and holds exactly `expected` libraries.
fn wait_converged(cluster: &Cluster, running: &[usize], expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    wait_until("cluster-wide registry", Duration::from_secs(61), || {
        if Instant::now() > deadline {
            for &i in running {
                let mut c = cluster.nodes[i].conn();
                eprintln!(
                    "node {i}: role {} libraries {:?} fingerprint {}",
                    info_field(&mut c, "replication", "role"),
                    libraries(&mut c),
                    fingerprint(&mut c)
                );
            }
        }
        let mut fps = Vec::new();
        for &i in running {
            let mut c = cluster.nodes[i].conn();
            if libraries(&mut c) != expected {
                return false;
            }
            fps.push(fingerprint(&mut c));
        }
        fps.windows(2).all(|w| w[0] == w[1])
    });
}

fn code(lib: &str, f: &str, v: &str) -> String {
    format!("#!lua name={lib}\nserver.register_function('{f}', function() return '{v}' end)")
}

#[test]
fn cluster_sync_delivers_every_change_and_nodes_catch_up() {
    if common::external_url().is_some() {
        eprintln!("SKIP cluster tests: they start their own cluster");
        return;
    }
    let mut cluster = Cluster::start(&[("rfunc.cluster-sync", "yes")]);
    let all: Vec<usize> = (0..6).collect();
    let mut c0 = cluster.nodes[0].conn();
    let mut c1 = cluster.nodes[1].conn();
    assert_eq!(
        c0.cmd(&["RFUNC.LOAD", &code("alpha", "fa", "A")]),
        Value::Bulk(b"alpha".to_vec())
    );
    wait_converged(&cluster, &all, &["alpha"]);
    assert_eq!(
        cluster.nodes[2].conn().cmd(&["RFUNC.FCALL", "fa", "0"]),
        Value::Bulk(b"A".to_vec())
    );
    // A delete on another primary.
    c1.cmd(&["RFUNC.LOAD", &code("beta", "fb", "B")]);
    wait_converged(&cluster, &all, &["alpha", "beta"]);
    assert_eq!(
        cluster.nodes[2].conn().cmd(&["RFUNC.DELETE", "alpha"]),
        Value::Simple("OK".into())
    );
    wait_converged(&cluster, &all, &["beta"]);
    // Two changes at the same moment on two nodes: every node settles on the same registry. If the two were
    // truly concurrent (made on the same state), it holds one of them (the node with the higher stamp wins, see
    // src/cluster_sync.rs); if one reached the other node first, both.
    c0.send(&[b"RFUNC.LOAD", code("gamma", "fg", "G").as_bytes()])
        .unwrap();
    c1.send(&[b"RFUNC.LOAD", code("delta", "fd", "D").as_bytes()])
        .unwrap();
    c0.read_reply().unwrap();
    c1.read_reply().unwrap();
    let settled = wait_settled(&cluster, &all);
    assert!(
        [
            vec!["beta", "delta"],
            vec!["beta", "gamma"],
            vec!["beta", "delta", "gamma"]
        ]
        .iter()
        .any(|ok| *ok == settled),
        "{settled:?}"
    );
    // Changes one after another all apply.
    c0.cmd(&["RFUNC.LOAD", "REPLACE", &code("gamma", "fg", "G")]);
    wait_until("gamma everywhere", Duration::from_secs(60), || {
        all.iter()
            .all(|&i| libraries(&mut cluster.nodes[i].conn()).contains(&"gamma".to_string()))
    });
    c1.cmd(&["RFUNC.LOAD", "REPLACE", &code("delta", "fd", "D")]);
    wait_converged(&cluster, &all, &["beta", "delta", "gamma"]);
    // The same library changed differently at the same moment: every node ends with the same one version.
    c0.send(&[
        b"RFUNC.LOAD",
        b"REPLACE",
        code("beta", "fb", "B0").as_bytes(),
    ])
    .unwrap();
    c1.send(&[
        b"RFUNC.LOAD",
        b"REPLACE",
        code("beta", "fb", "B1").as_bytes(),
    ])
    .unwrap();
    c0.read_reply().unwrap();
    c1.read_reply().unwrap();
    wait_converged(&cluster, &all, &["beta", "delta", "gamma"]);
    let winner = cluster.nodes[0].conn().cmd(&["RFUNC.FCALL", "fb", "0"]);
    for n in &cluster.nodes[..3] {
        assert_eq!(n.conn().cmd(&["RFUNC.FCALL", "fb", "0"]), winner);
    }
    // A primary goes away; a change happens meanwhile; it comes back and catches up.
    cluster.nodes[2].kill9();
    c0.cmd(&["RFUNC.FLUSH"]);
    c0.cmd(&["RFUNC.LOAD", &code("omega", "fo", "O")]);
    wait_converged(&cluster, &[0, 1, 3, 4, 5], &["omega"]);
    cluster.nodes[2].restart().unwrap();
    wait_converged(&cluster, &all, &["omega"]);
    let fp = fingerprint(&mut c0);
    assert_eq!(fp.len(), 40, "fingerprint {fp:?}");
}
