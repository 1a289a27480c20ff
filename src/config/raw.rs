//! The serde shapes of the file (STUB).
use super::ConfigError;
use std::path::Path;

pub struct Raw {}

pub fn parse(text: &str, path: &Path) -> Result<Raw, ConfigError> {
    let _ = (text, path);
    todo!()
}
