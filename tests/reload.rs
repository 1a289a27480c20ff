//! Reload (SIGHUP and the file watch): nothing in flight is dropped, changes take effect,
//! an invalid file keeps the running configuration.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::{Client, Fulcrum, Mode, Toml, free_port, get, http_backend, tcp_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An http listener on `web` over `app` = `backends` and a tcp listener on `l4` over `echo`;
/// further keys go to `echo`.
fn config(web: u16, l4: u16, backends: &[(SocketAddr, u32)], echo: SocketAddr) -> Toml {
    Toml::new()
        .runtime("shutdown_timeout = \"5s\"")
        .listener("web", web, "http", "app")
        .listener("l4", l4, "tcp", "echo")
        .upstream("app", backends)
        .health("check = \"none\"")
        .upstream("echo", [echo])
}

fn reload(f: &Fulcrum, toml: &Toml, n: usize) {
    std::fs::write(&f.config, toml.to_string()).expect("rewrite config");
    f.signal(libc::SIGHUP);
    support::wait_for(&format!("reload {n} to finish"), || {
        let log = f.log();
        let done =
            log.matches("configuration reloaded").count() + log.matches("reload failed").count();
        (done >= n).then_some(())
    });
}

async fn shares(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut c = Client::connect(addr).await;
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts
            .entry(c.request("GET", "/", b"").await.text())
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_drop_no_request_and_no_session() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4) = (free_port(), free_port());
    let one = config(web, l4, &[(a.addr, 1), (b.addr, 1)], echo);
    let two = config(web, l4, &[(a.addr, 3), (b.addr, 1)], echo).set("retries = 1");
    let f = Fulcrum::start(&one);
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    // 16 concurrent keep-alive clients and one that opens a new connection per request.
    for i in 0..17 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                let r = if i == 16 {
                    Client::connect(addr)
                        .await
                        .try_request("GET", "/", b"")
                        .await
                } else {
                    c.try_request("GET", "/", b"").await
                };
                match r {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // A tcp session streaming through every reload.
    let mut session = TcpStream::connect(("127.0.0.1", l4))
        .await
        .expect("tcp session");
    for n in 1..=20 {
        reload(&f, if n % 2 == 0 { &one } else { &two }, n);
        let msg = format!("message {n:02}");
        session
            .write_all(msg.as_bytes())
            .await
            .expect("session write");
        let mut back = vec![0u8; msg.len()];
        session.read_exact(&mut back).await.expect("session read");
        assert_eq!(back, msg.as_bytes(), "the tcp session survives reload {n}");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "traffic ran during the reloads"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request may fail during reloads"
    );
    assert_eq!(f.log().matches("configuration reloaded").count(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_and_backends_added_by_a_reload_take_effect() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4) = (free_port(), free_port());
    let f = Fulcrum::start(&config(web, l4, &[(a.addr, 1)], echo));
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    assert_eq!(shares(addr, 4).await.get("a"), Some(&4));
    reload(&f, &config(web, l4, &[(a.addr, 1), (b.addr, 3)], echo), 1);
    let after = shares(addr, 40).await;
    assert_eq!(after.get("a"), Some(&10), "new weights apply: {after:?}");
    assert_eq!(
        after.get("b"),
        Some(&30),
        "the added backend gets its share: {after:?}"
    );
    assert!(
        f.log().contains("backend ") && f.log().contains(" added"),
        "the plan is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_finishes_its_slow_request_and_refuses_new_clients() {
    let a = http_backend("a").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4) = (free_port(), free_port());
    let f = Fulcrum::start(&config(web, l4, &[(a.addr, 1)], echo));
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    let slow = tokio::spawn(async move { get(addr, "/sleep/1500").await });
    support::wait_for("the slow request to reach the backend", || {
        (a.requests.load(Ordering::Relaxed) >= 1).then_some(())
    });
    // The same file without the http listener.
    let without_web = config(web, l4, &[(a.addr, 1)], echo)
        .at("web")
        .set(&format!(
            "name = \"other\"\nbind = \"127.0.0.1:{}\"",
            free_port()
        ));
    reload(&f, &without_web, 1);
    assert!(f.log().contains("listener \"web\" removed"), "{}", f.log());
    support::wait_for_async("the removed listener's port to refuse", || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    let r = slow.await.expect("slow request");
    assert_eq!(
        r.status, 200,
        "the in-flight request on the removed listener completes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_moved_to_another_port_stops_accepting_on_the_old_one() {
    let a = http_backend("a").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4, moved) = (free_port(), free_port(), free_port());
    let f = Fulcrum::start(&config(web, l4, &[(a.addr, 1)], echo));
    let old: SocketAddr = ([127, 0, 0, 1], web).into();
    assert_eq!(get(old, "/").await.status, 200);
    reload(&f, &config(moved, l4, &[(a.addr, 1)], echo), 1);
    assert!(f.log().contains("listener \"web\" moved"), "{}", f.log());
    let new: SocketAddr = ([127, 0, 0, 1], moved).into();
    assert_eq!(get(new, "/").await.status, 200, "served on the new port");
    support::wait_for_async("the old port to refuse", || async {
        TcpStream::connect(old).await.is_err().then_some(())
    })
    .await;
    // And the old port can be bound again by a later reload.
    reload(&f, &config(web, l4, &[(a.addr, 1)], echo), 2);
    assert_eq!(get(old, "/").await.status, 200, "back on the first port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_keep_the_running_configuration() {
    let a = http_backend("a").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4) = (free_port(), free_port());
    let good = config(web, l4, &[(a.addr, 1)], echo);
    let f = Fulcrum::start(&good);
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let bad = [
        good.clone().at("web").set("protocol = \"htp\""),
        good.clone().at("app").set("bogus = 1"),
        good.clone()
            .at("l4")
            .set(&format!("bind = \"127.0.0.1:{taken_port}\"")),
    ];
    for (i, text) in bad.iter().enumerate() {
        reload(&f, text, i + 1);
        f.wait_for_log_count("reload failed", i + 1);
        assert_eq!(
            get(addr, "/").await.status,
            200,
            "bad file {i} must not disturb serving"
        );
    }
    let log = f.log();
    assert!(
        log.contains("fulcrum.toml:"),
        "the error names the file and place: {log}"
    );
    let mut s = TcpStream::connect(("127.0.0.1", l4))
        .await
        .expect("old tcp listener still up");
    s.write_all(b"x").await.expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_when_a_symlinked_file_is_swapped() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4) = (free_port(), free_port());
    let watch = |backends: &[(SocketAddr, u32)]| {
        config(web, l4, backends, echo).runtime("watch_config = true")
    };
    // The ConfigMap layout: fulcrum.toml -> ..data/fulcrum.toml, ..data -> v1.
    let dir = support::temp_dir("watch");
    std::fs::create_dir_all(dir.join("v1")).expect("v1");
    std::fs::create_dir_all(dir.join("v2")).expect("v2");
    watch(&[(a.addr, 1)]).write(&dir.join("v1"));
    watch(&[(b.addr, 1)]).write(&dir.join("v2"));
    std::os::unix::fs::symlink("v1", dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/fulcrum.toml", dir.join("fulcrum.toml")).expect("link");
    let f = Fulcrum::spawn(&dir.join("fulcrum.toml"));
    f.wait_for_log_count("listening", 2);
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    assert_eq!(get(addr, "/").await.text(), "a");
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).expect("tmp link");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("atomic swap");
    f.wait_for_log("configuration reloaded");
    assert_eq!(
        get(addr, "/").await.text(),
        "b",
        "the swapped file is in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_still_counts_connections_from_before_a_reload() {
    let a = http_backend("a").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let (web, l4) = (free_port(), free_port());
    let text = config(web, l4, &[(a.addr, 1)], echo)
        .at("l4")
        .set("max_connections = 2");
    let f = Fulcrum::start(&text);
    async fn echoes(s: &mut TcpStream) -> bool {
        if s.write_all(b"x").await.is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(std::time::Duration::from_millis(300), s.read_exact(&mut b)).await,
            Ok(Ok(_))
        )
    }
    let mut one = TcpStream::connect(("127.0.0.1", l4)).await.expect("one");
    let mut two = TcpStream::connect(("127.0.0.1", l4)).await.expect("two");
    assert!(echoes(&mut one).await && echoes(&mut two).await);
    reload(&f, &text, 1);
    let mut three = TcpStream::connect(("127.0.0.1", l4))
        .await
        .expect("three queues");
    assert!(
        !echoes(&mut three).await,
        "two sessions from before the reload still fill max_connections = 2"
    );
    drop(one);
    let mut b = [0u8; 1];
    tokio::time::timeout(support::DEADLINE, three.read_exact(&mut b))
        .await
        .expect("the queued client is served once a session ends")
        .expect("echo");
    assert!(echoes(&mut two).await);
}
