//! A plugin instance's WASI context, built from its step's `grants` (`spec::Grants`): exactly
//! the directories, environment variables and network granted, nothing else; its stdout and
//! stderr go to the runner's log through `output::LogLines`.

use std::sync::Arc;

use wasmtime_wasi::cli::AsyncStdoutStream;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::output::{LogLines, OutputBudget, StderrTail};
use crate::spec::Grants;

/// The WASI context of one instance of a plugin step: exactly what `grants` gives, and stdout
/// and stderr into the log (within the step's output budget).
pub fn wasi(
    grants: &Grants,
    step: &str,
    stderr_tail: &StderrTail,
    output: &Arc<OutputBudget>,
) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    for dir in &grants.dirs {
        let perms = if dir.write { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
        builder.preopened_dir(&dir.host, &dir.guest, perms)?;
    }
    for name in &grants.env {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    if grants.network {
        builder.inherit_network().allow_ip_name_lookup(true);
    }
    let lines = |stream, tail| LogLines::new(step, stream, tail, output.clone());
    builder.stdout(AsyncStdoutStream::new(1 << 16, lines("stdout", None)));
    builder.stderr(AsyncStdoutStream::new(1 << 16, lines("stderr", Some(stderr_tail.clone()))));
    Ok(builder.build())
}
