//! Configuration primitives the relay and the credential API share: one error type that names
//! the offending option, and reading the `--config` TOML file.

use std::path::{Path, PathBuf};

/// A configuration problem, naming the option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An option has a value that cannot work.
    #[error("invalid value for `{option}`: {reason}")]
    Invalid {
        /// The option's flag name.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these options.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
}

/// [`ConfigError::Invalid`] for `option`.
pub fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

/// Reads the config file at `path` and parses it with `parse` (the caller's TOML parser, whose
/// error message names the key).
pub fn read_file<T, E: std::fmt::Display>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
