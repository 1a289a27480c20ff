//! Raw shapes to validated types (STUB).
use super::{Config, ConfigError, raw::Raw};
use std::path::Path;

pub fn validate(raw: Raw, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let _ = (raw, text, path);
    todo!()
}
