//! The exports file: the familiar exports(5) shape, one export a line.
//!
//! ```text
//! # host path      [mount path]   clients
//! /srv/data        /data          10.0.0.0/8(rw,no_root_squash) *(ro)
//! "/srv/my files"                 192.168.1.7(rw,insecure)
//! ```
//!
//! - The first field is the host directory (absolute; double quotes allow
//!   spaces).
//! - An optional second field that starts with `/` is the path clients
//!   mount. Client specifications never start with `/`, so the two cannot be
//!   confused. Without it, clients mount the host path.
//! - Then one or more `CLIENT(options)`: CLIENT is `*`, an IPv4 or IPv6
//!   address, or a network as `addr/prefix` or `addr/netmask`. Host names
//!   and netgroups are not supported: resolving names at start-up would make
//!   access depend on DNS. A client without `(options)` gets the defaults.
//! - A field `-options` sets the defaults for the clients after it on that
//!   line, as in exports(5): `/srv -rw,insecure 10.0.0.1 10.0.0.2(ro)`.
//! - When several clients match a caller, a single address wins over a
//!   network and a network over `*`, wherever they stand on the line; among
//!   clients of one kind the first written wins (exports(5)'s order, so a
//!   line means here what it means to knfsd).
//! - One directory may be given on several lines, as in /etc/exports: their
//!   clients are taken together, in file order (and across files and
//!   `--export` flags, see [`ExportSet`]). A client named twice for one
//!   export, one mount path given to two host directories, or a directory
//!   given with its mount path on one line and without on another, is an
//!   error.
//! - Paths are taken as written except for repeated and trailing slashes
//!   and `.` components (`/srv/data/` is `/srv/data`): two spellings of one
//!   export are one export.
//! - Options: `rw`/`ro` (default `ro`, as in exports(5)), `root_squash`
//!   (default), `no_root_squash`, `all_squash`, `no_all_squash`,
//!   `anonuid=N`, `anongid=N` (default 65534), `secure` (default; source
//!   port below 1024) and `insecure`; `sync` (each change on disk before
//!   it is answered) and `async` (default here, unlike knfsd: see
//!   `docs/server.md`). `subtree_check`, `no_subtree_check`, `wdelay` and
//!   `no_wdelay` are accepted, so that lines copied from /etc/exports
//!   work, and have no effect; so are
//!   `crossmnt` and `nohide` (filesystems mounted below an export are
//!   always served), the NLM options `secure_locks`, `insecure_locks`,
//!   `auth_nlm` and `no_auth_nlm` (there is no NLM), `fsid=` (handles do
//!   not depend on device numbers) and `sec=sys` (`sec=` naming any flavor
//!   but `sys` and `none` is an error). When options conflict the last one
//!   wins.
//! - `#` starts a comment; a line ending in `\` continues on the next.
//!
//! Every problem is an error naming the file and line: a server that
//! silently skipped a line would serve less, or more, than was asked for.
//! `host (rw)` with a space, which exports(5) reads as "host with default
//! options, and everyone read-write", is refused rather than guessed at.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::export::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};

/// Longest mount path a MOUNT client may send (RFC 1813 `MNTPATHLEN`).
const MAX_MOUNT_PATH: usize = 1024;

/// Why an exports file or an `--export` specification was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExportsFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An exports file names no export.
    #[error("{}: no exports in it (every line is blank or a comment)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A line is malformed.
    #[error("{origin}:{line}: {message}")]
    Line {
        /// The file name (or `--export` for a command-line specification).
        origin: String,
        /// 1-based line number (of the first line, for continued lines).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Where a line came from, for errors: `FILE:LINE`, or `--export` and
/// the flag's position.
#[derive(Debug, Clone)]
struct Place {
    origin: String,
    line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.origin, self.line)
    }
}

/// One export gathered so far, and where it was first given.
#[derive(Debug)]
struct Entry {
    at: Place,
    export: ExportConfig,
    /// The line wrote a mount path (else it is the host path).
    mount_written: bool,
}

/// Exports gathered from every source the server is given (exports files,
/// `--export` specifications), merged as the lines of one file are: a
/// mount path given again adds clients to its export, wherever it is
/// given. Merging only within a file had sent one export split across
/// two files to the server as two, refused there as "two exports are
/// mounted as /data" with no file or line.
#[derive(Debug, Default)]
pub struct ExportSet {
    entries: Vec<Entry>,
}

impl ExportSet {
    /// No exports yet.
    pub fn new() -> ExportSet {
        ExportSet::default()
    }

    /// Reads an exports file and adds its exports. A file with none, or
    /// naming a host path that is neither a directory nor a regular file,
    /// is an error naming it. A regular file is served alone (see
    /// [`single_file`]).
    pub fn add_file(&mut self, path: &Path) -> Result<(), ExportsFileError> {
        let bytes = std::fs::read(path).map_err(|source| ExportsFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = e.as_bytes().get(..e.utf8_error().valid_up_to());
            ExportsFileError::Line {
                origin: origin.clone(),
                line: 1 + good.map_or(0, |g| g.iter().filter(|&&b| b == b'\n').count()),
                message: "not UTF-8 text (an exports file is read as UTF-8)".into(),
            }
        })?;
        let found = lines(&text, &origin)?;
        if found.is_empty() {
            return Err(ExportsFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        for (at, export, mount_written) in found {
            // The server would refuse these too, but without saying which
            // line named the path.
            let shown = export.path.display().to_string();
            let export = match std::fs::metadata(&export.path) {
                Err(source) => Err(source.to_string()),
                Ok(m) if m.is_dir() => Ok(export),
                Ok(m) if m.is_file() => single_file(export),
                Ok(_) => Err("neither a directory nor a regular file".to_string()),
            }
            .map_err(|problem| at.error(format!("{shown}: {problem}")))?;
            self.add(at, export, mount_written)?;
        }
        Ok(())
    }

    /// Adds exports from the text of an exports file; `origin` names it
    /// in errors. Host paths are not looked at.
    pub fn add_text(&mut self, text: &str, origin: &str) -> Result<(), ExportsFileError> {
        for (at, export, mount_written) in lines(text, origin)? {
            self.add(at, export, mount_written)?;
        }
        Ok(())
    }

    /// Adds one export given on the command line (see
    /// [`parse_export_spec`]); errors name it as the `n`th `--export`.
    pub fn add_spec(&mut self, spec: &str, n: usize) -> Result<(), ExportsFileError> {
        let at = Place {
            origin: "--export".into(),
            line: n,
        };
        let (mut export, mount_written) = parse_spec(spec).map_err(|m| at.error(m))?;
        // Anything else that is not a directory is for the server to
        // refuse when it opens it.
        if std::fs::metadata(&export.path).is_ok_and(|m| m.is_file()) {
            let shown = export.path.display().to_string();
            export = single_file(export).map_err(|m| at.error(format!("{shown}: {m}")))?;
        }
        self.add(at, export, mount_written)
    }

    /// The exports, in the order first given.
    pub fn into_exports(self) -> Vec<ExportConfig> {
        self.entries.into_iter().map(|e| e.export).collect()
    }

    fn add(
        &mut self,
        at: Place,
        export: ExportConfig,
        mount_written: bool,
    ) -> Result<(), ExportsFileError> {
        if let Some(prev) = self
            .entries
            .iter_mut()
            .find(|e| e.export.mount_path == export.mount_path)
        {
            if (&prev.export.path, &prev.export.single_file) != (&export.path, &export.single_file)
            {
                return Err(at.error(format!(
                    "mount path {} is already the export of {} at {}",
                    export.mount_path,
                    served(&prev.export).display(),
                    prev.at
                )));
            }
            // The same export again: more clients for it.
            for rule in export.clients {
                if prev.export.clients.iter().any(|r| r.client == rule.client) {
                    return Err(at.error(format!(
                        "client {} is already listed for {} at {}",
                        rule.client, prev.export.mount_path, prev.at
                    )));
                }
                prev.export.clients.push(rule);
            }
            return Ok(());
        }
        // One directory under a second mount path is allowed when both
        // are written out. When one was left to default to the host path,
        // the line most likely meant more clients for the export already
        // there, and would have made a second one that they mount instead.
        if let Some(prev) = self.entries.iter().find(|e| {
            (&e.export.path, &e.export.single_file) == (&export.path, &export.single_file)
                && !(e.mount_written && mount_written)
        }) {
            return Err(at.error(format!(
                "{} is already exported as {} at {}; to add clients to that export, write its \
                 mount path {} here too; to export it under a second path, write a mount path \
                 on both lines",
                served(&export).display(),
                prev.export.mount_path,
                prev.at,
                prev.export.mount_path
            )));
        }
        self.entries.push(Entry {
            at,
            export,
            mount_written,
        });
        Ok(())
    }
}

/// The export of a regular file: its directory, showing the guest that
/// one file and nothing else beside it (`ExportConfig::single_file`), as
/// `vmshare run` serves a file volume. A guest mounts the directory and
/// bind-mounts the file from it, which is what the initramfs of
/// `vmshare plan --write-initrd` does. The path is resolved first, so
/// that a symlink to a file serves the file (the server itself follows
/// no symlink inside an export).
fn single_file(mut export: ExportConfig) -> Result<ExportConfig, String> {
    let real = std::fs::canonicalize(&export.path).map_err(|e| e.to_string())?;
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Err("a file with no directory".to_string());
    };
    export.single_file = Some(name.to_os_string());
    export.path = dir.to_path_buf();
    Ok(export)
}

/// The host path an export serves: its directory, or its one file.
fn served(export: &ExportConfig) -> PathBuf {
    match &export.single_file {
        Some(name) => export.path.join(name),
        None => export.path.clone(),
    }
}

impl Place {
    fn error(&self, message: String) -> ExportsFileError {
        ExportsFileError::Line {
            origin: self.origin.clone(),
            line: self.line,
            message,
        }
    }
}

/// Reads and parses an exports file (see [`ExportSet::add_file`]).
pub fn parse_exports_file(path: &Path) -> Result<Vec<ExportConfig>, ExportsFileError> {
    let mut set = ExportSet::new();
    set.add_file(path)?;
    Ok(set.into_exports())
}

/// Parses the text of an exports file; `origin` names it in errors.
pub fn parse_exports(text: &str, origin: &str) -> Result<Vec<ExportConfig>, ExportsFileError> {
    let mut set = ExportSet::new();
    set.add_text(text, origin)?;
    Ok(set.into_exports())
}

/// The logical lines of an exports file that name exports, each with
/// where it starts and whether it wrote a mount path.
fn lines(text: &str, origin: &str) -> Result<Vec<(Place, ExportConfig, bool)>, ExportsFileError> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        if pending.is_empty() {
            first_line = i + 1;
        }
        let at = Place {
            origin: origin.to_string(),
            line: first_line,
        };
        // A comment ends with its line: a backslash there continues
        // nothing (else `# old \` would swallow the export below it).
        if let Some(body) = raw.strip_suffix('\\').filter(|_| !has_comment(raw)) {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        if let Some((export, mount_written)) = parse_line(&line, None).map_err(|m| at.error(m))? {
            out.push((at, export, mount_written));
        }
    }
    if !pending.trim().is_empty() {
        return Err(ExportsFileError::Line {
            origin: origin.to_string(),
            line: first_line,
            message: "the file ends inside a continued line".into(),
        });
    }
    Ok(out)
}

/// Parses one export given on the command line, in the exports-file line
/// syntax. Without clients it is exported read-write to everyone, the way
/// a docker volume is read-write unless asked otherwise, with root
/// squashing, and `insecure`: the usual client is a VM next to the server
/// behind QEMU's user networking, whose NAT gives every connection an
/// unprivileged source port, so the secure-port check would refuse the
/// very mount this shorthand is for. Clients written out get exports(5)'s
/// defaults (`secure` included), as in a file.
pub fn parse_export_spec(spec: &str) -> Result<ExportConfig, ExportsFileError> {
    let at = Place {
        origin: "--export".into(),
        line: 1,
    };
    parse_spec(spec).map(|(e, _)| e).map_err(|m| at.error(m))
}

/// [`parse_export_spec`], and whether it wrote a mount path.
fn parse_spec(spec: &str) -> Result<(ExportConfig, bool), String> {
    let default = ClientRule {
        client: ClientMatch::Any,
        options: ExportOptions {
            writable: true,
            secure: false,
            ..file_defaults()
        },
    };
    parse_line(spec, Some(default))?.ok_or_else(|| "empty export".to_string())
}

/// The options of a client written without any (exports(5) defaults).
fn file_defaults() -> ExportOptions {
    ExportOptions {
        writable: false,
        squash: Squash::Root,
        anonuid: 65534,
        anongid: 65534,
        secure: true,
        // knfsd's default is `sync`; see `docs/server.md` for why this
        // server's is not.
        sync: false,
        nosuid_nodev: false,
    }
}

/// Whether `line` has a comment: a `#` starting a field, outside quotes.
fn has_comment(line: &str) -> bool {
    let mut quoted = false;
    let mut at_start = true;
    for c in line.chars() {
        match c {
            '#' if at_start && !quoted => return true,
            '"' => quoted = !quoted,
            _ => {}
        }
        at_start = c.is_whitespace() && !quoted;
    }
    false
}

/// Splits a line into fields: whitespace-separated, `"..."` quoting,
/// exports(5)'s octal escapes (`\040` for a space), and `#` at the start
/// of a field comments out the rest.
fn fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return Ok(out),
            Some(_) => {}
        }
        let mut field = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '\\' => field.push(octal_escape(&mut chars)?),
                c if c.is_whitespace() && !quoted => break,
                c => field.push(c),
            }
        }
        if quoted {
            return Err("unterminated double quote".into());
        }
        out.push(field);
    }
}

/// The character of an escape `\NNN` (three octal digits, after the
/// backslash already read). Only ASCII: names are kept as UTF-8 text.
fn octal_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, String> {
    let digits: String = chars.clone().take(3).collect();
    let code = (digits.len() == 3 && digits.chars().all(|d| ('0'..='7').contains(&d)))
        .then(|| u8::from_str_radix(&digits, 8).ok())
        .flatten()
        .filter(u8::is_ascii);
    match code {
        Some(b) => {
            for _ in 0..3 {
                chars.next();
            }
            Ok(char::from(b))
        }
        None => Err(format!(
            "`\\{digits}`: a backslash starts an octal escape of an ASCII \
             character, such as \\040 for a space (or ends a line to continue it)"
        )),
    }
}

/// Parses one logical line; `Ok(None)` for blank and comment lines.
fn parse_line(
    line: &str,
    default_client: Option<ClientRule>,
) -> Result<Option<(ExportConfig, bool)>, String> {
    let fields = fields(line)?;
    let mut it = fields.iter().peekable();
    let Some(host) = it.next() else {
        return Ok(None);
    };
    if !host.starts_with('/') {
        return Err(format!("the host path {host:?} is not absolute"));
    }
    let host = tidy(host);
    let (mount_path, mount_written) = match it.peek() {
        Some(f) if f.starts_with('/') => {
            let m = it.next().map(String::as_str).unwrap_or_default();
            check_mount_path(m)?;
            (tidy(m), true)
        }
        _ => {
            // Without a mount path the host path is also the mount path.
            check_mount_path(&host).map_err(|m| m.replace("the mount path", "the host path"))?;
            (host.clone(), false)
        }
    };
    let mut clients: Vec<ClientRule> = Vec::new();
    let mut defaults = file_defaults();
    let mut defaults_field = None;
    // Default options with no client after them: `/x 10.0.0.1 -rw` reads
    // as rw for 10.0.0.1, and was ro in silence.
    let mut unused_defaults = None;
    for f in it {
        if let Some(opts) = f.strip_prefix('-') {
            defaults =
                parse_options(opts, defaults).map_err(|m| format!("default options {f}: {m}"))?;
            defaults_field = Some(f);
            unused_defaults = Some(f);
            continue;
        }
        let rule = parse_client(f, &defaults)?;
        if clients.iter().any(|r| r.client == rule.client) {
            return Err(format!("client {} is listed twice", rule.client));
        }
        clients.push(rule);
        unused_defaults = None;
    }
    if let (Some(f), Some(last)) = (unused_defaults, clients.last()) {
        return Err(format!(
            "the default options {f} come after the last client ({}) and apply to no one; \
             put them before the clients they are for, or write them as {}({})",
            last.client,
            last.client,
            f.trim_start_matches('-')
        ));
    }
    if clients.is_empty() {
        if let Some(f) = defaults_field {
            return Err(format!(
                "{host} lists no clients for the default options {f} to apply to \
                 (write `*` after them to export to everyone)"
            ));
        }
        match default_client {
            Some(d) => clients.push(d),
            None => {
                return Err(format!(
                    "{host} lists no clients (write `*(ro)` to export it to everyone)"
                ))
            }
        }
    }
    Ok(Some((
        ExportConfig {
            path: PathBuf::from(host),
            mount_path,
            clients,
            single_file: None,
        },
        mount_written,
    )))
}

/// `p` without repeated or trailing slashes and without `.` components,
/// so that one directory written two ways is one export. `..` is left
/// alone: removing it by text is wrong across a symbolic link.
fn tidy(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn check_mount_path(m: &str) -> Result<(), String> {
    if !m.starts_with('/') {
        return Err(format!("the mount path {m:?} is not absolute"));
    }
    if m.len() > MAX_MOUNT_PATH {
        return Err(format!(
            "the mount path is longer than {MAX_MOUNT_PATH} bytes"
        ));
    }
    if m.split('/').any(|c| c == "." || c == "..") {
        return Err(format!("the mount path {m:?} contains . or .."));
    }
    Ok(())
}

/// One `CLIENT(options)` field; `defaults` are the line's (exports(5)'s
/// unless a `-options` field came before).
fn parse_client(f: &str, defaults: &ExportOptions) -> Result<ClientRule, String> {
    if f.starts_with('(') {
        return Err(format!(
            "options {f} are not attached to a client; exports(5) would apply them to everyone \
             (write `*{f}` for that, or remove the space after the client)"
        ));
    }
    let (who, options) = match f.split_once('(') {
        Some((who, rest)) => {
            let Some(opts) = rest.strip_suffix(')') else {
                return Err(format!("{f}: the options must end with `)`"));
            };
            (who, parse_options(opts, defaults.clone())?)
        }
        None => (f, defaults.clone()),
    };
    Ok(ClientRule {
        client: parse_client_match(who)?,
        options,
    })
}

fn parse_client_match(who: &str) -> Result<ClientMatch, String> {
    if who == "*" {
        return Ok(ClientMatch::Any);
    }
    let (addr_s, prefix_s) = match who.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (who, None),
    };
    let addr: IpAddr = addr_s.parse().map_err(|_| {
        format!("client {who:?} is not `*`, an IP address or a network (host names and netgroups are not supported)")
    })?;
    let full = crate::export::host_prefix(&addr);
    let prefix = match prefix_s {
        None => full,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= full => n,
            Ok(_) => return Err(format!("client {who:?}: prefix longer than {full} bits")),
            Err(_) => netmask_prefix(p, addr.is_ipv4()).ok_or_else(|| {
                format!("client {who:?}: {p:?} is neither a prefix length nor a netmask")
            })?,
        },
    };
    Ok(ClientMatch::Net {
        addr: mask(addr, prefix),
        prefix,
    })
}

/// The prefix length of a contiguous IPv4 netmask such as `255.255.0.0`.
fn netmask_prefix(mask: &str, v4: bool) -> Option<u8> {
    if !v4 {
        return None;
    }
    let m: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0)
        .then(|| u8::try_from(ones).ok())
        .flatten()
}

/// Clears the host bits, so that `10.1.2.3/8` means the network 10.0.0.0/8.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// `fsid=` names the filesystem to knfsd, so that its handles outlive a
/// change of device number. Handles here never contain device numbers and
/// the fsid a client sees is derived from the mount path, so the value is
/// checked (a number, `root`, or a UUID, as exports(5) allows) and has no
/// effect.
fn fsid(value: Option<&str>) -> Result<(), String> {
    let v = value.ok_or("fsid needs a value, as in fsid=1")?;
    let uuid = v.chars().filter(|c| *c != '-').count() == 32
        && v.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
    if v == "root" || v.parse::<u32>().is_ok() || uuid {
        Ok(())
    } else {
        Err(format!("fsid={v}: not a number, \"root\" or a UUID"))
    }
}

/// `sec=` lists security flavors; the server speaks AUTH_SYS (and
/// AUTH_NONE, squashed), so anything else would be a promise it cannot
/// keep, and is refused rather than ignored.
fn sec(value: Option<&str>) -> Result<(), String> {
    let v = value.ok_or("sec needs a value, as in sec=sys")?;
    match v.split(':').find(|f| !matches!(*f, "sys" | "none")) {
        None => Ok(()),
        Some(f) => Err(format!(
            "sec={v}: flavor {f:?} is not served (only sys and none)"
        )),
    }
}

/// `opts` applied, in order, over `base`.
fn parse_options(opts: &str, base: ExportOptions) -> Result<ExportOptions, String> {
    let mut o = base;
    // all_squash and root_squash are two flags in exports(5), and
    // `all_squash,no_root_squash` squashes everyone: the second only
    // matters once `no_all_squash` takes the first away. Defaults that
    // squash all are taken as squashing root too (the safe side).
    let mut all = o.squash == Squash::All;
    let mut root = o.squash != Squash::None;
    for opt in opts.split(',') {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let id = |v: Option<&str>| -> Result<u32, String> {
            let v = v.ok_or_else(|| format!("{name} needs a value, as in {name}=65534"))?;
            match v.parse::<u32>() {
                // (uid_t)-1 tells chown "no change": no file can be given
                // it, so every call by a squashed caller would fail.
                Ok(u32::MAX) => Err(format!(
                    "{name}={v}: 4294967295 is (uid_t)-1, which no file can be owned by"
                )),
                Ok(id) => Ok(id),
                Err(_) => Err(format!("{name}={v}: not a number from 0 to 4294967294")),
            }
        };
        let flag = |v: Option<&str>| match v {
            None => Ok(()),
            Some(_) => Err(format!("option {name} takes no value")),
        };
        match name {
            "rw" => flag(value).map(|()| o.writable = true)?,
            "ro" => flag(value).map(|()| o.writable = false)?,
            "root_squash" => flag(value).map(|()| root = true)?,
            "no_root_squash" => flag(value).map(|()| root = false)?,
            "all_squash" => flag(value).map(|()| all = true)?,
            "no_all_squash" => flag(value).map(|()| all = false)?,
            "anonuid" => o.anonuid = id(value)?,
            "anongid" => o.anongid = id(value)?,
            "secure" => flag(value).map(|()| o.secure = true)?,
            "insecure" => flag(value).map(|()| o.secure = false)?,
            "sync" => flag(value).map(|()| o.sync = true)?,
            "async" => flag(value).map(|()| o.sync = false)?,
            "subtree_check" | "no_subtree_check" | "wdelay" | "no_wdelay" => flag(value)?,
            // Filesystems mounted below an export are always served.
            "crossmnt" | "nohide" => flag(value)?,
            // No NLM here: clients mount with `nolock`.
            "secure_locks" | "insecure_locks" | "auth_nlm" | "no_auth_nlm" => flag(value)?,
            // NFSv4 only: no effect on NFSv3, as under knfsd.
            "pnfs" | "no_pnfs" | "security_label" => flag(value)?,
            "fsid" => fsid(value)?,
            "sec" => sec(value)?,
            "" => return Err("empty option (a stray comma?)".into()),
            "hide" => {
                return Err(
                    "hide: a filesystem mounted below an export is always served \
                            here (as with nohide); remove the option"
                        .into(),
                )
            }
            "mp" | "mountpoint" => {
                return Err(format!(
                    "{name}: not supported (the export is served whether or not a \
                     filesystem is mounted on it); remove the option"
                ))
            }
            "nordirplus" | "no_acl" | "acl" => {
                return Err(format!(
                    "{name}: not supported (READDIRPLUS and the NFSACL program are always \
                     offered); remove the option"
                ))
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    o.squash = match (all, root) {
        (true, _) => Squash::All,
        (false, true) => Squash::Root,
        (false, false) => Squash::None,
    };
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ExportConfig>, String> {
        parse_exports(text, "exports").map_err(|e| e.to_string())
    }

    fn net(addr: &str, prefix: u8) -> ClientMatch {
        ClientMatch::Net {
            addr: addr.parse().expect("addr"),
            prefix,
        }
    }

    #[test]
    fn escapes_and_comments_that_end_in_a_backslash() {
        let text = "\
/srv/my\\040files /spaced *(rw)
# an old export, commented out \\
/srv/b /b *(ro)
/srv/c /c *(ro) # a note \\
/srv/d /d *(ro)
";
        let e = parse(text).expect("parses");
        let paths: Vec<_> = e.iter().map(|e| e.path.clone()).collect();
        assert_eq!(
            paths,
            ["/srv/my files", "/srv/b", "/srv/c", "/srv/d"].map(PathBuf::from)
        );
    }

    #[test]
    fn full_example() {
        let text = "\
# vmshare exports
/srv/data   /data   10.0.0.0/8(rw,no_root_squash) *(ro)

\"/srv/my files\" 192.168.1.7(rw,insecure,anonuid=1000,anongid=100) # trailing comment
/srv/long \\
    fe80::1(all_squash)
";
        let e = parse(text).expect("parses");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].path, PathBuf::from("/srv/data"));
        assert_eq!(e[0].mount_path, "/data");
        assert_eq!(e[0].clients.len(), 2);
        assert_eq!(e[0].clients[0].client, net("10.0.0.0", 8));
        assert_eq!(
            e[0].clients[0].options,
            ExportOptions {
                writable: true,
                squash: Squash::None,
                ..file_defaults()
            }
        );
        assert_eq!(e[0].clients[1].client, ClientMatch::Any);
        assert_eq!(e[0].clients[1].options, file_defaults());
        assert_eq!(e[1].path, PathBuf::from("/srv/my files"));
        assert_eq!(e[1].mount_path, "/srv/my files");
        assert_eq!(e[1].clients[0].client, net("192.168.1.7", 32));
        assert_eq!(
            e[1].clients[0].options,
            ExportOptions {
                writable: true,
                secure: false,
                sync: false,
                anonuid: 1000,
                anongid: 100,
                squash: Squash::Root,
                nosuid_nodev: false,
            }
        );
        assert_eq!(e[2].mount_path, "/srv/long");
        assert_eq!(e[2].clients[0].client, net("fe80::1", 128));
        assert_eq!(e[2].clients[0].options.squash, Squash::All);
    }

    #[test]
    fn every_option() {
        let cases: &[(&str, ExportOptions)] = &[
            (
                "rw",
                ExportOptions {
                    writable: true,
                    ..file_defaults()
                },
            ),
            ("ro", file_defaults()),
            ("rw,ro", file_defaults()),
            ("root_squash", file_defaults()),
            (
                "no_root_squash",
                ExportOptions {
                    squash: Squash::None,
                    ..file_defaults()
                },
            ),
            (
                "all_squash",
                ExportOptions {
                    squash: Squash::All,
                    ..file_defaults()
                },
            ),
            ("all_squash,no_all_squash", file_defaults()),
            // Two flags, as in exports(5): no_root_squash does not undo
            // all_squash, whichever comes first.
            (
                "all_squash,no_root_squash",
                ExportOptions {
                    squash: Squash::All,
                    ..file_defaults()
                },
            ),
            (
                "no_root_squash,all_squash",
                ExportOptions {
                    squash: Squash::All,
                    ..file_defaults()
                },
            ),
            (
                "all_squash,root_squash",
                ExportOptions {
                    squash: Squash::All,
                    ..file_defaults()
                },
            ),
            (
                "all_squash,no_root_squash,no_all_squash",
                ExportOptions {
                    squash: Squash::None,
                    ..file_defaults()
                },
            ),
            (
                "anonuid=0,anongid=4294967294",
                ExportOptions {
                    anonuid: 0,
                    anongid: u32::MAX - 1,
                    ..file_defaults()
                },
            ),
            ("secure", file_defaults()),
            (
                "insecure",
                ExportOptions {
                    secure: false,
                    ..file_defaults()
                },
            ),
            (
                "sync,async,subtree_check,no_subtree_check,wdelay,no_wdelay",
                file_defaults(),
            ),
            (
                "async,sync",
                ExportOptions {
                    sync: true,
                    ..file_defaults()
                },
            ),
            (
                "crossmnt,nohide,insecure_locks,no_auth_nlm,secure_locks,auth_nlm",
                file_defaults(),
            ),
            (
                "fsid=0,fsid=root,fsid=17,fsid=8d7c6b5a-4f3e-2d1c-0b9a-887766554433,sec=sys,sec=sys:none",
                file_defaults(),
            ),
        ];
        for (opts, want) in cases {
            let e = parse(&format!("/x *({opts})")).expect(opts);
            assert_eq!(&e[0].clients[0].options, want, "{opts}");
        }
    }

    #[test]
    fn client_forms() {
        let cases = [
            ("*", ClientMatch::Any),
            ("10.1.2.3", net("10.1.2.3", 32)),
            ("10.1.2.3/8", net("10.0.0.0", 8)),
            ("10.1.2.3/255.255.0.0", net("10.1.0.0", 16)),
            ("0.0.0.0/0", net("0.0.0.0", 0)),
            ("2001:db8::1/32", net("2001:db8::", 32)),
            ("::1", net("::1", 128)),
        ];
        for (who, want) in cases {
            let e = parse(&format!("/x {who}(rw)")).expect(who);
            assert_eq!(e[0].clients[0].client, want, "{who}");
        }
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let cases = [
            ("\n\nsrv *(rw)", 3, "not absolute"),
            ("/x", 1, "lists no clients"),
            ("/x host(rw)", 1, "host names"),
            ("/x *(rw", 1, "must end with `)`"),
            ("/x 10.0.0.1 (rw)", 1, "not attached to a client"),
            ("/x *(rw,bogus)", 1, "unknown option \"bogus\""),
            ("/x *(rw,fsid=abc)", 1, "fsid=abc: not a number"),
            ("/x *(rw,fsid)", 1, "fsid needs a value"),
            ("/x *(sec=krb5p)", 1, "flavor \"krb5p\" is not served"),
            ("/x *(sec=sys:krb5)", 1, "flavor \"krb5\" is not served"),
            ("/x *(crossmnt=1)", 1, "option crossmnt takes no value"),
            ("/x *(ro,hide)", 1, "always served here (as with nohide)"),
            ("/x *(ro,mp)", 1, "mp: not supported"),
            ("/x *(rw,,ro)", 1, "empty option"),
            ("/x *(anonuid=-1)", 1, "not a number"),
            ("/x *(anonuid)", 1, "needs a value"),
            ("/x *(rw=1)", 1, "takes no value"),
            ("/x 10.0.0.0/33(rw)", 1, "prefix longer than 32"),
            (
                "/x 10.0.0.0/255.0.255.0(rw)",
                1,
                "neither a prefix length nor a netmask",
            ),
            ("/x ::1/129(rw)", 1, "prefix longer than 128"),
            ("/x /a/../b *(rw)", 1, "contains . or .."),
            (
                "/a/../b *(rw)",
                1,
                "the host path \"/a/../b\" contains . or ..",
            ),
            ("/x *(anonuid=4294967295)", 1, "(uid_t)-1"),
            ("/x\\1 *(rw)", 1, "octal escape"),
            ("/x\\400 *(rw)", 1, "octal escape"),
            ("\"/x *(rw)", 1, "unterminated double quote"),
            (
                "# c\n/x /m *(rw)\n/y /m *(ro)",
                3,
                "mount path /m is already the export of /x at exports:2",
            ),
            (
                "/x 10.0.0.1(rw)\n/x/ 10.0.0.2(rw) 10.0.0.1(ro)",
                2,
                "client 10.0.0.1 is already listed for /x at exports:1",
            ),
            ("/x *(rw) 10.0.0.0/8 *(ro)", 1, "client * is listed twice"),
            ("/x -rw", 1, "no clients for the default options -rw"),
            (
                "/x -rw,bogus *",
                1,
                "default options -rw,bogus: unknown option",
            ),
            ("/x -(rw) *", 1, "unknown option \"(rw)\""),
            ("/x \\\n", 1, "ends inside a continued line"),
            ("/a *(ro)\n/x \\\n *(rw,nope)", 2, "unknown option"),
        ];
        for (text, line, want) in cases {
            let e = parse(text).expect_err(text);
            assert!(
                e.starts_with(&format!("exports:{line}: ")),
                "{text:?} gave {e}"
            );
            assert!(e.contains(want), "{text:?} gave {e}");
        }
    }

    /// One export given in two files and by `--export` is one export
    /// with every client, as two lines of one file are; a conflict names
    /// both places. The server had been handed two exports and refused
    /// them as "two exports are mounted as /data", naming neither file.
    #[test]
    fn sources_merge_as_lines_of_one_file_do() {
        let mut set = ExportSet::new();
        set.add_text("/srv/a /data 10.0.0.1(rw)\n", "one")
            .expect("one");
        set.add_text("\n/srv/a /data 10.0.0.2(ro)\n", "two")
            .expect("two");
        set.add_spec("/srv/a /data 10.0.0.3(rw)", 1).expect("spec");
        let e = set.into_exports();
        assert_eq!(e.len(), 1);
        let who: Vec<String> = e[0].clients.iter().map(|c| c.client.to_string()).collect();
        assert_eq!(who, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);

        let mut set = ExportSet::new();
        set.add_text("/srv/a /data 10.0.0.1(rw)\n", "one")
            .expect("one");
        let e = set
            .add_text("# other\n/srv/b /data *(ro)\n", "two")
            .expect_err("one mount path, two directories")
            .to_string();
        assert_eq!(
            e,
            "two:2: mount path /data is already the export of /srv/a at one:1"
        );
        let e = set
            .add_spec("/srv/a /data 10.0.0.1(ro)", 2)
            .expect_err("a client twice")
            .to_string();
        assert!(
            e.starts_with("--export:2: client 10.0.0.1 is already listed for /data at one:1"),
            "{e}"
        );
    }

    /// A directory given again without the mount path it has on another
    /// line had silently become a second export at its host path, which
    /// the new clients would have to mount instead. It is refused, saying
    /// how to write either meaning; with both mount paths written it is
    /// one directory under two paths.
    #[test]
    fn a_directory_again_without_its_mount_path_is_an_error() {
        for text in [
            "/srv/a /data 10.0.0.1(rw)\n/srv/a 10.0.0.2(ro)",
            "/srv/a 10.0.0.1(rw)\n/srv/a /data 10.0.0.2(ro)",
        ] {
            let e = parse(text).expect_err(text);
            assert!(
                e.starts_with("exports:2: /srv/a is already exported as"),
                "{e}"
            );
            assert!(e.contains("at exports:1"), "{e}");
            assert!(e.contains("write a mount path on both lines"), "{e}");
        }
        let e = parse("/srv/a /data 10.0.0.1(rw)\n/srv/a /other 10.0.0.2(ro)").expect("two paths");
        let mounts: Vec<&str> = e.iter().map(|e| e.mount_path.as_str()).collect();
        assert_eq!(mounts, ["/data", "/other"]);
        // Lines without mount paths merge by host path, as before.
        let e = parse("/srv/a 10.0.0.1(rw)\n/srv/a/ 10.0.0.2(ro)").expect("merged");
        assert_eq!((e.len(), e[0].clients.len()), (1, 2));
    }

    #[test]
    fn default_options_after_the_last_client_are_an_error() {
        let e = parse("/x 10.0.0.1 -rw").expect_err("refused");
        assert!(e.contains("after the last client (10.0.0.1)"), "{e}");
        assert!(e.contains("10.0.0.1(rw)"), "{e}");
        assert!(parse("/x -rw 10.0.0.1 -ro *").is_ok());
    }

    #[test]
    fn default_options_apply_to_the_clients_after_them() {
        let e = parse("/x 10.0.0.1 -rw,insecure 10.0.0.2 10.0.0.3(ro) -no_root_squash *")
            .expect("parses");
        let c = &e[0].clients;
        // Before any `-options`: exports(5)'s defaults.
        assert_eq!(c[0].options, file_defaults());
        let rw_insecure = ExportOptions {
            writable: true,
            secure: false,
            ..file_defaults()
        };
        assert_eq!(c[1].options, rw_insecure);
        // A client's own options go over the line's.
        assert_eq!(
            c[2].options,
            ExportOptions {
                writable: false,
                ..rw_insecure.clone()
            }
        );
        // A second `-options` adds to the first.
        assert_eq!(
            c[3].options,
            ExportOptions {
                squash: Squash::None,
                ..rw_insecure
            }
        );
    }

    #[test]
    fn one_directory_on_several_lines_is_one_export() {
        let e = parse(
            "/srv/data 10.0.0.1(rw)\n/srv//data/ /srv/data *(ro)\n/other *(ro)\n/srv/./data 10.0.0.0/8(rw)",
        )
        .expect("parses");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, PathBuf::from("/srv/data"));
        assert_eq!(e[0].mount_path, "/srv/data");
        let clients: Vec<String> = e[0].clients.iter().map(|r| r.client.to_string()).collect();
        assert_eq!(clients, ["10.0.0.1", "*", "10.0.0.0/8"]);
        assert_eq!(e[1].mount_path, "/other");
        // A mount path is tidied the same way, and the root stays the root.
        let e = parse("/srv/data /data/ *(ro)\n/ //  *(ro)").expect("parses");
        assert_eq!(e[0].mount_path, "/data");
        assert_eq!(e[1].path, PathBuf::from("/"));
        assert_eq!(e[1].mount_path, "/");
    }

    #[test]
    fn precedence_follows_exports5_not_the_line_order() {
        let e = parse("/x *(rw) 10.0.0.0/8(rw) 10.0.0.5(ro)").expect("parses");
        let w = |ip: &str| {
            e[0].options_for(ip.parse().expect("ip"))
                .map(|o| o.writable)
        };
        assert_eq!(w("10.0.0.5"), Some(false));
        assert_eq!(w("10.0.0.6"), Some(true));
        assert_eq!(w("192.168.1.1"), Some(true));
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let e = parse_exports_file(Path::new("/nonexistent/vmshare-exports")).expect_err("missing");
        assert!(
            e.to_string().starts_with("/nonexistent/vmshare-exports: "),
            "{e}"
        );
    }

    #[test]
    fn an_export_path_is_a_directory_or_a_file_and_errors_name_its_line() {
        let dir = std::env::temp_dir().join(format!("vmshare-exports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("exports");
        let text = format!(
            "# two exports\n{} /ok *(ro)\n/nonexistent/vmshare-dir /gone *(ro)\n",
            dir.display()
        );
        std::fs::write(&file, text).expect("write");
        let e = parse_exports_file(&file).expect_err("missing directory");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: /nonexistent/vmshare-dir: No such file or directory (os error 2)",
                file.display()
            )
        );
        // A device is neither a directory nor a file to serve: the same,
        // with its line.
        let text = format!("{} /ok *(ro)\n\n/dev/null /f *(rw)\n", dir.display());
        std::fs::write(&file, text).expect("write");
        let e = parse_exports_file(&file).expect_err("a device");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: /dev/null: neither a directory nor a regular file",
                file.display()
            )
        );
        // A regular file is served alone, from its directory, also when
        // named through a symlink; two files of one directory are two
        // exports, and the same file twice is the line's mistake.
        let data = dir.join("app.conf");
        std::fs::write(&data, "x").expect("write");
        std::os::unix::fs::symlink(&data, dir.join("link.conf")).expect("symlink");
        let text = format!(
            "{0}/app.conf /conf *(rw)\n{0}/link.conf /link *(ro)\n{0}/exports *(ro)\n",
            dir.display()
        );
        std::fs::write(&file, text).expect("write");
        let set = parse_exports_file(&file).expect("files");
        let shape: Vec<_> = set
            .iter()
            .map(|e| (e.path.clone(), e.single_file.clone(), e.mount_path.clone()))
            .collect();
        let real = std::fs::canonicalize(&dir).expect("canonicalize");
        assert_eq!(
            shape,
            [
                (real.clone(), Some("app.conf".into()), "/conf".to_string()),
                (real.clone(), Some("app.conf".into()), "/link".to_string()),
                (
                    real.clone(),
                    Some("exports".into()),
                    format!("{}/exports", dir.display())
                ),
            ]
        );
        let text = format!("{0}/app.conf *(rw)\n{0}/link.conf *(ro)\n", dir.display());
        std::fs::write(&file, text).expect("write");
        let e = parse_exports_file(&file).expect_err("one file twice");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            e.to_string().starts_with(&format!(
                "{}:2: {}/app.conf is already exported as {}/app.conf at",
                file.display(),
                real.display(),
                dir.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn command_line_spec() {
        let e = parse_export_spec("/srv/data").expect("spec");
        assert_eq!(e.mount_path, "/srv/data");
        assert_eq!(
            e.clients,
            vec![ClientRule {
                client: ClientMatch::Any,
                options: ExportOptions {
                    secure: false,
                    ..ExportOptions::default()
                }
            }]
        );
        // Clients written out: exports(5) defaults, secure included.
        let e = parse_export_spec("/srv/data /data 10.0.0.2(ro)").expect("spec");
        assert_eq!(e.mount_path, "/data");
        assert!(!e.clients[0].options.writable);
        assert!(e.clients[0].options.secure);
        let err = parse_export_spec("data").expect_err("relative").to_string();
        assert!(err.starts_with("--export:1: "), "{err}");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "(",
            ")",
            "/x (",
            "/x *()",
            "/x */",
            "/x /",
            "\"",
            "/x 1.2.3.4/",
            "/x *(=)",
            "\\",
            "/x ::/ab",
            "/x -",
            "/x - *",
            "/x -, *",
            "/x -rw -ro",
            "// /// *",
            "/x\n/x",
            "/x *\n/x/ *",
        ] {
            let _ = parse(text);
        }
    }
}
