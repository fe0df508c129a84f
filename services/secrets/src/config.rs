//! Configuration of the secrets service, from flags or `SECRETS_*` environment variables. The
//! master key itself is never a flag (flags show in process lists): it comes from a file, or
//! from the `SECRETS_MASTER_KEY` environment variable.

use std::path::{Path, PathBuf};

use edge_seal::envelope::Key;

use crate::error::SecretsError;

/// Environment variable that may hold the master key (64 hex digits or base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "SECRETS_MASTER_KEY";

/// secrets: stores tenant secrets encrypted and delivers them sealed to the sites whose
/// applications reference them.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "secrets", version)]
pub struct Config {
    /// URL of the hub NATS server.
    #[arg(long, env = "SECRETS_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Credentials file (user JWT and nkey seed) to connect with, issued by the authority
    /// (`edgectl auth`); the file is read, never logged.
    #[arg(long, env = "SECRETS_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// File holding the master key that wraps every tenant's data key (64 hex digits or base64
    /// of 32 bytes). Without it, `SECRETS_MASTER_KEY` must hold the key.
    #[arg(long, env = "SECRETS_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Create the master key file (mode 0600) if it does not exist: for development stacks.
    /// In production, provision the key from your key manager instead.
    #[arg(long, env = "SECRETS_CREATE_MASTER_KEY", default_value_t = false)]
    pub create_master_key: bool,
}

impl Config {
    /// A configuration for tests and embedding: the key in `master_key_file`, created if absent.
    pub fn new(nats_url: impl Into<String>, master_key_file: impl Into<PathBuf>) -> Self {
        Self {
            nats_url: nats_url.into(),
            nats_creds: None,
            master_key_file: Some(master_key_file.into()),
            create_master_key: true,
        }
    }

    /// Reads the master key: the file, else the environment variable.
    pub fn master_key(&self) -> Result<Key, SecretsError> {
        if let Some(path) = &self.master_key_file {
            return read_key_file(path, self.create_master_key);
        }
        match std::env::var(MASTER_KEY_ENV) {
            Ok(text) => Key::parse(&zeroize::Zeroizing::new(text))
                .map_err(|e| SecretsError::MasterKey(format!("{MASTER_KEY_ENV}: {e}"))),
            Err(_) => Err(SecretsError::MasterKey(format!(
                "no master key: set SECRETS_MASTER_KEY_FILE (a file with 64 hex digits) or {MASTER_KEY_ENV}"
            ))),
        }
    }
}

fn read_key_file(path: &Path, create: bool) -> Result<Key, SecretsError> {
    let fail = |e: String| SecretsError::MasterKey(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(text) => Key::parse(&zeroize::Zeroizing::new(text)).map_err(|e| fail(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = Key::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(e.to_string()))?;
            f.write_all(key.to_hex().as_bytes()).and_then(|_| f.sync_all()).map_err(|e| fail(e.to_string()))?;
            tracing::warn!(path = %path.display(), "created a new master key file (development only)");
            Ok(key)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}
