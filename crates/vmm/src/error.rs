//! The one error type of this crate. Messages say what to do about it.

use std::path::PathBuf;

/// Error of the VM layer.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// A file or system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No kernel to boot.
    #[error("no guest kernel found: {0}")]
    NoKernel(String),
    /// A kernel module the guest needs is missing from the host's modules.
    #[error("kernel module {module} not found in {dir} (install the modules of the kernel you boot, e.g. Debian's linux-image-amd64)")]
    NoModule {
        /// Module name.
        module: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The binary meant to become the guest's init is dynamically linked.
    #[error("{0} is dynamically linked; the guest init must be static (build vmshare with the workspace's .cargo/config.toml, which sets +crt-static)")]
    NotStatic(PathBuf),
    /// A tool vmshare needs is not installed.
    #[error("{tool} not found ({hint})")]
    MissingTool {
        /// The program.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// QEMU could not be started or stopped early.
    #[error("QEMU failed: {message}\n--- QEMU stderr ---\n{stderr}")]
    Qemu {
        /// What happened.
        message: String,
        /// QEMU's own error output.
        stderr: String,
    },
    /// The VM did not run the command to completion: it hung, panicked or
    /// failed to boot. The console tail usually says why.
    #[error("{message}\n--- last lines of the guest console ({log}) ---\n{tail}")]
    Guest {
        /// What happened.
        message: String,
        /// Where the full console log is kept.
        log: PathBuf,
        /// The last lines of the console.
        tail: String,
    },
    /// The guest init could not set up the guest (a volume failed to
    /// mount, the command could not be started...).
    #[error("{}", .0.join("\n"))]
    Init(Vec<String>),
    /// Network namespace or TAP set-up failed.
    #[error("network set-up: {0}")]
    Network(String),
}

impl VmmError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        VmmError::Io {
            what: what.into(),
            source,
        }
    }
}
