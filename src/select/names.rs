//! A container name turned into its id by a runtime's command line (`podman`, `docker`), when
//! one is installed: the cgroups carry only ids. Never required: an id needs no command.

use std::process::{Command, Stdio};

use crate::error::{Error, Result};

use super::container::ID_LEN;

/// The command lines asked, in order.
const CLIS: [&str; 2] = ["podman", "docker"];

/// The full id of the container called `name`, from the first runtime command line that knows
/// it.
pub fn resolve(name: &str) -> Result<String> {
    let mut tried = Vec::new();
    for cli in CLIS {
        let out = Command::new(cli)
            .args(["container", "inspect", "--format", "{{.Id}}", name])
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(out) => out,
            // Not installed: try the next one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tried.push(format!("`{cli}` could not be run: {e}"));
                continue;
            }
        };
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .to_ascii_lowercase();
        if out.status.success() && id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            log::info!("container {name}: {cli} says its id is {id}");
            return Ok(id);
        }
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        tried.push(format!("`{cli} container inspect` says: {why}"));
    }
    if tried.is_empty() {
        return Err(Error::BadSelection(format!(
            "container {name:?}: not an id, and neither podman nor docker is installed here to \
             look the name up; give the container's id (`crictl ps`, or the containerID \
             `kubectl get pod` shows)"
        )));
    }
    Err(Error::BadSelection(format!(
        "container {name:?}: no container of that name ({}); give a running container's name \
         or id",
        tried.join("; ")
    )))
}
