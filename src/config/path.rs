//! The path routes are matched on: one spelling per resource, as nginx matches locations, so a
//! route cannot be bypassed by `/x/../admin`, `/%61dmin` or `//admin`. Routes' own paths are
//! put in the same form when the file is validated.

use std::borrow::Cow;

/// `path` (without its query) with unreserved characters percent-decoded (RFC 3986 §2.3),
/// other escapes upper-cased, runs of `/` merged and `.` and `..` segments resolved (§5.2.4).
/// Borrowed when nothing changes, which is every path a browser sends. `None`: a `..` climbs
/// above the root (nginx answers 400 too).
pub fn normalize(path: &str) -> Option<Cow<'_, str>> {
    if !needs_work(path.as_bytes()) {
        return Some(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    // A path that ends in `/`, `/.` or `/..` names a directory: it keeps its trailing slash.
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate().skip(1) {
        trailing = i == last && matches!(*seg, "" | "." | "..");
        match *seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || trailing {
        s.push('/');
    }
    Some(Cow::Owned(s))
}

/// A `%`, `//`, or a segment that is `.` or `..`.
fn needs_work(p: &[u8]) -> bool {
    p.iter().enumerate().any(|(i, &b)| match b {
        b'%' => true,
        b'/' => match p.get(i + 1) {
            Some(b'/') => true,
            Some(b'.') => matches!(
                (p.get(i + 2), p.get(i + 3)),
                (None | Some(b'/'), _) | (Some(b'.'), None | Some(b'/'))
            ),
            _ => false,
        },
        _ => false,
    })
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    // Bytes, not chars: a path may hold UTF-8 (the parsers let it through), kept as it came.
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let (Some(&hi), Some(&lo)) = (b.get(i + 1), b.get(i + 2))
            && let (Some(h), Some(l)) = (hex(hi), hex(lo))
        {
            let v = h * 16 + l;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v);
            } else {
                out.extend([b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]);
            }
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII was replaced by ASCII: what was UTF-8 still is.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn one_spelling_per_path() {
        let n = |p: &str| normalize(p).map(|c| c.into_owned());
        for (from, to) in [
            ("/api/users", "/api/users"),
            ("/", "/"),
            ("/x/../admin", "/admin"),
            ("/api/../secret", "/secret"),
            ("/%61dmin", "/admin"),
            ("//admin//x", "/admin/x"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/%2e%2E/b", "/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb%zz", "/a%2Fb%zz"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a..b/", "/a..b/"),
            ("/café//x", "/café/x"),
        ] {
            assert_eq!(n(from).as_deref(), Some(to), "{from}");
        }
        assert_eq!(n("/../etc"), None, "above the root");
        assert!(matches!(
            normalize("/plain/path"),
            Some(std::borrow::Cow::Borrowed(_))
        ));
    }
}
