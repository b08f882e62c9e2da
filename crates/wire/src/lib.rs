//! The bottom layer of vmshare's NFS server: bytes in, typed values out.
//!
//! Everything here parses data sent by an untrusted guest, so the rules are
//! strict: no function panics on any input, every length read from the wire
//! is checked against both a protocol limit chosen by the caller and the
//! bytes actually present, and nothing allocates more than the input it was
//! given. There is no I/O here: [`record::RecordAssembler`] is fed bytes by
//! whoever owns the socket, which keeps policy (timeouts, buffer reuse,
//! threads) in the server crate.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod record;
pub mod rpc;
pub mod xdr;

pub use record::{RecordAssembler, RecordError};
pub use rpc::{AcceptStat, AuthFlavor, AuthSys, CallHeader, Credential, RejectReply, ReplyBody};
pub use xdr::{Decoder, Encoder, XdrError};
