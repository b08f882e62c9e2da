//! The workloads, each run the same way against every server.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use vmshare_proto::nfs3::{CreateHow, DirOpArgs, FileHandle, Nfs3Call, Sattr, StableHow};
use vmshare_wire::{Decoder, Encoder};

use crate::client::{self, xdr, Conn, Result, Work};

const P_GETATTR: u32 = 1;
const P_LOOKUP: u32 = 3;
const P_READ: u32 = 6;
const P_WRITE: u32 = 7;
const P_CREATE: u32 = 8;
const P_REMOVE: u32 = 12;
const P_COMMIT: u32 = 21;

/// Size of each small file.
pub const SMALL: usize = 4096;
const SMALL_U32: u32 = 4096;

fn create_args(dir: FileHandle, name: &[u8]) -> Nfs3Call<'_> {
    Nfs3Call::Create {
        at: DirOpArgs { dir, name },
        how: CreateHow::Guarded(Sattr {
            mode: Some(0o644),
            ..Sattr::default()
        }),
    }
}

/// CREATE (guarded, mode 0644) of `name` in `dir`; returns the new handle.
pub fn create(conn: &mut Conn, dir: FileHandle, name: &str) -> Result<FileHandle> {
    let res = conn.nfs(&create_args(dir, name.as_bytes()))?;
    create_res(&res, conn, dir, name.as_bytes())
}

fn create_res(res: &[u8], conn: &mut Conn, dir: FileHandle, name: &[u8]) -> Result<FileHandle> {
    let d = &mut Decoder::new(res);
    client::status(d, "CREATE")?;
    match client::post_op_fh(d, "CREATE")? {
        Some(fh) => Ok(fh),
        // A server may leave the handle out; the client then looks it up.
        None => lookup(conn, dir, name),
    }
}

/// LOOKUP of `name` in `dir`.
pub fn lookup(conn: &mut Conn, dir: FileHandle, name: &[u8]) -> Result<FileHandle> {
    let res = conn.nfs(&Nfs3Call::Lookup(DirOpArgs { dir, name }))?;
    let d = &mut Decoder::new(&res);
    client::status(d, "LOOKUP")?;
    client::fh(d, "LOOKUP")
}

/// MKDIR of `name` in `dir` (mode 0755); returns the new handle.
pub fn mkdir(conn: &mut Conn, dir: FileHandle, name: &str) -> Result<FileHandle> {
    let res = conn.nfs(&Nfs3Call::Mkdir {
        at: DirOpArgs {
            dir,
            name: name.as_bytes(),
        },
        attrs: Sattr {
            mode: Some(0o755),
            ..Sattr::default()
        },
    })?;
    let d = &mut Decoder::new(&res);
    client::status(d, "MKDIR")?;
    match client::post_op_fh(d, "MKDIR")? {
        Some(fh) => Ok(fh),
        None => lookup(conn, dir, name.as_bytes()),
    }
}

/// REMOVE (or RMDIR when `dir_entry`) of `name` in `dir`.
pub fn remove(conn: &mut Conn, dir: FileHandle, name: &str, dir_entry: bool) -> Result<()> {
    let at = DirOpArgs {
        dir,
        name: name.as_bytes(),
    };
    let call = if dir_entry {
        Nfs3Call::Rmdir(at)
    } else {
        Nfs3Call::Remove(at)
    };
    let res = conn.nfs(&call)?;
    client::status(&mut Decoder::new(&res), "REMOVE")
}

fn commit(conn: &mut Conn, fh: FileHandle) -> Result<()> {
    let res = conn.nfs(&Nfs3Call::Commit {
        fh,
        offset: 0,
        count: 0,
    })?;
    client::status(&mut Decoder::new(&res), "COMMIT")
}

/// Sequential 1 MiB-chunk I/O on one file.
struct SeqIo {
    fh: FileHandle,
    chunk: usize,
    write: bool,
    /// One chunk of data; its first 8 bytes are overwritten with the chunk
    /// number before each WRITE, and checked on READ.
    data: Vec<u8>,
}

impl Work for SeqIo {
    fn proc_(&self, _step: usize) -> u32 {
        if self.write {
            P_WRITE
        } else {
            P_READ
        }
    }

    fn build(&mut self, item: usize, _step: usize, e: &mut Encoder) -> Result<()> {
        let offset = (item * self.chunk) as u64;
        e.opaque(self.fh.as_bytes()).u64(offset);
        if self.write {
            self.data[..8].copy_from_slice(&(item as u64).to_be_bytes());
            let n = u32::try_from(self.chunk).map_err(|e| e.to_string())?;
            // count, stable_how, then the opaque's length; the data itself
            // is sent by the pipeline from `payload`.
            e.u32(n).u32(StableHow::Unstable as u32).u32(n);
        } else {
            e.u32(u32::try_from(self.chunk).map_err(|e| e.to_string())?);
        }
        Ok(())
    }

    fn payload(&self, _item: usize, _step: usize) -> &[u8] {
        if self.write {
            &self.data
        } else {
            &[]
        }
    }

    fn done(&mut self, item: usize, _step: usize, results: &[u8]) -> Result<()> {
        if self.write {
            let n = client::write_res(results)?;
            if n as usize != self.chunk {
                return Err(format!("short WRITE at chunk {item}: {n} bytes"));
            }
        } else {
            let r = client::read_res(results)?;
            if r.data.len() != self.chunk {
                return Err(format!(
                    "short READ at chunk {item}: {} bytes",
                    r.data.len()
                ));
            }
            if r.data[..8] != (item as u64).to_be_bytes() || r.data[8..64] != self.data[8..64] {
                return Err(format!("READ at chunk {item} returned the wrong data"));
            }
        }
        Ok(())
    }
}

/// Result of the sequential pair.
#[derive(Debug, Clone, Copy)]
pub struct SeqResult {
    /// Time for all WRITEs and the final COMMIT.
    pub write: Duration,
    /// Of which the COMMIT.
    pub commit: Duration,
    /// Time for all READs.
    pub read: Duration,
}

/// Creates `name` in `root`, writes `size` bytes in `chunk`-byte UNSTABLE
/// WRITEs with `depth` in flight and COMMITs; `between` runs after the
/// write phase (to sample server CPU); then reads the file back the same
/// way, and removes it.
pub fn sequential(
    conn: &mut Conn,
    root: FileHandle,
    name: &str,
    size: usize,
    chunk: usize,
    depth: usize,
    mut between: impl FnMut(),
) -> Result<SeqResult> {
    let fh = create(conn, root, name)?;
    let mut data = vec![0u8; chunk];
    // Not compressible, not all zeros: a simple xorshift stream.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x.to_le_bytes()[3];
    }
    let items = size / chunk;
    let mut w = SeqIo {
        fh,
        chunk,
        write: true,
        data,
    };
    perf_control(Some("sequential"));
    let t = Instant::now();
    conn.pipeline(&mut w, items, 1, depth)?;
    let tc = Instant::now();
    commit(conn, fh)?;
    let commit = tc.elapsed();
    let write = t.elapsed();
    perf_control(None);
    between();
    w.write = false;
    let t = Instant::now();
    conn.pipeline(&mut w, items, 1, depth)?;
    let read = t.elapsed();
    remove(conn, root, name, false)?;
    Ok(SeqResult {
        write,
        commit,
        read,
    })
}

/// The small-file phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// CREATE (guarded) of every file.
    Create,
    /// WRITE 4 KiB UNSTABLE, then COMMIT, per file.
    WriteCommit,
    /// GETATTR of every file.
    Getattr,
    /// LOOKUP of every name.
    Lookup,
    /// READ 4 KiB of every file.
    Read,
    /// WRITE 4 KiB FILE_SYNC at the end of every file: how the Linux
    /// client writes a small file at its close (one WRITE, asked to be
    /// durable, and no COMMIT). Not one of the rows.
    WriteSync,
    /// READDIRPLUS of the whole directory, several passes.
    Readdirplus,
    /// REMOVE of every file.
    Remove,
}

/// All phases in order.
pub const PHASES: [Phase; 8] = [
    Phase::Create,
    Phase::WriteCommit,
    Phase::Getattr,
    Phase::Lookup,
    Phase::Read,
    Phase::WriteSync,
    Phase::Readdirplus,
    Phase::Remove,
];

impl Phase {
    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Create => "create",
            Phase::WriteCommit => "write 4 KiB + commit",
            Phase::Getattr => "getattr",
            Phase::Lookup => "lookup",
            Phase::Read => "read 4 KiB",
            Phase::WriteSync => "append 4 KiB FILE_SYNC",
            Phase::Readdirplus => "readdirplus",
            Phase::Remove => "remove",
        }
    }

    /// Unit of the rate.
    pub fn unit(self) -> &'static str {
        match self {
            Phase::Readdirplus => "entries/s",
            Phase::WriteCommit | Phase::WriteSync => "files/s",
            _ => "ops/s",
        }
    }

    /// Whether the issue sets a target for the phase.
    pub fn has_target(self) -> bool {
        self != Phase::WriteSync
    }
}

/// One client's files in its own directory.
struct Files {
    dir: FileHandle,
    names: Vec<Vec<u8>>,
    fhs: Vec<Option<FileHandle>>,
    data: Vec<u8>,
    phase: Phase,
    /// LOOKUPs that returned a different handle from CREATE's.
    handle_mismatches: usize,
    /// READDIRPLUS calls made.
    readdir_calls: usize,
}

impl Files {
    fn fh(&self, item: usize) -> Result<FileHandle> {
        self.fhs
            .get(item)
            .copied()
            .flatten()
            .ok_or_else(|| format!("no handle for file {item}"))
    }
}

impl Work for Files {
    fn proc_(&self, step: usize) -> u32 {
        match self.phase {
            Phase::Create => P_CREATE,
            Phase::WriteCommit if step == 0 => P_WRITE,
            Phase::WriteCommit => P_COMMIT,
            Phase::Getattr => P_GETATTR,
            Phase::Lookup => P_LOOKUP,
            Phase::Read => P_READ,
            Phase::WriteSync => P_WRITE,
            Phase::Remove => P_REMOVE,
            Phase::Readdirplus => 17,
        }
    }

    fn build(&mut self, item: usize, step: usize, e: &mut Encoder) -> Result<()> {
        let name = &self.names[item];
        let at = DirOpArgs {
            dir: self.dir,
            name,
        };
        let call = match self.phase {
            Phase::Create => create_args(self.dir, name),
            Phase::WriteCommit if step == 0 => Nfs3Call::Write {
                fh: self.fh(item)?,
                offset: 0,
                stable: StableHow::Unstable,
                data: &self.data,
            },
            Phase::WriteCommit => Nfs3Call::Commit {
                fh: self.fh(item)?,
                offset: 0,
                count: 0,
            },
            Phase::Getattr => Nfs3Call::Getattr(self.fh(item)?),
            Phase::Lookup => Nfs3Call::Lookup(at),
            Phase::Read => Nfs3Call::Read {
                fh: self.fh(item)?,
                offset: 0,
                count: SMALL_U32,
            },
            Phase::WriteSync => Nfs3Call::Write {
                fh: self.fh(item)?,
                offset: SMALL as u64,
                stable: StableHow::FileSync,
                data: &self.data,
            },
            Phase::Remove => Nfs3Call::Remove(at),
            Phase::Readdirplus => return Err("READDIRPLUS is not pipelined".into()),
        };
        vmshare_proto::nfs3::encode_call(e, &call);
        Ok(())
    }

    fn done(&mut self, item: usize, step: usize, results: &[u8]) -> Result<()> {
        let d = &mut Decoder::new(results);
        let name = String::from_utf8_lossy(&self.names[item]).into_owned();
        match self.phase {
            Phase::Create => {
                client::status(d, "CREATE")?;
                let fh = client::post_op_fh(d, "CREATE")?;
                if fh.is_none() {
                    return Err(format!("CREATE {name}: no handle in the reply"));
                }
                self.fhs[item] = fh;
            }
            Phase::WriteCommit if step == 0 => {
                let n = client::write_res(results)?;
                if n as usize != SMALL {
                    return Err(format!("WRITE {name}: short write of {n}"));
                }
            }
            Phase::WriteCommit => client::status(d, "COMMIT")?,
            Phase::WriteSync => {
                let n = client::write_res(results)?;
                if n as usize != SMALL {
                    return Err(format!("WRITE {name} FILE_SYNC: short write of {n}"));
                }
            }
            Phase::Getattr => {
                client::status(d, "GETATTR")?;
                let a = vmshare_proto::nfs3::Fattr::decode(d).map_err(xdr("GETATTR"))?;
                if a.size != SMALL as u64 {
                    return Err(format!("GETATTR {name}: size {} after write", a.size));
                }
            }
            Phase::Lookup => {
                client::status(d, "LOOKUP")?;
                let fh = client::fh(d, "LOOKUP")?;
                if Some(fh) != self.fhs[item] {
                    self.handle_mismatches += 1;
                }
            }
            Phase::Read => {
                let r = client::read_res(results)?;
                if r.data != &self.data[..] {
                    return Err(format!("READ {name}: wrong data ({} bytes)", r.data.len()));
                }
            }
            Phase::Remove => client::status(d, "REMOVE")?,
            Phase::Readdirplus => {}
        }
        Ok(())
    }
}

/// Lists `dir` completely with READDIRPLUS `passes` times; returns the
/// number of entries seen (including `.` and `..`).
fn list_dir(
    conn: &mut Conn,
    dir: FileHandle,
    passes: usize,
    calls_out: &mut usize,
) -> Result<usize> {
    let mut total = 0;
    for _ in 0..passes {
        let mut cookie = 0u64;
        let mut verf = [0u8; 8];
        let mut calls = 0;
        loop {
            let res = conn.nfs(&Nfs3Call::Readdirplus {
                dir,
                cookie,
                verf,
                // The shape of the Linux client's request (dircount is
                // maxcount / 8), with a 64 KiB reply.
                dircount: 8192,
                maxcount: 65536,
            })?;
            let page = client::readdirplus_res(&res, cookie)?;
            total += page.entries;
            calls += 1;
            *calls_out += 1;
            if page.eof {
                break;
            }
            if page.entries == 0 {
                return Err("READDIRPLUS returned no entries and no eof".into());
            }
            if calls > 100_000 {
                return Err("READDIRPLUS does not end".into());
            }
            cookie = page.cookie;
            verf = page.verf;
        }
    }
    Ok(total)
}

/// Timings of one client for every phase.
type ClientTimes = Vec<(Instant, Instant, usize)>;

/// Measured small-file rates for one client count.
#[derive(Debug, Clone)]
pub struct SmallResult {
    /// (phase, rate in the phase's unit).
    pub rates: Vec<(Phase, f64)>,
    /// LOOKUP replies whose handle differed from CREATE's (a note, not an
    /// error: handles need not be byte-identical).
    pub handle_mismatches: usize,
    /// Directory entries per READDIRPLUS reply (64 KiB maxcount).
    pub entries_per_reply: f64,
    /// (phase, the slowest client's time over the fastest's): how evenly
    /// the server shared itself between clients (1 for one client).
    pub spread: Vec<(Phase, f64)>,
}

/// Parameters of the small-file run.
#[derive(Debug, Clone, Copy)]
pub struct SmallParams {
    /// Files per client.
    pub files: usize,
    /// Calls in flight per client.
    pub depth: usize,
    /// Passes over each directory of the calls that change nothing:
    /// GETATTR, LOOKUP, READ and READDIRPLUS.
    pub passes: usize,
}

/// Runs every phase with `clients` connections, each in its own thread
/// and directory. A phase starts in all clients at once (barrier) and its
/// rate is the total work divided by the time from the first start to the
/// last finish.
pub fn small_files(
    addr: SocketAddr,
    root: FileHandle,
    tag: &str,
    clients: usize,
    p: SmallParams,
) -> Result<SmallResult> {
    let mut setup = Conn::connect(addr, 1)?;
    let mut dirs = Vec::new();
    for c in 0..clients {
        dirs.push(mkdir(&mut setup, root, &format!("{tag}-c{c}"))?);
    }
    let barrier = Arc::new(Barrier::new(clients));
    let mut handles = Vec::new();
    for (c, dir) in dirs.iter().copied().enumerate() {
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(
            move || -> (Result<ClientTimes>, usize, usize) {
                let mut files = Files {
                    dir,
                    names: (0..p.files)
                        .map(|i| format!("f{i:06}").into_bytes())
                        .collect(),
                    fhs: vec![None; p.files],
                    data: (0..SMALL).map(|i| (i * 7 + c).to_le_bytes()[0]).collect(),
                    phase: Phase::Create,
                    handle_mismatches: 0,
                    readdir_calls: 0,
                };
                let mut conn = match Conn::connect(addr, 100 + u32::try_from(c).unwrap_or(0)) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        for _ in PHASES {
                            barrier.wait();
                        }
                        return (Err(e), 0, 0);
                    }
                };
                let mut times = Vec::new();
                let mut err = None;
                for phase in PHASES {
                    files.phase = phase;
                    barrier.wait();
                    if c == 0 {
                        // The table's row name, so that one client
                        // count's phase can be picked out.
                        let s = if clients == 1 { "" } else { "s" };
                        perf_control(Some(&format!("{}, {clients} client{s}", phase.label())));
                    }
                    let Some(conn) = conn.as_mut().filter(|_| err.is_none()) else {
                        continue;
                    };
                    let t0 = Instant::now();
                    let r = match phase {
                        Phase::Readdirplus => {
                            list_dir(conn, dir, p.passes, &mut files.readdir_calls)
                        }
                        Phase::WriteCommit => conn
                            .pipeline(&mut files, p.files, 2, p.depth)
                            .map(|_| p.files),
                        // Calls that change nothing are repeated, as
                        // READDIRPLUS is: one pass of four clients over
                        // 2,000 files takes a tenth of a second, too short
                        // to measure on a busy machine.
                        Phase::Getattr | Phase::Lookup | Phase::Read => (0..p.passes)
                            .try_for_each(|_| conn.pipeline(&mut files, p.files, 1, p.depth))
                            .map(|()| p.files * p.passes),
                        _ => conn
                            .pipeline(&mut files, p.files, 1, p.depth)
                            .map(|_| p.files),
                    };
                    match r {
                        Ok(n) => times.push((t0, Instant::now(), n)),
                        Err(e) => err = Some(format!("client {c}, {}: {e}", phase.label())),
                    }
                }
                drop(conn.take());
                if c == 0 {
                    perf_control(None);
                }
                match err {
                    Some(e) => (Err(e), 0, 0),
                    None => (Ok(times), files.handle_mismatches, files.readdir_calls),
                }
            },
        ));
    }
    let mut all = Vec::new();
    let mut mismatches = 0;
    let mut readdir_calls = 0;
    for h in handles {
        let (r, m, calls) = h.join().map_err(|_| "client thread panicked".to_string())?;
        all.push(r?);
        mismatches += m;
        readdir_calls += calls;
    }
    let rd = PHASES
        .iter()
        .position(|p| *p == Phase::Readdirplus)
        .unwrap_or(0);
    let entries: usize = all.iter().map(|t| t[rd].2).sum();
    for c in 0..clients {
        remove(&mut setup, root, &format!("{tag}-c{c}"), true)?;
    }
    let mut rates = Vec::new();
    let mut spread = Vec::new();
    for (i, phase) in PHASES.iter().enumerate() {
        let start = all.iter().map(|t| t[i].0).min();
        let end = all.iter().map(|t| t[i].1).max();
        let work: usize = all.iter().map(|t| t[i].2).sum();
        if let (Some(s), Some(e)) = (start, end) {
            let secs = e.duration_since(s).as_secs_f64().max(1e-9);
            rates.push((*phase, work as f64 / secs));
        }
        let took = all
            .iter()
            .map(|t| t[i].1.duration_since(t[i].0).as_secs_f64().max(1e-9));
        let (fast, slow) = took.fold((f64::MAX, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        spread.push((*phase, slow / fast));
    }
    Ok(SmallResult {
        rates,
        handle_mismatches: mismatches,
        entries_per_reply: entries as f64 / readdir_calls.max(1) as f64,
        spread,
    })
}

/// Profiling one phase: with `VMSHARE_BENCH_PERF_CTL` naming the control
/// FIFO of `perf record --control=fifo:FIFO -D -1` and
/// `VMSHARE_BENCH_PERF_PHASE` part of a row name of the table (`write`,
/// `commit, 4 clients`; `sequential` for the sequential write and its
/// COMMIT), perf records only
/// while that phase runs (whole-run profiles are dominated by the phases
/// that take longest, which are not the ones being studied).
fn perf_control(starting: Option<&str>) {
    let (Some(ctl), Some(want)) = (
        std::env::var_os("VMSHARE_BENCH_PERF_CTL"),
        std::env::var("VMSHARE_BENCH_PERF_PHASE").ok(),
    ) else {
        return;
    };
    let cmd: &[u8] = if starting.is_some_and(|label| label.contains(want.as_str())) {
        b"enable\n"
    } else {
        b"disable\n"
    };
    // perf reads one command per wake-up, so each waits for perf's
    // "ack" on the second FIFO (`--control=fifo:CTL,ACK`).
    let ack = std::env::var_os("VMSHARE_BENCH_PERF_ACK");
    if let Err(e) = std::fs::OpenOptions::new()
        .write(true)
        .open(&ctl)
        .and_then(|mut f| std::io::Write::write_all(&mut f, cmd))
        .and_then(|()| match &ack {
            Some(a) => std::io::Read::read_exact(&mut std::fs::File::open(a)?, &mut [0; 4]),
            None => Ok(()),
        })
    {
        eprintln!("vmshare-bench: perf control {}: {e}", ctl.to_string_lossy());
    }
}
