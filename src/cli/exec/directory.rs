//! `--to-file DIR`: a private directory `writ exec` makes for the
//! credentials' files and removes when it ends.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

/// The directory, made by `writ exec` (mode 0700); its files are 0600.
#[derive(Debug)]
pub(super) struct CredentialDir {
    path: PathBuf,
    /// Whether [`CredentialDir::remove`] ran; if not, dropping removes it
    /// (a panic unwinding out of `writ exec` leaves no secret behind).
    removed: bool,
}

impl Drop for CredentialDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl CredentialDir {
    /// Makes `path`, which must not exist: `writ exec` removes the
    /// directory with everything in it when it ends, so it must be its
    /// own. The path is made absolute, for the child to find it from any
    /// working directory.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let path = std::path::absolute(path).with_context(|| format!("--to-file {}", path.display()))?;
        if path.symlink_metadata().is_ok() {
            anyhow::bail!(
                "--to-file {} exists: name a directory that does not, which writ exec makes (mode 0700) \
                 and removes when the command ends",
                path.display()
            );
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path).with_context(|| format!("making --to-file directory {}", path.display()))?;
        Ok(Self { path, removed: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` (mode 0600) whole or not at all: a reader sees the
    /// old contents or the new, never a part.
    pub fn write(&self, name: &str, contents: &SecretString) -> anyhow::Result<()> {
        let target = self.path.join(name);
        let staging = self.path.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&staging);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&staging).with_context(|| format!("writing {}", staging.display()))?;
        file.write_all(contents.expose_secret().as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", staging.display()))?;
        std::fs::rename(&staging, &target).with_context(|| format!("writing {}", target.display()))
    }

    /// Removes the directory and everything in it.
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.removed = true;
        std::fs::remove_dir_all(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_private_directory_of_private_files_that_goes_away() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("creds");
        let dir = CredentialDir::create(&path).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        dir.write("token", &SecretString::from("first".to_string())).unwrap();
        dir.write("token", &SecretString::from("second".to_string())).unwrap();
        assert_eq!(std::fs::read_to_string(path.join("token")).unwrap(), "second");
        assert_eq!(mode(&path.join("token")), 0o600);
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 1, "no staging file left");
        let error = CredentialDir::create(&path).unwrap_err();
        assert!(error.to_string().contains("exists"), "{error}");
        dir.remove().unwrap();
        assert!(!path.exists());
    }
}
