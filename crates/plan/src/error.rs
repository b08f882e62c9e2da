//! The planner's one error type.
//!
//! Every message names the volume as the user wrote it and ends with what to
//! do, because these errors surface straight from `vmshare run` and
//! `vmshare plan` on one line.

use std::path::PathBuf;

/// Why a volume description cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The text does not parse.
    #[error("{volume}: {reason}")]
    Syntax {
        /// The volume as written.
        volume: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// An option the planner does not know.
    #[error("{volume}: unknown option '{option}'; {hint}")]
    UnknownOption {
        /// The volume as written.
        volume: String,
        /// The option.
        option: String,
        /// The options that are accepted.
        hint: String,
    },
    /// The guest path is relative.
    #[error("{volume}: target '{target}' is not an absolute path; write it as '/{target}'")]
    RelativeTarget {
        /// The volume as written.
        volume: String,
        /// The target.
        target: String,
    },
    /// The guest path belongs to the guest system itself.
    #[error("{volume}: cannot mount on {target}: the guest init needs it; pick another path")]
    ReservedTarget {
        /// The volume as written.
        volume: String,
        /// The target.
        target: String,
    },
    /// Two volumes on one guest path.
    #[error("two mounts on {target} ('{first}' and '{second}'); keep one")]
    DuplicateTarget {
        /// The target.
        target: String,
        /// The first volume.
        first: String,
        /// The second volume.
        second: String,
    },
    /// A mount would be hidden by a later mount on a parent directory.
    #[error("'{inner}' comes before '{outer}', which mounts over its parent {parent}; list '{outer}' first")]
    HiddenByLater {
        /// The volume that would be hidden.
        inner: String,
        /// The later volume.
        outer: String,
        /// The later volume's target.
        parent: String,
    },
    /// A copy volume's image would be built inside the tree it copies.
    #[error("{volume}: its image would be built in {}, inside {}, the tree it copies (and so into its own copy); put the runtime directory elsewhere (vmshare plan --runtime-dir, vmshare run --state-dir)", .dir.display(), .path.display())]
    CopyHoldsItsImage {
        /// The volume as written.
        volume: String,
        /// The host directory it copies.
        path: PathBuf,
        /// Where its image would be built.
        dir: PathBuf,
    },
    /// Two read-write copy volumes of one host tree: two images written
    /// back into it at exit.
    #[error("'{first}' and '{second}' {what}, and both are written back at exit, one over the other's changes; {hint}")]
    OverlappingCopies {
        /// The first volume.
        first: String,
        /// The second volume.
        second: String,
        /// How their trees overlap.
        what: String,
        /// What to do instead.
        hint: String,
    },
    /// A volume whose target lies under a single-file volume's.
    #[error("'{inner}' would be mounted under '{file}', which puts a single file on {parent}; a mount point must be a directory: give '{inner}' a target outside {parent}, or bind a directory there")]
    UnderFile {
        /// The volume under the file.
        inner: String,
        /// The single-file volume.
        file: String,
        /// The file volume's target.
        parent: String,
    },
    /// A host path that must be absolute is not.
    #[error("{volume}: source '{source_path}' is relative; give an absolute host path")]
    RelativeSource {
        /// The volume as written.
        volume: String,
        /// The source.
        source_path: String,
    },
    /// A host path does not exist.
    #[error("{volume}: {} does not exist on the host; create it or fix the path", .path.display())]
    MissingSource {
        /// The volume as written.
        volume: String,
        /// The path.
        path: PathBuf,
    },
    /// A host path this user cannot look at (EACCES on the way to it).
    #[error("{volume}: {}: permission denied: a directory on the way to it is not searchable by the user running vmshare", .path.display())]
    UnreachableSource {
        /// The volume as written.
        volume: String,
        /// The path.
        path: PathBuf,
    },
    /// An image file does not exist.
    #[error("{volume}: image {} does not exist; build one with `vmshare image build DIR -o {}`", .path.display(), .path.display())]
    MissingImage {
        /// The volume as written.
        volume: String,
        /// The image path.
        path: PathBuf,
    },
    /// The host path has the wrong kind (a file where a directory is needed).
    #[error("{volume}: {} is {found}, but {needed}", .path.display())]
    WrongKind {
        /// The volume as written.
        volume: String,
        /// The path.
        path: PathBuf,
        /// What it is.
        found: &'static str,
        /// What is needed, and what to do instead.
        needed: &'static str,
    },
    /// The chosen hypervisor cannot provide what the volume asks for.
    #[error("{volume}: {vmm} cannot {what}; {hint}")]
    Unsupported {
        /// The volume as written.
        volume: String,
        /// The hypervisor.
        vmm: String,
        /// What was asked.
        what: String,
        /// What to use instead.
        hint: String,
    },
    /// More devices than the hypervisor can attach, even after packing.
    #[error("{vmm} can attach {available} devices but this plan needs {needed}; serve some volumes over NFS (-v HOST:GUEST) or merge images")]
    TooManyDevices {
        /// The hypervisor.
        vmm: String,
        /// Devices needed.
        needed: usize,
        /// Devices available.
        available: usize,
    },
    /// A `format/` template names a mount that does not exist or comes later.
    #[error("{volume}: '{reference}' refers to mount {index}, but {reason}")]
    BadReference {
        /// The volume as written.
        volume: String,
        /// The template expression.
        reference: String,
        /// The mount index it names.
        index: usize,
        /// Why it cannot be resolved.
        reason: String,
    },
    /// A share tag that the guest kernel would reject or confuse.
    #[error("{volume}: tag '{tag}' {reason}")]
    BadTag {
        /// The volume as written.
        volume: String,
        /// The tag.
        tag: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A machine setting (the tap device) the VMM or the host would refuse
    /// or misread.
    #[error("{setting}: {reason}")]
    Machine {
        /// The setting and its value, as given.
        setting: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// An environment variable of the `FILESYSTEM_*` front end is wrong.
    #[error("{var}: {reason}")]
    Env {
        /// The variable name.
        var: String,
        /// What is wrong and what to do.
        reason: String,
    },
}
