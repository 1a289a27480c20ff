//! Routes in the configuration file: mistakes are refused before they run, located at the
//! route and naming the fix; a shadowed route names the route that shadows it; an upstream
//! nothing uses is a warning; `check` lists the routes.

use std::path::Path;
use std::process::Command;

use fulcrum::config::Config;

/// Two upstreams and an http listener `web` whose routes follow (line 9 on).
const HEAD: &str = r#"[upstream.a]
backends = [{ addr = "127.0.0.1:9001" }]
[upstream.b]
backends = [{ addr = "127.0.0.1:9002" }]
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"
"#;

fn error(routes: &str) -> String {
    match Config::from_toml(&format!("{HEAD}{routes}"), Path::new("t.toml")) {
        Ok(_) => panic!("these routes must be refused:\n{routes}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_route_an_earlier_one_shadows_is_refused_naming_both() {
    let e = error(
        "[[listener.route]]\nname = \"all-api\"\npath = \"/api\"\nupstream = \"a\"\n\
         [[listener.route]]\nname = \"users\"\npath = \"/api/users\"\nmethods = [\"GET\"]\nupstream = \"b\"\n",
    );
    assert_eq!(
        e,
        "t.toml:13:1: listener \"web\": route \"users\" can never match: route \"all-api\" \
         (9:1) comes first and matches every request it would (move it above \"all-api\", or \
         narrow \"all-api\")"
    );
    let e = error(
        "[[listener.route]]\nhost = [\"*.example.com\"]\nupstream = \"a\"\n\
         [[listener.route]]\nhost = [\"api.example.com\"]\nupstream = \"b\"\n",
    );
    assert!(
        e.contains("route \"route-2\" can never match: route \"route-1\""),
        "{e}"
    );
}

#[test]
fn route_paths_are_compared_in_their_normal_form() {
    let e = error(
        "[[listener.route]]\npath = \"/api\"\nupstream = \"a\"\n\
         [[listener.route]]\npath = \"/x/../api//v2\"\nupstream = \"b\"\n",
    );
    assert!(
        e.contains("route \"route-2\" can never match: route \"route-1\""),
        "{e}"
    );
    let ok = format!("{HEAD}[[listener.route]]\npath = \"/%7euser\"\nupstream = \"a\"\n");
    let config = Config::from_toml(&ok, Path::new("t.toml")).expect("valid");
    assert_eq!(
        config.listeners[0].routes[0].when.path,
        Some(fulcrum::config::PathMatch::Prefix("/~user".to_owned())),
        "as a request for /%7Euser is matched"
    );
    let e = Config::from_toml(
        &HEAD.replace("[upstream.b]", "[upstream.none]"),
        Path::new("t.toml"),
    )
    .expect_err("an upstream called none");
    assert!(
        e.to_string()
            .contains("upstream name \"none\" is not allowed"),
        "{e}"
    );
}

#[test]
fn routes_that_only_overlap_are_accepted() {
    let ok = format!(
        "{HEAD}[[listener.route]]\npath = \"/api/users\"\nupstream = \"b\"\n\
         [[listener.route]]\npath = \"/api\"\nupstream = \"a\"\n\
         [[listener.route]]\nhost = [\"api.example.com\"]\nheaders = {{ x-canary = \"1\" }}\nupstream = \"b\"\n\
         [[listener.route]]\nhost = [\"api.example.com\"]\nupstream = \"a\"\n"
    );
    let config = Config::from_toml(&ok, Path::new("t.toml")).expect("valid");
    assert_eq!(config.listeners[0].routes.len(), 4);
    assert_eq!(config.listeners[0].upstream, None, "no default: 404");
}

#[test]
fn each_route_mistake_is_located_and_says_the_fix() {
    let cases = [
        (
            "[[listener.route]]\nupstream = \"a\"\nrespond = { status = 200 }\n",
            "t.toml:9:1: listener \"web\": route \"route-1\": give exactly one of upstream, redirect or respond",
        ),
        (
            "[[listener.route]]\nupstream = \"nope\"\n",
            "t.toml:10:12: listener \"web\": route \"route-1\": upstream \"nope\" is not defined (defined: \"a\", \"b\")",
        ),
        (
            "[[listener.route]]\nhost = [\"a.*.com\"]\nupstream = \"a\"\n",
            "is not a host name",
        ),
        (
            "[[listener.route]]\nmethods = [\"get\"]\nupstream = \"a\"\n",
            "methods are upper case",
        ),
        (
            "[[listener.route]]\npath = \"api\"\nupstream = \"a\"\n",
            "path \"api\" is not a path",
        ),
        (
            "[[listener.route]]\npath = \"/a\"\npath_exact = \"/a\"\nupstream = \"a\"\n",
            "give path or path_exact, not both",
        ),
        (
            "[[listener.route]]\nstrip_prefix = true\nupstream = \"a\"\n",
            "strip_prefix needs `path` and `upstream`",
        ),
        (
            "[[listener.route]]\nredirect = { status = 200 }\n",
            "redirect.status 200 is not a redirect",
        ),
        (
            "[[listener.route]]\nrespond = { status = 99 }\n",
            "respond.status 99 is out of range 200..=599",
        ),
        (
            "[[listener.route]]\nupstream = \"a\"\nrequest_headers = { set = { content-length = \"1\" } }\n",
            "is a framing or hop-by-hop field that fulcrum manages itself",
        ),
        (
            "[[listener.route]]\nupstream = \"a\"\nresponse_headers = { set = { x = \"1\" }, remove = [\"x\"] }\n",
            "is both set and removed",
        ),
        (
            "[[listener.route]]\nname = \"x\"\npath = \"/a\"\nupstream = \"a\"\n[[listener.route]]\nname = \"x\"\npath = \"/b\"\nupstream = \"a\"\n",
            "route \"x\" is defined twice",
        ),
        (
            "[[listener.route]]\nname = \"none\"\nupstream = \"a\"\n",
            "route name \"none\" is not allowed",
        ),
        (
            "[[listener.route]]\npath = \"/x/../../y\"\nupstream = \"a\"\n",
            "path \"/x/../../y\" climbs above the root",
        ),
        (
            "[[listener.route]]\nupstream = \"a\"\nmirror = \"b\"\n",
            "unknown key \"mirror\" in [[listener.route]]",
        ),
    ];
    for (routes, want) in cases {
        let e = error(routes);
        assert!(e.contains(want), "{routes}\nmust say {want:?}, said: {e}");
    }
}

#[test]
fn a_tcp_listener_takes_no_routes_and_needs_its_upstream() {
    let tcp = HEAD.replace("protocol = \"http\"", "protocol = \"tcp\"");
    let e = Config::from_toml(
        &format!("{tcp}upstream = \"a\"\n[[listener.route]]\nupstream = \"b\"\n"),
        Path::new("t.toml"),
    )
    .expect_err("routes on tcp");
    assert!(
        e.to_string().contains("routes are for http listeners"),
        "{e}"
    );
    let e = Config::from_toml(&tcp, Path::new("t.toml")).expect_err("tcp without upstream");
    assert!(
        e.to_string().contains("a tcp listener needs `upstream`"),
        "{e}"
    );
}

#[test]
fn check_warns_about_an_unused_upstream_and_lists_the_routes() {
    let dir = std::env::temp_dir().join(format!("fulcrum-route-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("fulcrum.toml");
    std::fs::write(
        &path,
        format!(
            "{HEAD}[[listener.route]]\nname = \"api\"\nhost = [\"api.test\", \"*.api.test\"]\npath = \"/v1\"\n\
             strip_prefix = true\nupstream = \"a\"\n[[listener.route]]\nname = \"old\"\nredirect = {{ status = 301 }}\n"
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run fulcrum check");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "warning: upstream \"b\" is not used by any listener or route"
    );
    assert!(
        stdout.contains("listener \"web\" http 127.0.0.1:8080 -> 404\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  route \"api\" host api.test,*.api.test path /v1 -> upstream \"a\" (prefix stripped)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("  route \"old\" -> redirect 301\n"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_listener_that_can_only_answer_404_is_a_warning() {
    let config = Config::from_toml(
        &format!("{HEAD}upstream = \"a\"\n[[listener]]\nname = \"empty\"\nbind = \"127.0.0.1:8081\"\nprotocol = \"http\"\n"),
        Path::new("t.toml"),
    )
    .expect("valid");
    assert_eq!(
        config.warnings,
        [
            "upstream \"b\" is not used by any listener or route",
            "listener \"empty\" has neither an upstream nor routes: it answers every request 404"
        ]
    );
}
