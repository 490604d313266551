//! Reading our Prometheus endpoint (`--metrics`) from a test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A plain HTTP GET on 127.0.0.1:`port`; the status line and the body.
pub fn get(port: u16, path: &str, accept: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reading the answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the first sample named `name` (any labels), or exactly
/// `name{labels}` when `name` ends with them, in `text`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The PromQL of every panel of scripts/grafana-dashboard.json (checked to
/// be valid JSON with titled panels), `$subsystem` as `.*`.
pub fn dashboard_queries() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(
            panel["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{panel}"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push(expr.replace("$subsystem", ".*"));
        }
    }
    exprs
}

/// Every metric the dashboard's queries name.
pub fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for expr in dashboard_queries() {
        for (at, _) in expr.match_indices("spdk_pmem_") {
            let name = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Whether the exposition `text` has a sample of the metric `name`.
pub fn served(text: &str, name: &str) -> bool {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.split(['{', ' ']).next() == Some(name))
}
