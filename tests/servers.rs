//! End-to-end against real servers, checked through their own clients: Redis (TIME, key expiry,
//! redis-benchmark across many inject/update/recover cycles), PostgreSQL 15 (the postmaster, the
//! backends it forks afterwards, and the backends that already existed), etcd (realtime skew
//! keeps it serving; a forward monotonic skew expires leases early, and recovering it leaves
//! leases granted meanwhile alive for an extra hour).
//!
//! Servers come from scripts/install-test-deps.sh; a missing one fails the test. Each runs on
//! free loopback ports with a temporary data directory. Results: docs/runtimes.md.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::e2e::*;
use common::servers::*;
use common::*;

const MIN10: i128 = -600 * SEC;
const HOUR: i128 = 3600 * SEC;

/// Asserts `seen_ns` lies in `[before + offset - unit, after + offset + slack]`.
fn assert_shifted(what: &str, seen_ns: i128, before: i128, after: i128, offset: i128, unit: i128) {
    let (lo, hi) = (before + offset - unit, after + offset);
    assert!(
        (lo..=hi).contains(&seen_ns),
        "{what}: {seen_ns} ns, expected real time {} within [{lo}, {hi}] (off by {:.3} s)",
        show_offset(offset),
        (seen_ns - before - offset) as f64 / 1e9
    );
}

fn print_log(name: &str, lines: &[String]) {
    eprintln!("LOG {name}: {} line(s)", lines.len());
    for l in lines {
        eprintln!("LOG {name}:   {l}");
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// `TIME` in ns, bracketed by our realtime.
fn redis_time(redis: &Redis) -> (i128, i128, i128) {
    let before = realtime_ns();
    let out = redis.cli(&["time"]);
    let after = realtime_ns();
    let mut parts = out.lines().map(|l| l.trim().parse::<i128>().unwrap());
    let (s, us) = (parts.next().unwrap(), parts.next().unwrap());
    (before, s * SEC + us * 1_000, after)
}

fn assert_redis_time(redis: &Redis, offset: i128) {
    let (before, seen, after) = redis_time(redis);
    assert_shifted("redis TIME", seen, before, after, offset, 1_000);
}

#[test]
fn redis_sees_the_skew_and_serves_a_benchmark_through_many_cycles() {
    let redis = Redis::start();
    let pid = redis.server.pid();
    let version = redis.cli(&["info", "server"]);
    let version = version
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .unwrap_or("?")
        .to_string();

    // TIME follows the skew; so does key expiry (Redis expires by its realtime).
    assert_redis_time(&redis, 0);
    assert_eq!(redis.cli(&["set", "ten-minutes", "v", "EX", "600"]), "OK");
    let injected = inject_json(pid, "-600s", "realtime");
    assert_eq!(injected["action"], "injected", "{injected}");
    assert_redis_time(&redis, MIN10);
    assert_eq!(redis.cli(&["get", "ten-minutes"]), "v");
    inject_json(pid, "+1h", "realtime");
    assert_redis_time(&redis, HOUR);
    assert_eq!(
        redis.cli(&["get", "ten-minutes"]),
        "",
        "a key with 10 minutes to live is gone once Redis's clock is an hour ahead"
    );
    recover_json(pid);
    assert_redis_time(&redis, 0);

    // redis-benchmark runs while the skew is injected, changed and recovered, 20 times over.
    let bench_bin = require("redis-benchmark", "redis-tools");
    let requests = 150_000;
    let tests = "set,get,incr,lpush,lpop";
    let mut bench = Background(
        Command::new(bench_bin)
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
            .args(["-c", "4", "-n", &requests.to_string(), "-r", "10000"])
            .args(["-t", tests, "--csv"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn redis-benchmark"),
    );
    // Let it connect and start (its first requests show up in the server's counters).
    wait_until("redis-benchmark starts", Duration::from_secs(10), || {
        let info = redis.info("stats");
        info.iter()
            .any(|(k, v)| k == "total_commands_processed" && v.parse::<u64>().unwrap_or(0) > 1_000)
            .then_some(())
    });
    let offsets = ["-600s", "+1h", "-1.5s", "+36h", "-10m30s"];
    let mut stops = vec![];
    let started = Instant::now();
    let mut cycles = 0;
    while cycles < 20 {
        assert!(
            bench.0.try_wait().unwrap().is_none(),
            "redis-benchmark finished after only {cycles} cycles: raise `requests`"
        );
        let first = offsets[cycles % offsets.len()];
        let second = offsets[(cycles + 1) % offsets.len()];
        let r = inject_json(pid, first, "realtime");
        assert_ne!(r["action"], "updated", "{r}");
        stops.push(r["stopped_for"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(30));
        let r = inject_json(pid, second, "realtime");
        assert_eq!(r["action"], "updated", "{r}");
        std::thread::sleep(Duration::from_millis(30));
        recover_json(pid);
        std::thread::sleep(Duration::from_millis(30));
        cycles += 1;
    }
    let cycle_time = started.elapsed();
    let still_running = bench.0.try_wait().unwrap().is_none();
    let deadline = Instant::now() + Duration::from_secs(180);
    while bench.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "redis-benchmark did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = bench.0.wait_with_output_now();
    assert!(still_running, "the benchmark must outlast the cycles");
    assert!(
        out.0.success(),
        "redis-benchmark failed: {}\n{}",
        out.1,
        out.2
    );
    assert!(
        !out.1.to_lowercase().contains("error") && !out.2.to_lowercase().contains("error"),
        "redis-benchmark reported errors:\n{}\n{}",
        out.1,
        out.2
    );
    let rows: Vec<&str> = out
        .1
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .collect();
    assert_eq!(
        rows.len(),
        tests.split(',').count(),
        "a result per test: {}",
        out.1
    );

    // Zero failed requests, by the server's own account.
    let stats = redis.info("stats");
    let stat = |k: &str| {
        stats
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no {k} in INFO stats"))
    };
    assert_eq!(stat("total_error_replies"), 0);
    assert_eq!(stat("rejected_connections"), 0);
    let commandstats = redis.cli(&["info", "commandstats"]);
    for line in commandstats.lines().filter(|l| l.starts_with("cmdstat_")) {
        assert!(
            line.contains("rejected_calls=0,failed_calls=0"),
            "failed calls: {line}"
        );
    }
    assert_eq!(redis.cli(&["ping"]), "PONG");
    assert_redis_time(&redis, 0);

    let max_stop = stops.iter().max().unwrap();
    eprintln!(
        "RESULT Redis {version}: TIME skewed -600s, +1h, recovered; a 10-minute key expired \
         under +1h; redis-benchmark ({tests}, {requests} requests each, 4 clients) ran through \
         {cycles} inject/update/recover cycles in {:.1} s with 0 failed requests; \
         stopped_for max {max_stop} µs",
        cycle_time.as_secs_f64()
    );
    eprintln!("RESULT Redis benchmark:\n{}", out.1.trim());
    print_log(
        "redis",
        &redis
            .server
            .log_lines(&["warning", "clock", "time", "jump"], 20),
    );
}

/// The status, stdout and stderr of a child that has exited.
trait WaitNow {
    fn wait_with_output_now(&mut self) -> (std::process::ExitStatus, String, String);
}

impl WaitNow for std::process::Child {
    fn wait_with_output_now(&mut self) -> (std::process::ExitStatus, String, String) {
        use std::io::Read;
        let status = self.wait().expect("wait");
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = self.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        (status, out, err)
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// `now()`, `clock_timestamp()` (µs since the epoch) and the backend pid, from one query.
const PG_CLOCKS: &str = "select (extract(epoch from now()) * 1000000)::bigint || ' ' || \
     (extract(epoch from clock_timestamp()) * 1000000)::bigint || ' ' || pg_backend_pid()";

struct PgClocks {
    now: i128,
    clock: i128,
    backend: i32,
    before: i128,
    after: i128,
}

impl PgClocks {
    fn parse(out: &str, before: i128, after: i128) -> PgClocks {
        let v: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(v.len(), 3, "{out:?}");
        PgClocks {
            now: v[0].parse::<i128>().unwrap() * 1_000,
            clock: v[1].parse::<i128>().unwrap() * 1_000,
            backend: v[2].parse().unwrap(),
            before,
            after,
        }
    }

    fn assert(&self, what: &str, offset: i128) {
        // now() is the transaction's start, clock_timestamp() the moment of the call: both
        // inside the bracket; the bigint cast rounds to the nearest µs.
        for (name, v) in [("now()", self.now), ("clock_timestamp()", self.clock)] {
            assert_shifted(
                &format!("{what}: {name} (backend {})", self.backend),
                v,
                self.before,
                self.after + 1_000,
                offset,
                1_000,
            );
        }
    }
}

fn new_connection(pg: &Postgres) -> PgClocks {
    let before = realtime_ns();
    let out = pg.query(PG_CLOCKS);
    PgClocks::parse(&out, before, realtime_ns())
}

fn in_session(s: &mut Session) -> PgClocks {
    let before = realtime_ns();
    let out = s.query(PG_CLOCKS);
    let c = PgClocks::parse(&out, before, realtime_ns());
    assert_eq!(c.backend, s.backend);
    c
}

#[test]
fn postgres_postmaster_skew_reaches_new_backends_only() {
    let pg = Postgres::start();
    let postmaster = pg.server.pid();
    let version = pg.query("show server_version");
    new_connection(&pg).assert("before", 0);

    // A connection opened before the injection: its backend is a process of its own.
    let mut old = pg.connect();
    in_session(&mut old).assert("old backend, before", 0);

    let injected = inject_json(postmaster, "-600s", "realtime");
    assert_eq!(injected["action"], "injected", "{injected}");
    let threads = injected["threads"].clone();

    // A new connection's backend is forked from the injected postmaster: it inherits the
    // patched vDSO and the data page, so now() and clock_timestamp() are skewed.
    let fresh = new_connection(&pg);
    fresh.assert("new connection after injecting the postmaster", MIN10);
    assert_ne!(fresh.backend, postmaster);
    // The backend that existed before is not: fork copied the postmaster's memory when it
    // was created, and the injection changed only the postmaster's.
    in_session(&mut old).assert("old backend, postmaster injected", 0);
    assert_eq!(status_json(old.backend)["injected"], false);

    // A connection opened during the skew keeps its backend (and the skew it inherited).
    let mut during = pg.connect();
    in_session(&mut during).assert("backend forked during the skew", MIN10);
    let st = status_json(during.backend);
    assert_eq!(
        st["injected"], true,
        "a forked backend carries the injection: {st}"
    );

    // The old backend can be injected on its own, found through pg_backend_pid().
    let r = inject_json(old.backend, "+1h", "realtime");
    assert_eq!(r["action"], "injected", "{r}");
    in_session(&mut old).assert("old backend injected by pid", HOUR);

    // A live update of the postmaster reaches backends forked after it, not the ones forked
    // before: each process has its own copy of the parameters.
    let r = inject_json(postmaster, "+36h", "realtime");
    assert_eq!(r["action"], "updated", "{r}");
    new_connection(&pg).assert("new connection after the update", 36 * HOUR);
    in_session(&mut during).assert("backend forked before the update", MIN10);

    // Recovering the postmaster: new connections read real time; forked backends that are
    // still connected keep their skew until recovered themselves.
    recover_json(postmaster);
    new_connection(&pg).assert("new connection after recover", 0);
    in_session(&mut during).assert(
        "backend forked during the skew, postmaster recovered",
        MIN10,
    );
    recover_json(during.backend);
    in_session(&mut during).assert("that backend, recovered", 0);
    recover_json(old.backend);
    in_session(&mut old).assert("old backend, recovered", 0);

    // Alive and serving: a write, a read, the checkpointer and the rest of the processes.
    pg.query("create table t (id int primary key, at timestamptz default now())");
    pg.query("insert into t (id) select generate_series(1, 1000)");
    assert_eq!(pg.query("select count(*) from t"), "1000");
    assert_eq!(pg.query("checkpoint"), "");
    let processes: Vec<(i32, String)> = pg
        .processes()
        .into_iter()
        .filter(|(_, title)| !title.is_empty())
        .collect();

    // Log lines are stamped by the process that writes them: a backend's "connection
    // authorized" line carries its skewed clock.
    let authorized = pg.server.log_lines(&["connection authorized"], 100);
    let skewed_lines: Vec<&String> = authorized
        .iter()
        .filter(|l| log_time_offset(l).is_some_and(|o| (o - MIN10).abs() < 60 * SEC))
        .collect();
    assert!(
        !skewed_lines.is_empty(),
        "no log line stamped 10 minutes early:\n{}",
        authorized.join("\n")
    );

    eprintln!(
        "RESULT PostgreSQL {version}: postmaster (pid {postmaster}, {threads} thread(s)) \
         injected -600s; new connections skewed (now(), clock_timestamp()), the backend \
         opened before not; that backend injected alone by pg_backend_pid(); live update \
         reaches backends forked afterwards only; recover of the postmaster leaves forked \
         backends skewed until recovered each; {} processes serving afterwards",
        processes.len()
    );
    for (pid, title) in &processes {
        eprintln!("RESULT PostgreSQL process {pid}: {title}");
    }
    print_log(
        "postgres",
        &pg.server
            .log_lines(&["warning", "error", "fatal", "connection authorized"], 30),
    );
}

/// How far the `%m` timestamp that starts a PostgreSQL log line ("2026-11-22 02:51:59.217
/// UTC [pid] …") is from the time the line was read: only meaningful to within the test's
/// duration, enough to tell a -600 s skew from none.
fn log_time_offset(line: &str) -> Option<i128> {
    let stamp = line.get(..23)?; // "2026-11-22 02:51:59.217"
    let out = Command::new("date")
        .args(["-u", "-d", &format!("{stamp} UTC"), "+%s%N"])
        .output()
        .ok()?;
    let t: i128 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(t - realtime_ns())
}

// ---------------------------------------------------------------------------------------------
// etcd

#[test]
fn etcd_serves_under_skew_and_leases_follow_the_monotonic_clock() {
    let etcd = Etcd::start();
    let pid = etcd.server.pid();
    let version = version_of("etcd", &["--version"]);
    assert_eq!(etcd.ctl(&["put", "k", "v0"]), "OK");

    // A lease granted before any skew, with a key on it.
    let early = etcd.grant(60);
    etcd.ctl(&["put", "--lease", &early, "leased", "x"]);

    // Realtime +1h alone: etcd keeps serving, and the lease is untouched (etcd checks expiry
    // against the monotonic reading inside time.Time).
    let r = inject_json(pid, "+1h", "realtime");
    assert_eq!(r["action"], "injected", "{r}");
    assert_eq!(etcd.ctl(&["put", "k", "v1"]), "OK");
    assert_eq!(etcd.get("k").as_deref(), Some("v1"));
    // The lessor looks at its expiry queue every 500 ms and retries every 3 s: give it both.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        etcd.get("leased").as_deref(),
        Some("x"),
        "realtime alone must not expire leases"
    );
    let left = etcd.remaining(&early).expect("lease alive");
    assert!((50..=60).contains(&left), "remaining {left}s");

    // Realtime and monotonic +1h: the lease granted before expires within seconds.
    let r = inject_json(pid, "+1h", "realtime,monotonic");
    assert_eq!(r["action"], "updated", "{r}");
    let skewed_at = Instant::now();
    wait_until(
        "the lease granted before the skew expires",
        Duration::from_secs(15),
        || etcd.get("leased").is_none().then_some(()),
    );
    let expired_after = skewed_at.elapsed();
    assert!(etcd.remaining(&early).is_none(), "lease {early} expired");

    // A lease granted during the skew measures its TTL on the skewed clock throughout: normal.
    let during = etcd.grant(60);
    let left = etcd.remaining(&during).expect("lease alive");
    assert!((55..=60).contains(&left), "remaining {left}s");
    let short = etcd.grant(3);
    etcd.ctl(&["put", "--lease", &short, "short", "y"]);
    assert_eq!(etcd.ctl(&["put", "k", "v2"]), "OK");

    // Recover: the monotonic clock steps back an hour, so a lease granted during the skew now
    // has an hour more to live — a 3 s lease outlives its TTL.
    recover_json(pid);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        etcd.get("short").as_deref(),
        Some("y"),
        "a 3 s lease granted under +1h monotonic lives on after recover"
    );
    let short_left = etcd.remaining(&short).expect("lease alive");
    assert!(
        (3_590..=3_600).contains(&short_left),
        "a 3 s lease reports {short_left}s left"
    );
    let during_left = etcd.remaining(&during).expect("lease alive");
    assert!((3_640..=3_660).contains(&during_left), "{during_left}s");

    // Alive and serving.
    assert_eq!(etcd.get("k").as_deref(), Some("v2"));
    assert_eq!(etcd.ctl(&["put", "k", "v3"]), "OK");
    let health = run_bounded(
        Command::new("etcdctl").env("ETCDCTL_API", "3").args([
            "--endpoints",
            &etcd.endpoint,
            "endpoint",
            "health",
        ]),
        Duration::from_secs(20),
    );
    let health = format!("{}{}", text(&health.stdout), text(&health.stderr));
    assert!(health.contains("is healthy"), "{health}");

    eprintln!(
        "RESULT etcd ({version}): realtime +1h: put/get fine, leases untouched; realtime + \
         monotonic +1h: a 60 s lease granted before expired after {:.1} s, leases granted \
         during the skew keep their TTL; after recover a 3 s lease granted during the skew \
         reports {short_left}s left (a 60 s one {during_left}s); healthy afterwards",
        expired_after.as_secs_f64()
    );
    print_log(
        "etcd",
        &etcd
            .server
            .log_lines(&["\"warn\"", "\"error\"", "lease", "revoke", "expire"], 20),
    );
}

/// The chaos-engineering case: one member of a three-member cluster skewed. Peers and the
/// member itself log the clock drift; a leader whose monotonic clock jumps an hour logs missed
/// heartbeats; recovering that jump (the monotonic clock steps back) stalls the leader's Go
/// timers — its raft ticker — for the hour, so it stops heartbeating and loses the leadership.
/// The cluster serves throughout.
#[test]
fn etcd_cluster_with_one_skewed_member_logs_the_drift_and_keeps_serving() {
    let members = Etcd::cluster(3);
    let leader_at = |members: &[Etcd]| members.iter().position(Etcd::is_leader);
    let leader = wait_until("a leader", Duration::from_secs(15), || leader_at(&members));
    let follower = (leader + 1) % 3;
    let (lead, foll) = (&members[leader], &members[follower]);
    assert_eq!(lead.ctl(&["put", "k", "v0"]), "OK");

    // A follower's wall clock an hour ahead: it keeps serving, and the probers that measure
    // the clock difference between members report it (checked below: the first check runs
    // 5 s after a member starts, then every 30 s — so skew it right away).
    inject_json(foll.server.pid(), "+1h", "realtime");
    let follower_skewed = Instant::now();
    for m in &members {
        assert_eq!(m.ctl(&["put", &format!("from-{}", m.name), "v"]), "OK");
    }

    // The leader's realtime and monotonic clocks an hour ahead: its heartbeat timer sees an
    // hour since the last one.
    inject_json(lead.server.pid(), "+1h", "realtime,monotonic");
    // (Under load a leader may miss a heartbeat by a few ms anyway: look for the hour.)
    wait_until(
        "\"leader failed to send out heartbeat on time\" by ~1h in the leader's log",
        Duration::from_secs(20),
        || {
            lead.server
                .log_lines(&["failed to send out heartbeat on time"], 100)
                .iter()
                .any(|l| l.contains("\"exceeded-duration\":\"59m"))
                .then_some(())
        },
    );
    assert_eq!(lead.ctl(&["put", "k", "v1"]), "OK");
    assert!(lead.is_leader(), "still the leader while skewed");

    // Recover the leader: its timers armed on the skewed clock are an hour away now.
    recover_json(lead.server.pid());
    let recovered_at = Instant::now();
    let new_leader = wait_until(
        "a new leader after the old one's monotonic clock stepped back",
        Duration::from_secs(20),
        || leader_at(&members).filter(|&i| i != leader),
    );
    let handover = recovered_at.elapsed();

    let drift = |m: &Etcd| {
        m.server
            .log_lines(&["prober found high clock drift"], 100)
            .into_iter()
            .find(|l| {
                l.contains("\"clock-drift\":\"1h0m0") || l.contains("\"clock-drift\":\"59m59")
            })
    };
    let remaining = Duration::from_secs(45).saturating_sub(follower_skewed.elapsed());
    let drift_line = wait_until(
        "\"prober found high clock drift\" of ~1h in a member's log",
        remaining.max(Duration::from_secs(1)),
        || members.iter().find_map(drift),
    );
    recover_json(foll.server.pid());

    // Serving: writes through every member, including the recovered former leader, and
    // every member reads the last one.
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m.ctl(&["put", "k", &format!("v{}", i + 2)]), "OK");
    }
    for m in &members {
        assert_eq!(m.get("k").as_deref(), Some("v4"), "member {}", m.name);
    }

    eprintln!("RESULT etcd cluster: {drift_line}");
    eprintln!(
        "RESULT etcd cluster (3 members): follower {} realtime +1h → drift warnings, serving; \
         leader {} realtime+monotonic +1h → missed-heartbeat warnings, still leader; recover → \
         its raft ticker stalled, {} elected leader {:.1} s later; all members serving",
        foll.name,
        lead.name,
        members[new_leader].name,
        handover.as_secs_f64()
    );
    for m in &members {
        print_log(
            &format!("etcd {}", m.name),
            &m.server.log_lines(
                &[
                    "clock drift",
                    "heartbeat on time",
                    "lost TCP",
                    "became leader",
                    "took too long",
                ],
                12,
            ),
        );
    }
}
