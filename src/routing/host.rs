//! The host a request names, in the form routes and certificates are compared with.

use std::borrow::Cow;

/// `authority` (a `Host` value or `:authority`) without its port or trailing dot, lower
/// case: `API.Example.com.:8443` -> `api.example.com`, `[::1]:80` -> `[::1]`. Borrowed unless
/// it had upper-case letters.
pub fn host_key(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
