//! Config errors, rendered as `PATH:LINE:COL: message` (STUB: to be completed).

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

    fn render(&self) -> String {
        match self.location {
            Some((line, col)) => format!("{}:{line}:{col}: {}", self.path.display(), self.message),
            None => format!("{}: {}", self.path.display(), self.message),
        }
    }
}
