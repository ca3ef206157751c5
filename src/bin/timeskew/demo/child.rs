//! The demo's child process (`timeskew __demo-child`): `ready`, then one line of clock readings
//! for every line it reads on stdin, until the end of its input.

use std::io::{self, BufRead, Write};

use super::readings::Readings;
use crate::error::CliError;

/// The child's first line, once it is ready to answer.
pub(super) const READY: &str = "ready";

/// The child: `ready`, then one line of readings per line of input, until end of input.
pub fn child(input: &mut impl BufRead, out: &mut impl Write) -> Result<(), CliError> {
    child_loop(input, out, Readings::now).map_err(|e| CliError::io("demo child", e))
}

fn child_loop(
    input: &mut impl BufRead,
    out: &mut impl Write,
    read: impl Fn() -> io::Result<Readings>,
) -> io::Result<()> {
    writeln!(out, "{READY}")?;
    out.flush()?;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        writeln!(out, "{}", read()?.to_line())?;
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::readings::{NS_PER_S, seen_at};

    const S: i128 = NS_PER_S;

    #[test]
    fn child_answers_each_line_after_ready() {
        let readings = seen_at(1_700_000_000 * S + 5, 42 * S);
        let mut input = io::Cursor::new("read\nread\n");
        let mut out = Vec::new();
        child_loop(&mut input, &mut out, || Ok(readings)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], READY);
        assert_eq!(Readings::parse(lines[1]).unwrap(), readings);
        assert_eq!(lines[1], lines[2]);
    }
}
