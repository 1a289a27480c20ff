//! The one writer of the tests' fulcrum configs, so that how a file is spelt is known in one
//! place and a test names only what it is about.
//!
//! Keys of a table are lines `key = value`, one per line. The `health` and `tls` tables are
//! written as dotted keys of their listener or upstream (`health.check = "none"`): the same
//! TOML as a sub-table, and it lets keys be added in any order. A key set again replaces its
//! line, so a test can change what a shared helper chose.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A config under construction; `Display` writes the file.
#[derive(Clone)]
pub struct Toml {
    runtime: Keys,
    admin: Option<u16>,
    log: Keys,
    /// `[[listener]]` and `[upstream.NAME]` tables in the order they were added.
    tables: Vec<Table>,
    /// The index in `tables` of the one `set`, `health` and `tls` go to.
    current: usize,
}

#[derive(Clone)]
struct Table {
    name: String,
    header: String,
    keys: Keys,
}

impl Toml {
    /// Only `[runtime]` with two workers: the tests share a 2-core machine.
    pub fn new() -> Toml {
        Toml {
            runtime: Keys::default(),
            admin: None,
            log: Keys::default(),
            tables: Vec::new(),
            current: 0,
        }
        .runtime("worker_threads = 2")
    }

    /// One http listener `web` on 127.0.0.1:`port` in front of upstream `app` over
    /// `backends`, passive health only; further keys go to `app`.
    pub fn http(port: u16, backends: &[SocketAddr]) -> Toml {
        Toml::new()
            .runtime("shutdown_timeout = \"5s\"")
            .listener("web", port, "http", "app")
            .upstream("app", backends)
            .health("check = \"none\"")
    }

    /// Keys of `[runtime]`; like `admin` and `log`, callable at any point of the chain.
    pub fn runtime(mut self, keys: &str) -> Toml {
        self.runtime.set("", keys);
        self
    }

    /// The admin listener on 127.0.0.1:`port`.
    pub fn admin(mut self, port: u16) -> Toml {
        self.admin = Some(port);
        self
    }

    pub fn log(mut self, keys: &str) -> Toml {
        self.log.set("", keys);
        self
    }

    /// A `[[listener]]` on 127.0.0.1:`port`.
    pub fn listener(self, name: &str, port: u16, protocol: &str, upstream: &str) -> Toml {
        self.add(name, "[[listener]]".to_owned()).set(&format!(
            "name = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\n\
             upstream = \"{upstream}\""
        ))
    }

    /// An http `[[listener]]` on 127.0.0.1:`port` with no default upstream: requests no
    /// route matches get 404.
    pub fn routed(self, name: &str, port: u16) -> Toml {
        self.add(name, "[[listener]]".to_owned()).set(&format!(
            "name = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\""
        ))
    }

    /// A `[[listener.route]]` of the listener added last: add routes right after their
    /// listener, before the next listener or upstream. Keys follow with `set`.
    pub fn route(self, keys: &str) -> Toml {
        let n = self.tables.len();
        self.add(&format!("#route{n}"), "[[listener.route]]".to_owned())
            .set(keys)
    }

    /// An `[upstream.NAME]` over `backends`.
    pub fn upstream<B: Backend>(self, name: &str, backends: impl IntoIterator<Item = B>) -> Toml {
        let list: Vec<String> = backends.into_iter().map(|b| b.entry()).collect();
        self.add(name, format!("[upstream.{name}]"))
            .set(&format!("backends = [{}]", list.join(", ")))
    }

    fn add(mut self, name: &str, header: String) -> Toml {
        self.tables.push(Table {
            name: name.to_owned(),
            header,
            keys: Keys::default(),
        });
        self.current = self.tables.len() - 1;
        self
    }

    /// Sends the keys that follow to the listener or upstream called `name` (which must be
    /// one of them, not both), as `listener` and `upstream` do for the table they add.
    pub fn at(mut self, name: &str) -> Toml {
        let mut found = self
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.name == name);
        let (i, _) = found.next().expect("a listener or upstream of that name");
        assert!(found.next().is_none(), "{name} names two tables");
        self.current = i;
        self
    }

    /// Keys of the current listener or upstream.
    pub fn set(self, keys: &str) -> Toml {
        self.set_in("", keys)
    }

    /// Keys of the `health` table of the current upstream.
    pub fn health(self, keys: &str) -> Toml {
        self.set_in("health.", keys)
    }

    /// Keys of the `tls` table of the current listener or upstream.
    pub fn tls(self, keys: &str) -> Toml {
        self.set_in("tls.", keys)
    }

    fn set_in(mut self, prefix: &str, keys: &str) -> Toml {
        self.tables
            .get_mut(self.current)
            .expect("add a listener or an upstream before its keys")
            .keys
            .set(prefix, keys);
        self
    }

    /// Writes the file as `DIR/fulcrum.toml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("fulcrum.toml");
        std::fs::write(&path, self.to_string()).expect("write config");
        path
    }
}

impl fmt::Display for Toml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[runtime]\n{}\n", self.runtime)?;
        if let Some(port) = self.admin {
            write!(f, "[admin]\nbind = \"127.0.0.1:{port}\"\n\n")?;
        }
        if !self.log.0.is_empty() {
            write!(f, "[log]\n{}\n", self.log)?;
        }
        for t in &self.tables {
            write!(f, "{}\n{}\n", t.header, t.keys)?;
        }
        Ok(())
    }
}

/// The lines of one table.
#[derive(Clone, Default)]
struct Keys(Vec<String>);

/// The key of a `key = value` line, dotted or not.
fn key(line: &str) -> &str {
    line.split('=').next().unwrap_or("").trim()
}

impl Keys {
    /// Adds each non-empty line of `keys` with `prefix`, replacing a line of the same key.
    fn set(&mut self, prefix: &str, keys: &str) {
        for line in keys.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let line = format!("{prefix}{line}");
            match self.0.iter_mut().find(|old| key(old) == key(&line)) {
                Some(old) => *old = line,
                None => self.0.push(line),
            }
        }
    }
}

/// The table's own keys first, then those of each sub-table together, for a reader.
impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<&String> = self.0.iter().collect();
        lines.sort_by_key(|l| key(l).split_once('.').map(|(table, _)| table));
        lines.iter().try_for_each(|line| writeln!(f, "{line}"))
    }
}

/// One entry of an upstream's `backends`.
pub trait Backend {
    fn entry(&self) -> String;
}

impl Backend for SocketAddr {
    fn entry(&self) -> String {
        format!("{{ addr = \"{self}\" }}")
    }
}

/// `host:port`, for backends named in DNS.
impl Backend for String {
    fn entry(&self) -> String {
        format!("{{ addr = \"{self}\" }}")
    }
}

/// An address and its weight.
impl Backend for (SocketAddr, u32) {
    fn entry(&self) -> String {
        format!("{{ addr = \"{}\", weight = {} }}", self.0, self.1)
    }
}

impl<T: Backend + ?Sized> Backend for &T {
    fn entry(&self) -> String {
        (**self).entry()
    }
}
