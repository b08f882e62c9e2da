//! Decoding a call, running it against the backend, encoding the reply.

use std::net::SocketAddr;
use std::sync::Mutex;

use vmshare_wire::rpc::{encode_reply_header, AcceptStat, CallHeader, ReplyBody};
use vmshare_wire::Encoder;

use crate::acl::{decode_acl, AclCall, MASK_ALL};
use crate::backend::{Backend, Caller, DirEntry, DirSink, Fail};
use crate::mount::{decode_mount, MountCall, MountStat};
use crate::nfs3::{
    decode_call, encode_post_op, encode_post_op_fh, encode_wcc, DecodeError, Nfs3Call, NfsStat,
    FATTR_SIZE,
};
use crate::programs::{MOUNT, NFS, NFSACL, PORTMAP};
use crate::rpcbind::{decode_portmap, decode_rpcbind, Ports};

/// Largest READ or WRITE payload, and the largest directory reply. FSINFO
/// advertises it; the server's record limit must exceed it plus headers.
pub const MAX_IO: u32 = 1 << 20;

/// Smallest READ whose data is spliced through a pipe rather than copied
/// into the reply: below this the pipe's bookkeeping costs more than the
/// copy saves.
pub const SPLICE_MIN: u32 = 64 * 1024;

/// Most MOUNT DUMP entries remembered; the list is informational, so the
/// oldest are dropped rather than letting clients grow it.
const MAX_MOUNT_LIST: usize = 256;

/// The largest MOUNT DUMP reply body: every remembered entry with a
/// maximal host (an address as text, padded: 48 bytes at most) and path,
/// each behind its length and a list marker. The server reserves this
/// much reply memory before answering a DUMP.
pub const MOUNT_DUMP_MAX_REPLY: usize =
    MAX_MOUNT_LIST * (4 + (4 + 48) + (4 + crate::mount::MNTPATHLEN as usize)) + 4;

/// Who is calling: the transport facts a backend needs for access checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Peer address and port.
    pub addr: SocketAddr,
    /// The server's end of the connection: the address the client reached,
    /// which the portmapper reports for listeners bound to a wildcard.
    pub local: SocketAddr,
}

/// Runs calls against a backend.
#[derive(Debug)]
pub struct Dispatcher<B> {
    backend: B,
    ports: Ports,
    mounts: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// MOUNT DUMP's reply body: the list of (host, path) entries.
fn encode_dump(out: &mut Encoder, list: &[(Vec<u8>, Vec<u8>)]) {
    for (h, d) in list {
        out.bool(true).string(h).string(d);
    }
    out.bool(false);
}

fn accept(out: &mut Encoder, xid: u32, stat: AcceptStat) {
    encode_reply_header(out, xid, ReplyBody::Accepted(stat));
}

impl<B: Backend> Dispatcher<B> {
    /// A dispatcher for `backend`, whose portmapper reports `ports`.
    pub fn new(backend: B, ports: Ports) -> Self {
        Dispatcher {
            backend,
            ports,
            mounts: Mutex::new(Vec::new()),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Handles one parsed call: appends the complete RPC reply (header and
    /// results) to `out`. Every call gets a reply; garbage that is not even
    /// a call is filtered out earlier by `vmshare_wire::rpc::parse_call`.
    pub fn handle_call(&self, client: &Client, call: &CallHeader<'_>, out: &mut Encoder) {
        let caller = Caller {
            addr: client.addr,
            cred: &call.cred,
        };
        match call.prog {
            NFS if call.vers == 3 => match decode_call(call.proc_, call.args) {
                Ok(c) => {
                    tracing::debug!(xid = call.xid, client = %client.addr, call = ?DebugCall(&c), "nfs");
                    accept(out, call.xid, AcceptStat::Success);
                    self.nfs3(&caller, c, out);
                }
                Err(e) => reject_args(out, call.xid, e),
            },
            MOUNT if call.vers == 3 => match decode_mount(call.proc_, call.args) {
                Ok(c) => {
                    tracing::debug!(xid = call.xid, client = %client.addr, call = ?c, "mount");
                    accept(out, call.xid, AcceptStat::Success);
                    self.mount3(&caller, c, out);
                }
                Err(e) => reject_args(out, call.xid, e),
            },
            PORTMAP if call.vers == 2 => match decode_portmap(call.proc_, call.args) {
                Ok(c) => {
                    tracing::debug!(xid = call.xid, client = %client.addr, call = ?c, "portmap");
                    accept(out, call.xid, AcceptStat::Success);
                    self.ports.portmap(c, out);
                }
                Err(e) => reject_args(out, call.xid, e),
            },
            PORTMAP if matches!(call.vers, 3 | 4) => {
                match decode_rpcbind(call.vers, call.proc_, call.args) {
                    Ok(c) => {
                        tracing::debug!(xid = call.xid, client = %client.addr, call = ?c, "rpcbind");
                        accept(out, call.xid, AcceptStat::Success);
                        let now = || {
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                        };
                        self.ports.rpcbind(c, client.local, now, out);
                    }
                    Err(e) => reject_args(out, call.xid, e),
                }
            }
            NFSACL if call.vers == 3 => match decode_acl(call.proc_, call.args) {
                Ok(c) => {
                    tracing::debug!(xid = call.xid, client = %client.addr, call = ?c, "nfsacl");
                    accept(out, call.xid, AcceptStat::Success);
                    self.nfsacl(&caller, c, out);
                }
                Err(e) => reject_args(out, call.xid, e),
            },
            NFS | MOUNT | NFSACL => {
                accept(out, call.xid, AcceptStat::ProgMismatch { low: 3, high: 3 })
            }
            PORTMAP => accept(out, call.xid, AcceptStat::ProgMismatch { low: 2, high: 4 }),
            _ => accept(out, call.xid, AcceptStat::ProgUnavail),
        }
    }

    /// Like [`Self::handle_call`], except that the data of a READ of at
    /// least [`SPLICE_MIN`] bytes goes into `pipe` (with room for
    /// `pipe_room` bytes) when the backend can put it there. Returns how
    /// many bytes of data wait in the pipe: the reply is `out`, then those
    /// bytes, then zero padding to a multiple of four.
    pub fn handle_call_piped(
        &self,
        client: &Client,
        call: &CallHeader<'_>,
        out: &mut Encoder,
        pipe: std::os::fd::BorrowedFd<'_>,
        pipe_room: usize,
    ) -> usize {
        const READ: u32 = 6;
        if call.prog == NFS && call.vers == 3 && call.proc_ == READ {
            if let Ok(Nfs3Call::Read { fh, offset, count }) = decode_call(READ, call.args) {
                let count = count.min(MAX_IO);
                if count >= SPLICE_MIN && count as usize <= pipe_room {
                    let caller = Caller {
                        addr: client.addr,
                        cred: &call.cred,
                    };
                    let start = out.len();
                    match self
                        .backend
                        .read_to_pipe(&caller, &fh, offset, count as usize, pipe)
                    {
                        None => out.truncate(start),
                        Some(r) => {
                            tracing::debug!(xid = call.xid, client = %client.addr, offset, count, "nfs READ (spliced)");
                            accept(out, call.xid, AcceptStat::Success);
                            return match r {
                                Ok(ok) => {
                                    let n = ok.count.min(count);
                                    read_head(out, &ok, n);
                                    // The data's length; the data follows.
                                    out.u32(n);
                                    n as usize
                                }
                                Err(f) => {
                                    status(out, f.status);
                                    encode_post_op(out, &f.data);
                                    0
                                }
                            };
                        }
                    }
                }
            }
        }
        self.handle_call(client, call, out);
        0
    }

    /// NFSACL v3: every file has exactly the ACL its mode bits give (see
    /// [`crate::acl`]).
    fn nfsacl(&self, c: &Caller<'_>, call: AclCall, out: &mut Encoder) {
        match call {
            AclCall::Null => {}
            AclCall::GetAcl { fh, mask } => {
                let attr = self.backend.getattr(c, &fh);
                match attr {
                    Ok(a) if mask & !MASK_ALL == 0 => {
                        status(out, NfsStat::Ok);
                        encode_post_op(out, &Some(a));
                        // The mask as asked, then for the access ACL and
                        // the default ACL each: no entries, an empty array.
                        out.u32(mask).u32(0).u32(0).u32(0).u32(0);
                    }
                    Ok(a) => {
                        status(out, NfsStat::Inval);
                        encode_post_op(out, &Some(a));
                    }
                    Err(s) => {
                        status(out, s);
                        encode_post_op(out, &None);
                    }
                }
            }
            AclCall::SetAcl { fh } => {
                status(out, NfsStat::NotSupp);
                encode_post_op(out, &self.backend.getattr(c, &fh).ok());
            }
        }
    }

    fn mount3(&self, c: &Caller<'_>, call: MountCall<'_>, out: &mut Encoder) {
        // An IPv4 client of a `[::]` listener arrives as ::ffff:a.b.c.d;
        // DUMP names it as showmount users know it.
        let host = c.addr.ip().to_canonical().to_string().into_bytes();
        match call {
            MountCall::Null => {}
            MountCall::Mnt(path) => match self.backend.mount(c, path) {
                Ok(fh) => {
                    out.u32(MountStat::Ok as u32);
                    fh.encode(out);
                    // Flavors: AUTH_SYS only (the Linux client picks the
                    // first it can use).
                    out.u32(1).u32(1);
                    if let Ok(mut list) = self.mounts.lock() {
                        let entry = (host, path.to_vec());
                        if !list.contains(&entry) {
                            if list.len() >= MAX_MOUNT_LIST {
                                list.remove(0);
                            }
                            list.push(entry);
                        }
                    }
                }
                Err(stat) => {
                    out.u32(stat as u32);
                }
            },
            MountCall::Dump => match self.mounts.lock() {
                Ok(list) => encode_dump(out, &list),
                Err(_) => encode_dump(out, &[]),
            },
            MountCall::Umnt(path) => {
                if let Ok(mut list) = self.mounts.lock() {
                    list.retain(|(h, d)| !(h == &host && d == path));
                }
            }
            MountCall::UmntAll => {
                if let Ok(mut list) = self.mounts.lock() {
                    list.retain(|(h, _)| h != &host);
                }
            }
            MountCall::Export => {
                for e in self.backend.export_list() {
                    out.bool(true).string(&e.dir);
                    for g in &e.groups {
                        out.bool(true).string(g);
                    }
                    out.bool(false);
                }
                out.bool(false);
            }
        }
    }

    fn nfs3(&self, c: &Caller<'_>, call: Nfs3Call<'_>, out: &mut Encoder) {
        let b = &self.backend;
        match call {
            Nfs3Call::Null => {}
            Nfs3Call::Getattr(fh) => match b.getattr(c, &fh) {
                Ok(a) => {
                    status(out, NfsStat::Ok);
                    a.encode(out);
                }
                Err(s) => status(out, s),
            },
            Nfs3Call::Setattr { fh, attrs, guard } => {
                let (s, w) = split(b.setattr(c, &fh, &attrs, guard));
                status(out, s);
                encode_wcc(out, &w);
            }
            Nfs3Call::Lookup(a) => match b.lookup(c, &a.dir, a.name) {
                Ok(ok) => {
                    status(out, NfsStat::Ok);
                    ok.fh.encode(out);
                    encode_post_op(out, &ok.attr);
                    encode_post_op(out, &ok.dir_attr);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_post_op(out, &f.data);
                }
            },
            Nfs3Call::Access { fh, access } => match b.access(c, &fh, access) {
                Ok((a, granted)) => {
                    status(out, NfsStat::Ok);
                    encode_post_op(out, &a);
                    out.u32(granted);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_post_op(out, &f.data);
                }
            },
            Nfs3Call::Readlink(fh) => match b.readlink(c, &fh) {
                Ok((a, path)) => {
                    status(out, NfsStat::Ok);
                    encode_post_op(out, &a);
                    out.string(&path);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_post_op(out, &f.data);
                }
            },
            Nfs3Call::Read { fh, offset, count } => self.read(c, &fh, offset, count, out),
            Nfs3Call::Write {
                fh,
                offset,
                stable,
                data,
            } => match b.write(c, &fh, offset, stable, data) {
                Ok(ok) => {
                    status(out, NfsStat::Ok);
                    encode_wcc(out, &ok.wcc);
                    out.u32(ok.count).u32(ok.committed as u32).fixed(&ok.verf);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_wcc(out, &f.data);
                }
            },
            Nfs3Call::Create { at, how } => created(out, b.create(c, &at.dir, at.name, &how)),
            Nfs3Call::Mkdir { at, attrs } => created(out, b.mkdir(c, &at.dir, at.name, &attrs)),
            Nfs3Call::Symlink { at, attrs, target } => {
                created(out, b.symlink(c, &at.dir, at.name, &attrs, target))
            }
            Nfs3Call::Mknod { at, kind } => created(out, b.mknod(c, &at.dir, at.name, &kind)),
            Nfs3Call::Remove(a) => {
                let (s, w) = split(b.remove(c, &a.dir, a.name));
                status(out, s);
                encode_wcc(out, &w);
            }
            Nfs3Call::Rmdir(a) => {
                let (s, w) = split(b.rmdir(c, &a.dir, a.name));
                status(out, s);
                encode_wcc(out, &w);
            }
            Nfs3Call::Rename { from, to } => {
                let (s, w) = split(b.rename(c, &from.dir, from.name, &to.dir, to.name));
                status(out, s);
                encode_wcc(out, &w.from);
                encode_wcc(out, &w.to);
            }
            Nfs3Call::Link { fh, at } => {
                let (s, l) = split(b.link(c, &fh, &at.dir, at.name));
                status(out, s);
                encode_post_op(out, &l.attr);
                encode_wcc(out, &l.dir_wcc);
            }
            Nfs3Call::Readdir {
                dir,
                cookie,
                verf,
                count,
            } => self.readdir(c, &dir, cookie, verf, count, false, out),
            Nfs3Call::Readdirplus {
                dir,
                cookie,
                verf,
                dircount: _,
                maxcount,
            } => {
                // dircount is only a hint (newer Linux sends maxcount in it);
                // maxcount bounds the reply.
                self.readdir(c, &dir, cookie, verf, maxcount, true, out)
            }
            Nfs3Call::Fsstat(fh) => match b.fsstat(c, &fh) {
                Ok((a, s)) => {
                    status(out, NfsStat::Ok);
                    encode_post_op(out, &a);
                    out.u64(s.tbytes)
                        .u64(s.fbytes)
                        .u64(s.abytes)
                        .u64(s.tfiles)
                        .u64(s.ffiles)
                        .u64(s.afiles)
                        .u32(s.invarsec);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_post_op(out, &f.data);
                }
            },
            Nfs3Call::Fsinfo(fh) => match b.fsinfo(c, &fh) {
                Ok((a, i)) => {
                    status(out, NfsStat::Ok);
                    encode_post_op(out, &a);
                    out.u32(i.rtmax)
                        .u32(i.rtpref)
                        .u32(i.rtmult)
                        .u32(i.wtmax)
                        .u32(i.wtpref)
                        .u32(i.wtmult);
                    out.u32(i.dtpref)
                        .u64(i.maxfilesize)
                        .u32(i.time_delta.seconds)
                        .u32(i.time_delta.nseconds);
                    out.u32(i.properties);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_post_op(out, &f.data);
                }
            },
            Nfs3Call::Pathconf(fh) => match b.pathconf(c, &fh) {
                Ok((a, p)) => {
                    status(out, NfsStat::Ok);
                    encode_post_op(out, &a);
                    out.u32(p.linkmax)
                        .u32(p.name_max)
                        .bool(p.no_trunc)
                        .bool(p.chown_restricted);
                    out.bool(p.case_insensitive).bool(p.case_preserving);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_post_op(out, &f.data);
                }
            },
            Nfs3Call::Commit { fh, offset, count } => match b.commit(c, &fh, offset, count) {
                Ok((w, verf)) => {
                    status(out, NfsStat::Ok);
                    encode_wcc(out, &w);
                    out.fixed(&verf);
                }
                Err(f) => {
                    status(out, f.status);
                    encode_wcc(out, &f.data);
                }
            },
        }
    }

    /// READ writes the file data straight into the reply: the header before
    /// it has a fixed size because attributes are always sent.
    fn read(
        &self,
        c: &Caller<'_>,
        fh: &crate::nfs3::FileHandle,
        offset: u64,
        count: u32,
        out: &mut Encoder,
    ) {
        let count = count.min(MAX_IO) as usize;
        let base = out.len();
        // status, attributes_follow, fattr3, count, eof
        let header = 4 + 4 + FATTR_SIZE + 4 + 4;
        for _ in 0..header / 4 {
            out.u32(0);
        }
        let len_at = out.len();
        let result = {
            let buf = out.opaque_in_place(count);
            self.backend.read(c, fh, offset, buf)
        };
        match result {
            Ok(ok) => {
                let n = (ok.count as usize).min(count);
                let mut h = Encoder::with_capacity(header);
                read_head(&mut h, &ok, u32::try_from(n).unwrap_or(0));
                out.patch_bytes(base, h.as_slice());
                out.shrink_opaque(len_at, n);
            }
            Err(f) => {
                out.truncate(base);
                status(out, f.status);
                encode_post_op(out, &f.data);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn readdir(
        &self,
        c: &Caller<'_>,
        dir: &crate::nfs3::FileHandle,
        cookie: u64,
        verf: crate::nfs3::Verifier,
        limit: u32,
        plus: bool,
        out: &mut Encoder,
    ) {
        // Fixed part of the reply: status, dir post_op_attr, verifier, the
        // list terminator and eof.
        let fixed = 4 + 4 + FATTR_SIZE + 8 + 4 + 4;
        let budget = (limit.min(MAX_IO) as usize).saturating_sub(fixed);
        // The entries go straight into the reply, after room for the head
        // (status, attributes, verifier), which is known only at the end.
        // A separate buffer for them cost a copy of up to 64 KiB a call,
        // and freeing it with the reply made the allocator hand memory
        // back to the kernel and fault it in again on every call.
        let base = out.len();
        let head = 4 + 4 + FATTR_SIZE + 8;
        for _ in 0..head / 4 {
            out.u32(0);
        }
        let mut sink = EntrySink {
            start: out.len(),
            enc: out,
            budget,
            plus,
            count: 0,
        };
        let r = self.backend.readdir(c, dir, cookie, verf, &mut sink);
        let count = sink.count;
        match r {
            Ok(ok) if count == 0 && !ok.eof => {
                out.truncate(base);
                status(out, NfsStat::TooSmall);
                encode_post_op(out, &ok.dir_attr);
            }
            Ok(ok) => {
                let mut h = Encoder::with_capacity(head);
                status(&mut h, NfsStat::Ok);
                encode_post_op(&mut h, &ok.dir_attr);
                h.fixed(&ok.verf);
                if h.len() == head {
                    out.patch_bytes(base, h.as_slice());
                } else {
                    // No attributes: a shorter head than was set aside.
                    let entries = out
                        .as_slice()
                        .get(base + head..)
                        .unwrap_or_default()
                        .to_vec();
                    out.truncate(base);
                    out.fixed(h.as_slice()).fixed(&entries);
                }
                out.bool(false).bool(ok.eof);
            }
            Err(f) => {
                out.truncate(base);
                status(out, f.status);
                encode_post_op(out, &f.data);
            }
        }
    }
}

/// Encodes entries into the reply as they come, refusing any that would
/// overflow the client's limit.
struct EntrySink<'a> {
    enc: &'a mut Encoder,
    /// Where the first entry goes in `enc`.
    start: usize,
    budget: usize,
    plus: bool,
    count: usize,
}

impl EntrySink<'_> {
    fn used(&self) -> usize {
        self.enc.len().saturating_sub(self.start)
    }
}

impl DirSink for EntrySink<'_> {
    fn plus(&self) -> bool {
        self.plus
    }

    fn push(&mut self, e: &DirEntry<'_>) -> bool {
        let at = self.enc.len();
        self.enc
            .bool(true)
            .u64(e.fileid)
            .string(e.name)
            .u64(e.cookie);
        if self.plus {
            encode_post_op(self.enc, &e.attr);
            encode_post_op_fh(self.enc, &e.fh);
        }
        if self.used() > self.budget {
            self.enc.truncate(at);
            return false;
        }
        self.count += 1;
        true
    }

    fn room(&self) -> usize {
        self.budget.saturating_sub(self.used())
    }
}

fn split<T, F: Default + From<T>>(r: Result<T, Fail<F>>) -> (NfsStat, F) {
    match r {
        Ok(v) => (NfsStat::Ok, F::from(v)),
        Err(f) => (f.status, f.data),
    }
}

fn created(out: &mut Encoder, r: Result<crate::backend::Created, Fail<crate::nfs3::WccData>>) {
    match r {
        Ok(ok) => {
            status(out, NfsStat::Ok);
            encode_post_op_fh(out, &ok.fh);
            encode_post_op(out, &ok.attr);
            encode_wcc(out, &ok.dir_wcc);
        }
        Err(f) => {
            status(out, f.status);
            encode_wcc(out, &f.data);
        }
    }
}

fn status(out: &mut Encoder, s: NfsStat) {
    out.u32(s as u32);
}

/// READ3resok up to the data's length word: status, attributes (always
/// sent, so the header has a fixed size), count, EOF.
fn read_head(out: &mut Encoder, ok: &crate::backend::ReadOk, count: u32) {
    status(out, NfsStat::Ok);
    out.bool(true);
    ok.attr.encode(out);
    out.u32(count).bool(ok.eof);
}

fn reject_args(out: &mut Encoder, xid: u32, e: DecodeError) {
    let stat = match e {
        DecodeError::NoSuchProcedure(_) => AcceptStat::ProcUnavail,
        DecodeError::Garbage(_) => AcceptStat::GarbageArgs,
    };
    tracing::debug!(xid, error = ?e, "rejected call");
    accept(out, xid, stat);
}

/// Logs a call without dumping WRITE payloads.
struct DebugCall<'a, 'b>(&'a Nfs3Call<'b>);

impl std::fmt::Debug for DebugCall<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Nfs3Call::Write {
                fh,
                offset,
                stable,
                data,
            } => {
                write!(
                    f,
                    "Write {{ fh: {fh:?}, offset: {offset}, stable: {stable:?}, len: {} }}",
                    data.len()
                )
            }
            other => write!(f, "{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    /// The reservation the server makes for a DUMP reply holds the
    /// largest list the dispatcher keeps: the longest address text and
    /// the longest path a MNT can name, as many times as it remembers.
    #[test]
    fn the_largest_dump_fits_its_reservation() {
        let host = Ipv6Addr::new(
            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xfffe,
        )
        .to_string()
        .into_bytes();
        let path = vec![b'a'; crate::mount::MNTPATHLEN as usize];
        let list = vec![(host, path); MAX_MOUNT_LIST];
        let mut out = Encoder::with_capacity(0);
        encode_dump(&mut out, &list);
        assert!(
            out.len() <= MOUNT_DUMP_MAX_REPLY,
            "{} > {}",
            out.len(),
            MOUNT_DUMP_MAX_REPLY
        );
        // And not wildly more: the bound is the list, not a guess.
        assert!(out.len() * 105 / 100 >= MOUNT_DUMP_MAX_REPLY);
    }
}
