//! Real servers for tests/servers.rs — Redis, PostgreSQL 15, etcd — each on free loopback
//! ports with a temporary data directory, ready only once its own client says so (a bounded
//! polling handshake, never a blind sleep), its log captured to a file, and killed and reaped
//! when the handle drops. Clients run with a time limit, so a wedged server fails the test
//! instead of hanging it.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::e2e::{INSTALL_HINT, line_channel, require};

/// A directory under /tmp, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "timeskew-e2e-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now (the kernel picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why a server did not come up: it exited (typically: its port was taken between our pick
/// and its bind — the ports are free when chosen, not reserved), or it did not answer in time.
pub type StartError = String;

/// Polls `ready` every 50 ms until it says yes, for at most `timeout`; fails early if `server`
/// exits meanwhile.
pub fn wait_ready(
    server: &mut Server,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), StartError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "{} exited ({status}) before {what}; its log:\n{}",
                server.name,
                server.log_text()
            ));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("{}: no {what} within {timeout:?}", server.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a server with `attempt`, up to three times (fresh ports and directory each time).
pub fn start_with_retries<T>(what: &str, mut attempt: impl FnMut() -> Result<T, StartError>) -> T {
    let mut errors = vec![];
    for _ in 0..3 {
        match attempt() {
            Ok(server) => return server,
            Err(e) => {
                eprintln!("{what} did not start, retrying: {e}");
                errors.push(e);
            }
        }
    }
    panic!(
        "{what} did not start in 3 attempts:\n{}",
        errors.join("\n---\n")
    );
}

/// Runs a client command to completion, killing it after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            // SAFETY: kill has no memory effects; the pid is our unreaped child (it cannot
            // have been reused before we reap it below).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let started = Instant::now();
    let out = child.wait_with_output().expect("wait for client");
    let _ = tx.send(());
    assert!(
        started.elapsed() < timeout,
        "{cmd:?} took longer than {timeout:?} and was killed"
    );
    out
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// A server process with its log file. Dropping it sends `stop_signal`, waits up to 5 s for
/// the process to exit, then kills it, and reaps it either way.
pub struct Server {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
    stop_signal: i32,
}

impl Server {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf, stop_signal: i32) -> Server {
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("dup log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {cmd:?}: {e}"));
        Server {
            name,
            child,
            log,
            stop_signal,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Fails the test if the server has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing any of `needles` (case-insensitive), at most `max`.
    pub fn log_lines(&self, needles: &[&str], max: usize) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| {
                let lower = l.to_lowercase();
                needles.iter().any(|n| lower.contains(&n.to_lowercase()))
            })
            .take(max)
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects; the child is not reaped yet, so its pid is ours.
        unsafe { libc::kill(self.child.id() as i32, self.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed and reaped when dropped (a client running in the background).
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Redis

pub struct Redis {
    pub server: Server,
    pub port: u16,
    cli: PathBuf,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        start_with_retries("redis-server", Redis::try_start)
    }

    fn try_start() -> Result<Redis, StartError> {
        let bin = require("redis-server", "redis-server");
        let cli = require("redis-cli", "redis-tools");
        let dir = TempDir::new("redis");
        let port = free_port();
        let server = Server::spawn(
            "redis-server",
            Command::new(bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--loglevel", "verbose"])
                .arg("--dir")
                .arg(dir.path()),
            dir.path().join("redis.log"),
            libc::SIGTERM,
        );
        let mut redis = Redis {
            server,
            port,
            cli,
            _dir: dir,
        };
        let (port, cli) = (redis.port, redis.cli.clone());
        wait_ready(&mut redis.server, "redis-cli ping", START_TIMEOUT, || {
            cli_output(&cli, port, &["ping"]).as_deref() == Some("PONG")
        })?;
        Ok(redis)
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        cli_output(&self.cli, self.port, args)
    }

    /// `redis-cli ARGS`, asserting success; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// `INFO section` as key → value.
    pub fn info(&self, section: &str) -> Vec<(String, String)> {
        self.cli(&["info", section])
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    }
}

fn cli_output(cli: &Path, port: u16, args: &[&str]) -> Option<String> {
    let o = run_bounded(
        Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        CLIENT_TIMEOUT,
    );
    o.status.success().then(|| text(&o.stdout))
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL 15

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// uid and gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns null or a pointer to a static passwd entry, read at once; the
    // tests call it from one thread at a time per process.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no postgres user: {INSTALL_HINT} postgresql-15"
    );
    // SAFETY: pw is non-null and points at a valid passwd entry.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

pub struct Postgres {
    pub server: Server,
    pub port: u16,
    dir: TempDir,
}

impl Postgres {
    /// initdb in a temporary directory owned by postgres, then the postmaster in the
    /// foreground (so the child we hold *is* the postmaster), logging every connection with a
    /// millisecond timestamp from the clock of the process that writes the line.
    pub fn start() -> Postgres {
        start_with_retries("postgres", Postgres::try_start)
    }

    fn try_start() -> Result<Postgres, StartError> {
        let initdb = Path::new(PG_BIN).join("initdb");
        let postgres = Path::new(PG_BIN).join("postgres");
        assert!(
            postgres.exists(),
            "{} missing: {INSTALL_HINT} postgresql-15",
            postgres.display()
        );
        require("psql", "postgresql-client-15");
        let (uid, gid) = postgres_user();
        let dir = TempDir::new("postgres");
        let data = dir.path().join("data");
        std::fs::create_dir_all(dir.path().join("sock")).unwrap();
        chown_tree(dir.path(), uid, gid);
        let o = run_bounded(
            Command::new(&initdb)
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .arg("--locale=C")
                .current_dir(dir.path())
                .uid(uid)
                .gid(gid),
            Duration::from_secs(120),
        );
        assert!(o.status.success(), "initdb failed: {}", text(&o.stderr));
        let port = free_port();
        let server = Server::spawn(
            "postgres",
            Command::new(&postgres)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path().join("sock"))
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "log_connections=on", "-c", "log_line_prefix=%m [%p] "])
                .args(["-c", "fsync=off", "-c", "shared_buffers=16MB"])
                .current_dir(dir.path())
                .uid(uid)
                .gid(gid),
            dir.path().join("postgres.log"),
            // Immediate shutdown: the postmaster takes every backend down with it.
            libc::SIGQUIT,
        );
        let mut pg = Postgres { server, port, dir };
        let isready = require("pg_isready", "postgresql-client-15");
        let port = pg.port.to_string();
        wait_ready(&mut pg.server, "pg_isready", START_TIMEOUT, || {
            run_bounded(
                Command::new(&isready)
                    .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                    .args(["-p", &port]),
                CLIENT_TIMEOUT,
            )
            .status
            .success()
        })?;
        Ok(pg)
    }

    fn psql_cmd(&self) -> Command {
        let mut cmd = Command::new("psql");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-q"])
            .args(["-v", "ON_ERROR_STOP=1"]);
        cmd
    }

    /// One query in a new connection (so a new backend); its output.
    pub fn query(&self, sql: &str) -> String {
        let o = run_bounded(self.psql_cmd().args(["-c", sql]), CLIENT_TIMEOUT);
        assert!(
            o.status.success(),
            "psql -c {sql:?} failed: {}",
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// A connection kept open: one psql, one backend, queried line by line.
    pub fn connect(&self) -> Session {
        let mut child = self
            .psql_cmd()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = line_channel(stdout);
        let mut s = Session {
            child: Background(child),
            stdin,
            lines,
            backend: 0,
        };
        s.backend = s.query("select pg_backend_pid()").parse().unwrap();
        s
    }

    /// Every process of this server: the postmaster and its children, as `(pid, title)`.
    pub fn processes(&self) -> Vec<(i32, String)> {
        let root = self.server.pid();
        let mut out = vec![];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let ppid: i32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if pid == root || ppid == root {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let title = String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim()
                    .to_string();
                out.push((pid, title));
            }
        }
        out.sort();
        out
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

/// An open psql session (one backend process).
pub struct Session {
    child: Background,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// `pg_backend_pid()` of this connection.
    pub backend: i32,
}

impl Session {
    /// Runs one single-row query; its output line.
    pub fn query(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql};")
            .and_then(|_| self.stdin.flush())
            .expect("write to psql");
        self.lines
            .recv_timeout(CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("psql session gave no answer to {sql:?}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// etcd

pub struct Etcd {
    pub server: Server,
    pub name: String,
    pub endpoint: String,
    ctl: PathBuf,
    _dir: TempDir,
}

impl Etcd {
    /// A single-member cluster.
    pub fn start() -> Etcd {
        Etcd::cluster(1).pop().unwrap()
    }

    /// An `n`-member cluster, every member on its own loopback ports; returned once each
    /// member reports healthy.
    pub fn cluster(n: usize) -> Vec<Etcd> {
        start_with_retries("etcd", || Etcd::try_cluster(n))
    }

    fn try_cluster(n: usize) -> Result<Vec<Etcd>, StartError> {
        let bin = require("etcd", "etcd-server");
        let ctl = require("etcdctl", "etcd-client");
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = names
            .iter()
            .zip(&ports)
            .map(|(name, (_, peer))| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = vec![];
        for (name, (client, peer)) in names.iter().zip(&ports) {
            let dir = TempDir::new("etcd");
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let server = Server::spawn(
                "etcd",
                Command::new(&bin)
                    .args(["--name", name, "--data-dir"])
                    .arg(dir.path().join("data"))
                    .args(["--listen-client-urls", &client_url])
                    .args(["--advertise-client-urls", &client_url])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--logger", "zap", "--log-outputs", "stderr"]),
                dir.path().join("etcd.log"),
                libc::SIGTERM,
            );
            members.push(Etcd {
                server,
                name: name.clone(),
                endpoint: format!("127.0.0.1:{client}"),
                ctl: ctl.clone(),
                _dir: dir,
            });
        }
        for m in &mut members {
            let (ctl, endpoint) = (m.ctl.clone(), m.endpoint.clone());
            wait_ready(
                &mut m.server,
                "etcdctl endpoint health",
                START_TIMEOUT,
                || ctl_output(&ctl, &endpoint, &["endpoint", "health"]).is_some(),
            )?;
        }
        Ok(members)
    }

    /// `endpoint status` of this member: (its member id, the leader's member id, 0 while there
    /// is none).
    pub fn status(&self) -> (u64, u64) {
        let out = self.ctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("endpoint status json");
        let st = &v[0]["Status"];
        (
            st["header"]["member_id"].as_u64().expect("member_id"),
            st["leader"].as_u64().unwrap_or(0),
        )
    }

    pub fn is_leader(&self) -> bool {
        let (me, leader) = self.status();
        me == leader
    }

    fn try_ctl(&self, args: &[&str]) -> Option<String> {
        ctl_output(&self.ctl, &self.endpoint, args)
    }

    /// `etcdctl ARGS`, asserting success; its output.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|| panic!("etcdctl {args:?} failed"))
    }

    /// `etcdctl get KEY --print-value-only`: `None` when the key does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        let v = self.ctl(&["get", key, "--print-value-only"]);
        (!v.is_empty()).then_some(v)
    }

    /// Grants a lease; its hex id.
    pub fn grant(&self, ttl_s: u32) -> String {
        let out = self.ctl(&["lease", "grant", &ttl_s.to_string()]);
        // "lease 694d7c3b8d3e4a0b granted with TTL(60s)"
        out.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("lease grant said {out:?}"))
            .to_string()
    }

    /// Seconds a lease has left, as etcd reports it; `None` once it has expired.
    pub fn remaining(&self, lease: &str) -> Option<i64> {
        let out = self.ctl(&["lease", "timetolive", lease]);
        // "lease 694d… granted with TTL(60s), remaining(56s)" or "lease 694d… already expired"
        let rest = out.split("remaining(").nth(1)?;
        rest.split('s').next()?.parse().ok()
    }
}

fn ctl_output(ctl: &Path, endpoint: &str, args: &[&str]) -> Option<String> {
    let o = run_bounded(
        Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint, "--command-timeout", "10s"])
            .args(args),
        CLIENT_TIMEOUT,
    );
    o.status.success().then(|| text(&o.stdout))
}
