//! PostgreSQL refuses to run as root. When this process is root, database processes run as an
//! unprivileged account (Debian's `postgres`, else `nobody`) and own their data directory.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::unistd::{Gid, Uid, User};

/// The account database processes run as, or `None` when this process is not root.
#[derive(Clone, Copy, Debug)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
}

impl RunAs {
    pub fn for_postgres() -> anyhow::Result<Option<Self>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            if let Some(user) = User::from_name(name)? {
                return Ok(Some(Self { uid: user.uid, gid: user.gid }));
            }
        }
        anyhow::bail!(
            "running as root, but there is no 'postgres' or 'nobody' account to run PostgreSQL as: \
             create one with `useradd --system postgres`"
        )
    }

    pub fn apply(self, command: &mut Command) {
        command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
    }

    /// Hands `dir` (created if needed) to this account.
    pub fn own(self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::os::unix::fs::chown(dir, Some(self.uid.as_raw()), Some(self.gid.as_raw()))?;
        Ok(())
    }

    /// True when this account can reach `dir`: every ancestor must be searchable by "others".
    pub fn can_reach(self, dir: &Path) -> bool {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        dir.ancestors().skip(1).all(|ancestor| match std::fs::metadata(ancestor) {
            Ok(meta) => meta.uid() == self.uid.as_raw() || meta.permissions().mode() & 0o001 != 0,
            Err(_) => true,
        })
    }
}
