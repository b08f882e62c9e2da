//! `vmshare-bench`: vmshare's NFSv3 server and nfs-ganesha side by side.
//!
//! One run starts both servers on 127.0.0.1, drives each with the same
//! client (this crate's, built on vmshare's own XDR and NFSv3 codecs), and
//! prints a markdown table. It is a benchmark, not a test: it asserts
//! nothing about time, and it stops by itself (a watchdog ends it after
//! `--time-limit` seconds).
//!
//! What is measured, per server, in this order:
//!
//! * **Sequential write**: one file, `--size-mib` MiB in 1 MiB UNSTABLE
//!   WRITEs with `--io-depth` in flight, then one COMMIT; MB/s (10⁶
//!   bytes/s) over the whole, COMMIT included, so the data is on disk.
//! * **Sequential read**: the same file read back in 1 MiB READs, same
//!   depth. The file was just written, so both servers read it from the
//!   host page cache: this measures the server's data path, not the disk.
//! * **Small files**, with 1 and then 4 clients (a client is one TCP
//!   connection on its own thread, each in its own directory of
//!   `--files` files, `--meta-depth` calls in flight): CREATE; WRITE 4 KiB
//!   UNSTABLE + COMMIT per file (rate in files/s, two calls each);
//!   GETATTR; LOOKUP; READ 4 KiB; WRITE 4 KiB FILE_SYNC at the end of
//!   each file, as the Linux client writes a small file at its close (no
//!   target: the row is UNSTABLE + COMMIT); READDIRPLUS over the whole directory
//!   (rate in entries/s); REMOVE. The four that change nothing run
//!   `--passes` times over the files. Rates are total work over the time
//!   from the first client's start to the last one's end.
//! * **Server CPU seconds** (utime + stime of the server process, all
//!   threads, from /proc/PID/stat) per group of workloads, and **peak
//!   RSS** (VmHWM from /proc/PID/status at the end, and the largest VmRSS
//!   sampled every 10 ms during the run).
//!
//! Raw loopback TCP throughput is measured first, for context.

mod client;
mod scratch;
mod servers;
mod workload;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use client::{Conn, Result};
use servers::Server;
use workload::{Phase, SeqResult, SmallParams, SmallResult, PHASES};

const USAGE: &str = "\
vmshare-bench: vmshare's NFSv3 server and nfs-ganesha side by side on 127.0.0.1

Usage: vmshare-bench [OPTIONS]

Options:
  --vmshare PATH      vmshare binary (default: `vmshare` next to this binary)
  --ganesha PATH      ganesha.nfsd binary (default: ganesha.nfsd from PATH)
  --only NAME         run only `vmshare` or only `ganesha`
  --dir DIR           where the exports and logs go (default: logs in
                      /var/tmp, exports on a fresh ext4 filesystem made
                      for the run on a loop device over /dev/shm, or in
                      /var/tmp when that cannot be made; see scratch.rs)
  --size-mib N        sequential file size in MiB (default: 1024)
  --io-depth N        1 MiB READs/WRITEs in flight (default: 16)
  --files N           small files per client (default: 2000)
  --clients LIST      client counts, comma-separated (default: 1,4)
  --meta-depth N      small-file calls in flight per client (default: 1)
  --passes N          passes of GETATTR, LOOKUP, READ and READDIRPLUS over
                      each client's files (default: 5)
  --rounds N          rounds, each starting both servers afresh; the table
                      shows medians (default: 3)
  --time-limit SECS   stop everything after this long (default: 540)
  --keep              keep the logs, and the exports when --dir is given
";

#[derive(Debug, Clone)]
struct Opts {
    vmshare: PathBuf,
    ganesha: PathBuf,
    only: Option<String>,
    dir: Option<PathBuf>,
    size_mib: usize,
    io_depth: usize,
    files: usize,
    clients: Vec<usize>,
    meta_depth: usize,
    passes: usize,
    rounds: usize,
    time_limit: u64,
    keep: bool,
}

fn parse_opts() -> Result<Opts> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut o = Opts {
        vmshare: exe_dir.join("vmshare"),
        ganesha: PathBuf::from("ganesha.nfsd"),
        only: None,
        dir: None,
        size_mib: 1024,
        io_depth: 16,
        files: 2000,
        clients: vec![1, 4],
        meta_depth: 1,
        passes: 5,
        rounds: 3,
        time_limit: 540,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--vmshare" => o.vmshare = val()?.into(),
            "--ganesha" => o.ganesha = val()?.into(),
            "--only" => {
                let v = val()?;
                if v != "vmshare" && v != "ganesha" {
                    return Err(format!("--only: vmshare or ganesha, not {v}"));
                }
                o.only = Some(v);
            }
            "--dir" => o.dir = Some(val()?.into()),
            "--size-mib" => o.size_mib = num(val()?)?.max(1),
            "--io-depth" => o.io_depth = num(val()?)?.max(1),
            "--files" => o.files = num(val()?)?.max(1),
            "--clients" => {
                o.clients = val()?
                    .split(',')
                    .map(|s| num(s.trim().to_string()).map(|n| n.max(1)))
                    .collect::<Result<_>>()?;
            }
            "--meta-depth" => o.meta_depth = num(val()?)?.max(1),
            "--passes" => o.passes = num(val()?)?.max(1),
            "--rounds" => o.rounds = num(val()?)?.max(1),
            "--time-limit" => o.time_limit = num(val()?)? as u64,
            "--keep" => o.keep = true,
            other => return Err(format!("unknown argument {other}\n\n{USAGE}")),
        }
    }
    Ok(o)
}

/// Raw loopback TCP: one connection, 1 MiB writes, 2 GiB; MB/s.
fn loopback_mbps() -> Result<f64> {
    const TOTAL: usize = 2 << 30;
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let rx = std::thread::spawn(move || -> Result<usize> {
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k,
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    for _ in 0..TOTAL / buf.len() {
        s.write_all(&buf).map_err(|e| e.to_string())?;
    }
    drop(s);
    let got = rx.join().map_err(|_| "receiver panicked".to_string())??;
    let secs = t.elapsed().as_secs_f64();
    if got != TOTAL {
        return Err(format!("loopback: received {got} of {TOTAL} bytes"));
    }
    Ok(got as f64 / secs / 1e6)
}

/// The host filesystem's own create (O_CREAT|O_EXCL, close) and unlink
/// rates in one directory under the benchmark's base directory: what both
/// servers sit on, without NFS.
fn local_fs(base: &Path, files: usize) -> Result<(f64, f64)> {
    let dir = base.join("local-baseline");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let names: Vec<PathBuf> = (0..files).map(|i| dir.join(format!("f{i:06}"))).collect();
    let t = Instant::now();
    for n in &names {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(n)
            .map_err(|e| format!("{}: {e}", n.display()))?;
    }
    let create = files as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for n in &names {
        std::fs::remove_file(n).map_err(|e| format!("{}: {e}", n.display()))?;
    }
    let remove = files as f64 / t.elapsed().as_secs_f64();
    std::fs::remove_dir(&dir).map_err(|e| e.to_string())?;
    Ok((create, remove))
}

/// The host filesystem's own rate for the write+commit phase without NFS:
/// `threads` threads, each writing 4 KiB to each of its `files` files
/// (made beforehand, untimed) and fsyncing it, as each COMMIT does. No
/// server can beat this; it shows how much of that phase is the journal.
/// Each file is opened for its write and closed after its fsync (about
/// 1% of the time): holding them all open ran out of descriptors once
/// `--files` passed the open-file limit.
fn local_fsync(base: &Path, files: usize, threads: usize) -> Result<f64> {
    let dir = base.join("local-fsync");
    let r = local_fsync_in(&dir, files, threads);
    // Also after a failure: the next measurement makes the same names.
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn local_fsync_in(dir: &Path, files: usize, threads: usize) -> Result<f64> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut sets = Vec::new();
    for t in 0..threads {
        let mut set = Vec::new();
        for i in 0..files {
            let n = dir.join(format!("t{t}-{i:06}"));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&n)
                .map_err(|e| format!("{}: {e}", n.display()))?;
            set.push(n);
        }
        sets.push(set);
    }
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = sets
        .into_iter()
        .map(|set| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> std::io::Result<(Instant, Instant)> {
                let data = [0x5au8; 4096];
                barrier.wait();
                let t0 = Instant::now();
                for n in &set {
                    let f = std::fs::OpenOptions::new().write(true).open(n)?;
                    f.write_all_at(&data, 0)?;
                    f.sync_all()?;
                }
                Ok((t0, Instant::now()))
            })
        })
        .collect();
    let mut spans = Vec::new();
    for h in handles {
        let span = h
            .join()
            .map_err(|_| "fsync thread panicked".to_string())?
            .map_err(|e| e.to_string())?;
        spans.push(span);
    }
    let start = spans.iter().map(|s| s.0).min().ok_or("no threads")?;
    let end = spans.iter().map(|s| s.1).max().ok_or("no threads")?;
    Ok((files * threads) as f64 / end.duration_since(start).as_secs_f64().max(1e-9))
}

/// Everything measured for one server.
#[derive(Debug, Clone)]
struct Measured {
    seq: SeqResult,
    small: Vec<(usize, SmallResult)>,
    cpu_seq_write: f64,
    cpu_seq_read: f64,
    cpu_small: Vec<f64>,
    cpu_total: f64,
    rss_start_kib: u64,
    rss_seq_kib: u64,
    rss_peak_kib: u64,
    hwm_kib: u64,
}

fn measure(server: &mut Server, o: &Opts) -> Result<Measured> {
    let root = server.wait_ready(Duration::from_secs(30))?;
    let pid = server.pid();
    let rss_start_kib = servers::status_kib(pid, "VmRSS:").unwrap_or(0);
    let sampler = servers::RssSampler::start(pid);
    let cpu0 = servers::cpu_seconds(pid);

    let mut conn = Conn::connect(server.nfs, 2)?;
    let info = client::fsinfo_res(&conn.nfs(&vmshare_proto::nfs3::Nfs3Call::Fsinfo(root))?)?;
    let chunk = (1usize << 20)
        .min(info.rtmax as usize)
        .min(info.wtmax as usize);
    if chunk < (1 << 20) {
        eprintln!(
            "  note: {} allows only {chunk}-byte READ/WRITE (rtmax {}, wtmax {})",
            server.name, info.rtmax, info.wtmax
        );
    }
    let size = o.size_mib << 20;
    eprintln!("  sequential write and read of {} MiB", o.size_mib);
    let t_cpu = servers::cpu_seconds(pid);
    let mut cpu_mid = 0.0;
    let seq = workload::sequential(&mut conn, root, "seqfile", size, chunk, o.io_depth, || {
        cpu_mid = servers::cpu_seconds(pid)
    })?;
    let t_cpu2 = servers::cpu_seconds(pid);
    let rss_seq_kib = sampler.peak();
    drop(conn);

    let mut small = Vec::new();
    let mut cpu_small = Vec::new();
    for &n in &o.clients {
        eprintln!("  small files: {n} client(s) x {} files", o.files);
        let c0 = servers::cpu_seconds(pid);
        let r = workload::small_files(
            server.nfs,
            root,
            &format!("small{n}"),
            n,
            SmallParams {
                files: o.files,
                depth: o.meta_depth,
                passes: o.passes,
            },
        )?;
        cpu_small.push(servers::cpu_seconds(pid) - c0);
        small.push((n, r));
    }
    let cpu_total = servers::cpu_seconds(pid) - cpu0;
    let rss_peak_kib = sampler.finish();
    let hwm_kib = servers::status_kib(pid, "VmHWM:").unwrap_or(0);
    Ok(Measured {
        seq,
        small,
        cpu_seq_write: cpu_mid - t_cpu,
        cpu_seq_read: t_cpu2 - cpu_mid,
        cpu_small,
        cpu_total,
        rss_start_kib,
        rss_seq_kib,
        rss_peak_kib,
        hwm_kib,
    })
}

fn run_server(name: &str, o: &Opts, base: &Path, exports: &Path, round: usize) -> Result<Measured> {
    let export = exports.join(format!("{name}-export-{round}"));
    std::fs::create_dir_all(&export).map_err(|e| format!("{}: {e}", export.display()))?;
    eprintln!("{name} (round {}): starting", round + 1);
    let mut server = if name == "vmshare" {
        servers::start_vmshare(&o.vmshare, base, &export)?
    } else {
        servers::start_ganesha(&o.ganesha, base, &export)?
    };
    let r = measure(&mut server, o);
    server.stop();
    if let Ok(m) = &r {
        let size = (o.size_mib as f64) * 1048576.0 / 1e6;
        let rate = |i: usize, p: usize| {
            m.small
                .get(i)
                .and_then(|(_, r)| r.rates.get(p))
                .map_or(0.0, |(_, x)| *x)
        };
        // write+commit is the row that moves most from round to round.
        let last = m.small.len().saturating_sub(1);
        eprintln!(
            "  {name} round {}: write {:.0} MB/s, read {:.0} MB/s, create {:.0}/s, \
             getattr {:.0}/s (1 client), write+commit {:.0}/s ({} clients), peak RSS {:.1} MiB",
            round + 1,
            size / m.seq.write.as_secs_f64(),
            size / m.seq.read.as_secs_f64(),
            rate(0, 0),
            rate(0, 2),
            rate(last, 1),
            m.small.get(last).map_or(0, |(n, _)| *n),
            m.rss_peak_kib as f64 / 1024.0
        );
    }
    r.map_err(|e| format!("{name}: {e} (server log: {})", server.log.display()))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Combines rounds: the median of every rate, time and CPU figure, and
/// the largest of every memory figure.
fn combine(rounds: &[Measured]) -> Option<Measured> {
    let first = rounds.first()?;
    let med = |f: &dyn Fn(&Measured) -> f64| median(rounds.iter().map(f).collect());
    let dur = |f: &dyn Fn(&SeqResult) -> Duration| {
        Duration::from_secs_f64(med(&|m| f(&m.seq).as_secs_f64()))
    };
    let small = first
        .small
        .iter()
        .enumerate()
        .map(|(ci, (n, r0))| {
            // The median, phase by phase, of one per-phase figure.
            let per_phase = |f: &dyn Fn(&SmallResult) -> &[(Phase, f64)]| -> Vec<(Phase, f64)> {
                f(r0)
                    .iter()
                    .enumerate()
                    .map(|(pi, (phase, _))| {
                        let x = med(&|m| {
                            m.small
                                .get(ci)
                                .and_then(|(_, r)| f(r).get(pi))
                                .map_or(f64::NAN, |(_, x)| *x)
                        });
                        (*phase, x)
                    })
                    .collect()
            };
            let rates = per_phase(&|r| &r.rates);
            let spread = per_phase(&|r| &r.spread);
            let handle_mismatches = rounds
                .iter()
                .filter_map(|m| m.small.get(ci))
                .map(|(_, r)| r.handle_mismatches)
                .max()
                .unwrap_or(0);
            let entries_per_reply = med(&|m| {
                m.small
                    .get(ci)
                    .map_or(f64::NAN, |(_, r)| r.entries_per_reply)
            });
            (
                *n,
                SmallResult {
                    rates,
                    handle_mismatches,
                    entries_per_reply,
                    spread,
                },
            )
        })
        .collect();
    let max_kib = |f: &dyn Fn(&Measured) -> u64| rounds.iter().map(f).max().unwrap_or(0);
    Some(Measured {
        seq: SeqResult {
            write: dur(&|s| s.write),
            commit: dur(&|s| s.commit),
            read: dur(&|s| s.read),
        },
        small,
        cpu_seq_write: med(&|m| m.cpu_seq_write),
        cpu_seq_read: med(&|m| m.cpu_seq_read),
        cpu_small: (0..first.cpu_small.len())
            .map(|i| med(&|m| m.cpu_small.get(i).copied().unwrap_or(f64::NAN)))
            .collect(),
        cpu_total: med(&|m| m.cpu_total),
        rss_start_kib: max_kib(&|m| m.rss_start_kib),
        rss_seq_kib: max_kib(&|m| m.rss_seq_kib),
        rss_peak_kib: max_kib(&|m| m.rss_peak_kib),
        hwm_kib: max_kib(&|m| m.hwm_kib),
    })
}

/// 12345.6 → "12,346".
fn grouped(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A table row: values for vmshare and ganesha, and the target ratio.
struct Row {
    label: String,
    unit: &'static str,
    v: Option<f64>,
    g: Option<f64>,
    /// (minimum vmshare/ganesha ratio, or an absolute ceiling for vmshare).
    target: Target,
    decimals: usize,
}

enum Target {
    None,
    AtLeast(f64),
    Below(f64),
}

fn fmt_val(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if decimals == 0 => grouped(x),
        Some(x) => format!("{x:.decimals$}"),
        None => "–".into(),
    }
}

fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| workload | unit | vmshare | ganesha | vmshare / ganesha | target |\n");
    s.push_str("| --- | --- | ---: | ---: | ---: | --- |\n");
    for r in rows {
        let ratio = match (r.v, r.g) {
            (Some(v), Some(g)) if g > 0.0 => Some(v / g),
            _ => None,
        };
        let target = match r.target {
            Target::None => String::new(),
            Target::AtLeast(t) => match ratio {
                Some(x) if x >= t => format!("≥ {t}x ✅"),
                Some(_) => format!("≥ {t}x ❌"),
                None => format!("≥ {t}x"),
            },
            Target::Below(lim) => match r.v {
                Some(v) if v < lim => format!("< {lim} ✅"),
                Some(_) => format!("< {lim} ❌"),
                None => format!("< {lim}"),
            },
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.label,
            r.unit,
            fmt_val(r.v, r.decimals),
            fmt_val(r.g, r.decimals),
            ratio
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "–".into()),
            target
        ));
    }
    s
}

fn rows(o: &Opts, v: Option<&Measured>, g: Option<&Measured>) -> Vec<Row> {
    let size = (o.size_mib as f64) * 1048576.0;
    let mbps = |m: Option<&Measured>, f: fn(&SeqResult) -> Duration| {
        m.map(|m| size / f(&m.seq).as_secs_f64() / 1e6)
    };
    let gib = if o.size_mib & 1023 == 0 {
        format!("{} GiB", o.size_mib / 1024)
    } else {
        format!("{} MiB", o.size_mib)
    };
    let mut rows = vec![
        Row {
            label: format!(
                "sequential write {gib} (1 MiB UNSTABLE x{} + COMMIT)",
                o.io_depth
            ),
            unit: "MB/s",
            v: mbps(v, |s| s.write),
            g: mbps(g, |s| s.write),
            target: Target::None,
            decimals: 0,
        },
        Row {
            label: "… of which the final COMMIT".into(),
            unit: "s",
            v: v.map(|m| m.seq.commit.as_secs_f64()),
            g: g.map(|m| m.seq.commit.as_secs_f64()),
            target: Target::None,
            decimals: 2,
        },
        Row {
            label: format!(
                "sequential read {gib} (1 MiB READ x{}, page cache)",
                o.io_depth
            ),
            unit: "MB/s",
            v: mbps(v, |s| s.read),
            g: mbps(g, |s| s.read),
            target: Target::AtLeast(1.5),
            decimals: 0,
        },
    ];
    for (ci, &n) in o.clients.iter().enumerate() {
        for phase in PHASES {
            let rate = |m: Option<&Measured>| {
                m.and_then(|m| m.small.get(ci))
                    .and_then(|(_, r)| r.rates.iter().find(|(p, _)| *p == phase))
                    .map(|(_, x)| *x)
            };
            let target = match n {
                _ if !phase.has_target() => Target::None,
                1 => Target::AtLeast(1.0),
                4 => Target::AtLeast(1.5),
                _ => Target::None,
            };
            let clients = if n == 1 {
                "1 client".to_string()
            } else {
                format!("{n} clients")
            };
            rows.push(Row {
                label: format!("{}, {clients}", phase.label()),
                unit: phase.unit(),
                v: rate(v),
                g: rate(g),
                target,
                decimals: 0,
            });
        }
    }
    // Resource rows: (label, unit, value of one server, target, decimals).
    let mib = |k: u64| k as f64 / 1024.0;
    type Get<'a> = Box<dyn Fn(&Measured) -> f64 + 'a>;
    let mut res: Vec<(String, &'static str, Get, Target, usize)> = vec![
        (
            "server CPU, sequential write".into(),
            "s",
            Box::new(|m| m.cpu_seq_write),
            Target::None,
            2,
        ),
        (
            "server CPU, sequential read".into(),
            "s",
            Box::new(|m| m.cpu_seq_read),
            Target::None,
            2,
        ),
    ];
    for (ci, &n) in o.clients.iter().enumerate() {
        res.push((
            format!("server CPU, small files, {n} client(s)"),
            "s",
            Box::new(move |m| m.cpu_small.get(ci).copied().unwrap_or(f64::NAN)),
            Target::None,
            2,
        ));
    }
    res.push((
        "server CPU, whole run".into(),
        "s",
        Box::new(|m| m.cpu_total),
        Target::None,
        2,
    ));
    res.push((
        "RSS after start (VmRSS)".into(),
        "MiB",
        Box::new(move |m| mib(m.rss_start_kib)),
        Target::None,
        1,
    ));
    res.push((
        "peak RSS during the sequential part (VmRSS sampled)".into(),
        "MiB",
        Box::new(move |m| mib(m.rss_seq_kib)),
        Target::None,
        1,
    ));
    res.push((
        "peak RSS while serving (VmRSS sampled every 10 ms)".into(),
        "MiB",
        Box::new(move |m| mib(m.rss_peak_kib)),
        Target::Below(32.0),
        1,
    ));
    res.push((
        "peak RSS (VmHWM at the end)".into(),
        "MiB",
        Box::new(move |m| mib(m.hwm_kib)),
        Target::Below(32.0),
        1,
    ));
    for (label, unit, get, target, decimals) in res {
        rows.push(Row {
            label,
            unit,
            v: v.map(&get),
            g: g.map(&get),
            target,
            decimals,
        });
    }
    rows
}

fn main() -> ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vmshare-bench: {e}");
            return ExitCode::from(2);
        }
    };
    // The watchdog: whatever happens, the benchmark ends.
    let limit = o.time_limit;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(limit));
        eprintln!("vmshare-bench: time limit of {limit} s reached; stopping the servers");
        if let Ok(pids) = servers::CHILDREN.lock() {
            for &p in pids.iter() {
                servers::signal(p, libc::SIGKILL);
            }
        }
        // Give the killed servers a moment to let go of the exports.
        std::thread::sleep(Duration::from_millis(200));
        scratch::remove_all();
        std::process::exit(3);
    });
    let started = Instant::now();
    let top = o.dir.clone().unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let base = top.join(format!("vmshare-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("vmshare-bench: {}: {e}", base.display());
        return ExitCode::FAILURE;
    }
    eprintln!("vmshare-bench: working in {}", base.display());
    // Room for the sequential file and ext4's own, and 32 KiB for each
    // small file of the largest client count: mkfs.ext4 makes an inode
    // per 16 KiB, and 20,000 files for each of four clients ran out of
    // inodes at the old fixed size. The image is sparse: only what is
    // written takes memory.
    let most_files = o.files as u64 * o.clients.iter().copied().max().unwrap_or(1) as u64;
    let scratch_bytes =
        ((o.size_mib as u64 + o.size_mib as u64 / 4 + 512) << 20) + most_files * (32 << 10);
    let scratch = match &o.dir {
        Some(_) => None,
        None => match scratch::Scratch::make(scratch_bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "vmshare-bench: no fresh filesystem ({e}); exports go in {}",
                    base.display()
                );
                None
            }
        },
    };
    let (exports, exports_on) = match &scratch {
        Some(s) => (
            s.path().to_path_buf(),
            "a fresh ext4 filesystem (loop device over /dev/shm)".to_string(),
        ),
        None => (base.clone(), top.display().to_string()),
    };
    eprintln!("loopback TCP: 2 GiB over one connection");
    let loopback = match loopback_mbps() {
        Ok(x) => Some(x),
        Err(e) => {
            eprintln!("loopback: {e}");
            None
        }
    };

    let local = local_fs(&exports, o.files);
    let fsyncs: Vec<(usize, Result<f64>)> = o
        .clients
        .iter()
        .map(|&n| (n, local_fsync(&exports, o.files, n)))
        .collect();
    let names: Vec<&str> = ["vmshare", "ganesha"]
        .into_iter()
        .filter(|n| !matches!(o.only.as_deref(), Some(x) if x != *n))
        .collect();
    let mut failed = false;
    // ganesha will not start unless it can register with an rpcbind.
    let rpcbind = if names.contains(&"ganesha") {
        match servers::ensure_rpcbind() {
            Ok(rb) => Some(rb),
            Err(e) => {
                eprintln!("vmshare-bench: {e}");
                failed = true;
                None
            }
        }
    } else {
        None
    };
    let mut rounds: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    'rounds: for round in 0..o.rounds {
        // Alternate which server goes first, so neither always gets the
        // quieter half of the round.
        let order: Vec<&str> = if round % 2 == 0 {
            names.clone()
        } else {
            names.iter().rev().copied().collect()
        };
        for name in order {
            if name == "ganesha" && rpcbind.is_none() {
                continue;
            }
            match run_server(name, &o, &base, &exports, round) {
                Ok(m) => rounds[usize::from(name == "ganesha")].push(m),
                Err(e) => {
                    eprintln!("vmshare-bench: {e}");
                    failed = true;
                    break 'rounds;
                }
            }
        }
    }
    drop(rpcbind);
    let results = [combine(&rounds[0]), combine(&rounds[1])];

    let [v, g] = &results;
    println!();
    println!(
        "vmshare-bench: median of {} round(s) (memory: largest); {} files per client, \
         {} small-file call(s) in flight per client, {} passes of the calls that change nothing; {} CPUs; \
         total time {:.0} s",
        o.rounds,
        o.files,
        o.meta_depth,
        o.passes,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    if let Some(lb) = loopback {
        println!(
            "loopback TCP (one connection, 1 MiB writes): {} MB/s",
            grouped(lb)
        );
    }
    match local {
        Ok((c, r)) => println!(
            "exports on {}; that filesystem without NFS, one thread, {} files: create {}/s, remove {}/s",
            exports_on,
            o.files,
            grouped(c),
            grouped(r)
        ),
        Err(e) => println!("host filesystem baseline failed: {e}"),
    }
    let fsync_rates: Vec<String> = fsyncs
        .iter()
        .map(|(n, r)| match r {
            Ok(x) => format!("{n} thread(s) {}/s", grouped(*x)),
            Err(e) => format!("{n} thread(s) failed: {e}"),
        })
        .collect();
    println!(
        "that filesystem without NFS, write 4 KiB + fsync per file (the ceiling for write + commit): {}",
        fsync_rates.join(", ")
    );
    println!();
    print!("{}", table(&rows(&o, v.as_ref(), g.as_ref())));
    println!();
    for (name, m) in [("vmshare", v), ("ganesha", g)] {
        if let Some(m) = m {
            let per_reply: Vec<String> = m
                .small
                .iter()
                .map(|(_, r)| format!("{:.0}", r.entries_per_reply))
                .collect();
            println!(
                "- {name}: READDIRPLUS entries per 64 KiB reply: {}",
                per_reply.join(" / ")
            );
            for (n, r) in m.small.iter().filter(|(n, _)| *n > 1) {
                let each: Vec<String> = r
                    .spread
                    .iter()
                    .map(|(p, x)| format!("{} {x:.2}", p.label()))
                    .collect();
                println!(
                    "- {name}, {n} clients: the slowest client's time over the fastest's: {}",
                    each.join(", ")
                );
            }
            let mism: usize = m.small.iter().map(|(_, r)| r.handle_mismatches).sum();
            if mism > 0 {
                println!(
                    "- {name}: {mism} LOOKUP replies carried a different handle than CREATE's"
                );
            }
        }
    }
    drop(scratch);
    if !o.keep && !failed {
        if let Err(e) = std::fs::remove_dir_all(&base) {
            eprintln!("vmshare-bench: cleaning {}: {e}", base.display());
        }
    } else {
        eprintln!("vmshare-bench: kept {} (logs, exports)", base.display());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
