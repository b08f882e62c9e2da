//! A small NFSv3 client over one TCP connection that keeps several calls in
//! flight, as the Linux client does with its RPC slot table.
//!
//! Calls are built with vmshare's own encoders ([`vmshare_wire::rpc`],
//! [`vmshare_proto::nfs3`]); replies are parsed here, only as far as the
//! benchmark needs, and every length read from the server is checked by the
//! [`Decoder`], so a bad reply is an error, never a panic.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use vmshare_proto::nfs3::{self, Fattr, FileHandle, Nfs3Call};
use vmshare_proto::programs;
use vmshare_wire::record::{self, RecordAssembler};
use vmshare_wire::rpc::{self, AcceptStat, ReplyBody};
use vmshare_wire::{AuthSys, Credential, Decoder, Encoder, XdrError};

/// Errors are plain messages: the benchmark reports them and stops.
pub type Result<T> = std::result::Result<T, String>;

/// Largest reply record accepted (1 MiB of data plus headers).
const MAX_REPLY: u32 = (1 << 20) + 64 * 1024;

/// Turns an XDR error in a reply into a message naming the procedure.
pub fn xdr(what: &str) -> impl Fn(XdrError) -> String + '_ {
    move |e| format!("malformed {what} reply: {e}")
}

/// One TCP connection to a server.
#[derive(Debug)]
pub struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
    cred: Credential,
    next_xid: u32,
    out: Vec<u8>,
    rec: Vec<u8>,
    asm: RecordAssembler,
}

/// A workload run through [`Conn::pipeline`]: `items` independent items of
/// `steps` calls each; step `s + 1` of an item is sent only after the reply
/// to step `s` (WRITE then COMMIT of one file), while different items
/// overlap up to the pipeline depth.
pub trait Work {
    /// The NFSv3 procedure of `step` of an item.
    fn proc_(&self, step: usize) -> u32;
    /// Encodes the arguments of `step` of `item` into `e`.
    fn build(&mut self, item: usize, step: usize, e: &mut Encoder) -> Result<()>;
    /// Bytes sent after the arguments as the tail of an opaque whose length
    /// word `build` already wrote (WRITE data), so that large payloads are
    /// not copied into the request buffer. Padding is added by the caller.
    fn payload(&self, _item: usize, _step: usize) -> &[u8] {
        &[]
    }
    /// Checks the results of `step` of `item` (the bytes after the
    /// accepted-reply header).
    fn done(&mut self, item: usize, step: usize, results: &[u8]) -> Result<()>;
}

impl Conn {
    /// Connects with AUTH_SYS uid 0 / gid 0, Nagle off, and a 60 s timeout
    /// on every read and write so that a server hang becomes an error.
    pub fn connect(addr: SocketAddr, stamp: u32) -> Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let r = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn {
            w: s,
            r: BufReader::with_capacity(256 * 1024, r),
            cred: Credential::Sys(AuthSys {
                stamp,
                machine_name: b"vmshare-bench".to_vec(),
                uid: 0,
                gid: 0,
                gids: Vec::new(),
            }),
            next_xid: stamp.wrapping_mul(0x9e37_79b9),
            out: Vec::with_capacity(64 * 1024),
            rec: Vec::new(),
            asm: RecordAssembler::new(MAX_REPLY),
        })
    }

    /// Starts a call in `self.out`: record mark placeholder and RPC header.
    /// Returns the xid and the offset of the record mark.
    fn begin(&mut self, prog: u32, vers: u32, proc_: u32) -> (u32, usize, Encoder) {
        let xid = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1);
        let mut e = Encoder::from_vec(std::mem::take(&mut self.out));
        let mark_at = e.len();
        e.u32(0);
        rpc::encode_call(&mut e, xid, prog, vers, proc_, &self.cred);
        (xid, mark_at, e)
    }

    /// Reads one whole reply record into `self.rec`.
    fn read_record(&mut self) -> Result<()> {
        self.rec.clear();
        loop {
            let mut mark = [0u8; 4];
            self.r
                .read_exact(&mut mark)
                .map_err(|e| format!("reading reply: {e}"))?;
            let frag = self.asm.fragment(mark).map_err(|e| e.to_string())?;
            let at = self.rec.len();
            self.rec.resize(at + frag.len as usize, 0);
            self.r
                .read_exact(&mut self.rec[at..])
                .map_err(|e| format!("reading reply: {e}"))?;
            if frag.last {
                return Ok(());
            }
        }
    }

    /// Whether a whole single-fragment record is already buffered, so that
    /// it can be processed without another system call.
    fn record_buffered(&self) -> bool {
        let b = self.r.buffer();
        match b.first_chunk::<4>() {
            Some(m) => {
                let len = (u32::from_be_bytes(*m) & !record::LAST_FRAGMENT) as usize;
                b.len() >= 4 + len
            }
            None => false,
        }
    }

    /// One call, waited for: returns the results of a successful reply.
    pub fn call(
        &mut self,
        prog: u32,
        vers: u32,
        proc_: u32,
        args: impl FnOnce(&mut Encoder),
    ) -> Result<Vec<u8>> {
        let (xid, mark_at, mut e) = self.begin(prog, vers, proc_);
        args(&mut e);
        let len = u32::try_from(e.len() - mark_at - 4).map_err(|e| e.to_string())?;
        e.patch_bytes(mark_at, &record::mark(len));
        self.out = e.into_inner();
        self.w
            .write_all(&self.out)
            .map_err(|e| format!("sending call: {e}"))?;
        self.out.clear();
        loop {
            self.read_record()?;
            let r = rpc::parse_reply(&self.rec).map_err(xdr("RPC"))?;
            if r.xid != xid {
                continue;
            }
            check_accepted(r.body, prog, proc_)?;
            return Ok(r.results.to_vec());
        }
    }

    /// One NFSv3 call, waited for.
    pub fn nfs(&mut self, call: &Nfs3Call<'_>) -> Result<Vec<u8>> {
        let p = nfs3::procedure_number(call);
        self.call(programs::NFS, 3, p, |e| nfs3::encode_call(e, call))
    }

    /// MOUNT v3 MNT: returns the root file handle of `path`.
    pub fn mount(&mut self, path: &str) -> Result<FileHandle> {
        let res = self.call(programs::MOUNT, 3, 1, |e| {
            e.string(path.as_bytes());
        })?;
        let d = &mut Decoder::new(&res);
        let status = d.u32().map_err(xdr("MNT"))?;
        if status != 0 {
            return Err(format!("MOUNT {path} failed with mountstat3 {status}"));
        }
        let fh = d.opaque(64).map_err(xdr("MNT"))?;
        FileHandle::new(fh).ok_or_else(|| "MNT handle too long".to_string())
    }

    /// Runs `work` with up to `depth` calls in flight; replies may arrive
    /// in any order.
    pub fn pipeline(
        &mut self,
        work: &mut dyn Work,
        items: usize,
        steps: usize,
        depth: usize,
    ) -> Result<()> {
        let depth = depth.max(1);
        let mut inflight: HashMap<u32, (usize, usize)> = HashMap::with_capacity(depth * 2);
        let mut follow: VecDeque<(usize, usize)> = VecDeque::new();
        let mut next_item = 0usize;
        loop {
            // Fill the window, batching small calls into one write.
            while inflight.len() < depth {
                let (item, step) = match follow.pop_front() {
                    Some(x) => x,
                    None if next_item < items => {
                        next_item += 1;
                        (next_item - 1, 0)
                    }
                    None => break,
                };
                let (xid, mark_at, mut e) = self.begin(programs::NFS, 3, work.proc_(step));
                work.build(item, step, &mut e)?;
                let payload = work.payload(item, step);
                let pad = (4 - payload.len() % 4) % 4;
                let len = e.len() - mark_at - 4 + payload.len() + pad;
                let len = u32::try_from(len).map_err(|e| e.to_string())?;
                e.patch_bytes(mark_at, &record::mark(len));
                self.out = e.into_inner();
                if !payload.is_empty() {
                    // One system call for header and data, as the kernel
                    // client sends a WRITE: separate writes with Nagle off
                    // would put the header in a segment of its own and
                    // wake the server once more per call.
                    let flushed = std::mem::take(&mut self.out);
                    let pending = [&flushed[..], payload, &[0u8; 3][..pad]];
                    send_all(&mut self.w, &pending).map_err(|e| format!("sending call: {e}"))?;
                    self.out = flushed;
                    self.out.clear();
                } else if self.out.len() >= 32 * 1024 {
                    self.flush()?;
                }
                inflight.insert(xid, (item, step));
            }
            self.flush()?;
            if inflight.is_empty() {
                return Ok(());
            }
            // Take every reply that has arrived, then refill.
            loop {
                self.read_record()?;
                let r = rpc::parse_reply(&self.rec).map_err(xdr("RPC"))?;
                let Some((item, step)) = inflight.remove(&r.xid) else {
                    return Err(format!("reply with unknown xid {:#x}", r.xid));
                };
                check_accepted(r.body, programs::NFS, work.proc_(step))?;
                work.done(item, step, r.results)?;
                if step + 1 < steps {
                    follow.push_back((item, step + 1));
                }
                if !self.record_buffered() {
                    break;
                }
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.w
                .write_all(&self.out)
                .map_err(|e| format!("sending call: {e}"))?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Writes every byte of `parts`, in order, with as few system calls as the
/// socket allows.
fn send_all(w: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut skip = 0usize;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    while skip < total {
        let mut left = skip;
        let mut slices = Vec::with_capacity(parts.len());
        for p in parts {
            if left >= p.len() {
                left -= p.len();
                continue;
            }
            slices.push(IoSlice::new(&p[left..]));
            left = 0;
        }
        match w.write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => skip += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn check_accepted(body: ReplyBody, prog: u32, proc_: u32) -> Result<()> {
    match body {
        ReplyBody::Accepted(AcceptStat::Success) => Ok(()),
        other => Err(format!(
            "program {prog} procedure {proc_}: RPC not successful: {other:?}"
        )),
    }
}

/// Reads an `nfsstat3` and fails unless it is NFS3_OK.
pub fn status(d: &mut Decoder<'_>, what: &str) -> Result<()> {
    let s = d.u32().map_err(xdr(what))?;
    if s != 0 {
        return Err(format!("{what} failed with nfsstat3 {s}"));
    }
    Ok(())
}

/// Reads a `post_op_attr`.
pub fn post_op_attr(d: &mut Decoder<'_>, what: &str) -> Result<Option<Fattr>> {
    if d.bool().map_err(xdr(what))? {
        Ok(Some(Fattr::decode(d).map_err(xdr(what))?))
    } else {
        Ok(None)
    }
}

/// Reads a `wcc_data` and discards it.
pub fn wcc_data(d: &mut Decoder<'_>, what: &str) -> Result<()> {
    if d.bool().map_err(xdr(what))? {
        // wcc_attr: size, mtime, ctime.
        d.u64().map_err(xdr(what))?;
        d.u64().map_err(xdr(what))?;
        d.u64().map_err(xdr(what))?;
    }
    post_op_attr(d, what)?;
    Ok(())
}

/// Reads a `post_op_fh3`.
pub fn post_op_fh(d: &mut Decoder<'_>, what: &str) -> Result<Option<FileHandle>> {
    if d.bool().map_err(xdr(what))? {
        let b = d.opaque(64).map_err(xdr(what))?;
        Ok(FileHandle::new(b))
    } else {
        Ok(None)
    }
}

/// Reads a file handle (`nfs_fh3`).
pub fn fh(d: &mut Decoder<'_>, what: &str) -> Result<FileHandle> {
    let b = d.opaque(64).map_err(xdr(what))?;
    FileHandle::new(b).ok_or_else(|| format!("{what}: handle too long"))
}

/// The parts of a READ reply the benchmark checks.
pub struct ReadRes<'a> {
    /// Bytes returned.
    pub data: &'a [u8],
}

/// Parses READ results.
pub fn read_res<'a>(results: &'a [u8]) -> Result<ReadRes<'a>> {
    let d = &mut Decoder::new(results);
    status(d, "READ")?;
    post_op_attr(d, "READ")?;
    let count = d.u32().map_err(xdr("READ"))?;
    let _eof = d.bool().map_err(xdr("READ"))?;
    let data = d.opaque(MAX_REPLY).map_err(xdr("READ"))?;
    if data.len() != count as usize {
        return Err(format!(
            "READ count {count} but {} bytes of data",
            data.len()
        ));
    }
    Ok(ReadRes { data })
}

/// Parses WRITE results: returns the count written.
pub fn write_res(results: &[u8]) -> Result<u32> {
    let d = &mut Decoder::new(results);
    status(d, "WRITE")?;
    wcc_data(d, "WRITE")?;
    let count = d.u32().map_err(xdr("WRITE"))?;
    let _committed = d.u32().map_err(xdr("WRITE"))?;
    let _verf: [u8; 8] = d.fixed().map_err(xdr("WRITE"))?;
    Ok(count)
}

/// Sizes the server advertises in FSINFO.
#[derive(Debug, Clone, Copy)]
pub struct FsInfo {
    /// Largest READ.
    pub rtmax: u32,
    /// Largest WRITE.
    pub wtmax: u32,
}

/// Parses FSINFO results.
pub fn fsinfo_res(results: &[u8]) -> Result<FsInfo> {
    let d = &mut Decoder::new(results);
    status(d, "FSINFO")?;
    post_op_attr(d, "FSINFO")?;
    let rtmax = d.u32().map_err(xdr("FSINFO"))?;
    let _rtpref = d.u32().map_err(xdr("FSINFO"))?;
    let _rtmult = d.u32().map_err(xdr("FSINFO"))?;
    let wtmax = d.u32().map_err(xdr("FSINFO"))?;
    Ok(FsInfo { rtmax, wtmax })
}

/// One page of READDIRPLUS: entries seen, the last cookie, the verifier,
/// and whether the directory ended.
pub struct DirPage {
    /// Entries in this reply.
    pub entries: usize,
    /// Cookie of the last entry (where to continue).
    pub cookie: u64,
    /// Cookie verifier to send back.
    pub verf: [u8; 8],
    /// End of directory.
    pub eof: bool,
    /// Entries that came with both attributes and a handle.
    pub complete: usize,
}

/// Parses READDIRPLUS results.
pub fn readdirplus_res(results: &[u8], cookie_in: u64) -> Result<DirPage> {
    let what = "READDIRPLUS";
    let d = &mut Decoder::new(results);
    status(d, what)?;
    post_op_attr(d, what)?;
    let verf: [u8; 8] = d.fixed().map_err(xdr(what))?;
    let mut page = DirPage {
        entries: 0,
        cookie: cookie_in,
        verf,
        eof: false,
        complete: 0,
    };
    while d.bool().map_err(xdr(what))? {
        let _fileid = d.u64().map_err(xdr(what))?;
        let _name = d.string(nfs3::MAX_NAME_WIRE).map_err(xdr(what))?;
        page.cookie = d.u64().map_err(xdr(what))?;
        let attr = post_op_attr(d, what)?;
        let fh = post_op_fh(d, what)?;
        page.entries += 1;
        if attr.is_some() && fh.is_some() {
            page.complete += 1;
        }
    }
    page.eof = d.bool().map_err(xdr(what))?;
    Ok(page)
}
