//! Running each operation as the caller.
//!
//! A guest's AUTH_SYS identity is a claim; the export's squash options map
//! it to the host identity the operation runs as, and the kernel's own
//! permission checks then apply. The switch is per thread (fsuid, fsgid and
//! supplementary groups only), so worker threads serving different callers
//! don't disturb each other, and it is undone when the guard drops.

use std::cell::RefCell;
use vmshare_wire::rpc::Credential;

use crate::export::{ExportOptions, Squash};
use crate::sys;

/// A host identity to run an operation as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// fsuid.
    pub uid: u32,
    /// fsgid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// Maps a guest credential through the export's squash options.
    /// AUTH_NONE is always anonymous, never root.
    pub fn map(cred: &Credential, opts: &ExportOptions) -> Identity {
        let anon = Identity {
            uid: opts.anonuid,
            gid: opts.anongid,
            groups: Vec::new(),
        };
        let Credential::Sys(a) = cred else {
            return anon;
        };
        match opts.squash {
            Squash::All => anon,
            Squash::None => Identity {
                uid: a.uid,
                gid: a.gid,
                groups: a.gids.clone(),
            },
            Squash::Root => Identity {
                uid: if a.uid == 0 { opts.anonuid } else { a.uid },
                gid: if a.gid == 0 { opts.anongid } else { a.gid },
                groups: a
                    .gids
                    .iter()
                    .map(|&g| if g == 0 { opts.anongid } else { g })
                    .collect(),
            },
        }
    }
}

thread_local! {
    /// What this thread's fs identity currently is, so that consecutive
    /// calls from the same caller skip the syscalls. The whole identity,
    /// compared in full: it once held a hash of the groups, and a caller
    /// could choose groups whose hash matched another caller's and run with
    /// that caller's groups.
    static CURRENT: RefCell<Option<Identity>> = const { RefCell::new(None) };
}

fn is_current(id: &Identity) -> bool {
    CURRENT.with(|c| c.try_borrow().is_ok_and(|c| c.as_ref() == Some(id)))
}

fn set_current(id: Option<Identity>) {
    CURRENT.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = id;
        }
    });
}

const SERVER: Identity = Identity {
    uid: 0,
    gid: 0,
    groups: Vec::new(),
};

/// Proof that this thread now runs as a caller's identity. When the server
/// is not root (`enabled` false) nothing changes: every operation runs as
/// the server's user.
///
/// The identity is not switched back when the guard drops: a worker's next
/// call usually comes from the same caller, and restoring costs five
/// syscalls per call. The one operation that needs the server's own
/// privilege, `open_by_handle_at`, calls [`as_server`] first.
#[derive(Debug)]
pub struct CredGuard {
    _private: (),
}

impl CredGuard {
    /// Becomes `id` on this thread.
    pub fn become_(id: &Identity, enabled: bool) -> std::io::Result<CredGuard> {
        if !enabled {
            return Ok(CredGuard { _private: () });
        }
        if !is_current(id) {
            if let Err(e) = sys::set_thread_fs_ids(id.uid, id.gid, &id.groups) {
                restore();
                return Err(e);
            }
            set_current(Some(id.clone()));
        }
        Ok(CredGuard { _private: () })
    }
}

/// Makes this thread act as the server itself again (if it switched), for
/// operations that need the server's privileges.
pub fn as_server(enabled: bool) {
    if enabled && !is_current(&SERVER) {
        restore();
    }
}

fn restore() {
    if sys::set_thread_fs_ids(0, 0, &[]).is_ok() {
        set_current(Some(SERVER));
    } else {
        set_current(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmshare_wire::rpc::AuthSys;

    fn sys(uid: u32, gid: u32, gids: Vec<u32>) -> Credential {
        Credential::Sys(AuthSys {
            stamp: 0,
            machine_name: vec![],
            uid,
            gid,
            gids,
        })
    }

    #[test]
    fn root_squash_maps_only_zero() {
        let o = ExportOptions {
            anonuid: 1234,
            anongid: 99,
            ..ExportOptions::default()
        };
        assert_eq!(
            Identity::map(&sys(0, 0, vec![0, 5]), &o),
            Identity {
                uid: 1234,
                gid: 99,
                groups: vec![99, 5]
            }
        );
        assert_eq!(
            Identity::map(&sys(1000, 1000, vec![]), &o),
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![]
            }
        );
    }

    #[test]
    fn all_squash_and_auth_none_are_anonymous() {
        let o = ExportOptions {
            squash: Squash::All,
            anonuid: 7,
            anongid: 8,
            ..ExportOptions::default()
        };
        assert_eq!(
            Identity::map(&sys(1000, 1000, vec![1]), &o),
            Identity {
                uid: 7,
                gid: 8,
                groups: vec![]
            }
        );
        let o = ExportOptions {
            squash: Squash::None,
            anonuid: 7,
            anongid: 8,
            ..ExportOptions::default()
        };
        assert_eq!(
            Identity::map(&Credential::None, &o),
            Identity {
                uid: 7,
                gid: 8,
                groups: vec![]
            }
        );
        assert_eq!(Identity::map(&sys(0, 0, vec![]), &o).uid, 0);
    }
}
