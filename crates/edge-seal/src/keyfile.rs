//! Key files: an xkey seed kept in a file only its owner can read, created on first use.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nkeys::XKey;
use zeroize::Zeroizing;

use crate::SealError;

/// Reads the xkey seed in `path`, or creates a new key there (mode 0600, parent 0700) if the
/// file does not exist. Returns the key and whether it was created.
pub fn load_or_create(path: &Path) -> Result<(XKey, bool), SealError> {
    let io = |e: std::io::Error| SealError::KeyFile(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let key = XKey::from_seed(text.trim())
                .map_err(|_| SealError::KeyFile(format!("{}: not an xkey seed", path.display())))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
            let key = XKey::new();
            let seed = Zeroizing::new(key.seed().expect("a new key has a seed"));
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
            f.write_all(seed.as_bytes()).and_then(|_| f.sync_all()).map_err(io)?;
            Ok((key, true))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/site.xk");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public_key(), b.public_key());
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_create(&path).is_err());
    }
}
