//! Config errors, rendered as `PATH:LINE:COL: message`: the parser's errors with their
//! wording made readable, and the checks' errors located at the value they reject.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem with the configuration file, located where the parser or the check knows where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ConfigError {
    pub fn io(path: &Path, err: &std::io::Error) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            location: None,
            message: format!("cannot read the file: {err}"),
        }
    }

    /// An error about the file as a whole, with no one place to point at.
    pub(crate) fn whole(path: &Path, message: String) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            location: None,
            message,
        }
    }

    /// An error located at byte offset `span.start` of `text`.
    pub(crate) fn at(path: &Path, text: &str, span: Range<usize>, message: String) -> ConfigError {
        ConfigError {
            path: path.to_path_buf(),
            location: Some(line_col(text, span.start)),
            message,
        }
    }

    /// A parse error of `toml`, its message made readable.
    pub(crate) fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
        let message = readable(text, err);
        match err.span() {
            Some(span) => ConfigError::at(path, text, span, message),
            None => ConfigError::whole(path, message),
        }
    }

    fn render(&self) -> String {
        match self.location {
            Some((line, col)) => format!("{}:{line}:{col}: {}", self.path.display(), self.message),
            None => format!("{}: {}", self.path.display(), self.message),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset past the end
/// or inside a character counts as the position of the last character boundary before it.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Rewords serde's and toml's messages into the style of the checks: lowercase, the key named,
/// the fix stated.
fn readable(text: &str, err: &toml::de::Error) -> String {
    let msg = err.message().trim_end();
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        return unknown_key(rest);
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let key = rest.trim_matches('`');
        return format!(
            "missing required key {}{}",
            quote(key),
            table_of_missing(text, err)
        );
    }
    let span = err.span().unwrap_or(0..0);
    if msg == "recursion limit" {
        return "tables or arrays are nested too deeply".to_owned();
    }
    if msg == "duplicate key" {
        let key = text.get(span.clone()).unwrap_or("").trim_matches('"');
        return format!(
            "duplicate key {} (a key or table may be defined only once)",
            quote(key)
        );
    }
    // serde's names for TOML's types.
    let msg = msg
        .replace("expected i64", "expected an integer")
        .replace("expected a spanned value", "expected a value")
        .replace("a sequence", "an array")
        .replace("sequence", "array")
        .replace("a map", "a table")
        .replace("map,", "table,")
        .replace('`', "\"");
    let msg = match msg.split_once("expected struct ") {
        Some((head, _name)) => format!("{head}expected a table"),
        None => msg,
    };
    // serde repeats a wrong value whole, however long.
    let msg = excerpt(&lowercase_first(&msg), 4 * MAX_SHOWN);
    // A wrong value: name its key (or table header), which the message itself does not show.
    if let Some(key) = key_before(text, span.start) {
        return format!("{}: {msg}", excerpt(&key, MAX_SHOWN));
    }
    let at_line_start = err.span().is_some()
        && text
            .get(..span.start)
            .is_some_and(|b| b.is_empty() || b.ends_with('\n'));
    let line = text
        .get(span.start..)
        .and_then(|s| s.lines().next())
        .filter(|_| at_line_start)
        .map_or(String::new(), |l| excerpt(l.trim(), MAX_SHOWN));
    match line.as_str() {
        h if h.starts_with("[[") => format!("{h}: {msg}"),
        h if h.starts_with('[') && msg.ends_with("expected an array") => {
            format!("{h}: {msg} (an array of tables is written [[...]])")
        }
        h if h.starts_with('[') => format!("{h}: {msg}"),
        _ => msg,
    }
}

/// `"weigth", expected one of "addr", "weight"` → `unknown key "weigth" in backend (expected
/// one of addr, weight)`.
fn unknown_key(rest: &str) -> String {
    let (key, expected) = match rest.split_once(", ") {
        Some((k, e)) => (k, e),
        None => (rest, ""),
    };
    let key = key.trim_matches('`');
    let expected = expected
        .trim_start_matches("expected one of ")
        .trim_start_matches("expected ");
    let names: Vec<&str> = expected
        .split(", ")
        .flat_map(|s| s.split(" or "))
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty() && *s != "there are no fields")
        .collect();
    let table = super::keys::TABLES
        .iter()
        .find(|(_, fields)| fields.len() == names.len() && fields.iter().all(|f| names.contains(f)))
        .map_or(String::new(), |(name, _)| format!(" {name}"));
    if names.is_empty() {
        format!("unknown key {}{table}", quote(key))
    } else {
        format!(
            "unknown key {}{table} (expected one of {})",
            quote(key),
            names.join(", ")
        )
    }
}

/// For a missing key, the header of the table it is missing from (serde's span covers the
/// whole table, so the table's first line is what to show).
fn table_of_missing(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return String::new();
    };
    let start = text.get(span.start..).unwrap_or("");
    let first = start.lines().next().unwrap_or("").trim();
    if first.starts_with('[') {
        format!(" in {}", excerpt(first, MAX_SHOWN))
    } else if first.starts_with('{') {
        let end = first.find('}').map_or(first.len(), |i| i + 1);
        format!(
            " in {}",
            excerpt(first.get(..end).unwrap_or(first), MAX_SHOWN)
        )
    } else {
        String::new()
    }
}

/// The key of the `key = value` whose value starts at `offset`, if the text shows one.
fn key_before(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?.trim_end();
    let before = before.strip_suffix('=')?.trim_end();
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = before.get(start..)?.trim_matches('"');
    (!key.is_empty()).then(|| key.to_owned())
}

/// Longest user text a message repeats: enough to recognise it, not a screenful.
const MAX_SHOWN: usize = 60;

/// `s` in double quotes for a message: escaped (no control characters reach a terminal or a
/// log line) and cut to `MAX_SHOWN` characters.
pub(crate) fn quote(s: &str) -> String {
    quote_at_most(s, MAX_SHOWN)
}

/// `s` in double quotes, escaped but whole: for a file's path, which a shortened copy would
/// no longer name.
pub(crate) fn quote_whole(s: &str) -> String {
    quote_at_most(s, usize::MAX)
}

fn quote_at_most(s: &str, max: usize) -> String {
    let mut out = String::from("\"");
    for c in s.chars().take(max) {
        out.extend(c.escape_debug());
    }
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out.push('"');
    out
}

/// At most `max` characters of `line`, for context in a message.
fn excerpt(line: &str, max: usize) -> String {
    let mut out: String = line.chars().take(max).collect();
    if line.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        assert_eq!(line_col("", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(
            line_col("é=1", 2),
            (1, 2),
            "columns count characters, not bytes"
        );
        assert_eq!(
            line_col("ab", 99),
            (1, 3),
            "an offset past the end must not panic"
        );
        assert_eq!(
            line_col("é", 1),
            (1, 1),
            "an offset inside a character must not panic"
        );
    }

    #[test]
    fn every_table_is_named() {
        let tables = [
            ("zz = 1", "at the top level"),
            ("[runtime]\nzz = 1", "in [runtime]"),
            ("[admin]\nzz = 1", "in [admin]"),
            ("[log]\nzz = 1", "in [log]"),
            ("[[listener]]\nzz = 1", "in [[listener]]"),
            (
                "[[listener]]\ntimeouts = { zz = 1 }",
                "in listener timeouts",
            ),
            ("[[listener]]\n[listener.tls]\nzz = 1", "in [listener.tls]"),
            (
                "[[listener]]\n[[listener.route]]\nzz = 1",
                "in [[listener.route]]",
            ),
            (
                "[[listener]]\n[[listener.route]]\nredirect = { zz = 1 }",
                "in route redirect",
            ),
            (
                "[[listener]]\n[[listener.route]]\nrespond = { zz = 1 }",
                "in route respond",
            ),
            (
                "[[listener]]\n[[listener.route]]\nrequest_headers = { zz = 1 }",
                "in route header rules",
            ),
            (
                "[[listener]]\n[listener.tls]\ncertificates = [{ zz = 1 }]",
                "in certificate",
            ),
            ("[upstream.a]\nzz = 1", "in [upstream.NAME]"),
            ("[upstream.a]\nbackends = [{ zz = 1 }]", "in backend"),
            ("[upstream.a.tls]\nzz = 1", "in [upstream.NAME.tls]"),
            ("[upstream.a.health]\nzz = 1", "in [upstream.NAME.health]"),
        ];
        assert_eq!(
            tables.len(),
            super::super::keys::TABLES.len(),
            "one case per table of raw.rs"
        );
        for (text, name) in tables {
            let Err(err) = super::super::raw::parse(text, Path::new("t.toml")) else {
                panic!("unknown key must be refused in {text:?}");
            };
            assert!(
                err.message
                    .starts_with(&format!("unknown key \"zz\" {name} (expected one of ")),
                "TABLES must name the table of {text:?}: {}",
                err.message
            );
        }
    }

    #[test]
    fn key_before_finds_the_key_of_a_value() {
        assert_eq!(
            key_before("a = 1\n  weight = ", 17).as_deref(),
            Some("weight")
        );
        assert_eq!(key_before("x = [1, ", 8), None);
    }
}
