//! The attack campaign of issue 7: timeskew against real targets attacked as a demanding user
//! would — killed at random moments, its targets killed, several timeskews racing, signal
//! storms, process storms, stopped / frozen / traced targets, long runs, targets with SIGTRAP of
//! their own. Every wait has a deadline, every process started is killed and reaped, readiness
//! comes from a line the target prints. Targets: tests/targets/campaign/*.c, built with `cc`.
//!
//! Round counts are the issue's; `TIMESKEW_CAMPAIGN_SCALE=0.1` scales them for a quick run.
//! The attacks run one at a time (they measure stop times on a small machine). Results are
//! printed (`-- --nocapture`) and appended to target/tmp/campaign-report.txt; docs/reliability.md
//! has the table and how to run it.

mod cycles;
mod harness;
mod kill_target;
mod kill_timeskew;
mod race;
mod signals;
mod sigtrap;
mod storms;
