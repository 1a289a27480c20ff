//! The configuration file: the example parses, defaults apply, and every kind of bad input is
//! refused with a located message that names the key, the value and the fix.

use fulcrum::config::{
    Balance, Check, Config, LogFormat, LogLevel, Protocol, ProxyProtocol, TlsVersion,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A listener and an upstream: the least a valid file holds. Tests append to it or replace
/// parts; line numbers in expected messages count from its first line.
const MINIMAL: &str = r#"[[listener]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
upstream = "app"

[upstream.app]
backends = [{ addr = "127.0.0.1:9001" }]
"#;

fn parse(text: &str) -> Result<Config, String> {
    Config::from_toml(text, Path::new("t.toml")).map_err(|e| e.to_string())
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("this file must be refused:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn example_config_parses_with_every_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/fulcrum.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("conf/fulcrum.toml: {e}"));
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.upstreams.len(), 1);
    let minimal = parse(MINIMAL).expect("the minimal file must parse");
    assert_eq!(
        config.runtime, minimal.runtime,
        "the example must show the defaults"
    );
    assert_eq!(
        config.log, minimal.log,
        "the example must show the defaults"
    );
    let (a, b) = (&config.upstreams[0], &minimal.upstreams[0]);
    assert_eq!(a.health, b.health, "the example must show the defaults");
    assert_eq!(
        (
            a.connect_timeout,
            a.response_timeout,
            a.retries,
            a.slow_start
        ),
        (
            b.connect_timeout,
            b.response_timeout,
            b.retries,
            b.slow_start
        ),
        "the example must show the defaults"
    );
    assert_eq!(
        config.listeners[0].timeouts, minimal.listeners[0].timeouts,
        "the example must show the defaults"
    );
}

#[test]
fn minimal_file_gets_the_defaults_of_the_spec() {
    let c = parse(MINIMAL).expect("the minimal file must parse");
    assert_eq!(c.path, PathBuf::from("t.toml"));
    assert_eq!(c.runtime.worker_threads, 0);
    assert_eq!(c.runtime.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.runtime.shutdown_delay, Duration::ZERO);
    assert!(!c.runtime.watch_config);
    assert!(
        c.admin.is_none(),
        "no [admin] table: the admin listener is disabled"
    );
    assert_eq!(c.log.level, LogLevel::Info);
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(!c.log.access);

    let l = &c.listeners[0];
    assert_eq!(l.name, "web");
    assert_eq!(l.bind, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(l.protocol, Protocol::Http);
    assert_eq!(l.upstream.as_deref(), Some("app"));
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.timeouts.header_read, Duration::from_secs(10));
    assert_eq!(l.timeouts.idle, Duration::from_secs(60));
    assert!(!l.proxy_protocol);
    assert!(l.tls.is_none());

    let u = c.upstream("app").expect("upstream app");
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.backends.len(), 1);
    let b = &u.backends[0];
    assert_eq!(b.addr, "127.0.0.1:9001");
    assert_eq!((b.host.as_str(), b.port, b.weight), ("127.0.0.1", 9001, 1));
    assert_eq!(b.ip, Some("127.0.0.1:9001".parse().unwrap()));
    assert_eq!(u.resolve_interval, Duration::ZERO);
    assert_eq!(u.connect_timeout, Duration::from_secs(1));
    assert_eq!(u.response_timeout, Duration::from_secs(30));
    assert_eq!(u.retries, 2);
    assert_eq!(u.send_proxy_protocol, ProxyProtocol::Off);
    assert_eq!(u.slow_start, Duration::ZERO);
    assert!(u.tls.is_none());
    assert_eq!(u.health.check, Check::Tcp);
    assert_eq!(u.health.path, "/healthz");
    assert_eq!(u.health.interval, Duration::from_secs(2));
    assert_eq!(u.health.timeout, Duration::from_secs(1));
    assert_eq!(u.health.unhealthy_threshold, 3);
    assert_eq!(u.health.healthy_threshold, 2);
}

#[test]
fn set_values_are_read() {
    let text = r#"
[runtime]
worker_threads = 4
shutdown_delay = "5s"
[admin]
[log]
level = "debug"
format = "json"
[[listener]]
name = "db"
bind = "[::]:5432"
protocol = "tcp"
upstream = "pg"
timeouts = { idle = "250ms" }
[upstream.pg]
balance = "least_load"
backends = [{ addr = "db.internal:5432", weight = 1000 }, { addr = "[::1]:5433" }]
send_proxy_protocol = "v2"
[upstream.pg.health]
check = "none"
"#;
    let c = parse(text).expect("valid file");
    assert_eq!(c.runtime.worker_threads, 4);
    assert_eq!(c.runtime.shutdown_delay, Duration::from_secs(5));
    assert_eq!(
        c.admin
            .expect("an empty [admin] enables the admin listener")
            .bind,
        "127.0.0.1:9901".parse().unwrap()
    );
    assert_eq!(
        (c.log.level, c.log.format),
        (LogLevel::Debug, LogFormat::Json)
    );
    let l = &c.listeners[0];
    assert_eq!(l.protocol, Protocol::Tcp);
    assert_eq!(l.timeouts.idle, Duration::from_millis(250));
    assert_eq!(
        l.timeouts.header_read,
        Duration::from_secs(10),
        "the unset key keeps its default"
    );
    let u = &c.upstreams[0];
    assert_eq!(u.balance, Balance::LeastLoad);
    assert_eq!(u.send_proxy_protocol, ProxyProtocol::V2);
    assert_eq!(u.health.check, Check::None);
    let host = &u.backends[0];
    assert_eq!(
        (host.host.as_str(), host.port, host.ip, host.weight),
        ("db.internal", 5432, None, 1000)
    );
    assert_eq!(
        u.backends[1].host, "::1",
        "brackets are not part of the host"
    );
}

#[test]
fn upstreams_are_sorted_by_name() {
    let text = format!(
        "{MINIMAL}[upstream.zed]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n\
         [upstream.api]\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n"
    );
    let c = parse(&text).expect("valid file");
    let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["api", "app", "zed"]);
}

#[test]
fn toml_syntax_error_is_located() {
    let text = MINIMAL.replace("name = \"web\"", "name = web");
    assert_eq!(
        error(&text),
        "t.toml:2:8: name: string values must be quoted, expected literal string"
    );
}

#[test]
fn unknown_top_level_key_is_refused() {
    let text = format!("listeners = []\n{MINIMAL}");
    assert_eq!(
        error(&text),
        "t.toml:1:1: unknown key \"listeners\" at the top level \
         (expected one of runtime, admin, log, listener, upstream)"
    );
}

#[test]
fn unknown_nested_key_is_refused() {
    let text = MINIMAL.replace(
        "{ addr = \"127.0.0.1:9001\" }",
        "{ addr = \"127.0.0.1:9001\", weigth = 2 }",
    );
    assert_eq!(
        error(&text),
        "t.toml:8:40: unknown key \"weigth\" in backend (expected one of addr, weight)"
    );
    let text = format!("{MINIMAL}[upstream.app.health]\nintervall = \"1s\"\n");
    assert_eq!(
        error(&text),
        "t.toml:10:1: unknown key \"intervall\" in [upstream.NAME.health] (expected one of \
         check, path, service, interval, timeout, unhealthy_threshold, healthy_threshold)"
    );
}

#[test]
fn missing_required_key_is_named() {
    let text = MINIMAL.replace("bind = \"127.0.0.1:8080\"\n", "");
    assert_eq!(
        error(&text),
        "t.toml:1:1: missing required key \"bind\" in [[listener]]"
    );
}

#[test]
fn no_listener_is_refused() {
    let text = "[upstream.app]\nbackends = [{ addr = \"127.0.0.1:9001\" }]\n";
    assert_eq!(
        error(text),
        "t.toml: no [[listener]] is defined (add one: [[listener]] with name, bind, protocol \
         and upstream)"
    );
}

#[test]
fn duplicate_listener_name_is_refused() {
    let text = format!(
        "{MINIMAL}[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\n\
         protocol = \"tcp\"\nupstream = \"app\"\n"
    );
    assert_eq!(
        error(&text),
        "t.toml:10:8: listener \"web\" is defined twice (listener names must be unique)"
    );
}

#[test]
fn duplicate_listener_bind_is_refused() {
    let text = format!(
        "{MINIMAL}[[listener]]\nname = \"other\"\nbind = \"0.0.0.0:8080\"\n\
         protocol = \"tcp\"\nupstream = \"app\"\n"
    );
    assert_eq!(
        error(&text),
        "t.toml:11:8: listener \"other\": bind \"0.0.0.0:8080\" conflicts with listener \"web\" \
         (bind \"127.0.0.1:8080\"); give each listener its own address"
    );
}

#[test]
fn unknown_upstream_lists_the_defined_ones() {
    let text = format!(
        "{}[upstream.api]\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n",
        MINIMAL.replace("upstream = \"app\"", "upstream = \"ap\"")
    );
    assert_eq!(
        error(&text),
        "t.toml:5:12: listener \"web\": upstream \"ap\" is not defined (defined: \"api\", \"app\")"
    );
}

#[test]
fn weight_out_of_range_is_refused() {
    for (weight, col) in [("0", 49), ("1001", 49)] {
        let text = MINIMAL.replace(
            "{ addr = \"127.0.0.1:9001\" }",
            &format!("{{ addr = \"127.0.0.1:9001\", weight = {weight} }}"),
        );
        assert_eq!(
            error(&text),
            format!(
                "t.toml:8:{col}: upstream \"app\": backend weight {weight} is out of range 1..=1000"
            )
        );
    }
}

#[test]
fn upstream_without_backends_is_refused() {
    let text = MINIMAL.replace("[{ addr = \"127.0.0.1:9001\" }]", "[]");
    assert_eq!(
        error(&text),
        "t.toml:8:12: upstream \"app\": backends is empty (add at least one \
         { addr = \"127.0.0.1:9001\" })"
    );
}

#[test]
fn duplicate_backend_is_refused() {
    let text = MINIMAL.replace(
        "[{ addr = \"127.0.0.1:9001\" }]",
        "[{ addr = \"127.0.0.1:9001\" }, { addr = \"127.0.0.1:9001\" }]",
    );
    assert_eq!(
        error(&text),
        "t.toml:8:51: upstream \"app\": backend \"127.0.0.1:9001\" is listed twice (as \
         \"127.0.0.1:9001\" before; list it once with a larger weight)"
    );
}

#[test]
fn bad_backend_address_is_refused() {
    let text = MINIMAL.replace("127.0.0.1:9001", "::1:9001");
    assert_eq!(
        error(&text),
        "t.toml:8:22: upstream \"app\": backend addr \"::1:9001\" is not valid: an IPv6 address \
         goes in brackets, e.g. \"[::1]:9001\""
    );
}

#[test]
fn bad_duration_is_refused() {
    let text = format!("{MINIMAL}connect_timeout = \"2 secs and a bit\"\n");
    assert_eq!(
        error(&text),
        "t.toml:9:19: upstream \"app\": connect_timeout \"2 secs and a bit\" is not a duration \
         (write a number and a unit, like \"250ms\", \"2s\" or \"1m\")"
    );
}

#[test]
fn duration_that_is_not_a_string_is_refused() {
    let text = format!("{MINIMAL}connect_timeout = 2\n");
    assert_eq!(
        error(&text),
        "t.toml:9:19: connect_timeout: durations are strings with a unit: write \"2s\" or \
         \"2ms\" instead of 2"
    );
}

#[test]
fn zero_timeout_is_refused() {
    let text = format!("{MINIMAL}[upstream.app.health]\ninterval = \"0s\"\n");
    assert_eq!(
        error(&text),
        "t.toml:10:12: upstream \"app\": health.interval \"0s\" must be more than zero (e.g. \"1s\")"
    );
}

#[test]
fn bad_bind_address_is_refused() {
    let text = MINIMAL.replace("127.0.0.1:8080", "localhost:8080");
    assert_eq!(
        error(&text),
        "t.toml:3:8: listener \"web\": bind \"localhost:8080\" is not an ip:port address \
         (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")"
    );
}

#[test]
fn bad_enum_value_is_refused() {
    let text = format!("{MINIMAL}balance = \"roundrobin\"\n");
    assert_eq!(
        error(&text),
        "t.toml:9:11: upstream \"app\": balance \"roundrobin\" is not valid (expected one of \
         \"round_robin\", \"least_load\")"
    );
    let text = MINIMAL.replace("\"http\"", "\"https\"");
    assert_eq!(
        error(&text),
        "t.toml:4:12: listener \"web\": protocol \"https\" is not valid (expected one of \
         \"tcp\", \"http\")"
    );
}

#[test]
fn threshold_zero_is_refused() {
    let text = format!("{MINIMAL}[upstream.app.health]\nunhealthy_threshold = 0\n");
    assert_eq!(
        error(&text),
        "t.toml:10:23: upstream \"app\": health.unhealthy_threshold 0 is out of range 1..=100"
    );
}

#[test]
fn health_path_must_start_with_a_slash() {
    let text = format!("{MINIMAL}[upstream.app.health]\ncheck = \"http\"\npath = \"healthz\"\n");
    assert_eq!(
        error(&text),
        "t.toml:11:8: upstream \"app\": health.path \"healthz\" is not a request path (it starts \
         with \"/\", e.g. \"/healthz\")"
    );
}

#[test]
fn max_connections_zero_is_refused() {
    let text = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nmax_connections = 0\n",
    );
    assert_eq!(
        error(&text),
        "t.toml:6:19: listener \"web\": max_connections 0 is out of range 1..=10000000"
    );
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fulcrum-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate and its key, PEM-encoded.
fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// MINIMAL with a TLS table on the listener, certificates on line 8.
fn with_listener_tls(cert: &str, key: &str) -> String {
    MINIMAL.replace(
        "upstream = \"app\"\n",
        &format!(
            "upstream = \"app\"\n\n[listener.tls]\ncertificates = [{{ cert = '{cert}', key = '{key}' }}]\n"
        ),
    )
}

/// Column (1-based) of the first character after `needle` in line `line` (1-based).
fn col_after(text: &str, line: usize, needle: &str) -> usize {
    let l = text.lines().nth(line - 1).expect("line");
    l.find(needle).expect("needle") + needle.len() + 1
}

#[test]
fn only_a_plain_tcp_listener_may_carry_a_protocol_where_the_server_speaks_first() {
    let l4 = MINIMAL.replace("protocol = \"http\"", "protocol = \"tcp\"");
    let proxied = l4.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nproxy_protocol = true\n",
    );
    let speaks_first = |text: &str| parse(text).expect("valid").listeners[0].client_speaks_first();
    assert!(speaks_first(MINIMAL), "an HTTP request comes first");
    assert!(
        !speaks_first(&l4),
        "plain TCP: maybe the server (SMTP, MySQL)"
    );
    assert!(speaks_first(&proxied), "the PROXY header comes first");
    let dir = TempDir::new();
    let (cert, key) = self_signed(&["example.com"]);
    let tls = with_listener_tls(&dir.write("c.crt", &cert), &dir.write("c.key", &key));
    let tls_l4 = tls.replace("protocol = \"http\"", "protocol = \"tcp\"");
    assert!(speaks_first(&tls_l4), "the TLS ClientHello comes first");
}

#[test]
fn valid_tls_listener_reads_dns_names() {
    let dir = TempDir::new();
    let (cert, key) = self_signed(&["example.com", "*.example.com"]);
    let cert = dir.write("site.crt", &cert);
    let key = dir.write("site.key", &key);
    let c = parse(&with_listener_tls(&cert, &key)).expect("valid TLS listener");
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(
        tls.certificates[0].dns_names,
        ["example.com", "*.example.com"]
    );
    assert_eq!(tls.certificates[0].cert_path, PathBuf::from(&cert));
    assert_eq!(tls.min_version, TlsVersion::V1_2);
    assert!(tls.session_resumption);
    assert_eq!(
        tls.alpn,
        ["h2", "http/1.1"],
        "http listeners default to h2 and http/1.1"
    );
}

#[test]
fn missing_certificate_file_is_refused() {
    let dir = TempDir::new();
    let (_, key) = self_signed(&["example.com"]);
    let key = dir.write("site.key", &key);
    let cert = dir.0.join("absent.crt").display().to_string();
    let text = with_listener_tls(&cert, &key);
    assert_eq!(
        error(&text),
        format!(
            "t.toml:8:{}: listener \"web\": cannot read certificate file \"{cert}\": no such file",
            col_after(&text, 8, "cert = ")
        )
    );
}

#[test]
fn device_or_huge_certificate_file_is_refused_without_reading_it_all() {
    let dir = TempDir::new();
    let (_, key) = self_signed(&["example.com"]);
    let key = dir.write("site.key", &key);
    // /dev/zero never ends: reading it whole would exhaust memory at start or reload.
    let e = error(&with_listener_tls("/dev/zero", &key));
    assert!(
        e.ends_with("cannot read certificate file \"/dev/zero\": not a regular file"),
        "a device must be refused before it is read: {e}"
    );
    let huge = dir.write("huge.crt", &"x".repeat(2 * 1024 * 1024));
    let e = error(&with_listener_tls(&huge, &key));
    assert!(
        e.ends_with("larger than 1024 KiB, not a PEM file"),
        "an oversized file must be refused: {e}"
    );
}

#[test]
fn pem_without_certificate_is_refused() {
    let dir = TempDir::new();
    let (_, key) = self_signed(&["example.com"]);
    let key = dir.write("site.key", &key);
    // The key file given as the certificate: valid PEM, but no certificate in it.
    let text = with_listener_tls(&key, &key);
    assert_eq!(
        error(&text),
        format!(
            "t.toml:8:{}: listener \"web\": \"{key}\" contains no certificate (expected a PEM \
             \"BEGIN CERTIFICATE\" block)",
            col_after(&text, 8, "cert = ")
        )
    );
}

#[test]
fn a_long_certificate_path_is_named_whole() {
    let dir = TempDir::new();
    let (_, key) = self_signed(&["example.com"]);
    let long = format!(
        "{}-a-certificate-file-whose-name-is-longer-than-sixty-characters.pem",
        "x".repeat(40)
    );
    let cert = dir.write(&long, "no PEM block in here\n");
    let key = dir.write("site.key", &key);
    let message = error(&with_listener_tls(&cert, &key));
    assert!(
        message.contains(&format!("\"{cert}\"")) && !message.contains("..."),
        "an error names a file by its whole path: {message}"
    );
}

#[test]
fn key_not_matching_the_certificate_is_refused() {
    let dir = TempDir::new();
    let (cert, _) = self_signed(&["example.com"]);
    let (_, other_key) = self_signed(&["example.com"]);
    let cert = dir.write("site.crt", &cert);
    let key = dir.write("other.key", &other_key);
    let text = with_listener_tls(&cert, &key);
    assert_eq!(
        error(&text),
        format!(
            "t.toml:8:{}: listener \"web\": key \"{key}\" does not match certificate \"{cert}\" \
             (use the key the certificate was issued for)",
            col_after(&text, 8, "key = ")
        )
    );
}

#[test]
fn empty_certificate_list_is_refused() {
    let text = MINIMAL.replace(
        "upstream = \"app\"\n",
        "upstream = \"app\"\n\n[listener.tls]\ncertificates = []\n",
    );
    assert_eq!(
        error(&text),
        "t.toml:8:16: listener \"web\": tls.certificates is empty (add at least one \
         { cert = \"site.crt\", key = \"site.key\" })"
    );
}

#[test]
fn upstream_tls_loads_its_ca() {
    let dir = TempDir::new();
    let (cert, _) = self_signed(&["app.internal"]);
    let ca = dir.write("ca.pem", &cert);
    let text =
        format!("{MINIMAL}[upstream.app.tls]\nserver_name = \"app.internal\"\nca = '{ca}'\n");
    let c = parse(&text).expect("valid upstream TLS");
    let tls = c.upstreams[0].tls.as_ref().expect("tls");
    assert_eq!(tls.server_name.as_deref(), Some("app.internal"));
    assert_eq!(tls.ca, Some(PathBuf::from(&ca)));
    assert_eq!(
        tls.roots.len(),
        1,
        "the ca file's certificate must be the one root"
    );
}

#[test]
fn empty_alpn_entry_is_refused() {
    let dir = TempDir::new();
    let (cert, key) = self_signed(&["example.com"]);
    let cert = dir.write("site.crt", &cert);
    let key = dir.write("site.key", &key);
    let text = with_listener_tls(&cert, &key).replace("' }]\n", "' }]\nalpn = [\"h2\", \"\"]\n");
    assert_eq!(
        error(&text),
        "t.toml:9:15: listener \"web\": tls.alpn entry \"\" must be 1..=255 bytes long \
         (e.g. \"h2\" or \"http/1.1\")"
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn on_any_string(text in ".*") {
            let _ = Config::from_toml(&text, Path::new("t.toml"));
        }

        #[test]
        fn on_mangled_valid_files(cut in 0usize..400, insert in "[\\[\\]{}=\"',.\\n a-z0-9:]{0,8}") {
            // Valid text with a piece cut out or inserted: reaches the later checks too.
            let base = format!("{MINIMAL}[upstream.app.health]\ncheck = \"http\"\n");
            let at = cut.min(base.len());
            let at = (0..=at).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
            let text = format!("{}{}{}", &base[..at], insert, &base[at..]);
            let _ = Config::from_toml(&text, Path::new("t.toml"));
        }
    }
}

#[test]
fn long_and_control_characters_are_cut_and_escaped_in_messages() {
    let long = "x".repeat(10_000);
    let text = MINIMAL.replace("127.0.0.1:8080", &format!("{long}\\u001b[31m"));
    let e = error(&text);
    assert!(e.len() < 300, "a message must not repeat a huge value: {e}");
    let text = MINIMAL.replace("127.0.0.1:8080", "\\u001b[31m");
    assert_eq!(
        error(&text),
        "t.toml:3:8: listener \"web\": bind \"\\u{1b}[31m\" is not an ip:port address \
         (e.g. \"0.0.0.0:8080\" or \"[::]:8080\")",
        "control characters must be escaped"
    );
    let text = format!("a = {}", "[".repeat(100_000));
    assert!(
        error(&text).len() < 400,
        "a deep nesting error must stay short"
    );
}

#[test]
fn upstream_protocol_and_its_tls_and_checks_must_agree() {
    let ok = parse(&format!("{MINIMAL}protocol = \"h2c\"\nmax_streams = 50\n")).expect("h2c");
    let app = &ok.upstreams[0];
    assert_eq!(
        (app.protocol, app.max_streams),
        (fulcrum::config::UpstreamProtocol::H2c, 50)
    );
    assert_eq!(
        error(&format!("{MINIMAL}protocol = \"h3\"\n")),
        "t.toml:9:12: upstream \"app\": protocol \"h3\" is not valid (expected one of \"http1\", \
         \"h2c\", \"h2\", \"auto\")"
    );
    assert_eq!(
        error(&format!("{MINIMAL}protocol = \"h2\"\n")),
        "t.toml:9:12: upstream \"app\": protocol \"h2\" needs TLS to the backends: add \
         [upstream.app.tls] (or use protocol = \"h2c\" for HTTP/2 without TLS)"
    );
    assert_eq!(
        error(&format!(
            "{MINIMAL}protocol = \"h2c\"\n[upstream.app.tls]\n"
        )),
        "t.toml:9:12: upstream \"app\": protocol \"h2c\" is HTTP/2 without TLS, but \
         [upstream.app.tls] is present (use protocol = \"h2\" for HTTP/2 over TLS, or remove \
         the tls table)"
    );
    assert_eq!(
        error(&format!(
            "{MINIMAL}[upstream.app.health]\ncheck = \"grpc\"\n"
        )),
        "t.toml:10:9: upstream \"app\": health.check \"grpc\" speaks HTTP/2, but the upstream's \
         protocol is \"http1\" (set protocol = \"h2c\", \"h2\" or \"auto\")"
    );
    assert_eq!(
        error(&format!("{MINIMAL}protocol = \"h2c\"\nmax_streams = 0\n")),
        "t.toml:10:15: upstream \"app\": max_streams 0 is out of range 1..=10000"
    );
    let tcp = MINIMAL.replace("protocol = \"http\"", "protocol = \"tcp\"");
    assert_eq!(
        error(&format!("{tcp}protocol = \"h2c\"\n")),
        "t.toml:5:12: listener \"web\": upstream \"app\" speaks h2c to its backends, which a tcp \
         listener cannot (it copies bytes; use an http listener, or an upstream without \
         `protocol`)"
    );
}
