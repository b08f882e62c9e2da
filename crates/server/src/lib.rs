//! The vmshare NFS server: listeners, connections, limits (in progress).
//!
//! Public API sketch (stable names; the bodies are being written):
//!
//! ```ignore
//! let server = Server::bind(ServerConfig { exports, listen: "127.0.0.1:0".parse()?, state_dir, ..Default::default() })?;
//! let addr = server.local_addr();     // NFS, MOUNT and portmap share this port
//! let running = server.spawn()?;      // serves on background threads
//! running.shutdown();                 // stops accepting, closes connections, joins
//! ```
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;

pub use vmshare_fs::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};

/// Error of the server layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything needed to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Exports served.
    pub exports: Vec<ExportConfig>,
    /// Address for NFS, MOUNT and portmap (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory for the handle key and other state kept across restarts.
    pub state_dir: PathBuf,
}

/// A bound server, not yet serving.
#[derive(Debug)]
pub struct Server {
    _private: (),
}

/// A server serving on background threads.
#[derive(Debug)]
pub struct RunningServer {
    _private: (),
}

impl Server {
    /// Binds the listener(s) and prepares the exports.
    pub fn bind(_config: ServerConfig) -> Result<Server, ServerError> {
        Err(ServerError::Io { what: "bind".into(), source: std::io::Error::other("not implemented") })
    }
    /// The address actually bound (with the chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
    /// Serves on background threads.
    pub fn spawn(self) -> Result<RunningServer, ServerError> {
        Ok(RunningServer { _private: () })
    }
}

impl RunningServer {
    /// Stops serving and waits for the threads.
    pub fn shutdown(self) {}
}
