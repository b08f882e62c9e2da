//! ONC RPC version 2 messages (RFC 5531): call headers in, reply headers out.
//!
//! Only what a server needs: parse a CALL with its credential (AUTH_NONE or
//! AUTH_SYS), and write the accepted/denied reply headers. Procedure
//! arguments are left as an unparsed slice for the protocol layer.

use crate::xdr::{Decoder, Encoder, XdrError};

/// RPC protocol version this module speaks.
pub const RPC_VERSION: u32 = 2;
/// Largest credential or verifier body (RFC 5531 §8.2).
pub const MAX_AUTH_BYTES: u32 = 400;
/// Largest AUTH_SYS machine name (RFC 5531 App. A).
pub const MAX_MACHINE_NAME: u32 = 255;
/// Largest AUTH_SYS supplementary group list (RFC 5531 App. A).
pub const MAX_AUTH_GIDS: u32 = 16;

const CALL: u32 = 0;
const REPLY: u32 = 1;
const AUTH_NONE: u32 = 0;
const AUTH_SYS: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;

/// Authentication flavors this server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AuthFlavor {
    /// AUTH_NONE (0).
    None = 0,
    /// AUTH_SYS (1), a.k.a. AUTH_UNIX.
    Sys = 1,
}

/// An AUTH_SYS credential: the caller's claimed identity.
///
/// These are claims made by the guest; the backend maps or squashes them
/// per export before using them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSys {
    /// Arbitrary client stamp.
    pub stamp: u32,
    /// Client host name (at most 255 bytes).
    pub machine_name: Vec<u8>,
    /// Claimed user ID.
    pub uid: u32,
    /// Claimed primary group ID.
    pub gid: u32,
    /// Claimed supplementary groups (at most 16).
    pub gids: Vec<u32>,
}

/// The credential of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// AUTH_NONE: anonymous.
    None,
    /// AUTH_SYS: a claimed Unix identity.
    Sys(AuthSys),
}

/// A parsed call header; `args` is the undecoded procedure arguments.
#[derive(Debug, Clone)]
pub struct CallHeader<'a> {
    /// Transaction ID, echoed in the reply.
    pub xid: u32,
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// The caller's credential.
    pub cred: Credential,
    /// Procedure arguments, still XDR-encoded.
    pub args: &'a [u8],
}

/// Authentication failure codes (RFC 5531 `auth_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AuthStat {
    /// Bad credential (seal broken, or malformed).
    BadCred = 1,
    /// Client must begin a new session.
    RejectedCred = 2,
    /// Bad verifier.
    BadVerf = 3,
    /// Verifier expired or replayed.
    RejectedVerf = 4,
    /// Rejected for security reasons (flavor too weak).
    TooWeak = 5,
}

/// Why a call was not accepted, for the MSG_DENIED reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReply {
    /// The RPC version is not 2.
    RpcMismatch,
    /// The credential was refused.
    AuthError(AuthStat),
}

/// Outcome of an accepted call (RFC 5531 `accept_stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptStat {
    /// Executed; results follow.
    Success,
    /// The program is not served here.
    ProgUnavail,
    /// The program is served, at versions `low..=high` only.
    ProgMismatch {
        /// Lowest version supported.
        low: u32,
        /// Highest version supported.
        high: u32,
    },
    /// The procedure does not exist in this program version.
    ProcUnavail,
    /// The arguments could not be decoded.
    GarbageArgs,
    /// The server failed (for example, out of memory).
    SystemErr,
}

/// What a reply says, below the transaction ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyBody {
    /// MSG_ACCEPTED with the given status.
    Accepted(AcceptStat),
    /// MSG_DENIED.
    Denied(RejectReply),
}

/// Why a record is not a call this server can answer normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not an RPC call at all (too short, or a REPLY): drop it. Answering
    /// garbage with garbage only helps reflection attacks.
    Unanswerable(XdrError),
    /// A call that must be denied with this reply.
    Deny {
        /// Transaction ID to answer.
        xid: u32,
        /// The denial.
        reply: RejectReply,
    },
}

fn parse_auth_sys(body: &[u8]) -> Result<AuthSys, XdrError> {
    let mut d = Decoder::new(body);
    let stamp = d.u32()?;
    let machine_name = d.string(MAX_MACHINE_NAME)?.to_vec();
    let uid = d.u32()?;
    let gid = d.u32()?;
    let n = d.array_len(MAX_AUTH_GIDS, 4)?;
    let mut gids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        gids.push(d.u32()?);
    }
    Ok(AuthSys {
        stamp,
        machine_name,
        uid,
        gid,
        gids,
    })
}

/// Parses the header of an RPC call record.
pub fn parse_call(record: &[u8]) -> Result<CallHeader<'_>, CallError> {
    let mut d = Decoder::new(record);
    let xid = d.u32().map_err(CallError::Unanswerable)?;
    let mtype = d.u32().map_err(CallError::Unanswerable)?;
    if mtype != CALL {
        return Err(CallError::Unanswerable(XdrError::BadDiscriminant(mtype)));
    }
    let deny_badcred = CallError::Deny {
        xid,
        reply: RejectReply::AuthError(AuthStat::BadCred),
    };
    let rpcvers = d.u32().map_err(CallError::Unanswerable)?;
    if rpcvers != RPC_VERSION {
        return Err(CallError::Deny {
            xid,
            reply: RejectReply::RpcMismatch,
        });
    }
    let (prog, vers, proc_) = match (d.u32(), d.u32(), d.u32()) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => return Err(deny_badcred),
    };
    let flavor = d.u32().map_err(|_| deny_badcred.clone())?;
    let body = d.opaque(MAX_AUTH_BYTES).map_err(|_| deny_badcred.clone())?;
    // An unknown flavor is a credential this server cannot read: BADCRED,
    // as Linux's sunrpc answers (TOOWEAK would say the flavor is known
    // but not good enough here).
    let cred = match flavor {
        AUTH_NONE if body.is_empty() => Credential::None,
        AUTH_SYS => Credential::Sys(parse_auth_sys(body).map_err(|_| deny_badcred.clone())?),
        _ => return Err(deny_badcred),
    };
    // Both flavors are verified by nothing: RFC 5531 has their verifier
    // be AUTH_NONE with no body, and Linux refuses anything else.
    let deny_badverf = CallError::Deny {
        xid,
        reply: RejectReply::AuthError(AuthStat::BadVerf),
    };
    let vflavor = d.u32().map_err(|_| deny_badverf.clone())?;
    let verifier = d.opaque(MAX_AUTH_BYTES).map_err(|_| deny_badverf.clone())?;
    if vflavor != AUTH_NONE || !verifier.is_empty() {
        return Err(deny_badverf);
    }
    Ok(CallHeader {
        xid,
        prog,
        vers,
        proc_,
        cred,
        args: d.rest(),
    })
}

/// Where a call is addressed, and its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTarget<'a> {
    /// Program number.
    pub prog: u32,
    /// Program version.
    pub vers: u32,
    /// Procedure number.
    pub proc_: u32,
    /// Procedure arguments, still XDR-encoded.
    pub args: &'a [u8],
}

/// Reads where a call is addressed without decoding its credential (no
/// allocation): for a server deciding where to run a call before it runs
/// it. `None` for anything [`parse_call`] would not accept as a
/// well-framed call; it agrees with `parse_call` on every call that parses.
pub fn peek_call(record: &[u8]) -> Option<CallTarget<'_>> {
    let mut d = Decoder::new(record);
    let _xid = d.u32().ok()?;
    if d.u32().ok()? != CALL || d.u32().ok()? != RPC_VERSION {
        return None;
    }
    let (prog, vers, proc_) = (d.u32().ok()?, d.u32().ok()?, d.u32().ok()?);
    // Credential and verifier: flavor and body each.
    for _ in 0..2 {
        d.u32().ok()?;
        d.opaque(MAX_AUTH_BYTES).ok()?;
    }
    Some(CallTarget {
        prog,
        vers,
        proc_,
        args: d.rest(),
    })
}

/// Writes a reply header; for `Accepted(Success)` the caller appends the
/// procedure's results after it.
pub fn encode_reply_header(e: &mut Encoder, xid: u32, body: ReplyBody) {
    e.u32(xid).u32(REPLY);
    match body {
        ReplyBody::Accepted(stat) => {
            e.u32(MSG_ACCEPTED);
            // Verifier: AUTH_NONE, empty.
            e.u32(AuthFlavor::None as u32).u32(0);
            match stat {
                AcceptStat::Success => e.u32(0),
                AcceptStat::ProgUnavail => e.u32(1),
                AcceptStat::ProgMismatch { low, high } => e.u32(2).u32(low).u32(high),
                AcceptStat::ProcUnavail => e.u32(3),
                AcceptStat::GarbageArgs => e.u32(4),
                AcceptStat::SystemErr => e.u32(5),
            };
        }
        ReplyBody::Denied(rej) => {
            e.u32(MSG_DENIED);
            match rej {
                RejectReply::RpcMismatch => e.u32(0).u32(RPC_VERSION).u32(RPC_VERSION),
                RejectReply::AuthError(s) => e.u32(1).u32(s as u32),
            };
        }
    }
}

/// Encodes a call header (for clients and tests).
pub fn encode_call(e: &mut Encoder, xid: u32, prog: u32, vers: u32, proc_: u32, cred: &Credential) {
    e.u32(xid)
        .u32(CALL)
        .u32(RPC_VERSION)
        .u32(prog)
        .u32(vers)
        .u32(proc_);
    match cred {
        Credential::None => {
            e.u32(0).u32(0);
        }
        Credential::Sys(a) => {
            let mut body = Encoder::default();
            body.u32(a.stamp)
                .string(&a.machine_name)
                .u32(a.uid)
                .u32(a.gid);
            body.u32(u32::try_from(a.gids.len()).unwrap_or(0));
            for g in &a.gids {
                body.u32(*g);
            }
            e.u32(1).opaque(body.as_slice());
        }
    }
    e.u32(0).u32(0);
}

/// A parsed reply header, for clients and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedReply<'a> {
    /// Transaction ID.
    pub xid: u32,
    /// Accepted or denied, and why.
    pub body: ReplyBody,
    /// Results (for an accepted call that succeeded).
    pub results: &'a [u8],
}

/// Parses a reply header (the client side of [`encode_reply_header`]).
pub fn parse_reply(record: &[u8]) -> Result<ParsedReply<'_>, XdrError> {
    let mut d = Decoder::new(record);
    let xid = d.u32()?;
    let t = d.u32()?;
    if t != REPLY {
        return Err(XdrError::BadDiscriminant(t));
    }
    let body = match d.u32()? {
        MSG_ACCEPTED => {
            let _flavor = d.u32()?;
            d.opaque(MAX_AUTH_BYTES)?;
            ReplyBody::Accepted(match d.u32()? {
                0 => AcceptStat::Success,
                1 => AcceptStat::ProgUnavail,
                2 => AcceptStat::ProgMismatch {
                    low: d.u32()?,
                    high: d.u32()?,
                },
                3 => AcceptStat::ProcUnavail,
                4 => AcceptStat::GarbageArgs,
                5 => AcceptStat::SystemErr,
                v => return Err(XdrError::BadDiscriminant(v)),
            })
        }
        MSG_DENIED => ReplyBody::Denied(match d.u32()? {
            0 => {
                d.u32()?;
                d.u32()?;
                RejectReply::RpcMismatch
            }
            1 => RejectReply::AuthError(match d.u32()? {
                1 => AuthStat::BadCred,
                2 => AuthStat::RejectedCred,
                3 => AuthStat::BadVerf,
                4 => AuthStat::RejectedVerf,
                5 => AuthStat::TooWeak,
                v => return Err(XdrError::BadDiscriminant(v)),
            }),
            v => return Err(XdrError::BadDiscriminant(v)),
        }),
        v => return Err(XdrError::BadDiscriminant(v)),
    };
    Ok(ParsedReply {
        xid,
        body,
        results: d.rest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys() -> Credential {
        Credential::Sys(AuthSys {
            stamp: 7,
            machine_name: b"guest".to_vec(),
            uid: 1000,
            gid: 100,
            gids: vec![1, 2, 3],
        })
    }

    #[test]
    fn call_roundtrip() {
        let mut e = Encoder::default();
        encode_call(&mut e, 42, 100003, 3, 1, &sys());
        e.u32(0xdead_beef);
        let c = parse_call(e.as_slice()).expect("valid call");
        assert_eq!((c.xid, c.prog, c.vers, c.proc_), (42, 100003, 3, 1));
        assert_eq!(c.cred, sys());
        assert_eq!(c.args, &0xdead_beefu32.to_be_bytes());
        let t = peek_call(e.as_slice()).expect("peek");
        assert_eq!((t.prog, t.vers, t.proc_, t.args), (100003, 3, 1, c.args));
    }

    #[test]
    fn peek_refuses_what_is_not_a_framed_call() {
        let mut e = Encoder::default();
        encode_call(&mut e, 42, 100003, 3, 1, &sys());
        let whole = e.as_slice();
        // Cut inside the credential, and a reply instead of a call.
        assert!(peek_call(&whole[..30]).is_none());
        let mut reply = Encoder::default();
        encode_reply_header(&mut reply, 42, ReplyBody::Accepted(AcceptStat::Success));
        assert!(peek_call(reply.as_slice()).is_none());
    }

    #[test]
    fn too_many_gids_is_badcred() {
        let mut body = Encoder::default();
        body.u32(0).string(b"h").u32(0).u32(0).u32(17);
        for g in 0..17 {
            body.u32(g);
        }
        assert_eq!(
            parse_call(&call_with(1, body.as_slice(), 0, b"")).err(),
            Some(CallError::Deny {
                xid: 9,
                reply: RejectReply::AuthError(AuthStat::BadCred)
            })
        );
    }

    /// A call with credential `(flavor, body)` and verifier `(vflavor,
    /// vbody)`, to NFS v3 NULL.
    fn call_with(flavor: u32, body: &[u8], vflavor: u32, vbody: &[u8]) -> Vec<u8> {
        let mut e = Encoder::default();
        e.u32(9)
            .u32(0)
            .u32(2)
            .u32(100003)
            .u32(3)
            .u32(0)
            .u32(flavor)
            .opaque(body)
            .u32(vflavor)
            .opaque(vbody);
        e.as_slice().to_vec()
    }

    /// As Linux's sunrpc answers: an unknown flavor (AUTH_DH, RPCSEC_GSS)
    /// or an AUTH_NONE credential with a body is BADCRED, and a verifier
    /// other than an empty AUTH_NONE is BADVERF.
    #[test]
    fn credentials_and_verifiers_are_checked_as_linux_does() {
        let mut sys = Encoder::default();
        sys.u32(0).string(b"h").u32(1000).u32(1000).u32(0);
        let sys = sys.as_slice().to_vec();
        let deny = |stat| {
            Some(CallError::Deny {
                xid: 9,
                reply: RejectReply::AuthError(stat),
            })
        };
        for flavor in [3, 6, 99] {
            assert_eq!(
                parse_call(&call_with(flavor, &sys, 0, b"")).err(),
                deny(AuthStat::BadCred)
            );
        }
        assert_eq!(
            parse_call(&call_with(0, b"abcd", 0, b"")).err(),
            deny(AuthStat::BadCred)
        );
        assert_eq!(
            parse_call(&call_with(1, &sys, 1, &sys)).err(),
            deny(AuthStat::BadVerf)
        );
        assert_eq!(
            parse_call(&call_with(1, &sys, 0, b"12345678")).err(),
            deny(AuthStat::BadVerf)
        );
        assert_eq!(
            parse_call(&call_with(0, b"", 0, b"abcd")).err(),
            deny(AuthStat::BadVerf)
        );
        assert!(parse_call(&call_with(1, &sys, 0, b"")).is_ok());
        assert!(parse_call(&call_with(0, b"", 0, b"")).is_ok());
    }

    #[test]
    fn wrong_rpc_version_is_denied() {
        let mut e = Encoder::default();
        e.u32(5).u32(0).u32(3);
        assert_eq!(
            parse_call(e.as_slice()).err(),
            Some(CallError::Deny {
                xid: 5,
                reply: RejectReply::RpcMismatch
            })
        );
    }

    #[test]
    fn reply_roundtrip() {
        for body in [
            ReplyBody::Accepted(AcceptStat::Success),
            ReplyBody::Accepted(AcceptStat::ProgMismatch { low: 3, high: 3 }),
            ReplyBody::Accepted(AcceptStat::GarbageArgs),
            ReplyBody::Denied(RejectReply::RpcMismatch),
            ReplyBody::Denied(RejectReply::AuthError(AuthStat::TooWeak)),
        ] {
            let mut e = Encoder::default();
            encode_reply_header(&mut e, 77, body);
            let r = parse_reply(e.as_slice()).expect("reply parses");
            assert_eq!((r.xid, r.body), (77, body));
        }
    }
}
